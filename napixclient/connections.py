"""The connection manager: every socket a pool opens, keeps and closes.

A :class:`ConnectionManager` is owned by a :class:`~napixclient.ClientPool`
and shared by all of its :class:`~napixclient.Client` objects (a lone
``Client`` makes its own). Nothing else opens a socket. It caps:

* ``simultaneous``, per origin: the most requests running at once to one
  origin (scheme, host, port), and so the most connections open to it
  (through a proxy or not: a proxy is only a way of reaching the origin);
* ``max_connections``, in total: the most sockets open at once, idle
  kept-alive ones included, those to proxies too. The default follows the process's soft limit
  on open files (:func:`default_max_connections`), so that a probe of
  thousands of hosts never fails for want of a file descriptor.

A request first takes a :class:`Lease` (a place under both caps) with
:meth:`ConnectionManager.acquire` or :meth:`ConnectionManager.reserve`;
requests beyond a cap wait their turn, in submission order for each origin.
When the total cap is reached and an idle connection exists to any origin,
the least recently used one is closed to make room rather than waiting.
The wait for a lease is not part of a request's timeout.

On its lease a request sends and reads over an idle connection to its
origin, or dials a new one (:mod:`napixclient.dialing`), directly or
through the origin's proxy; the answer is read
by a parser of :mod:`napixclient.http11`. A connection goes back to the
idle list only when its answer was read whole and both sides keep it alive;
one that failed, timed out or was interrupted (a ``gevent.Timeout``, a
killed greenlet) is closed, so a half-read connection never serves another
request. An idle connection is closed after ``keepalive_expiry`` seconds.

Failures are :mod:`napixclient.failures`, translated where they happen.

Trace events
------------
A ``trace`` callable, ``trace(event, info)``, receives named events as they
happen; ``info`` is a ``dict`` with ``"time"`` (:func:`time.monotonic`
seconds), ``"origin"`` (``"scheme://host:port"``), ``"request"`` (the
secret-free :class:`~napixclient.RequestRecord`, or ``None`` for events of
an idle connection) and ``"connection"`` (a number naming the connection
within the manager, when there is one), plus:

============================ =================================================
event                        further keys
============================ =================================================
``request.queued``           the request waits for a place under a cap
``connection.reused``        ``idle`` (seconds the connection was idle)
``connection.opened``        ``address`` (the peer: the proxy, when there is
                             one), ``seconds`` (to connect, through the
                             proxy's tunnel and TLS included), and ``proxy``
                             (``"scheme://host:port"``, no credentials) when
                             the connection goes through a proxy
``connection.tls``           ``version`` (e.g. ``"TLSv1.3"``), ``seconds``
``request.sent``             ``bytes``
``response.headers``         ``status``: the status line and the fields were
                             read (for small answers, the first byte)
``response.done``            ``status``, ``bytes`` (of body), ``reusable``
``request.retry``            ``failure`` (its text) for a transport failure,
                             or ``status`` for a status retry; ``wait``
                             (seconds)
``request.failed``           ``failure`` (its text), ``error_class``
``connection.closed``        ``reason``: ``"expired"``, ``"evicted"`` (to make
                             room under ``max_connections``), ``"not
                             reusable"`` (the server closed it or asked to),
                             ``"failed"``, ``"dropped while idle"``,
                             ``"closed"`` (the manager was closed)
============================ =================================================

The DEBUG log lines of this module are written from the same events. No
event holds a key, token, signature or proxy credential: requests are named
by their record, proxies by ``scheme://host:port``.
An exception raised by ``trace`` is logged and otherwise ignored.
"""

from __future__ import annotations

import itertools
import logging
import select
import socket
import ssl
import time
from collections import OrderedDict, deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import gevent
import gevent.event

from napixclient.dialing import Dialer, Origin, status_text, tls_reason
from napixclient.failures import (
    ConnectionBroken,
    ProxyFailed,
    ReadTimedOut,
    TransportFailure,
)
from napixclient.http11 import BROKE, Answer, Parser
from napixclient.response import RequestRecord
from napixclient.retry import RetryPolicy

__all__ = [
    "DEFAULT_KEEPALIVE_EXPIRY",
    "Connection",
    "ConnectionManager",
    "Lease",
    "TraceHook",
    "default_max_connections",
]

_log = logging.getLogger(__name__)

