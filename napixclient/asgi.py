"""Server side of the chain for ASGI applications: :class:`ExceptionsCatcher`,
an ASGI middleware that turns an exception escaping an application into a
Napix error document; the twin of :class:`napixclient.wsgi.ExceptionsCatcher`.

Wrap a plain ASGI application with it::

    from napixclient.asgi import ExceptionsCatcher

    application = ExceptionsCatcher(app)

and a Starlette (or FastAPI) application by adding it as a middleware, so
that it runs inside Starlette's own error handler, which would otherwise
answer a plain ``500 Internal Server Error`` first::

    from starlette.applications import Starlette
    from starlette.middleware import Middleware

    app = Starlette(routes=routes, middleware=[Middleware(ExceptionsCatcher)])
    # FastAPI: app.add_middleware(ExceptionsCatcher)

An exception that escapes the application becomes a ``500`` whose body is
the Napix JSON error document (PROTOCOL.md, section 3), the very document
the WSGI middleware writes: when the exception is an
:class:`~napixclient.HTTPError` from a call the application made, it also
carries that call's ``remote_call``, ``remote_status`` and the far side's
own document as ``remote_error``, so that the caller's
:attr:`~napixclient.HTTPError.chain` reads one more hop. See :doc:`/asgi`.

It needs nothing but the standard library; ``lifespan`` and ``websocket``
connections pass through untouched. With OpenTelemetry in use
(:mod:`napixclient.otel`), it continues the trace each request brings in a
``SERVER`` span the application runs under, and the document carries
``trace_id`` and ``span_id``: see :doc:`/tracing`.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Dict, MutableMapping, Optional

from napixclient import catcher
from napixclient.core.trace import instrumentation

__all__ = ["ExceptionsCatcher"]

_LOG = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _request_part(scope: Scope) -> Dict[str, str]:
    """The document's ``request``: method and path (decoded by the server,
    ``root_path`` included), never the query string (it may carry a token)
    nor any header."""
    return catcher.request_part(scope.get("method", ""), scope.get("path", ""))


class _Exchange:
    """What one request's response has done so far. The application's
    ``http.response.start`` is held back until its next message (or its
    return): until then, a failure may still replace it with the 500, as a
    WSGI server lets ``start_response`` be called again until the first
    block of the body."""

    __slots__ = ("send", "held", "started", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        #: The ``http.response.start`` not passed on yet, or ``None``.
        self.held: Optional[Message] = None
        #: Whether a message of the response went to the server.
        self.started = False
        #: The status the application started its response with (``int``).
        self.status: Optional[int] = None

    async def tracked_send(self, message: Message) -> None:
        """The ``send`` the application gets."""
        if message.get("type") == "http.response.start" and not self.started \
                and self.held is None:
            status = message.get("status")
            self.status = status if isinstance(status, int) else None
            self.held = message
            return
        await self.flush()
        self.started = True
        await self.send(message)

    async def flush(self) -> None:
        """Pass on the held ``http.response.start``, if any."""
        held, self.held = self.held, None
        if held is not None:
            self.started = True
            await self.send(held)


class ExceptionsCatcher(catcher.Catcher):
    """ASGI middleware: an exception escaping ``app`` becomes a Napix error
    document (PROTOCOL.md, section 3, and "Writing the chain"), as
    :class:`napixclient.wsgi.ExceptionsCatcher` writes it.

    :param app: the ASGI application to wrap (ASGI 3: ``async def
        app(scope, receive, send)``); a Starlette ``Middleware`` passes it
        as ``app=``.
    :param show_traceback: ``bool``; when true the document also has
        ``traceback`` (a list of ``{"filename", "line", "in", "call"}``, at
        most :data:`~napixclient.wsgi.MAX_FRAMES`, innermost last),
        ``filename`` and ``line``. Leave it false outside development: they
        reveal file paths.
    :raises TypeError: if ``app`` is not callable.

    Only ``http`` connections are watched; ``lifespan`` and ``websocket``
    ones (and any other type) go to ``app`` untouched, with the server's own
    ``receive`` and ``send``. For an ``http`` request:

    * an exception (an :class:`Exception`) raised before the application
      started its response, or after it sent ``http.response.start`` but
      before anything else (the middleware holds that message back until the
      next one), is answered with ``500 Internal Server Error``,
      ``Content-Type: application/json`` and the document (no body to a
      ``HEAD``)::

          {"error_class": "KeyError", "error_text": "'size'",
           "request": {"method": "POST", "path": "/vm-ip/"}}

      ``request`` never holds the query string or headers, which may carry
      credentials. For an :class:`~napixclient.HTTPError` the document adds
      ``remote_call``, ``remote_error`` and ``remote_status``; with
      OpenTelemetry, ``trace_id`` and ``span_id``. A document that cannot
      be encoded as JSON is answered in ``text/plain``.
    * an exception raised once the response has gone out in part cannot
      change it any more: it is logged and re-raised, and the server cuts
      the connection (uvicorn does), so the client sees a broken answer
      rather than a truncated one passed off as whole.

    Every failure is logged with its traceback on the ``napixclient.asgi``
    logger. Exceptions that are not :class:`Exception`
    (``asyncio.CancelledError``, ``KeyboardInterrupt``...) pass through
    untouched.
    """

    app: ASGIApp
    expected = "an ASGI application (async def app(scope, receive, send))"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the application for one connection (the ASGI interface)."""
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        otel = instrumentation()
        trace = None if otel is None else otel.serve_asgi(scope)
        if trace is None:
            await self._run(scope, receive, send, None)
            return
        with trace:
            try:
                await self._run(scope, receive, send, trace)
            except BaseException as error:
                trace.end(trace.status, error)
                raise
        trace.end(trace.status, trace.error)

    async def _run(self, scope: Scope, receive: Receive, send: Send, trace: Any) -> None:
        exchange = _Exchange(send)
        try:
            await self.app(scope, receive, exchange.tracked_send)
        except Exception as error:
            if trace is not None:
                trace.error = error
                trace.status = exchange.status if exchange.started else None
            await self._fail(scope, exchange, error)
        else:
            await exchange.flush()
        if trace is not None:
            trace.status = exchange.status

    def document(self, scope: Scope, error: BaseException) -> Dict[str, Any]:
        """The Napix error document for ``error`` raised while serving the
        request of ``scope``.

        :param scope: the request's ASGI ``http`` scope.
        :param error: the exception.
        :returns: the same ``dict`` as
            :meth:`napixclient.wsgi.ExceptionsCatcher.document`.
        """
        return catcher.error_document(error, _request_part(scope), self.show_traceback)

    async def _fail(self, scope: Scope, exchange: _Exchange, error: Exception) -> None:
        """Answer the 500 for ``error``; re-raise ``error`` if the response
        has already gone out in part."""
        request = _request_part(scope)
        catcher.log_failure(_LOG, request, error, exchange.started)
        if exchange.started:
            raise error
        body, content_type = catcher.error_body(lambda: self.document(scope, error), error,
                                                 _LOG)
        exchange.held = None
        headers = [(b"content-type", content_type.encode("latin-1")),
                   (b"content-length", str(len(body)).encode("latin-1"))]
        try:
            await exchange.send({"type": "http.response.start", "status": catcher.STATUS,
                                 "headers": headers})
            await exchange.send({"type": "http.response.body",
                                 "body": b"" if request["method"] == "HEAD" else body})
        except Exception:
            _LOG.error("%s %s: the server refused the %s", request["method"], request["path"],
                       catcher.STATUS, exc_info=True)
            raise error from None
        exchange.status = catcher.STATUS
