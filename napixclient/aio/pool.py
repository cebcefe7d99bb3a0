"""AsyncClientPool: requests fanned out over many Napix hosts at once, from
asyncio code; the twin of :class:`napixclient.ClientPool`."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, AsyncIterator, Deque, Dict, List, Optional, Union

from napixclient.aio.client import AsyncClient
from napixclient.aio.connections import DEFAULT_KEEPALIVE_EXPIRY, AsyncConnectionManager
from napixclient.core.client import PreparedCall, TimeoutSpec
from napixclient.core.pool import (
    PoolBase,
    check_count,
    check_wait_timeout,
    timed_out_message,
)
from napixclient.core.trace import TraceHook
from napixclient.exceptions import HTTPError
from napixclient.response import Response

__all__ = ["AsyncClientPool", "Result"]

#: What a request yields: its answer, or the error that stands for it.
Result = Union[Response, HTTPError]


class AsyncClientPool(PoolBase):
    """Requests to many hosts at once, each an :class:`asyncio.Task`.

    The twin of :class:`napixclient.ClientPool`, with the same arguments,
    caps, orders, deadlines and results: one
    :class:`~napixclient.aio.AsyncClient` per host, made on first use and
    dropped when the pool no longer uses it; one
    :class:`~napixclient.aio.connections.AsyncConnectionManager` for all of
    them (``simultaneous`` per host, ``max_connections`` in all, idle ones
    included). Every request yields exactly one result: its
    :class:`~napixclient.Response` or :class:`~napixclient.HTTPError`.

    Use it as ``async with AsyncClientPool(...) as pool:`` (leaving the block
    cancels what is pending and closes every connection), or call
    :meth:`aclose`.

    :raises ValueError: at once, for a bad option (see
        :class:`napixclient.ClientPool`).
    """

    def __init__(
        self,
        authenticator: Any = None,
        simultaneous: int = 2,
        timeout: TimeoutSpec = 60.0,
        verify: Any = True,
        *,
        max_connections: Optional[int] = None,
        keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY,
        trace: Optional[TraceHook] = None,
        **client_options: Any,
    ) -> None:
        super().__init__(AsyncClient, AsyncConnectionManager, authenticator, simultaneous,
                         timeout, verify, max_connections, keepalive_expiry, trace,
                         client_options)

    @property
    def connections(self) -> AsyncConnectionManager:
        """The connection manager every client of the pool shares."""
        return self._connections  # type: ignore[no-any-return]

    def client(self, host: str) -> AsyncClient:
        """The :class:`~napixclient.aio.AsyncClient` for ``host``, made on
        first use.

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
    ) -> "asyncio.Task[Result]":
        """Schedule a request now and return its task (call it from a
        coroutine: the task runs on the running event loop).

        The arguments after ``host`` are those of
        :meth:`napixclient.aio.AsyncClient.request`. The task waits for a
        turn under ``simultaneous`` and ``max_connections`` (in submission
        order for each host; the wait is not part of the request's timeout),
        then sends; its result is the :class:`~napixclient.Response` or the
        :class:`~napixclient.HTTPError`, kept by the pool until a wait
        collects it. Cancelling the task cancels the request (mid-body, its
        connection is closed).

        :raises ValueError: at once, for a malformed host or a bad argument.
        :raises RuntimeError: if the pool is closed, or no event loop runs.
        """
        client, call = self._prepare(host, method, url, body, headers, kwargs)
        task = asyncio.get_running_loop().create_task(self._run(client, call))
        self._pending[task] = (client, call)
        self._clients.started(client)
        return task

    async def _run(self, client: AsyncClient, call: PreparedCall) -> Result:
        manager = self._connections
        try:
            lease = await manager.acquire(client.origin, client.simultaneous, call.record)
            try:
                return await client.send_on(lease, call)
            finally:
                manager.release(lease)
        except HTTPError as error:
            return error
        finally:
            self._clients.ended(client)

    def _collect(self, task: "asyncio.Task[Result]") -> Result:
        client, call = self._pending.pop(task)
        if task.cancelled():
            return self._cancelled(client, call, "cancelled")  # type: ignore[no-any-return]
        error = task.exception()
        if error is not None:
            raise error
        return task.result()

    async def wait(self, timeout: Optional[float] = None) -> List[Result]:
        """Wait for every request not yet collected; return their results in
        submission order.

        :param timeout: seconds, or ``None`` to wait as long as it takes.
        :returns: a list of :class:`~napixclient.Response` and
            :class:`~napixclient.HTTPError`, one per request.
        :raises TimeoutError: (the built-in) when ``timeout`` passed first;
            then nothing is collected and every request stays pending.
        :raises Exception: a bug in the library or in an authenticator, as
            it was raised; only that request is collected.
        """
        timeout = check_wait_timeout(timeout)
        tasks = list(self._pending)
        if not tasks:
            return []
        _, running = await asyncio.wait(tasks, timeout=timeout)
        if running:
            raise TimeoutError(timed_out_message("AsyncClientPool.wait", len(running),
                                                 len(tasks), timeout))
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                return [self._collect(task)]  # raises
        return [self._collect(task) for task in tasks]

    def wait_unordered(self, count: int = -1,
                       timeout: Optional[float] = None) -> AsyncIterator[Result]:
        """Yield results as their requests finish, in completion order:
        ``async for result in pool.wait_unordered(...)``.

        Only requests already scheduled when the iteration begins are
        waited for.

        :param count: the most results to yield (``int``); ``-1`` for all.
        :param timeout: seconds from the start of the iteration; when they
            have passed, the iteration stops quietly. ``None``: no limit.
        :raises ValueError: at once, if ``count`` is not an ``int`` >= -1.
        """
        return self._iter_unordered(check_count(count), check_wait_timeout(timeout))

    async def _iter_unordered(self, count: int,
                              timeout: Optional[float]) -> AsyncIterator[Result]:
        tasks = list(self._pending)
        if not tasks or count == 0:
            return
        limit = len(tasks) if count < 0 else min(count, len(tasks))
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        finished: Deque[asyncio.Task[Result]] = deque()
        wake: List[Optional[asyncio.Future[None]]] = [None]

        def on_done(task: "asyncio.Task[Result]") -> None:
            finished.append(task)
            waiter = wake[0]
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

        for task in tasks:
            task.add_done_callback(on_done)
        try:
            given = 0
            while given < limit:
                if not finished:
                    waiter = wake[0] = loop.create_future()
                    left = None if deadline is None else deadline - loop.time()
                    if left is not None and left <= 0:
                        return
                    try:
                        await asyncio.wait_for(waiter, left)
                    except asyncio.TimeoutError:
                        return
                    continue
                task = finished.popleft()
                # cancel() or another wait may have collected it meanwhile.
                if task in self._pending:
                    given += 1
                    yield self._collect(task)
        finally:
            for task in tasks:
                task.remove_done_callback(on_done)

    def __aiter__(self) -> AsyncIterator[Result]:
        """``async for result in pool:`` is :meth:`wait` one result at a
        time, in submission order."""
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Result]:
        while self._pending:
            task = next(iter(self._pending))
            await asyncio.wait([task])
            yield self._collect(task)

    async def cancel(self) -> None:
        """Cancel every pending request and forget it. A request cancelled
        in the middle of an answer closes its connection rather than
        returning it half-read to the pool."""
        tasks = list(self._pending)
        self._pending.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def aclose(self) -> None:
        """Cancel what is pending, then close every connection. Later
        requests raise :class:`RuntimeError`. Closing twice is harmless."""
        await self.cancel()
        self._closed = True
        for client in self._clients.clear():
            await client.aclose()
        self._connections.close()

    async def __aenter__(self) -> "AsyncClientPool":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()