#: ``trace(event, info)``: see the module's documentation.
TraceHook = Callable[[str, Dict[str, Any]], None]

#: Seconds an idle connection is kept: 5 s, as httpx does, and below the
#: idle timeouts of the common servers but gunicorn's (2 s), whose early
#: closes the single stale-connection retry covers.
DEFAULT_KEEPALIVE_EXPIRY = 5.0

# Retries nothing but the single stale kept-alive connection.
_NO_RETRY = RetryPolicy()


def default_max_connections() -> int:
    """The default ``max_connections``: the soft limit on open files
    (``RLIMIT_NOFILE``) less a headroom of a quarter of it (at least 32) for
    the rest of the program (its files, logs, listening sockets), and at
    least 8. With the common soft limit of 1,024 that is 768.

    Read when a manager is made, so a program (or the ``napix`` command)
    that raised its limit first gets a larger default. Where the limit
    cannot be read (no :mod:`resource` module), 768.
    """
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        soft = 1024
    if soft == getattr(resource, "RLIM_INFINITY", -1) or soft < 0 or soft > 1 << 20:
        soft = 1 << 20
    return max(8, soft - max(32, soft // 4))


def _dropped(sock: Any) -> bool:
    """Whether an idle socket is readable: the server closed it, or sent
    bytes nobody asked for; either way it cannot carry a request."""
    try:
        if getattr(sock, "pending", None) is not None and sock.pending():
            return True
        readable, _, _ = select.select([sock.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class Connection:
    """One socket to one origin, kept alive between requests.

    :ivar number: names it within its manager (``int``), for trace events.
    :ivar origin: the :class:`~napixclient.dialing.Origin`.
    :ivar requests: how many requests it carried (``int``).
    :ivar idle_since: :func:`time.monotonic` when it last went idle.
    """

    __slots__ = ("sock", "origin", "number", "requests", "idle_since")

    def __init__(self, sock: Any, origin: Origin, number: int) -> None:
        self.sock = sock
        self.origin = origin
        self.number = number
        self.requests = 0
        self.idle_since = 0.0

    def close(self) -> None:
        """Close the socket (harmless twice)."""
        try:
            self.sock.close()
        except OSError:
            pass

    def __repr__(self) -> str:
        return f"<Connection #{self.number} {self.origin}>"


class _OriginState:
    """What the manager keeps per origin."""

    __slots__ = ("origin", "limit", "active", "idle", "waiting", "blocked")

    def __init__(self, origin: Origin, limit: int) -> None:
        self.origin = origin
        self.limit = limit
        self.active = 0                      # leases held
        self.idle: List[Connection] = []     # most recently used last
        self.waiting: Deque["_Ticket"] = deque()
        self.blocked = False                 # in the manager's blocked queue


class _Ticket:
    """A request waiting for a lease: ``grant`` is called with it."""

    __slots__ = ("grant", "cancelled")

    def __init__(self, grant: Callable[["Lease"], None]) -> None:
        self.grant = grant
        self.cancelled = False


class Lease:
    """A place under the caps, held by one request from its start to its end.

    Holds at most one connection at a time (a retry closes one and dials
    another under the same lease). Release it exactly once, with
    :meth:`release`, whatever happened.
    """

    __slots__ = ("_manager", "_state", "connection", "_released")

    def __init__(self, manager: "ConnectionManager", state: _OriginState,
                 connection: Optional[Connection]) -> None:
        self._manager = manager
        self._state = state
        self.connection = connection
        self._released = False

    @property
    def origin(self) -> Origin:
        """The :class:`~napixclient.dialing.Origin` this lease is for."""
        return self._state.origin

    def release(self) -> None:
        """Give the place back. The connection the lease still holds (one
        whose last answer was read whole and may be kept alive) goes idle;
        a failed one was closed already. A second call does nothing."""
        if self._released:
            return
        self._released = True
        self._manager._release(self)


class ConnectionManager:
    """Opens, keeps and closes the connections of a pool (see the module).

    :param max_connections: the most sockets open at once across all
        origins, idle ones included (``int`` >= 1), or ``None`` for
        :func:`default_max_connections`.
    :param keepalive_expiry: seconds (``float`` > 0) an idle connection is
        kept before it is closed.
    :param trace: ``trace(event, info)``, called for each event (see the
        module), or ``None``.
    :raises ValueError: for a bad ``max_connections``, ``keepalive_expiry``
        or ``trace``.
    """

    def __init__(self, max_connections: Optional[int] = None,
                 keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY,
                 trace: Optional[TraceHook] = None) -> None:
        if max_connections is None:
            max_connections = default_max_connections()
        if (not isinstance(max_connections, int) or isinstance(max_connections, bool)
                or max_connections < 1):
            raise ValueError(f"max_connections must be an int >= 1, got {max_connections!r}")
        if (not isinstance(keepalive_expiry, (int, float)) or isinstance(keepalive_expiry, bool)
                or not 0 < keepalive_expiry < float("inf")):
            raise ValueError(f"keepalive_expiry must be seconds > 0, got {keepalive_expiry!r}")
        if trace is not None and not callable(trace):
            raise ValueError(f"trace must be a callable trace(event, info), got {trace!r}")
        self.max_connections = max_connections
        self.keepalive_expiry = float(keepalive_expiry)
        self.trace = trace
        self.dialer = Dialer()
        self._origins: Dict[Origin, _OriginState] = {}
        # Every idle connection, least recently used first.
        self._idle: "OrderedDict[Connection, None]" = OrderedDict()
        # Sockets open, or places granted to dial one: idle + leased.
        self._open = 0
        # Origins with waiters that have room under their own cap but found
        # none under max_connections, in the order they were blocked.
        self._blocked: Deque[_OriginState] = deque()
        self._numbers = itertools.count(1)
        self._reaper: Optional[gevent.Greenlet] = None
        self._closed = False

    # -- figures ------------------------------------------------------------

    @property
    def open_connections(self) -> int:
        """Sockets open now, and places granted to open one (``int``)."""
        return self._open

    @property
    def idle_connections(self) -> int:
        """Idle kept-alive connections now (``int``)."""
        return len(self._idle)

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return (f"<ConnectionManager open={self._open} idle={len(self._idle)} "
                f"max_connections={self.max_connections}{state}>")

    # -- events ---------------------------------------------------------------

    def tracing(self) -> bool:
        """Whether events are wanted now: a ``trace`` hook, or this module's
        logger enabled for DEBUG."""
        return self.trace is not None or _log.isEnabledFor(logging.DEBUG)

    def emit(self, event: str, origin: Origin, request: Optional[RequestRecord],
             connection: Optional[Connection] = None, **info: Any) -> None:
        """Send ``event`` to the trace hook and the DEBUG log (see the module)."""
        info.update(time=time.monotonic(), origin=str(origin), request=request,
                    connection=None if connection is None else connection.number)
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s", _describe(event, info))
        if self.trace is not None:
            try:
                self.trace(event, info)
            except Exception:
                _log.warning("the trace hook failed on %s", event, exc_info=True)

    # -- leases -----------------------------------------------------------------

    def _state(self, origin: Origin, limit: int) -> _OriginState:
        state = self._origins.get(origin)
        if state is None:
            state = self._origins[origin] = _OriginState(origin, limit)
        return state

    def reserve(self, origin: Origin, limit: int, grant: Callable[[Lease], None],
                request: Optional[RequestRecord] = None) -> Callable[[], None]:
        """Ask for a lease without waiting: ``grant(lease)`` is called when
        one is free, at once if one is free now.

        :param origin: where the request goes.
        :param limit: the origin's cap (``simultaneous``), from the first
            request to it.
        :param grant: called with the :class:`Lease`, in the greenlet that
            freed it (so it must not block: start a greenlet).
        :param request: for the ``request.queued`` event.
        :returns: a function that withdraws the request if it is still
            waiting (a granted lease must be released instead).
        :raises RuntimeError: if the manager is closed.
        """
        if self._closed:
            raise RuntimeError("the connection manager is closed")
        state = self._state(origin, limit)
        ticket = _Ticket(grant)
        state.waiting.append(ticket)
        self._serve(state)
        if state.waiting and state.waiting[-1] is ticket and self.tracing():
            self.emit("request.queued", origin, request)

        def withdraw() -> None:
            ticket.cancelled = True
        return withdraw

    def acquire(self, origin: Origin, limit: int,
                request: Optional[RequestRecord] = None) -> Lease:
        """Wait (yielding to the hub) for a lease, in submission order.

        :raises RuntimeError: if the manager is closed, or closes meanwhile.
        """
        if self._closed:
            raise RuntimeError("the connection manager is closed")
        state = self._state(origin, limit)
        if not state.waiting:
            # Nobody waits before this request: no ticket needed.
            lease = self._grant(state)
            if lease is not None:
                return lease
        result: gevent.event.AsyncResult = gevent.event.AsyncResult()
        withdraw = self.reserve(origin, limit, result.set, request)
        try:
            return result.get()  # type: ignore[no-any-return]
        except BaseException:
            withdraw()
            if result.ready() and result.successful():
                result.value.release()
            raise

    def _grant(self, state: _OriginState) -> Optional[Lease]:
        """A lease for ``state``'s origin if both caps allow one now (an
        idle connection to reuse, or room for a new one), else ``None``;
        the origin is then queued as blocked on the total cap."""
        if state.active >= state.limit:
            return None
        connection = self._reusable(state)
        if connection is None:
            if not self._make_room():
                if not state.blocked:
                    state.blocked = True
                    self._blocked.append(state)
                return None
            self._open += 1
        state.active += 1
        return Lease(self, state, connection)

    def _serve(self, state: _OriginState) -> None:
        """Grant what can be granted to ``state``'s waiters, in order."""
        waiting = state.waiting
        while waiting:
            if waiting[0].cancelled:
                waiting.popleft()
                continue
            lease = self._grant(state)
            if lease is None:
                return
            waiting.popleft().grant(lease)

    def _reusable(self, state: _OriginState) -> Optional[Connection]:
        """An idle connection to ``state``'s origin still fit for a request."""
        while state.idle:
            connection = state.idle.pop()
            del self._idle[connection]
            if not _dropped(connection.sock):
                return connection
            self._close(connection, "dropped while idle")
        return None

    def _make_room(self) -> bool:
        """Whether a new socket may be opened, closing the least recently
        used idle connection (to any origin) when that makes the room."""
        if self._open < self.max_connections:
            return True
        if not self._idle:
            return False
        connection, _ = self._idle.popitem(last=False)
        self._origins[connection.origin].idle.remove(connection)
        self._close(connection, "evicted")
        return True

    def _close(self, connection: Connection, reason: str) -> None:
        """Close an idle connection: its place is free."""
        self._discard(connection, reason)
        self._open -= 1

    def _discard(self, connection: Connection, reason: str,
                 request: Optional[RequestRecord] = None) -> None:
        """Close a connection; the caller keeps the place count right."""
        connection.close()
        if self.tracing():
            self.emit("connection.closed", connection.origin, request, connection,
                      reason=reason)

    def _release(self, lease: Lease) -> None:
        state = lease._state
        state.active -= 1
        connection = lease.connection
        lease.connection = None
        if connection is None:
            self._open -= 1
        elif not self._closed:
            connection.idle_since = time.monotonic()
            state.idle.append(connection)
            self._idle[connection] = None
            self._watch_expiry()
        else:
            self._discard(connection, "closed")
            self._open -= 1
        self._serve(state)
        while self._blocked and (self._open < self.max_connections or self._idle):
            blocked = self._blocked.popleft()
            blocked.blocked = False
            self._serve(blocked)

    # -- expiry -------------------------------------------------------------------

    def _watch_expiry(self) -> None:
        if self._reaper is None:
            self._reaper = gevent.spawn(self._expire)

    def _expire(self) -> None:
        """Close idle connections as they pass ``keepalive_expiry``; end
        when no connection is open (idle or in use)."""
        try:
            self._expire_idle()
        finally:
            self._reaper = None

    def _expire_idle(self) -> None:
        # The reaper outlives the idle connections while others are in use:
        # ending as soon as none is idle made a connection reused at once
        # start a new reaper at each release, one greenlet per request
        # (profiled: sequential GETs on one connection mapped and unmapped
        # a greenlet's 16 KiB frame stack each time, a page fault a request).
        while self._open and not self._closed:
            if not self._idle:
                gevent.sleep(self.keepalive_expiry)
                continue
            oldest = next(iter(self._idle))
            wait = oldest.idle_since + self.keepalive_expiry - time.monotonic()
            if wait > 0:
                gevent.sleep(wait)
                continue
            self._idle.popitem(last=False)
            self._origins[oldest.origin].idle.remove(oldest)
            self._close(oldest, "expired")
            self._wake_blocked()

    def _wake_blocked(self) -> None:
        while self._blocked and self._open < self.max_connections:
            blocked = self._blocked.popleft()
            blocked.blocked = False
            self._serve(blocked)

    # -- exchanges ------------------------------------------------------------------

    def exchange(self, lease: Lease, method: str, data: bytes, record: RequestRecord, *,
                 parser: Parser, timeout: Tuple[float, float], max_body_size: int,
                 retry: Optional[RetryPolicy] = None) -> Answer:
        """Send one request on ``lease`` and read its whole answer, retrying
        as ``retry`` says; the lease keeps its connection when it may carry
        another request (:meth:`Lease.release` then keeps it idle).

        :param method: upper case (it tells the parser whether a body follows,
            and the retry policy whether the request may be repeated).
        :param data: the request as it goes to the origin: head and body,
            the request target in origin form (``/path?query``). Through a
            proxy that forwards it (an ``http`` origin with a proxy), the
            request line is rewritten in absolute form (``GET
            http://host:port/path HTTP/1.1``, RFC 9112 section 3.2.2) and
            ``Proxy-Authorization`` added after it when the proxy has
            credentials; the fields, ``Host`` and a signature over them are
            sent as they are.
        :param record: the secret-free record, for events.
        :param parser: the :class:`~napixclient.http11.Parser` to read with.
        :param timeout: ``(connect, read)`` seconds; ``read`` bounds each
            wait for data.
        :param max_body_size: the most bytes of body read.
        :param retry: the :class:`~napixclient.retry.RetryPolicy` (default:
            only the single retry of a stale kept-alive connection).
        :returns: the :class:`~napixclient.http11.Answer`.
        :raises napixclient.failures.TransportFailure: a subclass, the last
            failure, when it is not retried; :class:`~napixclient.failures.ProxyFailed`
            for a 407 from a proxy that forwards requests.
        """
        policy = _NO_RETRY if retry is None else retry
        origin = lease.origin
        if origin.forwarded:
            data = _absolute_form(data, origin)
        while True:
            try:
                answer = self._once(lease, method, data, record, parser, timeout,
                                    max_body_size)
                if answer.status == 407 and origin.forwarded:
                    raise ProxyFailed(f"the proxy {origin.proxy} answered "
                                      f"{status_text(407)}", origin.proxy, status=407)
                return answer
            except TransportFailure as failure:
                following = policy.after(method, failure)
                tracing = self.tracing()
                if following is None:
                    if tracing:
                        self.emit("request.failed", origin, record, failure=str(failure),
                                  error_class=failure.error_class)
                    raise
                policy = following
                wait = policy.backoff()
                if tracing:
                    self.emit("request.retry", origin, record, failure=str(failure),
                              wait=wait)
            if wait > 0:
                gevent.sleep(wait)

    def _connect(self, lease: Lease, record: RequestRecord, connect_timeout: float,
                 tracing: bool) -> Tuple[Connection, bool]:
        """The lease's connection, and whether it already carried an answer."""
        connection = lease.connection
        if connection is not None:
            if tracing:
                self.emit("connection.reused", connection.origin, record, connection,
                          idle=time.monotonic() - connection.idle_since)
            return connection, True
        origin = lease.origin
        started = time.monotonic()
        sock, address = self.dialer.dial(origin, connect_timeout)
        connection = lease.connection = Connection(sock, origin, next(self._numbers))
        if tracing:
            via = {} if origin.proxy is None else {"proxy": str(origin.proxy)}
            self.emit("connection.opened", origin, record, connection, address=address,
                      seconds=time.monotonic() - started, **via)
            if origin.scheme == "https":
                self.emit("connection.tls", origin, record, connection,
                          version=sock.version())
        return connection, False

    def _once(self, lease: Lease, method: str, data: bytes, record: RequestRecord,
              parser: Parser, timeout: Tuple[float, float], max_body_size: int) -> Answer:
        tracing = self.tracing()
        connection, reused = self._connect(lease, record, timeout[0], tracing)
        sock = connection.sock
        head = False
        done = False
        try:
            sock.settimeout(timeout[1])
            try:
                unsent = _send(sock, data)
                if tracing:
                    self.emit("request.sent", lease.origin, record, connection,
                              bytes=len(data))
                try:
                    response = parser.begin(sock, method)
                except (ConnectionBroken, OSError):
                    if unsent is not None:
                        raise unsent from None
                    raise
                head = True
                if tracing:
                    self.emit("response.headers", lease.origin, record, connection,
                              status=getattr(response, "status", None)
                              or getattr(response, "status_code", None))
                answer, keep = parser.finish(response, max_body_size)
            except socket.timeout as error:
                raise ReadTimedOut("timed out while reading the answer") from error
            except ConnectionBroken as error:
                if reused and error.before_answer:
                    raise _stale() from error
                raise
            except OSError as error:
                if reused and not head:
                    raise _stale() from error
                raise ConnectionBroken(BROKE + _reason(error), before_answer=not head) from error
            connection.requests += 1
            keep = keep and unsent is None
            if tracing:
                self.emit("response.done", lease.origin, record, connection,
                          status=answer.status, bytes=len(answer.content), reusable=keep)
            done = True
            if not keep:
                # The lease keeps its place, and may dial again.
                lease.connection = None
                self._discard(connection, "not reusable", record)
            return answer
        finally:
            if not done and lease.connection is connection:
                lease.connection = None
                self._discard(connection, "failed", record)

    # -- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Close every idle connection, and each connection in use when its
        request ends; later requests raise :class:`RuntimeError`. Closing
        twice is harmless."""
        self._closed = True
        idle, self._idle = self._idle, OrderedDict()
        for connection in idle:
            self._origins[connection.origin].idle.remove(connection)
            self._close(connection, "closed")
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.kill(block=False)


def _send(sock: Any, data: bytes) -> Optional[ConnectionBroken]:
    """Send ``data``; when the server closes or resets the connection before
    taking all of it, return that failure instead of raising, so that the
    answer it may already have sent (an early ``413``) is read, as urllib3
    does. ``None`` when everything was sent."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as error:
        return ConnectionBroken(BROKE + _reason(error), before_answer=True)
    return None


def _absolute_form(data: bytes, origin: Origin) -> bytes:
    """``data`` with its request target in absolute form, and the
    ``Proxy-Authorization`` field after the request line when the proxy has
    credentials: the request as a proxy that forwards it reads it (RFC 9112,
    section 3.2.2). The rest is sent as it is: ``Host`` and the signature
    stay the origin's, over the origin-form path."""
    assert origin.proxy is not None
    space = data.index(b" ") + 1
    end = data.index(b"\r\n") + 2
    line = data[:space] + f"{origin.scheme}://{origin.authority}".encode("ascii") \
        + data[space:end]
    if origin.proxy.authorization is not None:
        line += f"Proxy-Authorization: {origin.proxy.authorization}\r\n".encode("ascii")
    return line + data[end:]


def _stale() -> ConnectionBroken:
    """The failure of a kept-alive connection closed before the answer began."""
    return ConnectionBroken(BROKE + "the server closed the kept-alive connection before "
                            "answering", before_answer=True, stale=True)


def _reason(error: OSError) -> str:
    if isinstance(error, ssl.SSLError):
        # A TLS alert after the handshake: in TLS 1.3, a server refuses the
        # client's certificate (or its absence) when the answer is read.
        return tls_reason(error)
    return error.strerror.lower() if error.strerror else type(error).__name__


def _describe(event: str, info: Dict[str, Any]) -> str:
    """One log line for an event (no secret: requests are their records)."""
    request = info.get("request")
    what = f"{request.method} {request.path}" if request is not None else ""
    number = info.get("connection")
    conn = f"#{number} " if number is not None else ""
    origin = info["origin"]
    if event == "response.done":
        return (f'{origin} "{what} HTTP/1.1" {info["status"]} {info["bytes"]}'
                + ("" if info["reusable"] else " (connection closed)"))
    if event == "request.retry":
        if "status" in info:
            return f"Retrying {what} after a {info['status']} answer, in {info['wait']:g} s"
        return f"Retrying {what} on a new connection after: {info['failure']}"
    if event == "request.failed":
        return f"{what} on {origin} failed: {info['failure']}"
    if event == "connection.closed":
        return f"Closed connection {conn}to {origin} ({info['reason']})"
    if event == "connection.opened":
        via = f" through the proxy {info['proxy']}" if "proxy" in info else ""
        return (f"Opened connection {conn}to {origin}{via} in "
                f"{info['seconds'] * 1000:.1f} ms for {what}")
    extras = ", ".join(f"{key}={value}" for key, value in info.items()
                       if key not in ("time", "origin", "request", "connection"))
    return f"{event} {conn}{origin} {what} {extras}".rstrip()
