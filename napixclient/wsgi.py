"""Server side of the chain: :class:`ExceptionsCatcher`, a WSGI middleware
that turns an exception escaping an application into a Napix error document.

Wrap any WSGI application (Flask, bottle, plain WSGI) with it::

    from napixclient.wsgi import ExceptionsCatcher

    application = ExceptionsCatcher(app)

An exception that escapes ``app`` becomes a ``500`` whose body is the Napix
JSON error document (PROTOCOL.md, section 3). When the exception is an
:class:`~napixclient.HTTPError` from a call the application made with
napixclient, the document also carries that call's ``remote_call`` and the
far side's own document as ``remote_error``: this is how a chain grows one
hop per server, and how the caller's :attr:`~napixclient.HTTPError.chain`
reads it back.

Frameworks that catch exceptions themselves must be told to let them
through, or the middleware never sees them: set Flask's
``app.config["PROPAGATE_EXCEPTIONS"] = True``, bottle's ``app.catchall =
False``.

With OpenTelemetry in use (:mod:`napixclient.otel`), the middleware also
continues the trace each request brings, in a ``SERVER`` span the
application runs under, and the error document carries ``trace_id`` and
``span_id``: see :doc:`/tracing`.
"""

from __future__ import annotations

import logging
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Tuple,
)

# MAX_ERROR_TEXT and MAX_FRAMES, shared with napixclient.asgi, are still
# importable from here.
from napixclient.catcher import (  # noqa: F401
    MAX_ERROR_TEXT,
    MAX_FRAMES,
    STATUS,
    Catcher,
    error_body,
    error_document,
    log_failure,
    request_part,
)
from napixclient.core.trace import instrumentation

__all__ = ["ExceptionsCatcher"]

_LOG = logging.getLogger(__name__)

_STATUS = f"{STATUS} Internal Server Error"

StartResponse = Callable[..., Callable[[bytes], Any]]
WSGIApp = Callable[[Dict[str, Any], StartResponse], Iterable[bytes]]


def _request_part(environ: Dict[str, Any]) -> Dict[str, str]:
    """The document's ``request``: method and path, never the query string
    (it may carry a token) nor any header."""
    raw = f"{environ.get('SCRIPT_NAME', '')}{environ.get('PATH_INFO', '')}"
    try:
        # WSGI strings are bytes decoded as latin-1 (PEP 3333); clients send UTF-8.
        path = raw.encode("latin-1").decode("utf-8", "replace")
    except (UnicodeError, AttributeError):
        path = raw
    return request_part(environ.get("REQUEST_METHOD", ""), path)


class _Exchange:
    """What one request's response has done so far: whether the server may
    still replace its status and headers (PEP 3333: until the first
    non-empty body block, or the first ``write()``)."""

    __slots__ = ("start_response", "body_started", "status")

    def __init__(self, start_response: StartResponse) -> None:
        self.start_response = start_response
        self.body_started = False
        # The status of the last start_response (int), for the trace.
        self.status: Optional[int] = None

    def wrapped_start_response(self, status: str, headers: List[Tuple[str, str]],
                               exc_info: Any = None) -> Callable[[bytes], Any]:
        write = self.start_response(status, headers, exc_info) if exc_info \
            else self.start_response(status, headers)
        code = str(status)[:3]
        self.status = int(code) if code.isdigit() else None

        def tracked_write(data: bytes) -> Any:
            if data:
                self.body_started = True
            return write(data)

        return tracked_write


