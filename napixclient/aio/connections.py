"""The asyncio driver's connection manager: every connection an
:class:`~napixclient.aio.AsyncClientPool` opens, keeps and closes.

The twin of :mod:`napixclient.connections`, with the same caps, the same
decisions and the same events, taken by the same core: who gets a
connection, which idle one is closed, when one expires
(:class:`~napixclient.core.leases.Leases`); how an origin is reached
(:func:`~napixclient.core.dial.steps`); what is sent, how the answer is
parsed, what a failure is called and whether a connection serves again
(:class:`~napixclient.core.exchange.Exchange`). This module only moves
bytes with asyncio's transports and protocols, and waits.

A connection's protocol (:class:`Stream`) feeds the core's parser from
``data_received``: the event loop reads each socket once per turn, so a host
that floods never holds the other tasks, and a deadline is a timer.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from napixclient.core.dial import (
    Address,
    Connect,
    Handshake,
    NameCache,
    Tunnel,
    connect_timed_out,
    handshake_timed_out,
    refused,
    steps,
    tls_failed,
    tunnel_broken,
    tunnel_result,
    unresolved,
)
from napixclient.core.exchange import Deadline, Exchange, unsent
from napixclient.core.leases import Grant, Lease
from napixclient.core.manager import DEFAULT_KEEPALIVE_EXPIRY, ManagerBase
from napixclient.core.origin import Origin, ip_family
from napixclient.core.parser import Answer, Reading
from napixclient.core.tls import TLSContexts
from napixclient.core.trace import TraceHook
from napixclient.failures import Failure, NameNotResolved, ProxyFailed, os_reason
from napixclient.response import RequestRecord

__all__ = ["DEFAULT_KEEPALIVE_EXPIRY", "RECV_SIZE", "AsyncConnectionManager", "Connection",
           "Stream"]

#: Bytes read from a connection at once.
RECV_SIZE = 64 * 1024


class _ReadTimeout(Exception):
    """No byte came for the read timeout (the stream's timer)."""


class Stream(asyncio.BufferedProtocol):
    """The protocol of one connection: it hands what the connection receives
    to the :class:`~napixclient.core.parser.Reading` of the current
    exchange, and wakes the task that waits for it.

    It reads at most :data:`RECV_SIZE` bytes at once (a buffered protocol:
    asyncio's default reads up to 256 KiB), so that the parser's work in one
    turn of the event loop stays short whatever a host sends. The buffer is
    its manager's, one for all its connections: a transport reads into it
    and hands it over (``buffer_updated``) in one step, and what was read is
    copied out at once, so no two connections use it at the same time (one
    buffer per connection was 64 KiB of memory each, 128 MiB for 2,000).

    :ivar closed: the connection was lost.
    :ivar dirty: bytes came while no exchange was reading (the connection
        cannot carry another request).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, buffer: memoryview) -> None:
        self.loop = loop
        # A view: the TLS transport reads into slices of it, which must be
        # the buffer itself, not copies (a bytearray's slice is a copy).
        self.buffer = buffer
        self.transport: Optional[asyncio.Transport] = None
        self.reading: Optional[Reading] = None
        self.head_only = False
        self.waiter: Optional[asyncio.Future[None]] = None
        self.closed = False
        self.lost: Optional[BaseException] = None
        self.dirty = False
        self.last = 0.0  # loop.time() of the last bytes received

    # -- asyncio's protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        """The buffer the transport reads into (:data:`RECV_SIZE` bytes,
        whatever ``sizehint`` says)."""
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` bytes were read into the buffer."""
        self.data_received(bytes(self.buffer[:nbytes]))

    def data_received(self, data: bytes) -> None:
        """``data`` came (also what a TLS transport hands over)."""
        self.last = self.loop.time()
        reading = self.reading
        if reading is None:
            self.dirty = True
            return
        try:
            if reading.feed(data) or (self.head_only and reading.head is not None):
                self._wake(None)
        except Failure as failure:
            self.reading = None
            self._wake(failure)

    def eof_received(self) -> bool:
        return False  # close: connection_lost says the rest

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closed = True
        self.lost = exc
        reading = self.reading
        if reading is None:
            self._wake(exc or ConnectionResetError("the connection was closed"))
            return
        if exc is not None:
            self._wake(exc)
            return
        try:
            reading.feed_eof()
            self._wake(None)
        except Failure as failure:
            self._wake(failure)

    # -- the exchange's side ------------------------------------------------------

    def _wake(self, error: Optional[BaseException]) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)

    async def receive(self, reading: Reading, read_timeout: float, deadline: float,
                      head_only: bool = False) -> None:
        """Wait until ``reading`` has the whole answer (or, with
        ``head_only``, its head), bytes being fed as they come.

        :raises TimeoutError: when no byte came for ``read_timeout`` seconds.
        :raises Deadline: when the ``deadline`` (``loop.time()`` seconds)
            passed.
        :raises napixclient.failures.Failure: as the parser raises it.
        :raises OSError: as the connection was lost.
        """
        if reading.end is not None or (head_only and reading.head is not None):
            return
        loop = self.loop
        self.reading = reading
        self.head_only = head_only
        self.last = loop.time()
        if self.closed:
            # Lost before this wait: its end is the answer's end, or a failure.
            self.reading = None
            if self.lost is not None:
                raise self.lost
            reading.feed_eof()
            return
        waiter = self.waiter = loop.create_future()
        timer = loop.call_at(min(self.last + read_timeout, deadline), self._timed_out,
                             read_timeout, deadline)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None
            if reading.end is not None:
                self.reading = None

    def _timed_out(self, read_timeout: float, deadline: float) -> None:
        """The stream's timer: the deadline passed, or no byte came for the
        read timeout; else, bytes came meanwhile: set again."""
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        now = self.loop.time()
        if now >= deadline:
            waiter.set_exception(Deadline())
        elif now >= self.last + read_timeout:
            waiter.set_exception(TimeoutError("timed out while reading the answer"))
        else:
            self.loop.call_at(min(self.last + read_timeout, deadline), self._timed_out,
                              read_timeout, deadline)

    def write(self, data: bytes) -> None:
        """Send ``data`` (buffered by the transport as the socket takes it)."""
        assert self.transport is not None
        self.transport.write(data)

    @property
    def all_sent(self) -> bool:
        """Whether the transport sent everything it was given."""
        return self.transport is not None and self.transport.get_write_buffer_size() == 0


