"""The connection leases: who may hold a connection, and when; no I/O.

:class:`Leases` is the bookkeeping of a connection manager as a state
machine. A driver (gevent or asyncio) tells it what happened and gets back
what to do:

=============================================  ===================================
event (a method call)                          actions it may return
=============================================  ===================================
:meth:`~Leases.request`: a request wants a     :class:`Grant` (to this waiter),
connection to ``key``                          :class:`Close` (``"evicted"``,
                                               ``"expired"``)
:meth:`~Leases.withdraw`: a waiter gave up     nothing
:meth:`~Leases.release`: a request ended       :class:`Grant` (to other waiters),
                                               :class:`Close` (``"evicted"``,
                                               ``"closed"``)
:meth:`~Leases.expire`: time passed            :class:`Close` (``"expired"``),
                                               :class:`Grant`
:meth:`~Leases.close`: the manager closes      :class:`Close` (``"closed"``)
=============================================  ===================================

A :class:`Grant` hands a :class:`Lease` to a waiter: a place under both caps,
with an idle connection to reuse or none (the waiter then dials one and sets
:attr:`Lease.connection`). A :class:`Close` names an idle connection the
driver must close; the machine has already forgotten it. The driver carries
the actions out in the order given. The machine never sees a socket: a
connection and a waiter are opaque objects (hashable, for a waiter) and a
key is whatever the driver keys connections by (an
:class:`~napixclient.core.origin.Origin`). Time comes in as ``now``, in
:func:`time.monotonic` seconds.

The caps:

* per key, ``limit`` (``simultaneous``): the most leases held at once;
* in total, ``max_connections``: the most places taken at once, a place
  being an idle connection or a lease held (whether its connection is
  dialed yet or not).

A request gets, in this order: the most recently used idle connection to
its key; else a place to dial one when both caps allow; else, when its key
is under its own cap but the total is reached, the place of the least
recently used idle connection to any key, which is closed (``"evicted"``);
else it waits. Waiters of a key are served in the order they asked; a key
whose waiters found the total full joins, once, a queue of blocked keys,
served in the order they were blocked whenever a place frees. An idle
connection is closed (``"expired"``) once ``keepalive_expiry`` seconds have
passed since it went idle: by :meth:`~Leases.expire`, which the driver calls
at :meth:`~Leases.next_expiry`, or by the next :meth:`~Leases.request`,
whichever comes first.

Every method is O(1) amortised and calls nothing that can yield (no I/O,
no clock, no gevent, no asyncio), so a driver may call it from a callback
without the bookkeeping ever being interleaved. The state of a key is
dropped as soon as it has no lease, no idle connection and no waiter, so a
manager that has talked to a million keys holds only those in use.

Whether an idle connection is still fit (the server may have closed it
meanwhile) is for the driver to find out: it closes the connection of its
lease, sets :attr:`Lease.connection` to ``None`` and dials another under
the same lease; the place stays taken throughout.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, Deque, Dict, Hashable, List, NamedTuple, Optional, Union

__all__ = ["Action", "Close", "Grant", "Lease", "Leases", "default_max_connections"]


def default_max_connections() -> int:
    """The default ``max_connections``: the soft limit on open files
    (``RLIMIT_NOFILE``) less a headroom of a quarter of it (at least 32) for
    the rest of the program (its files, logs, listening sockets), and at
    least 8. With the common soft limit of 1,024 that is 768.

    Read when a machine is made, so a program (or the ``napix`` command)
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


class Lease:
    """A place under both caps, held by one request from its grant to its
    release.

    Made by :class:`Leases` only, and given back with
    :meth:`Leases.release`, exactly once, whatever happened to the request.

    :ivar key: the key it was asked for (hashable: an
        :class:`~napixclient.core.origin.Origin` for the drivers).
    :ivar connection: the connection the lease holds: the idle one handed
        over with it, or ``None`` for "dial a new one". The driver sets it
        after dialing, and back to ``None`` when it closes it. Set to
        ``None`` by the release (the connection then belongs to the
        machine, idle, or is to be closed).
    :ivar released: whether it was released (``bool``).
    """

    __slots__ = ("key", "connection", "released", "_state", "_owner")

    def __init__(self, owner: "Leases", state: "_KeyState", connection: Any) -> None:
        self.key: Hashable = state.key
        self.connection: Any = connection
        self.released = False
        self._state = state
        self._owner = owner

    def __repr__(self) -> str:
        # str(key): an Origin's str names the destination alone, no credentials.
        held = "released" if self.released else (
            "to dial" if self.connection is None else "with a connection")
        return f"<Lease {self.key!s} {held}>"


