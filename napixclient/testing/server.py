"""The test server: :class:`NapixTestServer`, a gevent WSGI server on
``127.0.0.1`` that records every request
(:class:`~napixclient.testing.recording.RecordedRequest`), checks
identities as a Napix server does (:mod:`napixclient.testing.signatures`),
answers the routes a test declares (:mod:`napixclient.testing.routes`),
counts requests and connections, and logs with secrets hidden
(:mod:`napixclient.testing.logs`)."""

from __future__ import annotations

import io
import logging
import socket
import time
from collections.abc import Iterable, Mapping
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Optional,
    Set,
    Tuple,
)

import gevent
import gevent.socket
from gevent.event import Event
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer

from napixclient.testing.logs import LOG, RedactingLog, address_text
from napixclient.testing.recording import (
    MAX_BODY,
    RecordedRequest,
    decoded_path,
    headers_of,
    json_of,
    read_body,
)
from napixclient.testing.routes import (
    Body,
    Handler,
    Route,
    RouteHeaders,
    make_route,
    respond,
    respond_error,
    unpack,
)
from napixclient.testing.signatures import (
    check_signature,
    check_token,
    parse_authorization,
    query_values,
    single_field,
)
from napixclient.testing.threads import HubThread

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "HANG_LIMIT",
    "RAW_TARGET_KEY",
    "RECORD_KEY",
    "STOP_TIMEOUT",
    "NapixTestServer",
]

#: Longest time, in seconds, a ``hang=True`` route holds a request. A test
#: that forgets to stop its server must not leave a greenlet behind forever.
HANG_LIMIT = 300.0

#: Seconds :meth:`NapixTestServer.stop` waits for handlers before killing them.
STOP_TIMEOUT = 1.0

#: WSGI environ key holding the request target exactly as received (``str``,
#: latin-1 decoded from the request line). ``RAW_URI`` holds the same value,
#: as gunicorn does, for applications passed as ``app=``.
RAW_TARGET_KEY = "napixclient.raw_target"
#: WSGI environ key holding the :class:`~napixclient.testing.RecordedRequest`, for ``app=``.
RECORD_KEY = "napixclient.request"

#: Private environ key: the connection's socket.
_SOCKET_KEY = "napixclient.socket"
#: Seconds between checks while a request is held by latency or hang.
_POLL = 0.5

#: The first byte of a TLS record carrying a handshake (RFC 8446, 5.1).
_TLS_HANDSHAKE = b"\x16"
_NOT_HTTP_ANSWER = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"