class Connection:
    """One connection to one origin, kept alive between requests.

    :ivar number: names it within its manager (``int``), for trace events.
    :ivar origin: the :class:`~napixclient.core.origin.Origin`.
    :ivar stream: its :class:`Stream`.
    :ivar requests: how many requests it carried (``int``).
    :ivar idle_since: ``loop.time()`` when it last went idle.
    """

    __slots__ = ("stream", "origin", "number", "requests", "idle_since")

    def __init__(self, stream: Stream, origin: Origin, number: int) -> None:
        self.stream = stream
        self.origin = origin
        self.number = number
        self.requests = 0
        self.idle_since = 0.0

    def dropped(self) -> bool:
        """Whether this idle connection was closed by the server, or got
        bytes nobody asked for (its protocol knows: no system call)."""
        return self.stream.closed or self.stream.dirty

    def close(self) -> None:
        """Close the connection (harmless twice)."""
        transport = self.stream.transport
        if transport is not None:
            transport.close()

    def __repr__(self) -> str:
        return f"<Connection #{self.number} {self.origin}>"


class AsyncConnectionManager(ManagerBase):
    """Opens, keeps and closes the connections of a pool (see the module);
    the twin of :class:`napixclient.connections.ConnectionManager`.

    :param max_connections: the most connections open at once across all
        origins, idle ones included (``int`` >= 1), or ``None`` for
        :func:`~napixclient.core.leases.default_max_connections`.
    :param keepalive_expiry: seconds (``float`` > 0) an idle connection is
        kept before it is closed.
    :param trace: ``trace(event, info)``, or ``None`` (see
        :mod:`napixclient.core.trace`).
    :raises ValueError: for a bad ``max_connections``, ``keepalive_expiry``
        or ``trace``.

    It belongs to the event loop it is first used in.
    """

    def __init__(self, max_connections: Optional[int] = None,
                 keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY,
                 trace: Optional[TraceHook] = None) -> None:
        super().__init__(max_connections, keepalive_expiry, trace)
        self.contexts = TLSContexts(ssl.SSLContext)
        self._names = NameCache()
        self._lookups: Dict[Tuple[str, int], asyncio.Task[List[Address]]] = {}
        self._reaper: Optional[asyncio.TimerHandle] = None
        #: What every connection's transport reads into (see :class:`Stream`).
        self._buffer = memoryview(bytearray(RECV_SIZE))

    # -- leases ---------------------------------------------------------------------

    def _run(self, actions: List[Any]) -> None:
        """Carry out what the lease machine said: grant, close."""
        for action in actions:
            if type(action) is Grant:
                waiter = action.waiter
                if waiter.done():
                    # Its task was cancelled as the grant came: give it back.
                    self.release(action.lease)
                else:
                    waiter.set_result(action.lease)
            else:
                self.discard(action.connection, action.reason)

    async def acquire(self, origin: Origin, limit: int,
                      record: Optional[RequestRecord] = None) -> Lease:
        """Wait for a lease, in submission order for each origin.

        :param origin: where the request goes.
        :param limit: the origin's cap (``simultaneous``).
        :param record: for the ``request.queued`` event.
        :raises RuntimeError: if the manager is closed.
        """
        if self._closed:
            raise RuntimeError("the connection manager is closed")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Lease] = loop.create_future()
        self._run(self._leases.request(origin, limit, waiter, loop.time()))
        if waiter.done():
            return waiter.result()
        if self.tracer.tracing():
            self.tracer.emit("request.queued", origin, record)
        try:
            return await waiter
        except BaseException:
            self._run(self._leases.withdraw(waiter))
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())
            raise

    def release(self, lease: Lease) -> None:
        """Give a lease's place back (see
        :meth:`napixclient.connections.ConnectionManager.release`)."""
        loop = asyncio.get_running_loop()
        connection, actions = self.release_lease(lease, loop.time())
        self._run(actions)
        if connection is not None and not self._closed:
            self._watch_expiry(loop)

    def _watch_expiry(self, loop: asyncio.AbstractEventLoop) -> None:
        """A timer at the next expiry of an idle connection (one at a time)."""
        if self._reaper is not None:
            return
        when = self._leases.next_expiry()
        if when is not None:
            self._reaper = loop.call_at(when, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._reaper = None
        if self._closed:
            return
        self._run(self._leases.expire(loop.time()))
        self._watch_expiry(loop)

    # -- connections ------------------------------------------------------------------

    async def _connect(self, lease: Lease, record: RequestRecord, connect_timeout: float,
                       deadline: float, engine: str, tracing: bool) -> Tuple[Connection, bool]:
        """The lease's connection, and whether it already carried an answer:
        its idle one unless the server closed it meanwhile, else a new one."""
        connection = self.reuse(lease, record, tracing)
        if connection is not None:
            return connection, True
        origin: Origin = lease.key  # type: ignore[assignment]
        started = time.monotonic()
        stream, address = await self._dial(origin, connect_timeout, deadline, engine)
        connection = Connection(stream, origin, self.number())
        tls = None
        if origin.scheme == "https" and stream.transport is not None:
            tls = stream.transport.get_extra_info("ssl_object")
        self.opened(lease, connection, record, address, started,
                    None if tls is None else tls.version(), tracing)
        return connection, False

    async def exchange(self, lease: Lease, method: str, data: bytes, record: RequestRecord,
                       *, engine: str, timeouts: Tuple[float, float], deadline: float,
                       max_body_size: int, attempt: int = 0) -> Answer:
        """Send one request on ``lease`` and read its whole answer (one
        attempt); as :meth:`napixclient.connections.ConnectionManager.exchange`,
        ``deadline`` in ``loop.time()`` seconds. A request cancelled
        meanwhile closes its connection.

        :raises napixclient.failures.Failure: for what went wrong.
        :raises napixclient.core.exchange.Deadline: when the deadline passed.
        """
        tracing = self.tracer.tracing()
        connection, reused = await self._connect(lease, record, timeouts[0], deadline,
                                                 engine, tracing)
        exchange = Exchange(self.tracer, connection.origin, record, connection.number,
                            reused, method, max_body_size, engine, attempt)
        data = exchange.data(data)
        stream = connection.stream
        reading = exchange.reading
        done = False
        try:
            try:
                stream.write(data)
                exchange.sent(len(data))
                await stream.receive(reading, timeouts[1], deadline, head_only=tracing)
                if tracing:
                    exchange.head_read()
                    await stream.receive(reading, timeouts[1], deadline)
            except (Failure, OSError) as error:
                if not stream.all_sent:
                    exchange.unsent = unsent(error if isinstance(error, OSError) else None)
                raise exchange.failed(error) from error
            if not stream.all_sent:
                exchange.unsent = unsent()  # an early answer: the rest was not taken
            answer = self.finished(lease, connection, exchange)
            done = True
            return answer
        finally:
            if not done:
                self.abandoned(lease, connection, record)

    # -- dialing -----------------------------------------------------------------------

    async def _resolve(self, step: Connect, timeout: float) -> List[Address]:
        """The addresses of the step's host (kept for a while; lookups of one
        name at once share one query, in a task of its own, so that a
        cancelled waiter cancels no other)."""
        family = ip_family(step.host)
        if family is not None:
            return [(family, (step.host, step.port))]
        loop = asyncio.get_running_loop()
        cached = self._names.get(step.host, step.port, loop.time())
        if cached is not None:
            return cached
        key = (step.host, step.port)
        lookup = self._lookups.get(key)
        if lookup is None:
            lookup = self._lookups[key] = loop.create_task(self._lookup(key))
        try:
            return await asyncio.wait_for(asyncio.shield(lookup), timeout)
        except NameNotResolved as failure:
            raise unresolved(step) from failure

    async def _lookup(self, key: Tuple[str, int]) -> List[Address]:
        loop = asyncio.get_running_loop()
        try:
            try:
                infos = await loop.getaddrinfo(key[0], key[1], type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError) as error:
                raise NameNotResolved("the host name did not resolve") from error
            return self._names.put(key[0], key[1], infos, loop.time())
        finally:
            del self._lookups[key]

    async def _dial(self, origin: Origin, timeout: float, deadline: float,
                    engine: str) -> Tuple[Stream, Any]:
        """Carry out :func:`~napixclient.core.dial.steps` for ``origin``."""
        stream: Optional[Stream] = None
        address: Any = None
        try:
            for step in steps(origin):
                if type(step) is Connect:
                    stream, address = await self._open(step, timeout, deadline)
                elif type(step) is Handshake:
                    assert stream is not None
                    await self._handshake(stream, step, origin, timeout, deadline)
                else:
                    assert stream is not None
                    await self._tunnel(stream, step, timeout, deadline, engine)  # type: ignore
        except BaseException:
            if stream is not None and stream.transport is not None:
                stream.transport.close()
            raise
        assert stream is not None
        return stream, address

    async def _open(self, step: Connect, timeout: float,
                    deadline: float) -> Tuple[Stream, Any]:
        loop = asyncio.get_running_loop()
        budget = _budget(timeout, deadline, loop)
        try:
            addresses = await self._resolve(step, budget)
        except asyncio.TimeoutError:
            raise _timed_out(deadline, loop, connect_timed_out(step)) from None
        last: Optional[OSError] = None
        for family, address in addresses:
            stream = Stream(loop, self._buffer)
            try:
                await asyncio.wait_for(
                    loop.create_connection(_made(stream), address[0], address[1],
                                           family=family),
                    _budget(timeout, deadline, loop))
            except asyncio.TimeoutError:
                raise _timed_out(deadline, loop, connect_timed_out(step)) from None
            except OSError as error:
                last = error
                continue
            return stream, address
        assert last is not None
        raise refused(step, os_reason(last)) from last

    async def _handshake(self, stream: Stream, step: Handshake, origin: Origin,
                         timeout: float, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        context = self.contexts.get(step.verify, step.cert)
        if step.nested and sys.version_info < (3, 11):
            raise ProxyFailed(f"TLS with the origin inside TLS with the proxy {origin.proxy} "
                              "needs Python 3.11 or later with asyncio", origin.proxy)
        assert stream.transport is not None
        try:
            transport = await loop.start_tls(
                stream.transport, stream, context, server_hostname=step.server_hostname,
                ssl_handshake_timeout=max(1e-3, _budget(timeout, deadline, loop)))
        except (asyncio.TimeoutError, TimeoutError):
            raise _timed_out(deadline, loop, handshake_timed_out(step)) from None
        except ConnectionAbortedError as error:
            if "longer than" in str(error):  # asyncio's words for a handshake timeout
                raise _timed_out(deadline, loop, handshake_timed_out(step)) from None
            raise tls_failed(step, error) from error
        except OSError as error:  # ssl.SSLError among them
            raise tls_failed(step, error) from error
        if transport is None:
            raise tls_failed(step, ConnectionResetError("the connection was closed"))
        stream.transport = transport  # type: ignore[assignment]

    async def _tunnel(self, stream: Stream, step: Tunnel, timeout: float, deadline: float,
                      engine: str) -> None:
        reading = Reading("CONNECT", 1 << 20, engine)
        try:
            stream.write(step.request)
            await stream.receive(reading, timeout, deadline, head_only=True)
        except Deadline:
            raise tunnel_broken(step, TimeoutError()) from None
        except (OSError, Failure) as error:
            raise tunnel_broken(step, error) from error
        failure = tunnel_result(step, reading)
        if failure is not None:
            raise failure
        stream.reading = None

    # -- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        """Close every idle connection, and each connection in use when its
        request ends; later requests raise :class:`RuntimeError`. Closing
        twice is harmless."""
        self._closed = True
        self._run(self._leases.close())
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None


def _made(stream: Stream) -> Callable[[], Stream]:
    """A protocol factory that gives ``stream``."""
    return lambda: stream


def _budget(timeout: float, deadline: float, loop: asyncio.AbstractEventLoop) -> float:
    """Seconds a connection step may take: its timeout, within the deadline."""
    return max(0.0, min(timeout, deadline - loop.time()))


def _timed_out(deadline: float, loop: asyncio.AbstractEventLoop,
               failure: Failure) -> BaseException:
    """The deadline, when it is what cut a step short; else ``failure``."""
    return Deadline() if loop.time() >= deadline - 1e-3 else failure