class Grant(NamedTuple):
    """Hand ``lease`` (a :class:`Lease`) to ``waiter``: its request may go."""

    waiter: Any
    lease: Lease


class Close(NamedTuple):
    """Close ``connection``, an idle connection the machine no longer holds.

    ``reason`` (``str``) is ``"evicted"`` (its place went to a request to
    another key under ``max_connections``), ``"expired"`` (idle for
    ``keepalive_expiry`` seconds) or ``"closed"`` (the manager was closed).
    """

    connection: Any
    reason: str


#: What a :class:`Leases` method asks the driver to do.
Action = Union[Grant, Close]


class _Idle:
    """An idle connection: its key's state, and when it expires."""

    __slots__ = ("connection", "state", "deadline")

    def __init__(self, connection: Any, state: "_KeyState", deadline: float) -> None:
        self.connection = connection
        self.state = state
        self.deadline = deadline


class _KeyState:
    """What the machine keeps per key, while the key is in use."""

    __slots__ = ("key", "limit", "granted", "idle", "waiting")

    def __init__(self, key: Hashable, limit: int) -> None:
        self.key = key
        self.limit = limit
        self.granted = 0                                      # leases held
        self.idle: Deque[_Idle] = deque()                     # most recently used last
        self.waiting: "OrderedDict[Any, None]" = OrderedDict()  # waiters, first first


def _check_limit(limit: Any) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"limit must be an int >= 1, got {limit!r}")


def _check_hashable(name: str, value: Any) -> None:
    try:
        hash(value)
    except TypeError:
        raise TypeError(f"{name} must be hashable, got a {type(value).__name__}") from None


