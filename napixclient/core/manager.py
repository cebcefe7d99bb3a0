"""What a connection manager is besides moving bytes: its caps and figures,
its events, and the bookkeeping of one connection's life.

:class:`ManagerBase` serves :class:`napixclient.connections.ConnectionManager`
(gevent) and :class:`napixclient.aio.AsyncConnectionManager` (asyncio): the
lease machine (:class:`~napixclient.core.leases.Leases`) and the
:class:`~napixclient.core.trace.Tracer` they share, and the steps of a
connection's life said once: reused or dropped while idle
(:meth:`ManagerBase.reuse`), opened (:meth:`ManagerBase.opened`), kept or
closed after an answer (:meth:`ManagerBase.finished`), closed after a
failure (:meth:`ManagerBase.abandoned`). A connection is any object with
``origin``, ``number``, ``idle_since``, ``requests``, ``dropped()`` and
``close()``; none of these methods waits.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Optional, Tuple

from napixclient.core.exchange import Exchange
from napixclient.core.leases import Lease, Leases
from napixclient.core.parser import Answer
from napixclient.core.trace import TraceHook, Tracer
from napixclient.response import RequestRecord

__all__ = ["DEFAULT_KEEPALIVE_EXPIRY", "ManagerBase"]

#: Seconds an idle connection is kept: 5 s, as httpx does, and below the
#: idle timeouts of the common servers but gunicorn's (2 s), whose early
#: closes the single stale-connection retry covers.
DEFAULT_KEEPALIVE_EXPIRY = 5.0


class ManagerBase:
    """The caps, figures and events of a connection manager (see the module).

    :param max_connections: the most connections open at once across all
        origins, idle ones included (``int`` >= 1), or ``None`` for
        :func:`~napixclient.core.leases.default_max_connections`.
    :param keepalive_expiry: seconds (``float`` > 0) an idle connection is
        kept before it is closed.
    :param trace: ``trace(event, info)``, or ``None``.
    :raises ValueError: for a bad ``max_connections``, ``keepalive_expiry``
        or ``trace``.
    """

    #: The default ``keepalive_expiry`` (seconds).
    DEFAULT_KEEPALIVE_EXPIRY = DEFAULT_KEEPALIVE_EXPIRY

    def __init__(self, max_connections: Optional[int] = None,
                 keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY,
                 trace: Optional[TraceHook] = None) -> None:
        self._leases = Leases(max_connections, keepalive_expiry)
        self.max_connections = self._leases.max_connections
        self.keepalive_expiry = self._leases.keepalive_expiry
        self.tracer = Tracer(trace)
        self._numbers = itertools.count(1)
        self._closed = False

    @property
    def trace(self) -> Optional[TraceHook]:
        """The ``trace`` callable (settable)."""
        return self.tracer.hook

    @trace.setter
    def trace(self, hook: Optional[TraceHook]) -> None:
        self.tracer = Tracer(hook)

    @property
    def open_connections(self) -> int:
        """Connections open now, and places granted to open one (``int``)."""
        return self._leases.open_connections

    @property
    def idle_connections(self) -> int:
        """Idle kept-alive connections now (``int``)."""
        return self._leases.idle_connections

    def holds(self, origin: Any) -> bool:
        """Whether ``origin`` has a request running or waiting, or an idle
        connection (``bool``)."""
        return self._leases.holds(origin)

    def tracing(self) -> bool:
        """Whether events are wanted now (see :meth:`~napixclient.core.trace.Tracer.tracing`)."""
        return self.tracer.tracing()

    def emit(self, event: str, origin: Any, request: Optional[RequestRecord],
             connection: Any = None, **info: Any) -> None:
        """Send ``event`` (see :meth:`~napixclient.core.trace.Tracer.emit`); ``connection`` is named
        by its number."""
        self.tracer.emit(event, origin, request,
                         None if connection is None else connection.number, **info)

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return (f"<{type(self).__name__} open={self.open_connections} "
                f"idle={self.idle_connections} "
                f"max_connections={self.max_connections}{state}>")

    # -- a connection's life ----------------------------------------------------------

    def discard(self, connection: Any, reason: str,
                request: Optional[RequestRecord] = None) -> None:
        """Close a connection and say so (``connection.closed``)."""
        connection.close()
        if self.tracer.tracing():
            self.emit("connection.closed", connection.origin, request, connection,
                      reason=reason)

    def reuse(self, lease: Lease, record: RequestRecord, tracing: bool) -> Any:
        """The lease's idle connection if it may carry the request
        (``connection.reused``), else ``None``: none, or the server closed it
        while it was idle (then it is closed: ``dropped while idle``)."""
        connection = lease.connection
        if connection is None:
            return None
        if not connection.dropped():
            if tracing:
                self.emit("connection.reused", connection.origin, record, connection,
                          idle=time.monotonic() - connection.idle_since)
            return connection
        lease.connection = None
        self.discard(connection, "dropped while idle", record)
        return None

    def opened(self, lease: Lease, connection: Any, record: RequestRecord, address: Any,
               started: float, tls_version: Optional[str], tracing: bool) -> None:
        """A new connection for ``lease`` (``connection.opened``, and
        ``connection.tls`` for an https origin); ``started`` is
        :func:`time.monotonic` when dialing began."""
        lease.connection = connection
        if tracing:
            origin = connection.origin
            via = {} if origin.proxy is None else {"proxy": str(origin.proxy)}
            self.emit("connection.opened", origin, record, connection, address=address,
                      seconds=time.monotonic() - started, **via)
            if origin.scheme == "https":
                self.emit("connection.tls", origin, record, connection, version=tls_version)

    def number(self) -> int:
        """The number of the next connection."""
        return next(self._numbers)

    def finished(self, lease: Lease, connection: Any, exchange: Exchange) -> Answer:
        """The exchange's answer is whole: the connection stays with the
        lease when it may carry another request, else it is closed (``not
        reusable``: the lease keeps its place, and may dial again)."""
        connection.requests += 1
        answer, keep = exchange.done()
        if not keep:
            lease.connection = None
            self.discard(connection, "not reusable", exchange.record)
        return answer

    def abandoned(self, lease: Lease, connection: Any, record: RequestRecord) -> None:
        """An exchange on ``connection`` ended without its answer (a failure,
        a timeout, a cancellation): the connection is closed (``failed``),
        so that a half-read one never serves another request."""
        if lease.connection is connection:
            lease.connection = None
            self.discard(connection, "failed", record)

    def release_lease(self, lease: Lease, now: float) -> Tuple[Any, list]:
        """The connection the lease holds (going idle), and the lease
        machine's actions for its release (none for a lease released
        already: releasing twice is harmless, as the drivers document)."""
        if lease.released:
            return None, []
        connection = lease.connection
        if connection is not None:
            connection.idle_since = time.monotonic()
        return connection, self._leases.release(lease, now)
