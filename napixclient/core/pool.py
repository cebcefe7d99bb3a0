"""What a pool decides besides waiting: the client of each host, kept while
it serves, dropped when it no longer does; and the checks of its arguments.

:class:`PoolClients` serves :class:`napixclient.ClientPool` (gevent) and
:class:`napixclient.aio.AsyncClientPool` (asyncio) alike.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, Generic, List, Optional, Tuple, TypeVar

from napixclient.core.hosts import host_header, parse_host

__all__ = ["RESTING_CLIENTS", "PoolBase", "PoolClients", "check_count", "check_wait_timeout",
           "timed_out_message"]

#: The most clients a pool keeps for hosts it has no request for (each with
#: an idle kept-alive connection); beyond, the least recently used is
#: dropped (a later request to its host makes a new one).
RESTING_CLIENTS = 256

#: A parsed host: ``(scheme, name, port or None, prefix)``.
ParsedHost = Tuple[str, str, Optional[int], str]

C = TypeVar("C")


class PoolClients(Generic[C]):
    """The client of each host of a pool, made on first use, found again
    under every spelling of its host (``"h"``, ``"http://h:80/"``: one
    client, so one cap), and dropped when the pool no longer uses it, so that
    a pool that meets a million hosts a day stays flat: at once when its last
    request ends with no idle connection to its host, else after resting (the
    most recently used last, at most :data:`RESTING_CLIENTS` of them) ready
    to serve the host again.

    :param make: ``make(parsed host)``: a new client for the host.
    :param holds: ``holds(client)``: whether the client's origin still has an
        idle connection (or a request) in the pool's connection manager.
    """

    def __init__(self, make: Callable[[ParsedHost], C], holds: Callable[[C], bool]) -> None:
        self._make = make
        self._holds = holds
        self._clients: Dict[str, C] = {}
        self._keys: Dict[C, List[str]] = {}
        self._running: Dict[C, int] = {}
        self._resting: "OrderedDict[C, None]" = OrderedDict()

    def __len__(self) -> int:
        """How many hosts have a client now."""
        return len(self._keys)

    def get(self, host: str) -> C:
        """The client for ``host``, made on first use.

        :raises ValueError: for a malformed host (see
            :func:`~napixclient.core.hosts.parse_host`).
        """
        client = self._clients.get(host)
        if client is None:
            parsed = parse_host(host)
            scheme, name, port, prefix = parsed
            key = f"{scheme}://{host_header(scheme, name, port)}{prefix}"
            client = self._clients.get(key)
            if client is None:
                client = self._make(parsed)
                self._clients[key] = client
                self._keys[client] = [key]
            if host != key:
                self._clients[host] = client
                self._keys[client].append(host)
        return client

    def started(self, client: C) -> None:
        """A request of ``client`` started: the client serves."""
        self._running[client] = self._running.get(client, 0) + 1
        self._resting.pop(client, None)

    def ended(self, client: C) -> None:
        """A request of ``client`` ended: the client rests when it was the
        last, or is dropped (see the class)."""
        left = self._running.get(client, 0) - 1
        if left > 0:
            self._running[client] = left
            return
        self._running.pop(client, None)
        if client not in self._keys:
            return  # the pool was closed meanwhile
        if not self._holds(client):
            self._forget(client)  # no idle connection to reuse: nothing to keep
            return
        resting = self._resting
        resting[client] = None
        if len(resting) > RESTING_CLIENTS:
            self._forget(resting.popitem(last=False)[0])

    def _forget(self, client: C) -> None:
        self._resting.pop(client, None)
        for key in self._keys.pop(client, ()):
            if self._clients.get(key) is client:
                del self._clients[key]

    def clear(self) -> List[C]:
        """Forget every client; return them (to close)."""
        clients = list(self._keys)
        self._clients.clear()
        self._keys.clear()
        self._running.clear()
        self._resting.clear()
        return clients


def check_count(count: Any) -> int:
    """Check ``wait_unordered``'s ``count``.

    :raises ValueError: when it is not an ``int`` >= -1.
    """
    if not isinstance(count, int) or isinstance(count, bool) or count < -1:
        raise ValueError(f"count must be an int >= -1 (-1 for all), got {count!r}")
    return count


def check_wait_timeout(timeout: Any) -> Optional[float]:
    """Check a wait's ``timeout``: seconds (``float`` >= 0) or ``None``.

    :raises ValueError: for anything else.
    """
    if timeout is None:
        return None
    if (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
            or not timeout >= 0):
        raise ValueError(f"timeout must be seconds >= 0 or None, got {timeout!r}")
    return float(timeout)


def timed_out_message(where: str, waiting: int, total: int, timeout: Optional[float]) -> str:
    """The text of the :class:`TimeoutError` of a pool's ``wait``."""
    return (f"{where}: {waiting} of {total} requests still running after {timeout} s; "
            "all stay pending")


class PoolBase:
    """What :class:`napixclient.ClientPool` and
    :class:`napixclient.aio.AsyncClientPool` share besides waiting: the
    connection manager, the options checked once, the client of each host,
    and the requests not yet collected (in submission order, with their
    client and call).

    :param client_class: the driver's client (with ``for_pool``).
    :param manager_class: the driver's connection manager.
    :raises ValueError: at once, for a bad option.
    """

    def __init__(self, client_class: Any, manager_class: Any, authenticator: Any,
                 simultaneous: Any, timeout: Any, verify: Any, max_connections: Any,
                 keepalive_expiry: Any, trace: Any, client_options: Dict[str, Any]) -> None:
        from napixclient.core.client import ClientOptions

        self._connections = manager_class(max_connections, keepalive_expiry, trace)
        for name in ("connections", "max_connections", "keepalive_expiry", "trace"):
            if name in client_options:
                raise ValueError(f"{name} is the pool's own: {type(self).__name__}({name}=...) "
                                 "sets it for every host")
        # Checked once, here, and shared by the client of every host.
        self._options = ClientOptions(authenticator, simultaneous, timeout, verify,
                                      **client_options)
        connections = self._connections
        options = self._options
        self._clients: PoolClients[Any] = PoolClients(
            lambda host: client_class.for_pool(host, options, connections),
            lambda client: connections.holds(client.origin))
        # Requests not yet collected, in submission order (dicts keep it),
        # with their client and call.
        self._pending: Dict[Any, Tuple[Any, Any]] = {}
        self._closed = False

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<{type(self).__name__} hosts={len(self._clients)} pending={self.pending}{state}>"

    @property
    def connections(self) -> Any:
        """The connection manager every client of the pool shares."""
        return self._connections

    @property
    def pending(self) -> int:
        """How many requests were started and not yet collected (``int``)."""
        return len(self._pending)

    def client(self, host: str) -> Any:
        """The client for ``host``, made on first use.

        :raises ValueError: for a malformed host.
        :raises RuntimeError: if the pool is closed.
        """
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        return self._clients.get(host)

    def _prepare(self, host: str, method: str, url: str, body: Any, headers: Any,
                 kwargs: Dict[str, Any]) -> Tuple[Any, Any]:
        """The client and the call of a request, checked at once."""
        client = self.client(host)
        return client, client.prepare(method, url, body, headers, **kwargs)

    def _cancelled(self, client: Any, call: Any, what: str) -> Any:
        """The result of a request that was killed or cancelled before its
        end: a :class:`~napixclient.ConnectionError` saying so."""
        from napixclient.exceptions import ConnectionError
        from napixclient.response import RequestRecord

        return ConnectionError(RequestRecord(call.method, client.host, call.url, call.target),
                               remote_error=f"the request was {what} before it completed")