WSGIApp = Callable[[Dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _DropConnection(Exception):
    """Raised inside the WSGI app to close the connection with no answer."""


class _Handler(WSGIHandler):
    """pywsgi handler that keeps the raw request target, counts requests in
    flight, can close a connection without answering, and logs what is not
    HTTP on one clean line."""

    def read_requestline(self) -> str:
        # A TLS client's first byte is a handshake record (0x16), which no
        # HTTP request line starts with. Waiting for a line end that may
        # never come would hold the client until its timeout, and the
        # ClientHello would reach the log as binary: close at once, and say
        # what it probably was.
        try:
            first = self.rfile.peek(1)[:1]
        except (AttributeError, ValueError):
            first = b""
        if first == _TLS_HANDSHAKE:
            self.server.error_log.write(
                f"not HTTP (TLS handshake?) from {address_text(self.client_address)} "
                f"on {self.server.owner.host}; closing the connection\n")
            try:
                # What any plain HTTP server answers: the client's TLS then
                # fails with "wrong version number", the usual sign of https
                # spoken to an http port, rather than with a bare EOF.
                self.socket.sendall(_NOT_HTTP_ANSWER)
            except OSError:
                pass
            return ""
        line: str = super().read_requestline()
        return line

    def log_error(self, msg: str, *args: Any) -> None:
        # pywsgi's own puts the socket's repr first and the bad request line
        # as it came; the error log makes it one line of ASCII.
        try:
            message = msg % args if args else msg
        except Exception:
            message = f"{msg!r} {args!r}"
        self.server.error_log.write(
            f"bad request from {address_text(self.client_address)}: {message}\n")

    def get_environ(self) -> Dict[str, Any]:
        env: Dict[str, Any] = super().get_environ()
        # PATH_INFO is percent-decoded, but a signature covers the target
        # exactly as sent, so keep the request line's own spelling.
        env[RAW_TARGET_KEY] = self.path
        env.setdefault("RAW_URI", self.path)
        # Lets a held request notice that its client closed the connection.
        env[_SOCKET_KEY] = self.socket
        return env

    def handle_one_response(self) -> None:
        owner: NapixTestServer = self.server.owner
        owner._request_started()
        try:
            super().handle_one_response()
        finally:
            owner._request_finished()

    def run_application(self) -> None:
        try:
            super().run_application()
        except _DropConnection:
            # Caught here, before handle_one_response sees it: there it would
            # become a 500 written to the client, and a drop sends no byte.
            # handle() closes the socket once it sees close_connection.
            self.close_connection = True
            # The access log would otherwise show the previous status.
            self._orig_status = "dropped"


class _Server(WSGIServer):
    """pywsgi server that counts TCP connections and keeps their sockets so
    that stop() can close idle keep-alive connections at once."""

    owner: NapixTestServer

    def handle(self, sock: Any, address: Any) -> None:
        try:
            # pywsgi writes the headers and the body in two sends; with
            # Nagle's algorithm the body then waits for the client's delayed
            # ACK, about 40 ms per response on a reused connection.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.owner._connection_opened(sock)
        try:
            super().handle(sock, address)
        finally:
            self.owner._connection_closed(sock)


class NapixTestServer:
    """A Napix-like HTTP server on ``127.0.0.1`` for tests, served by the
    gevent hub of the calling thread, or from a thread of its own for
    asyncio and blocking code (``start(thread=True)``, ``async with``).

    Every request is recorded in :attr:`requests`, then authenticated as a
    Napix server does (PROTOCOL.md, sections 1 and 2), then answered by the
    matching :meth:`route`, else by ``app``, else with a 404 (or a 405 when
    the path has routes for other methods only). Authentication failures
    answer a Napix JSON error document: 401 when nothing identifies the
    request, 403 when a signature, a signed field or a token is wrong. The
    body never repeats a signature, token or key.

    :param users: ``Mapping[str, str]`` of login to secret key; default
        ``{"root": "toor"}``.
    :param tokens: ``Iterable[str]`` of opaque tokens accepted as is in the
        token parameter (besides ``login:hex(HMAC-SHA256(key, login))``).
    :param token_parameter: ``str``, the query parameter carrying a token.
    :param require_auth: ``bool``; when false, a request with neither an
        ``Authorization`` header nor a token passes (a present but wrong one
        still gets a 403).
    :param app: a WSGI application, or ``None``. Requests that pass
        authentication and match no route go to it; its environ has
        ``wsgi.input`` holding the whole body, ``REMOTE_USER`` set to the
        login, ``RAW_URI`` and ``napixclient.raw_target`` the raw target,
        ``napixclient.request`` the :class:`~napixclient.testing.RecordedRequest`.
    :param reject_replayed_nonces: ``bool``; refuse (403) a signed request
        whose nonce an accepted request already used, or that has no nonce.
    :param max_clock_skew: ``float`` seconds, or ``None`` for no check;
        refuse (403) a signed request whose timestamp is farther than this
        from the server's clock, or that has no valid timestamp.
    :raises TypeError: if ``users`` is not a mapping of ``str`` to ``str``,
        ``tokens`` not strings, or ``app`` not callable.
    :raises ValueError: if ``token_parameter`` is empty or ``max_clock_skew``
        is negative.

    ``repr()`` shows the URL and the logins, never a key or token.

    The server logs on the ``napixclient.testing`` logger: each request at
    ``DEBUG`` (pywsgi's access line), and what is not a valid request at
    ``WARNING``, each record one line of ASCII with tokens and signatures
    hidden. A client speaking TLS to it (``https://`` to this plain HTTP
    server) gets a ``400`` and a closed connection at once, which its TLS
    layer reports as a wrong version number, and the log one line: ``not
    HTTP (TLS handshake?) from 127.0.0.1:PORT on 127.0.0.1:PORT; closing the
    connection``.
    """

    def __init__(
        self,
        users: Optional[Mapping[str, str]] = None,
        tokens: Iterable[str] = (),
        token_parameter: str = "token",
        require_auth: bool = True,
        app: Optional[WSGIApp] = None,
        reject_replayed_nonces: bool = True,
        max_clock_skew: Optional[float] = None,
    ) -> None:
        if users is None:
            users = {"root": "toor"}
        if not isinstance(users, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in users.items()
        ):
            raise TypeError("NapixTestServer: users must map str logins to str keys")
        if isinstance(tokens, str):
            raise TypeError("NapixTestServer: tokens must be an iterable of str, not a str")
        token_tuple = tuple(tokens)
        if not all(isinstance(t, str) and t for t in token_tuple):
            raise TypeError("NapixTestServer: tokens must be non-empty str values")
        if not isinstance(token_parameter, str) or not token_parameter:
            raise ValueError("NapixTestServer: token_parameter must be a non-empty str")
        if app is not None and not callable(app):
            raise TypeError("NapixTestServer: app must be a WSGI callable or None")
        if max_clock_skew is not None and max_clock_skew < 0:
            raise ValueError("NapixTestServer: max_clock_skew must be >= 0 seconds")

        self._users: Dict[str, str] = dict(users)
        self._tokens = token_tuple
        self.token_parameter = token_parameter
        self.require_auth = bool(require_auth)
        self._app = app
        self.reject_replayed_nonces = bool(reject_replayed_nonces)
        self.max_clock_skew = max_clock_skew

        #: Every request received, in arrival order (a plain ``list``: call
        #: ``requests.clear()`` to forget them).
        self.requests: List[RecordedRequest] = []
        self._routes: Dict[Tuple[str, Optional[str]], Route] = {}
        self._seen_nonces: Set[str] = set()
        self._stopping = Event()
        self._server: Optional[_Server] = None
        self._pool: Optional[Pool] = None
        self._port: Optional[int] = None
        self._thread: Optional[HubThread] = None
        self._sockets: Set[Any] = set()
        self._in_flight = 0
        self._max_in_flight = 0
        self._open_connections = 0
        self._max_open_connections = 0

    # -- lifecycle ---------------------------------------------------------

    def start(self, thread: bool = False) -> NapixTestServer:
        """Bind ``127.0.0.1`` on an ephemeral port and start serving.

        :param thread: ``bool``. ``False`` (the default): serve from the
            gevent hub of the calling thread, which runs while gevent code
            there waits (a :class:`~napixclient.Client`, a
            :class:`~napixclient.ClientPool`, ``gevent.sleep``). ``True``:
            serve from a thread of its own with a gevent hub of its own
            (:class:`~napixclient.testing.threads.HubThread`), for callers
            whose thread does not run a gevent hub while it waits: an
            asyncio event loop (:class:`~napixclient.aio.AsyncClient`),
            plain blocking code such as :mod:`requests`. Nothing is
            monkey-patched either way. With a thread, route handlers and
            ``app`` run in the server's thread, and :meth:`stop` waits for
            that thread to end.
        :returns: ``self``, listening when this returns.
        :raises RuntimeError: if the server is running ("already started"),
            or was stopped: a stopped server cannot be restarted (its port
            may be taken by then); make a new one.
        :raises OSError: if the socket cannot be bound.
        """
        self._check_not_stopped()
        if self._server is not None or self._thread is not None:
            raise RuntimeError("NapixTestServer: already started")
        if thread:
            serving = HubThread(self._serve, self._stop_serving, name="NapixTestServer")
            self._thread = serving
            try:
                serving.start()
            except BaseException:
                self._thread = None
                raise
            return self
        self._serve()
        return self

    def _serve(self) -> None:
        """Bind and start serving in the current thread's gevent hub."""
        log = RedactingLog(logging.DEBUG, self.token_parameter, self._tokens)
        error_log = RedactingLog(logging.WARNING, self.token_parameter, self._tokens)
        # A pool, unlike pywsgi's default bare spawn, lets stop() wait for
        # and then kill the connection handlers.
        pool = Pool()
        server = _Server(
            ("127.0.0.1", 0),
            self._wsgi,
            spawn=pool,
            handler_class=_Handler,
            log=log,
            error_log=error_log,
            # Without SERVER_NAME pywsgi resolves the bound address's name.
            environ={"SERVER_NAME": "127.0.0.1"},
        )
        server.owner = self
        server.start()
        self._server = server
        self._pool = pool
        self._port = int(server.server_port)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop serving: close the listening socket and every open
        connection, and wake requests waiting in a ``hang`` or ``latency``
        route, which then close their connection without answering.

        Calling it again, or before :meth:`start`, does nothing. Called from
        a route handler or ``app`` of this server, it does not wait for the
        calling request, but that request's answer is lost with its
        connection.

        A server started with ``thread=True`` is stopped in its own thread;
        this waits for that thread to end (unless called from a route
        handler, which runs in that thread).

        :param timeout: seconds to wait for connection handlers to finish
            before killing them.
        :raises RuntimeError: if a server's thread did not end within
            ``2 * timeout + 5`` seconds.
        """
        if self._thread is not None:
            self._thread.stop(timeout)
            return
        self._stop_serving(timeout)

    def _stop_serving(self, timeout: float) -> None:
        """:meth:`stop`, in the gevent hub the server serves from."""
        server, pool = self._server, self._pool
        if server is None or pool is None or self._stopping.is_set():
            return
        self._stopping.set()
        server.close()
        for sock in list(self._sockets):
            try:
                # shutdown, not close: it wakes a handler blocked reading the
                # next keep-alive request, and lets that handler close its
                # own socket in its own greenlet.
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        # A handler of this server calling stop() must not wait for, or
        # kill, itself.
        current = gevent.getcurrent()
        others = [g for g in list(pool.greenlets) if g is not current]
        gevent.joinall(others, timeout=timeout)
        gevent.killall(others, block=True, timeout=timeout)

    def _check_not_stopped(self) -> None:
        if self._stopping.is_set():
            raise RuntimeError("NapixTestServer: stopped, and a stopped server cannot be "
                               "restarted; make a new NapixTestServer")

    def __enter__(self) -> NapixTestServer:
        """Start the server unless it is already started; return it.

        :raises RuntimeError: if the server was stopped (see :meth:`start`).
        """
        self._check_not_stopped()
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[type],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        """Stop the server."""
        self.stop()

    async def __aenter__(self) -> NapixTestServer:
        """Start the server in a thread of its own (``start(thread=True)``)
        unless it was started so; return it. For asyncio code::

            async with NapixTestServer() as server:
                server.route("/capacity", body={"slots": 3})
                async with AsyncClient(server.host, auth) as client:
                    ...

        :raises RuntimeError: if the server was stopped, or was started in
            the calling thread's gevent hub, which never runs while an event
            loop waits (the test would wait for its timeouts).
        """
        self._check_not_stopped()
        if self._thread is None and self._server is not None:
            raise RuntimeError(
                "NapixTestServer: started in this thread's gevent hub, which does not run "
                "while an asyncio event loop waits; start it with start(thread=True), or let "
                "'async with' start it")
        if self._thread is None:
            self.start(thread=True)
        return self

    async def __aexit__(
        self,
        exc_type: Optional[type],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        """Stop the server, waiting for its thread in an executor thread so
        that the event loop goes on meanwhile (asyncio only)."""
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, self.stop)

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "not started"
        state = "stopped" if self._stopping.is_set() else (
            "running" if self._server is not None else "new"
        )
        if self._thread is not None and state == "running":
            state = "running in a thread"
        return f"NapixTestServer({where}, users={sorted(self._users)!r}, {state})"

    # -- addresses ---------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port the server listens on (``int``).

        :raises RuntimeError: before :meth:`start`.
        """
        if self._port is None:
            raise RuntimeError("NapixTestServer: not started")
        return self._port

    @property
    def host(self) -> str:
        """``"127.0.0.1:PORT"``: what to pass to :class:`napixclient.Client`,
        and the ``Host`` header a client sends.

        :raises RuntimeError: before :meth:`start`.
        """
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``"http://127.0.0.1:PORT"``.

        :raises RuntimeError: before :meth:`start`.
        """
        return f"http://{self.host}"

    # -- counters ----------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests being handled right now (``int``)."""
        return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """Most requests handled at once since start or
        :meth:`reset_counters` (``int``)."""
        return self._max_in_flight

    @property
    def open_connections(self) -> int:
        """TCP connections open right now (``int``)."""
        return self._open_connections

    @property
    def max_open_connections(self) -> int:
        """Most TCP connections open at once since start or
        :meth:`reset_counters` (``int``)."""
        return self._max_open_connections

    def reset_counters(self) -> None:
        """Restart the peaks :attr:`max_in_flight` and
        :attr:`max_open_connections` from the current values. Recorded
        :attr:`requests` and seen nonces are kept."""
        self._max_in_flight = self._in_flight
        self._max_open_connections = self._open_connections

    def _request_started(self) -> None:
        self._in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _request_finished(self) -> None:
        self._in_flight -= 1

    def _connection_opened(self, sock: Any) -> None:
        self._sockets.add(sock)
        self._open_connections += 1
        self._max_open_connections = max(self._max_open_connections, self._open_connections)

    def _connection_closed(self, sock: Any) -> None:
        self._sockets.discard(sock)
        self._open_connections -= 1

    # -- routes ------------------------------------------------------------

    def route(
        self,
        path: str,
        method: Optional[str] = None,
        *,
        status: int = 200,
        body: Body = None,
        headers: Optional[RouteHeaders] = None,
        latency: float = 0.0,
        hang: bool = False,
        drop: bool = False,
        handler: Optional[Handler] = None,
    ) -> NapixTestServer:
        """Declare how to answer ``method`` on ``path``; a later call for the
        same path and method replaces an earlier one.

        A route matches the request's path without its query, either
        percent-decoded (``"/café/"``) or as sent (``"/caf%C3%A9/"``). A route
        for one method wins over one for any method.

        :param path: ``str`` starting with ``/``.
        :param method: ``str`` HTTP method, or ``None`` for any method.
        :param status: ``int`` HTTP status, 100 to 599.
        :param body: the answer: ``dict``/``list`` -> JSON
            (``application/json``), ``str`` -> ``text/plain; charset=utf-8``,
            ``bytes`` -> ``application/octet-stream``, ``None`` -> empty.
        :param headers: extra response headers, a mapping or ``(name, value)``
            pairs; a ``Content-Type`` here replaces the default one.
        :param latency: ``float`` seconds to wait before answering (cut
            short by :meth:`stop`, which then drops the connection).
        :param hang: ``bool``; never answer: hold the request until
            :meth:`stop` (at most :data:`HANG_LIMIT` seconds), then close the
            connection without a response.
        :param drop: ``bool``; close the TCP connection without sending a
            single byte (after ``latency``).
        :param handler: ``Callable[[RecordedRequest], result]`` called per
            request (after ``latency``); ``result`` is a body, a
            ``(status, body)`` pair or a ``(status, body, headers)`` triple,
            replacing ``status``/``body`` and adding to ``headers``. If it
            raises, the answer is a 500 Napix JSON error document.
        :returns: ``self``, so calls chain.
        :raises ValueError: for a path not starting with ``/``, a status out
            of range, a negative latency, or both ``hang`` and ``drop``.
        :raises TypeError: for a body of another type, or a handler that is
            not callable.
        """
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError("route: path must be a str starting with '/'")
        self._routes[(path, method.upper() if method else None)] = make_route(
            status, body, headers, latency, hang, drop, handler)
        return self

    def _find_route(self, paths: Tuple[str, ...], method: str) -> Tuple[Optional[Route], bool]:
        """Return the route for one of ``paths`` and ``method``, and whether
        any route exists for one of ``paths`` (to tell 405 from 404)."""
        for candidate in paths:
            found = self._routes.get((candidate, method)) or self._routes.get((candidate, None))
            if found is not None:
                return found, True
        known = any(p in paths for p, _ in self._routes)
        return None, known

    # -- WSGI --------------------------------------------------------------

    def _wsgi(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET"))
        query = environ.get("QUERY_STRING", "")
        raw_target = environ.get(RAW_TARGET_KEY) or (
            environ.get("PATH_INFO", "/") + (f"?{query}" if query else "")
        )
        raw_path = raw_target.partition("?")[0]
        path = decoded_path(environ)

        body = read_body(environ)
        if body is None:
            return respond_error(start_response, method, path, 413, "RequestEntityTooLarge",
                                  f"request body larger than {MAX_BODY} bytes")
        authorization = environ.get("HTTP_AUTHORIZATION")
        fields = parse_authorization(authorization) if authorization else None
        login = single_field(fields, "login") if fields else None
        nonce = single_field(fields, "nonce") if fields else None
        token = query_values(query, self.token_parameter)
        if login is None and authorization is None and len(token) == 1:
            token_login, sep, _ = token[0].rpartition(":")
            login = token_login if sep else None

        record = RecordedRequest(
            method=method,
            path=raw_target,
            headers=headers_of(environ),
            body=body,
            login=login,
            nonce=nonce,
            json=json_of(environ, body),
            secret_parameters=(self.token_parameter,),
        )
        self.requests.append(record)

        refusal = self._authenticate(environ, method, raw_target, authorization, fields, token)
        if refusal is not None:
            code, text = refusal
            return respond_error(start_response, method, path, code,
                                  "Unauthorized" if code == 401 else "Forbidden", text)

        route, known = self._find_route((path, raw_path), method)
        if route is not None:
            return self._answer(route, record, environ, start_response)
        if self._app is not None:
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            # The body was de-chunked while reading it for the record.
            environ.pop("HTTP_TRANSFER_ENCODING", None)
            environ[RECORD_KEY] = record
            if record.login is not None and (fields is not None or token):
                environ["REMOTE_USER"] = record.login
            return self._app(environ, start_response)
        if known:
            allowed = sorted({m for p, m in self._routes if p in (path, raw_path) and m})
            return respond(
                start_response, method, 405, f"{method} not allowed on `{path}`",
                [("Allow", ", ".join(allowed))],
            )
        return respond(start_response, method, 404, f"`{path}` not found")

    def _authenticate(
        self,
        environ: Dict[str, Any],
        method: str,
        raw_target: str,
        authorization: Optional[str],
        fields: Optional[Dict[str, List[str]]],
        token: List[str],
    ) -> Optional[Tuple[int, str]]:
        """Check the request's identity as a Napix server does.

        :returns: ``None`` if the request may go on, else ``(status, text)``.
            The text never holds a signature, token or key.
        """
        if authorization is not None:
            return check_signature(
                authorization, fields, method, raw_target, environ.get("HTTP_HOST"),
                self._users, max_clock_skew=self.max_clock_skew,
                seen_nonces=self._seen_nonces if self.reject_replayed_nonces else None)
        if token:
            return check_token(token, self._users, self._tokens, self.token_parameter)
        if self.require_auth:
            return 401, (
                "authentication required: no Authorization header and no "
                f"{self.token_parameter!r} query parameter"
            )
        return None

    def _hold(self, sock: Any, seconds: float) -> bool:
        """Wait ``seconds`` before answering a request on ``sock``.

        :param sock: the request's connection (a gevent socket), or ``None``
            not to watch it.
        :param seconds: how long to wait.
        :returns: ``True`` when the time has passed; ``False`` as soon as
            :meth:`stop` runs or the client closes the connection (a client
            that gave up must not stay counted in :attr:`in_flight` and
            :attr:`open_connections`).
        """
        deadline = time.monotonic() + seconds
        # Each pass waits at least min(remaining, _POLL) seconds, so the
        # loop ends by the deadline; _POLL only bounds how late a missed
        # wake-up from stop() could be noticed.
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            if sock is None:
                self._stopping.wait(timeout=remaining)
                continue
            # The hub's watcher, for any descriptor (select() refuses those
            # from 1,024 on).
            try:
                gevent.socket.wait_read(sock.fileno(), timeout=min(remaining, _POLL))
            except socket.timeout:
                continue
            except (OSError, ValueError):
                return False  # closed meanwhile
            try:
                peeked = sock.recv(1, socket.MSG_PEEK)
            except OSError:
                return False
            if not peeked:
                return False
            # A pipelined request keeps the socket readable: stop watching
            # it rather than spin.
            sock = None
        return False

    def _answer(
        self,
        route: Route,
        record: RecordedRequest,
        environ: Dict[str, Any],
        start_response: Callable[..., Any],
    ) -> Iterable[bytes]:
        """Produce ``route``'s answer to ``record``.

        :raises _DropConnection: for ``hang`` and ``drop`` routes, and when
            :meth:`stop` or the client closing interrupts the latency.
        """
        method, path = record.method, decoded_path(environ)
        sock = environ.get(_SOCKET_KEY)
        if route.hang:
            self._hold(sock, HANG_LIMIT)
            raise _DropConnection()
        if route.latency and not self._hold(sock, route.latency):
            raise _DropConnection()
        if route.drop:
            raise _DropConnection()
        status, body, headers = route.status, route.body, list(route.headers)
        if route.handler is not None:
            try:
                status, body, extra = unpack(route.handler(record), status)
            except Exception as exc:
                LOG.error("route handler for %s %s raised", method, path, exc_info=True)
                return respond_error(start_response, method, path, 500,
                                      type(exc).__name__, str(exc))
            headers += extra
        return respond(start_response, method, status, body, headers)