class ExceptionsCatcher(Catcher):
    """WSGI middleware: an exception escaping ``app`` becomes a Napix error
    document (PROTOCOL.md, section 3, and "Writing the chain").

    :param app: the WSGI application to wrap (PEP 3333 callable).
    :param show_traceback: ``bool``; when true the document also has
        ``traceback`` (a list of ``{"filename", "line", "in", "call"}``, at
        most :data:`MAX_FRAMES`, innermost last), ``filename`` and ``line``.
        Leave it false outside development: they reveal file paths.
    :raises TypeError: if ``app`` is not callable.

    The answer to a failed request is ``500 Internal Server Error`` with
    ``Content-Type: application/json`` and the document::

        {"error_class": "KeyError", "error_text": "'size'",
         "request": {"method": "POST", "path": "/vm-ip/"}}

    ``request`` never holds the query string or headers, which may carry
    credentials. With OpenTelemetry in use (:mod:`napixclient.otel`), the
    document adds ``trace_id`` and ``span_id``, the ids of the span current
    when the request failed (32 and 16 lower-case hex digits), and the
    application runs in a ``SERVER`` span continuing the trace the request
    brought. When the exception is an :class:`~napixclient.HTTPError`,
    the document adds ``remote_call`` (the call made, already redacted by
    the client), ``remote_error`` (the far side's document as received: its
    decoded JSON, or its text) and, as a napixclient extension that readers
    may ignore, ``remote_status`` (the status that call got, when one came).

    If the document cannot be encoded as JSON (for instance a
    ``remote_error`` that is not JSON data), the answer is still a ``500``,
    in ``text/plain``. An exception raised once the body has started cannot
    change the response any more: it is logged on the ``napixclient.wsgi``
    logger and re-raised, so the server cuts the connection and the client
    sees a broken answer rather than a truncated one passed off as whole.
    Every exception turned into a 500 is also logged there, with its
    traceback. Exceptions that are not :class:`Exception` (``SystemExit``,
    ``GeneratorExit``, ``gevent.Timeout``...) pass through untouched.

    The body iterable's ``close()`` is called once the server closes the
    middleware's, as PEP 3333 requires; an exception from it is logged.
    """

    app: WSGIApp
    expected = "a WSGI callable"

    def __call__(self, environ: Dict[str, Any],
                 start_response: StartResponse) -> Iterable[bytes]:
        """Run the application for one request (the WSGI interface)."""
        otel = instrumentation()
        scope = None if otel is None else otel.serve(environ)
        if scope is None:
            return self._run(environ, start_response, None)
        # The span ends when the answer is whole: here for a list, when the
        # server closes the body otherwise.
        with scope:
            try:
                result = self._run(environ, start_response, scope)
            except BaseException as error:
                scope.end(None, error)
                raise
        if not isinstance(result, _GuardedBody):
            scope.end(scope.status, scope.error)
        return result

    def _run(self, environ: Dict[str, Any], start_response: StartResponse,
             scope: Any) -> Iterable[bytes]:
        exchange = _Exchange(start_response)
        try:
            result = self.app(environ, exchange.wrapped_start_response)
        except Exception as error:
            body = self._fail(environ, exchange, error)
            if scope is not None:
                scope.status, scope.error = exchange.status, error
            return body
        if isinstance(result, (list, tuple)):
            # Iterating a list cannot fail, and servers compute a
            # Content-Length from a one-item list.
            if scope is not None:
                scope.status = exchange.status
            return result
        return _GuardedBody(self, environ, exchange, result, scope)

    def document(self, environ: Dict[str, Any], error: BaseException) -> Dict[str, Any]:
        """The Napix error document for ``error`` raised while serving
        ``environ``.

        :param environ: the request's WSGI environ.
        :param error: the exception.
        :returns: a ``dict`` with ``error_class``, ``error_text`` and
            ``request``; ``remote_call``, ``remote_error`` and
            ``remote_status`` for an :class:`~napixclient.HTTPError` (written
            by :func:`napixclient.chain.write_document`); ``trace_id`` and
            ``span_id`` of the current span with OpenTelemetry in use;
            ``traceback``, ``filename`` and ``line`` with ``show_traceback``.
        """
        return error_document(error, _request_part(environ), self.show_traceback)

    def _answer(self, environ: Dict[str, Any], error: BaseException) -> Tuple[bytes, str]:
        """The body and ``Content-Type`` of the 500 for ``error``."""
        return error_body(lambda: self.document(environ, error), error, _LOG)

    def _fail(self, environ: Dict[str, Any], exchange: _Exchange,
              error: Exception) -> List[bytes]:
        """Start the 500 for ``error`` and return its body; re-raise
        ``error`` if the response has already started."""
        request = _request_part(environ)
        log_failure(_LOG, request, error, exchange.body_started)
        if exchange.body_started:
            raise error
        body, content_type = self._answer(environ, error)
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        try:
            # exc_info lets the server replace headers the app already set
            # (PEP 3333); it re-raises if they were already sent.
            exchange.start_response(_STATUS, headers, (type(error), error, error.__traceback__))
            exchange.status = STATUS
        except Exception:
            _LOG.error("%s %s: the server refused the 500 (response already sent)",
                       request["method"], request["path"], exc_info=True)
            raise error from None
        if request["method"] == "HEAD":
            return []
        return [body]


class _GuardedBody:
    """The application's body iterable, watched: a failure before the first
    non-empty block becomes the 500 document, a later one is logged and
    re-raised; ``close()`` reaches the application's iterable."""

    def __init__(self, catcher: ExceptionsCatcher, environ: Dict[str, Any],
                 exchange: _Exchange, result: Iterable[bytes], scope: Any = None) -> None:
        self._catcher = catcher
        self._environ = environ
        self._exchange = exchange
        self._result = result
        self._iterator: Optional[Iterator[bytes]] = None
        # Blocks left to send once the application failed, or None.
        self._replacement: Optional[List[bytes]] = None
        # The request's OpenTelemetry span and context, or None.
        self._scope = scope
        self._error: Optional[BaseException] = None

    def __iter__(self) -> "_GuardedBody":
        return self

    def __next__(self) -> bytes:
        scope = self._scope
        if scope is None:
            return self._next()
        # The application's iterable runs in the request's trace too.
        with scope:
            try:
                return self._next()
            except StopIteration:
                raise
            except BaseException as error:
                self._error = error
                raise

    def _next(self) -> bytes:
        if self._replacement is None:
            try:
                if self._iterator is None:
                    self._iterator = iter(self._result)
                block = next(self._iterator)
            except StopIteration:
                raise
            except Exception as error:
                # Nothing more comes from the application, whatever happens.
                self._replacement = []
                self._error = error
                self._replacement = self._catcher._fail(self._environ, self._exchange, error)
            else:
                if block:
                    self._exchange.body_started = True
                return block
        if self._replacement:
            return self._replacement.pop(0)
        raise StopIteration

    def close(self) -> None:
        """Close the application's iterable, if it has ``close()``; end the
        request's span."""
        try:
            self._close()
        finally:
            if self._scope is not None:
                self._scope.end(self._exchange.status, self._error)

    def _close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is None:
            return
        try:
            close()
        except Exception:
            request = _request_part(self._environ)
            _LOG.error("%s %s: closing the response body raised", request["method"],
                       request["path"], exc_info=True)
