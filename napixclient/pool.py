"""ClientPool: requests fanned out over many Napix hosts at once, from gevent code."""

from __future__ import annotations

import contextvars
from typing import Any, Dict, Iterator, List, Optional, Union

import gevent
from gevent import Greenlet, GreenletExit

from napixclient.client import Client
from napixclient.connections import (
    DEFAULT_KEEPALIVE_EXPIRY,
    ConnectionManager,
    Lease,
    TraceHook,
)
from napixclient.core.client import PreparedCall, TimeoutSpec
from napixclient.core.pool import (
    PoolBase,
    check_count,
    check_wait_timeout,
    timed_out_message,
)
from napixclient.core.tls import Verify
from napixclient.exceptions import HTTPError
from napixclient.response import Response

__all__ = ["ClientPool", "Result"]

#: What a request yields: its answer, or the error that stands for it.
Result = Union[Response, HTTPError]


class ClientPool(PoolBase):
    """Requests to many hosts at once, each started as a greenlet.

    One :class:`~napixclient.Client` per host is created on first use and
    reused. Every client of the pool shares one
    :class:`~napixclient.connections.ConnectionManager`, which alone opens,
    keeps and closes sockets: ``simultaneous`` caps the connections open to
    each origin, ``max_connections`` those open in total, idle ones included.

    Every request yields exactly one result: the
    :class:`~napixclient.Response`, or the :class:`~napixclient.HTTPError`
    (including :class:`~napixclient.ConnectionError` and
    :class:`~napixclient.Timeout`) that the request produced. Results are
    collected with :meth:`wait` (submission order), :meth:`wait_unordered`
    (completion order) or by iterating over the pool. An exception of any
    other kind is a bug, never dressed as an ``HTTPError``: collecting that
    request's result raises it.

    :param authenticator: as for :class:`~napixclient.Client`, shared by every host.
    :param simultaneous: the most requests running at once per host (``int`` >= 1).
    :param timeout: seconds, or a ``(connect, read)`` pair, as for
        :class:`~napixclient.Client`.
    :param verify: TLS verification, as for :class:`~napixclient.Client`.
    :param max_connections: the most sockets open at once across all hosts,
        idle ones included (``int`` >= 1). ``None`` (the default) derives it
        from the process's soft limit on open files, leaving a quarter of it
        to the rest of the program
        (:func:`~napixclient.connections.default_max_connections`: 768 for
        the common limit of 1,024), so that a probe of thousands of hosts
        never runs out of file descriptors. Requests beyond it wait in
        submission order, after the least recently used idle connection is
        closed to make room; the wait is not part of their timeout.
    :param keepalive_expiry: seconds (``float`` > 0, default 5) an idle
        connection is kept before it is closed.
    :param trace: a callable ``trace(event, info)`` receiving the events of
        every request of the pool (see :mod:`napixclient.connections`).
    :param client_options: further keyword arguments for each
        :class:`~napixclient.Client` (``max_body_size``, ``headers``,
        ``retries``, ``retry_backoff``, ``parser``; ``proxies``,
        ``trust_env`` and ``cert``, for which see :doc:`/proxies` and
        :doc:`/tls`: each host's route is chosen when its client is made,
        and the pool builds one TLS context per ``(verify, cert)``).
    :raises ValueError: at once, for an authenticator of another kind,
        ``simultaneous < 1``, a bad timeout, a bad ``max_connections``,
        ``keepalive_expiry`` or ``trace``, or a bad client option.

    ::

        with ClientPool({"login": "root", "key": "toor"}) as pool:
            pool.request("ip.example:8002", "POST", "/vm-ip/", {"size": 1})
            pool.request("filer.example:8002", "GET", "/volumes/")
            ip, volumes = pool.wait()
    """

    def __init__(
        self,
        authenticator: Any = None,
        simultaneous: int = 2,
        timeout: TimeoutSpec = 60.0,
        verify: Verify = True,
        *,
        max_connections: Optional[int] = None,
        keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY,
        trace: Optional[TraceHook] = None,
        **client_options: Any,
    ) -> None:
        super().__init__(Client, ConnectionManager, authenticator, simultaneous, timeout,
                         verify, max_connections, keepalive_expiry, trace, client_options)

    @property
    def connections(self) -> ConnectionManager:
        """The :class:`~napixclient.connections.ConnectionManager` every
        client of the pool shares."""
        return self._connections  # type: ignore[no-any-return]

    def client(self, host: str) -> Client:
        """Return the :class:`~napixclient.Client` for ``host``, creating it on
        first use.

        :param host: as for :class:`~napixclient.Client`.
        :raises ValueError: for a malformed host.
        :raises RuntimeError: if the pool is closed.
        """
        return super().client(host)  # type: ignore[no-any-return]

    def request(
        self,
        host: str,
        method: str,
        url: str,
        body: Any = None,
        headers: Optional[Dict[str, str]] = None,
        **kwargs: Any,
    ) -> Greenlet:
        """Start a request now and return its greenlet.

        When ``simultaneous`` requests to this host are already running, or
        ``max_connections`` sockets are open, the request waits for its turn
        in a queue: its greenlet is started when its turn comes
        (``greenlet.started`` is false until then), in submission order for
        each host. Killing it meanwhile means it never starts. A greenlet
        that has not started holds no stack, so thousands of queued
        requests cost little memory.

        The arguments after ``host`` are those of
        :meth:`napixclient.Client.request` (``timeout=`` and ``params=`` as
        keywords). The greenlet's value is the request's result, a
        :class:`~napixclient.Response` or an :class:`~napixclient.HTTPError`;
        the pool keeps it until a ``wait`` collects it.

        :raises ValueError: at once, for a malformed host or a bad argument.
        :raises RuntimeError: if the pool is closed.
        """
        client, call = self._prepare(host, method, url, body, headers, kwargs)
        # The caller's context (contextvars: OpenTelemetry's among them),
        # carried into the greenlet, which gevent starts with an empty one.
        job = _Job(self, client, call, contextvars.copy_context())
        greenlet = job.greenlet
        self._pending[greenlet] = (client, call)
        self._clients.started(client)
        try:
            job.withdraw = client.reserve(call, job.start)
        except BaseException:
            del self._pending[greenlet]
            self._clients.ended(client)
            raise
        return greenlet

    def _collect(self, greenlet: Greenlet) -> Result:
        client, call = self._pending.pop(greenlet)
        if greenlet.exception is not None:
            raise greenlet.exception
        value = greenlet.value
        if isinstance(value, GreenletExit):
            return self._cancelled(client, call, "killed")  # type: ignore[no-any-return]
        return value

    def wait(self, timeout: Optional[float] = None) -> List[Result]:
        """Wait for every request not yet collected; return their results in
        submission order.

        :param timeout: seconds (``float``), or ``None`` to wait as long as it
            takes.
        :returns: a list of :class:`~napixclient.Response` and
            :class:`~napixclient.HTTPError`, one per request.
        :raises TimeoutError: (the built-in) when ``timeout`` passed first;
            then nothing is collected and every request stays pending.
        :raises Exception: a bug in the library or in an authenticator, as it
            was raised; only that request is collected, the others stay pending.
        """
        timeout = check_wait_timeout(timeout)
        greenlets = list(self._pending)
        if not greenlets:
            return []
        done = gevent.joinall(greenlets, timeout=timeout)
        if len(done) < len(greenlets):
            raise TimeoutError(timed_out_message("ClientPool.wait", len(greenlets) - len(done),
                                                 len(greenlets), timeout))
        for greenlet in greenlets:
            if greenlet.exception is not None:
                return [self._collect(greenlet)]  # raises
        return [self._collect(greenlet) for greenlet in greenlets]

    def wait_unordered(self, count: int = -1,
                       timeout: Optional[float] = None) -> Iterator[Result]:
        """Yield results as their requests finish, in completion order.

        Only requests already started when the iteration begins are waited for.

        :param count: the most results to yield (``int``); ``-1`` for all.
        :param timeout: seconds (``float``) from the start of the iteration;
            when they have passed, the iteration stops quietly, so a
            ``for ... else`` runs its ``else``. ``None`` waits as long as it takes.
        :returns: an iterator of :class:`~napixclient.Response` and
            :class:`~napixclient.HTTPError`. Results not yielded stay pending:
            a later :meth:`wait` or :meth:`wait_unordered` returns them.
        :raises ValueError: at once, if ``count`` is not an ``int`` >= -1.
        """
        return self._iter_unordered(check_count(count), check_wait_timeout(timeout))

    def _iter_unordered(self, count: int, timeout: Optional[float]) -> Iterator[Result]:
        greenlets = list(self._pending)
        if not greenlets or count == 0:
            return
        limit = None if count < 0 else min(count, len(greenlets))
        with gevent.iwait(greenlets, timeout=timeout, count=limit) as finished:
            for greenlet in finished:
                # cancel() or another wait may have collected it meanwhile.
                if greenlet in self._pending:
                    yield self._collect(greenlet)

    def __iter__(self) -> Iterator[Result]:
        """Yield every pending result in submission order, one at a time:
        :meth:`wait` without a timeout, one result at a time."""
        while self._pending:
            greenlet = next(iter(self._pending))
            greenlet.join()
            yield self._collect(greenlet)

    def cancel(self) -> None:
        """Kill every pending request and forget it. A request killed in the
        middle of an answer closes its connection rather than returning it
        half-read to the pool."""
        greenlets = list(self._pending)
        self._pending.clear()
        # Those waiting for a turn are killed before they start; their turn,
        # when it comes, is given back at once.
        gevent.killall(greenlets, block=True)

    def close(self) -> None:
        """Cancel what is pending, then close every connection. Later requests
        raise :class:`RuntimeError`. Closing twice is harmless."""
        self.cancel()
        self._closed = True
        for client in self._clients.clear():
            client.close()
        self._connections.close()

    def __enter__(self) -> "ClientPool":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class _Job:
    """One request of the pool: its greenlet starts when its turn comes."""

    __slots__ = ("pool", "client", "call", "greenlet", "lease", "context", "withdraw")

    def __init__(self, pool: ClientPool, client: Client, call: PreparedCall,
                 context: contextvars.Context) -> None:
        self.pool = pool
        self.client = client
        self.call = call
        self.greenlet = Greenlet(self.run)
        self.lease: Optional[Lease] = None
        self.context = context
        self.withdraw: Any = None
        self.greenlet.rawlink(self._ended)

    def start(self, lease: Lease) -> None:
        """The turn came: start the greenlet, unless it was killed first
        (then the turn is given back at once)."""
        if self.greenlet.ready():
            self.client.release(lease)
            return
        self.lease = lease
        self.withdraw = None  # granted: nothing left to withdraw
        self.greenlet.start()

    def _ended(self, _: Greenlet) -> None:
        """However the greenlet ended (killed before its turn, or started
        and killed before it ran): its turn is given back unless the run
        gave it back, and the pool may drop the host's client."""
        lease = self.lease
        if lease is not None:
            self.client.release(lease)
        elif self.withdraw is not None:
            self.withdraw()  # killed while it waited: its turn goes to the next
        self.pool._clients.ended(self.client)

    def run(self) -> Result:
        return self.context.run(self._run)

    def _run(self) -> Result:
        assert self.lease is not None
        try:
            return self.client.send_on(self.lease, self.call)
        except HTTPError as error:
            return error
        finally:
            # At once, so that the next request's turn comes now (and only
            # here: _ended finds no lease left to give back).
            lease, self.lease = self.lease, None
            self.client.release(lease)

