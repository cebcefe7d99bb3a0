"""The gevent driver's connection manager: every socket a pool opens, keeps
and closes.

A :class:`ConnectionManager` is owned by a :class:`~napixclient.ClientPool`
and shared by all of its :class:`~napixclient.Client` objects (a lone
``Client`` makes its own). Nothing else opens a socket. It caps:

* ``simultaneous``, per origin: the most requests running at once to one
  origin (scheme, host, port), and so the most connections open to it
  (through a proxy or not: a proxy is only a way of reaching the origin);
* ``max_connections``, in total: the most sockets open at once, idle
  kept-alive ones included, those to proxies too. The default follows the
  process's soft limit on open files
  (:func:`~napixclient.core.leases.default_max_connections`), so
  that a probe of thousands of hosts never fails for want of a file
  descriptor.

Who gets a connection, which idle one is closed to make room, when one
expires: those are decisions of the core's lease machine
(:class:`napixclient.core.leases.Leases`: events in, actions out); this
module carries its actions out with gevent, and the machine's bookkeeping
never yields to the hub, monkey-patched or not. A request first takes a
:class:`~napixclient.core.leases.Lease` (a place under both caps) with
:meth:`ConnectionManager.acquire` or :meth:`ConnectionManager.reserve`;
requests beyond a cap wait their turn, in submission order for each origin.
When the total cap is reached and an idle connection exists to any origin,
the least recently used one is closed to make room rather than waiting. The
wait for a lease is not part of a request's timeout.

On its lease a request sends and reads over an idle connection to its
origin (checked first: one the server closed while it was idle is not
used), or dials a new one (:mod:`napixclient.dialing`). A connection goes
back to the idle list only when its answer was read whole and both sides
keep it alive; one that failed, timed out or was interrupted (a
``gevent.Timeout``, a killed greenlet) is closed, so a half-read connection
never serves another request. An idle connection is closed after
``keepalive_expiry`` seconds.

Failures are :mod:`napixclient.failures`, translated where they happen. The
trace events are those of :mod:`napixclient.core.trace`.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Callable, List, Optional, Tuple

import gevent
import gevent.event
import gevent.select
import gevent.socket

from napixclient.core.exchange import Exchange, unsent
from napixclient.core.leases import Grant, Lease, default_max_connections
from napixclient.core.manager import DEFAULT_KEEPALIVE_EXPIRY, ManagerBase
from napixclient.core.origin import Origin
from napixclient.core.parser import Answer
from napixclient.core.trace import TraceHook
from napixclient.dialing import Dialer, receive
from napixclient.failures import ConnectionBroken, Failure
from napixclient.response import RequestRecord

__all__ = [
    "DEFAULT_KEEPALIVE_EXPIRY",
    "Connection",
    "ConnectionManager",
    "Lease",
    "TraceHook",
    "default_max_connections",
]


# A body larger than this is sent a piece at a time, watching for an early
# answer (a 413 from a server that stops reading); a smaller one at once.
_WHOLE_SEND = 64 * 1024
_SEND_PIECE = 256 * 1024
#: What a large body's send waits for, and what of it means the server
#: answered (or closed) before taking the whole body.
_READ_OR_WRITE = gevent.select.POLLIN | gevent.select.POLLOUT
_ANSWERED = gevent.select.POLLIN | gevent.select.POLLHUP | gevent.select.POLLERR


class Connection:
    """One socket to one origin, kept alive between requests.

    :ivar number: names it within its manager (``int``), for trace events.
    :ivar origin: the :class:`~napixclient.core.origin.Origin`.
    :ivar requests: how many requests it carried (``int``).
    :ivar idle_since: :func:`time.monotonic` when it last went idle.
    """

    __slots__ = ("sock", "origin", "number", "requests", "idle_since", "read_timeout",
                 "_pending", "_tcp")

    def __init__(self, sock: Any, origin: Origin, number: int) -> None:
        self.sock = sock
        self.origin = origin
        self.number = number
        self.requests = 0
        self.idle_since = 0.0
        # A TLS socket's count of bytes read and not yet taken, looked up
        # once: on a plain gevent socket the look-up fails, and a failed
        # attribute look-up costs two exceptions.
        self._pending: Optional[Callable[[], int]] = getattr(sock, "pending", None)
        # The gevent socket at the bottom: under TLS inside an https proxy's
        # TLS, the proxy's socket (urllib3's SSLTransport holds it).
        tcp = sock
        while not isinstance(tcp, gevent.socket.socket) and hasattr(tcp, "socket"):
            tcp = tcp.socket
        self._tcp = tcp
        #: The read timeout last set on the socket (seconds), or ``None``.
        self.read_timeout: Optional[float] = None

    def dropped(self) -> bool:
        """Whether this idle connection is readable: the server closed it,
        or sent bytes nobody asked for; either way it cannot carry a request.

        It peeks at the socket without waiting (``recv(1, MSG_PEEK)`` with a
        timeout of 0, on the TCP socket under a TLS one), which never yields
        to the hub, monkey-patched or not, and works on any descriptor
        (``select()`` refuses those from 1,024 on: every connection there
        passed for dropped, and was dialled again for each request)."""
        pending = self._pending
        sock = self._tcp
        try:
            if pending is not None and pending():
                return True
            timeout = sock.gettimeout()
            sock.settimeout(0.0)
            try:
                _peek(sock, 1, socket.MSG_PEEK)
            finally:
                sock.settimeout(timeout)
        except BlockingIOError:
            return False  # nothing to read: the connection is as it was left
        except (OSError, ValueError):
            return True
        return True  # b"" (closed by the server) or bytes nobody asked for

    def close(self) -> None:
        """Close the socket (harmless twice)."""
        try:
            self.sock.close()
        except OSError:
            pass

    def __repr__(self) -> str:
        return f"<Connection #{self.number} {self.origin}>"


#: A gevent socket's own ``recv``, which a TLS socket overrides: called on
#: a TLS socket, it peeks at the TCP bytes under it.
_peek = gevent.socket.socket.recv


class ConnectionManager(ManagerBase):
    """Opens, keeps and closes the connections of a pool (see the module).

    :param max_connections: the most sockets open at once across all
        origins, idle ones included (``int`` >= 1), or ``None`` for
        :func:`~napixclient.core.leases.default_max_connections`.
    :param keepalive_expiry: seconds (``float`` > 0) an idle connection is
        kept before it is closed.
    :param trace: ``trace(event, info)``, called for each event (see
        :mod:`napixclient.core.trace`), or ``None``.
    :raises ValueError: for a bad ``max_connections``, ``keepalive_expiry``
        or ``trace``.
    """

    def __init__(self, max_connections: Optional[int] = None,
                 keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY,
                 trace: Optional[TraceHook] = None) -> None:
        super().__init__(max_connections, keepalive_expiry, trace)
        self.dialer = Dialer()
        self._reaper: Optional[gevent.Greenlet] = None

    @property
    def contexts(self) -> Any:
        """The dialer's :class:`~napixclient.core.tls.TLSContexts`."""
        return self.dialer.contexts

    # -- leases -----------------------------------------------------------------

    def _run(self, actions: List[Any]) -> None:
        """Carry out what the lease machine said: grant, close. Neither
        yields to the hub."""
        for action in actions:
            if type(action) is Grant:
                action.waiter(action.lease)
            else:
                self.discard(action.connection, action.reason)

    def reserve(self, origin: Origin, limit: int, grant: Callable[[Lease], None],
                request: Optional[RequestRecord] = None) -> Callable[[], None]:
        """Ask for a lease without waiting: ``grant(lease)`` is called when
        one is free, at once if one is free now.

        :param origin: where the request goes.
        :param limit: the origin's cap (``simultaneous``).
        :param grant: called with the :class:`~napixclient.core.leases.Lease`,
            in the greenlet that freed it (so it must not block: start a
            greenlet).
        :param request: for the ``request.queued`` event.
        :returns: a function that withdraws the request if it is still
            waiting (a granted lease must be released instead).
        :raises RuntimeError: if the manager is closed.
        """
        if self._closed:
            raise RuntimeError("the connection manager is closed")
        waiter = _Waiter(self, grant)
        self._run(self._leases.request(origin, limit, waiter, time.monotonic()))
        if waiter.grant is not None and self.tracer.tracing():
            self.emit("request.queued", origin, request)
        return waiter.withdraw

    def acquire(self, origin: Origin, limit: int,
                request: Optional[RequestRecord] = None) -> Lease:
        """Wait (yielding to the hub) for a lease, in submission order.

        :raises RuntimeError: if the manager is closed.
        """
        result: gevent.event.AsyncResult = gevent.event.AsyncResult()
        withdraw = self.reserve(origin, limit, result.set, request)
        try:
            return result.get()  # type: ignore[no-any-return]
        except BaseException:
            withdraw()
            if result.ready() and result.successful():
                self.release(result.value)
            raise

    def release(self, lease: Lease) -> None:
        """Give a lease's place back. The connection the lease still holds
        (one whose last answer was read whole and may be kept alive) goes
        idle; a failed one was closed already. A second call does nothing."""
        connection, actions = self.release_lease(lease, time.monotonic())
        self._run(actions)
        if connection is not None and self._reaper is None and not self._closed:
            self._watch_expiry()

    # -- expiry -------------------------------------------------------------------

    def _watch_expiry(self) -> None:
        if self._reaper is None:
            self._reaper = gevent.spawn(self._expire)

    def _expire(self) -> None:
        """Close idle connections as they pass ``keepalive_expiry``; end
        when no connection is open (idle or in use)."""
        # The reaper outlives the idle connections while others are in use:
        # ending as soon as none is idle made a connection reused at once
        # start a new reaper at each release, one greenlet per request.
        try:
            leases = self._leases
            while leases.open_connections and not self._closed:
                when = leases.next_expiry()
                if when is None:
                    gevent.sleep(self.keepalive_expiry)
                    continue
                wait = when - time.monotonic()
                if wait > 0:
                    gevent.sleep(wait)
                    continue
                self._run(leases.expire(time.monotonic()))
        finally:
            self._reaper = None

    # -- exchanges ------------------------------------------------------------------

    def _connect(self, lease: Lease, record: RequestRecord, connect_timeout: float,
                 deadline: float, engine: str, tracing: bool) -> Tuple[Connection, bool]:
        """The lease's connection, and whether it already carried an answer:
        its idle one unless the server closed it meanwhile, else a new one."""
        connection = self.reuse(lease, record, tracing)
        if connection is not None:
            return connection, True
        origin: Origin = lease.key  # type: ignore[assignment]
        started = time.monotonic()
        sock, address = self.dialer.dial(origin, connect_timeout, deadline, engine)
        connection = Connection(sock, origin, self.number())
        self.opened(lease, connection, record, address, started,
                    sock.version() if origin.scheme == "https" else None, tracing)
        return connection, False

    def exchange(self, lease: Lease, method: str, data: bytes, record: RequestRecord, *,
                 engine: str, timeouts: Tuple[float, float], deadline: float,
                 max_body_size: int, attempt: int = 0) -> Answer:
        """Send one request on ``lease`` and read its whole answer: one
        attempt, never retried here (the client's loop decides); the lease
        keeps its connection when it may carry another request
        (:meth:`release` then keeps it idle). What is sent, what a failure
        is called and whether the connection serves again are the core's
        (:class:`~napixclient.core.exchange.Exchange`).

        :param method: upper case (it tells the parser whether a body follows).
        :param data: the request as it goes to the origin: head and body,
            the request target in origin form (``/path?query``).
        :param record: the secret-free record, for events.
        :param engine: the parser engine (``"llhttp"`` or ``"h11"``).
        :param timeouts: ``(connect, read)`` seconds; ``read`` bounds each
            wait for data.
        :param deadline: :func:`time.monotonic` seconds past which reading
            stops (:class:`~napixclient.core.exchange.Deadline`).
        :param max_body_size: the most bytes of body read.
        :param attempt: the attempt's number, for events.
        :returns: the :class:`~napixclient.core.parser.Answer`.
        :raises napixclient.failures.Failure: a subclass, for what went
            wrong (``stale`` when a kept-alive connection was found closed
            before the answer began).
        :raises napixclient.core.exchange.Deadline: when the deadline passed.
        """
        tracing = self.tracer.tracing()
        connection, reused = self._connect(lease, record, timeouts[0], deadline, engine,
                                           tracing)
        exchange = Exchange(self.tracer, connection.origin, record, connection.number,
                            reused, method, max_body_size, engine, attempt)
        data = exchange.data(data)
        sock = connection.sock
        reading = exchange.reading
        done = False
        try:
            if connection.read_timeout != timeouts[1]:
                sock.settimeout(timeouts[1])
                connection.read_timeout = timeouts[1]
            try:
                exchange.unsent = self._send(sock, data, timeouts[1])
                exchange.sent(len(data))
                receive(sock, reading, deadline, head_only=tracing)
                if tracing:
                    exchange.head_read()
                    if reading.end is None:
                        receive(sock, reading, deadline)
            except (Failure, OSError) as error:
                raise exchange.failed(error) from error
            answer = self.finished(lease, connection, exchange)
            done = True
            return answer
        finally:
            if not done:
                self.abandoned(lease, connection, record)

    @staticmethod
    def _send(sock: Any, data: bytes, timeout: float) -> Optional[ConnectionBroken]:
        """Send ``data``. When the server closes or resets the connection
        before taking all of it, or answers before it took all of a large
        body (an early ``413`` from a server that stops reading), return
        that failure instead of raising, so that the answer it sent is read,
        as urllib3 does. ``None`` when everything was sent.

        :raises socket.timeout: when the server takes nothing for ``timeout``.
        """
        try:
            if len(data) <= _WHOLE_SEND:
                # One send takes a request this size whole but when the
                # socket's buffer is full; sendall alone asks the buffer's
                # size of the kernel first, a system call per request.
                sent = sock.send(data)
                if sent < len(data):
                    sock.sendall(memoryview(data)[sent:])
                return None
            view = memoryview(data)
            offset = 0
            # gevent's poll waits on the hub's watchers, for any descriptor
            # (select() refuses those from 1,024 on).
            poller = gevent.select.poll()
            poller.register(sock, _READ_OR_WRITE)
            while offset < len(view):
                events = 0
                for _, happened in poller.poll(timeout * 1000.0):
                    events |= happened
                if events & _ANSWERED:
                    return unsent()
                if not events & gevent.select.POLLOUT:
                    raise socket.timeout("timed out while sending the request")
                offset += sock.send(view[offset:offset + _SEND_PIECE])
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as error:
            return unsent(error)
        return None

    # -- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Close every idle connection, and each connection in use when its
        request ends; later requests raise :class:`RuntimeError`. Closing
        twice is harmless."""
        self._closed = True
        self._run(self._leases.close())
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.kill(block=False)


class _Waiter:
    """A request waiting for its lease (:meth:`ConnectionManager.reserve`):
    the lease machine calls it with the lease. It lets go of ``grant`` once
    granted or withdrawn: a caller that keeps :meth:`withdraw` (which holds
    the waiter) where ``grant`` can reach it would otherwise make a
    reference cycle per request, left to the garbage collector."""

    __slots__ = ("manager", "grant")

    def __init__(self, manager: ConnectionManager, grant: Callable[[Lease], None]) -> None:
        self.manager: Optional[ConnectionManager] = manager
        #: ``None`` once granted or withdrawn.
        self.grant: Optional[Callable[[Lease], None]] = grant

    def __call__(self, lease: Lease) -> None:
        grant, self.grant, self.manager = self.grant, None, None
        assert grant is not None
        grant(lease)

    def withdraw(self) -> None:
        """Withdraw the request if it still waits (nothing once granted)."""
        manager, self.manager, self.grant = self.manager, None, None
        if manager is not None:
            manager._run(manager._leases.withdraw(self))