class Leases:
    """The connection leases of a manager, as a state machine (see the module).

    :param max_connections: the most places taken at once across all keys,
        idle connections included (``int`` >= 1).
    :param keepalive_expiry: seconds (``float`` > 0, finite) a connection
        stays idle before it is closed.
    :raises ValueError: for a bad ``max_connections`` or ``keepalive_expiry``.
    """

    def __init__(self, max_connections: Optional[int], keepalive_expiry: float) -> None:
        if max_connections is None:
            max_connections = default_max_connections()
        if (not isinstance(max_connections, int) or isinstance(max_connections, bool)
                or max_connections < 1):
            raise ValueError(f"max_connections must be an int >= 1, got {max_connections!r}")
        if (not isinstance(keepalive_expiry, (int, float)) or isinstance(keepalive_expiry, bool)
                or not 0 < keepalive_expiry < float("inf")):
            raise ValueError(f"keepalive_expiry must be seconds > 0, got {keepalive_expiry!r}")
        self.max_connections = max_connections
        self.keepalive_expiry = float(keepalive_expiry)
        self._keys: Dict[Hashable, _KeyState] = {}
        # Every idle connection, least recently used first.
        self._idle: "OrderedDict[_Idle, None]" = OrderedDict()
        # Places taken: idle connections and leases held.
        self._open = 0
        # Keys with waiters under their own cap that found the total full,
        # in the order they were blocked.
        self._blocked: "OrderedDict[_KeyState, None]" = OrderedDict()
        # Each waiter not yet granted, and its key's state.
        self._waiters: Dict[Any, _KeyState] = {}
        # The latest deadline given, so that deadlines follow the LRU order
        # even if a driver's `now` steps back.
        self._latest = float("-inf")
        self._closed = False

    # -- figures ------------------------------------------------------------

    @property
    def open_connections(self) -> int:
        """Places taken now (``int``): idle connections and leases held."""
        return self._open

    @property
    def idle_connections(self) -> int:
        """Idle connections now (``int``)."""
        return len(self._idle)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (``bool``)."""
        return self._closed

    def holds(self, key: Hashable) -> bool:
        """Whether ``key`` has a lease, an idle connection or a waiter (its
        state is dropped as soon as it has none)."""
        return key in self._keys

    def waiting(self, key: Optional[Hashable] = None) -> int:
        """Waiters not yet granted nor withdrawn (``int``): all of them, or
        those for ``key`` when it is given."""
        if key is None:
            return len(self._waiters)
        state = self._keys.get(key)
        return 0 if state is None else len(state.waiting)

    def __repr__(self) -> str:
        closed = " closed" if self._closed else ""
        return (f"<Leases open={self._open} idle={len(self._idle)} "
                f"waiting={len(self._waiters)} max_connections={self.max_connections}{closed}>")

    # -- events ---------------------------------------------------------------

    def request(self, key: Hashable, limit: int, waiter: Any, now: float) -> List[Action]:
        """A request asks for a lease to ``key``.

        :param key: where it goes (hashable; an
            :class:`~napixclient.core.origin.Origin` for the drivers).
        :param limit: the per-key cap (``int`` >= 1, ``simultaneous``), as
            the request's client says it. It becomes the key's cap when the
            key has no state (first use, or its state was dropped); while
            the state lives, later requests' limits are ignored.
        :param waiter: whom the :class:`Grant` names (hashable; a future, a
            greenlet's result...); one not already waiting.
        :param now: :func:`time.monotonic` seconds. The idle connections
            expired by then are closed first, as :meth:`expire` would, so
            that none is handed over however late the driver's timer runs.
        :returns: the actions, in order: :class:`Close` (``"expired"``) of
            the idle connections past their time, :class:`Close`
            (``"evicted"``) of the idle connection whose place the request
            takes, if any, then this waiter's :class:`Grant` if a place was
            free. Without a :class:`Grant` it waits: its grant comes from a
            later event.
        :raises RuntimeError: once the machine is closed.
        :raises ValueError: for a bad ``limit``, or a waiter already waiting.
        :raises TypeError: for an unhashable ``key`` or ``waiter``.
        """
        if self._closed:
            raise RuntimeError("the connection manager is closed")
        _check_limit(limit)
        _check_hashable("waiter", waiter)
        if waiter in self._waiters:
            raise ValueError("this waiter is already waiting for a lease")
        _check_hashable("key", key)
        actions: List[Action] = []
        if self._idle:
            # First: it may drop this key's state, which is then made afresh.
            self._expire_idle(now, actions)
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _KeyState(key, limit)
        if not state.waiting:
            # Nobody waits before it: it may be served at once.
            lease = self._take(state, actions)
            if lease is not None:
                actions.append(Grant(waiter, lease))
                return actions
        state.waiting[waiter] = None
        self._waiters[waiter] = state
        return actions

    def withdraw(self, waiter: Any) -> List[Action]:
        """The waiter gave up before its grant (killed, cancelled, timed out).

        O(1). A waiter already granted must release its lease instead: the
        withdrawal of a granted, withdrawn or unknown waiter changes nothing.

        :param waiter: as given to :meth:`request`.
        :returns: an empty list (withdrawing frees no place).
        """
        try:
            state = self._waiters.pop(waiter)
        except (KeyError, TypeError):
            return []
        del state.waiting[waiter]
        if not state.waiting:
            self._blocked.pop(state, None)
            self._drop_if_unused(state)
        return []

    def release(self, lease: Lease, now: float) -> List[Action]:
        """The request on ``lease`` ended.

        The connection ``lease.connection`` (if not ``None``: one fit to
        carry another request) goes idle, as the most recently used, and
        keeps its place; with ``None``, the place is freed. Then waiters are
        served: this key's first, then the keys blocked on
        ``max_connections``, in the order they were blocked. After
        :meth:`close`, the connection is closed instead and nobody is
        served. ``lease.connection`` is ``None`` afterwards.

        :param lease: a :class:`Lease` of this machine.
        :param now: :func:`time.monotonic` seconds: when the connection went
            idle.
        :returns: the actions: :class:`Grant` and :class:`Close`
            (``"evicted"``, or ``"closed"`` after :meth:`close`). A second
            release of the same lease returns ``[]`` and changes nothing.
        :raises ValueError: for a lease of another machine.
        """
        if not isinstance(lease, Lease) or lease._owner is not self:
            raise ValueError(f"not a lease of this connection manager: {lease!r}")
        if lease.released:
            return []
        lease.released = True
        state = lease._state
        state.granted -= 1
        connection, lease.connection = lease.connection, None
        actions: List[Action] = []
        if connection is None:
            self._open -= 1
        elif self._closed:
            self._open -= 1
            actions.append(Close(connection, "closed"))
        else:
            self._latest = deadline = max(self._latest, now + self.keepalive_expiry)
            idle = _Idle(connection, state, deadline)
            state.idle.append(idle)
            self._idle[idle] = None
        if not self._closed:
            self._serve(state, actions)
            self._serve_blocked(actions)
        self._drop_if_unused(state)
        return actions

    def expire(self, now: float) -> List[Action]:
        """Time passed: close the connections idle too long.

        A connection that went idle at ``t`` expires once ``now >= t +
        keepalive_expiry``. The places freed serve the blocked keys.

        :param now: :func:`time.monotonic` seconds.
        :returns: :class:`Close` (``"expired"``) for each expired
            connection, least recently used first, then any
            :class:`Grant`.
        """
        actions: List[Action] = []
        self._expire_idle(now, actions)
        if not self._closed:
            self._serve_blocked(actions)
        return actions

    def next_expiry(self) -> Optional[float]:
        """When :meth:`expire` next has work: the deadline of the least
        recently used idle connection (:func:`time.monotonic` seconds), or
        ``None`` when no connection is idle."""
        if not self._idle:
            return None
        return next(iter(self._idle)).deadline

    def close(self) -> List[Action]:
        """Close the manager.

        Every idle connection is to be closed; leases held stay valid until
        released (their connections are then closed). Waiters are left as
        they are, for the driver to cancel (and withdraw): none is granted
        any more. Closing twice is harmless.

        :returns: :class:`Close` (``"closed"``) for each idle connection,
            least recently used first.
        """
        if self._closed:
            return []
        self._closed = True
        actions: List[Action] = []
        while self._idle:
            oldest = self._forget_oldest()
            self._open -= 1
            actions.append(Close(oldest.connection, "closed"))
            self._drop_if_unused(oldest.state)
        self._blocked.clear()
        return actions

    # -- the machine ------------------------------------------------------------

    def _take(self, state: _KeyState, actions: List[Action]) -> Optional[Lease]:
        """A lease for ``state``'s key if both caps allow one now, else
        ``None`` (the key then joins the blocked keys when the total is
        what stops it). An eviction's :class:`Close` goes to ``actions``."""
        if state.granted >= state.limit:
            return None
        if state.idle:
            idle = state.idle.pop()
            del self._idle[idle]
            connection = idle.connection
        elif self._open < self.max_connections:
            self._open += 1
            connection = None
        elif self._idle:
            # The place of the least recently used idle connection (to
            # another key: this one has none).
            evicted = self._forget_oldest()
            actions.append(Close(evicted.connection, "evicted"))
            self._drop_if_unused(evicted.state)
            connection = None
        else:
            if state not in self._blocked:
                self._blocked[state] = None
            return None
        state.granted += 1
        return Lease(self, state, connection)

    def _serve(self, state: _KeyState, actions: List[Action]) -> None:
        """Grant what can be granted to ``state``'s waiters, in order."""
        waiting = state.waiting
        while waiting:
            lease = self._take(state, actions)
            if lease is None:
                return
            waiter, _ = waiting.popitem(last=False)
            del self._waiters[waiter]
            actions.append(Grant(waiter, lease))
        self._blocked.pop(state, None)

    def _serve_blocked(self, actions: List[Action]) -> None:
        """Serve the blocked keys, first blocked first, while a place is
        free or can be made. Each key is taken once: one blocked again went
        to the back, and the places are gone by then."""
        blocked = self._blocked
        for _ in range(len(blocked)):
            if not (blocked and (self._open < self.max_connections or self._idle)):
                return
            state, _ = blocked.popitem(last=False)
            self._serve(state, actions)

    def _expire_idle(self, now: float, actions: List[Action]) -> None:
        """Close the idle connections whose deadline is ``now`` or earlier."""
        idle = self._idle
        while idle:
            oldest = next(iter(idle))
            if oldest.deadline > now:
                return
            self._forget_oldest()
            self._open -= 1
            actions.append(Close(oldest.connection, "expired"))
            self._drop_if_unused(oldest.state)

    def _forget_oldest(self) -> _Idle:
        """Take the least recently used idle connection off both lists; the
        caller decides what becomes of its place."""
        oldest, _ = self._idle.popitem(last=False)
        # The oldest idle connection of all is the oldest of its key.
        first = oldest.state.idle.popleft()
        assert first is oldest
        return oldest

    def _drop_if_unused(self, state: _KeyState) -> None:
        """Forget ``state`` once its key has no lease, no idle connection and
        no waiter (a new request makes it afresh)."""
        if not state.granted and not state.idle and not state.waiting:
            if self._keys.get(state.key) is state:
                del self._keys[state.key]
