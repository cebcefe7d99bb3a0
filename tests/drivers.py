"""One face for the two drivers, so that a behaviour test is written once.

A behaviour test is an ``async def`` function decorated with
:func:`each_driver`. It runs twice: with the gevent driver
(:class:`napixclient.Client`, :class:`napixclient.ClientPool`) and with the
asyncio driver (:class:`napixclient.aio.AsyncClient`,
:class:`napixclient.aio.AsyncClientPool`). It gets a ``driver`` argument,
a :class:`Driver`, and awaits only what the driver gives it::

    @each_driver
    async def test_wait_returns_results_in_submission_order(driver, servers):
        async with driver.pool(AUTH) as pool:
            pool.request(servers[0].host, "GET", "/x")
            results = await pool.wait(timeout=10)

Under gevent, the test's coroutine is driven by hand: every ``await`` of
the gevent face completes at once (the gevent call blocks its greenlet and
yields to the hub as gevent code does), so the coroutine never suspends;
one that does (an ``await asyncio.sleep()`` in the test, say) is a mistake
in the test, reported as such. Under asyncio, it runs with
:func:`asyncio.run`. Either way a test ends by itself within
:data:`LIMIT` seconds.

The servers a behaviour test uses must serve while either driver waits: a
:class:`~napixclient.testing.NapixTestServer` or a gevent server in a thread
of its own (``start(thread=True)``, :class:`~napixclient.testing.HubThread`),
or a server in another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Coroutine, List, Optional

import gevent
import pytest

from napixclient.testing import HubThread
from tests.faultserver import FaultServer

__all__ = ["DRIVERS", "LIMIT", "Driver", "each_driver", "fault_server",
           "make_driver"]


#: Seconds a behaviour test may run, under either driver.
LIMIT = 120.0

#: The drivers every behaviour test runs with.
DRIVERS = ("gevent", "asyncio")


class SuspendedUnderGevent(RuntimeError):
    """A behaviour test awaited something that suspends: under the gevent
    driver nothing would ever resume it."""


def drive(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coroutine`` to its end in the current greenlet, without an
    event loop; return its result.

    :raises SuspendedUnderGevent: if it suspends.
    """
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise SuspendedUnderGevent(
        "the test suspended under the gevent driver: await the driver's "
        "sleep, gather and wait_until, not asyncio's")


class Background:
    """A coroutine running beside the test (:meth:`Driver.spawn`)."""

    def __init__(self, stop: Callable[[], Awaitable[None]]) -> None:
        self._stop = stop

    async def stop(self) -> None:
        """Stop it (kill the greenlet, cancel the task) and wait for it."""
        await self._stop()


class Driver:
    """What a behaviour test may use; one subclass per driver.

    :ivar name: ``"gevent"`` or ``"asyncio"``.
    """

    name = ""

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run a behaviour test's coroutine to its end (at most
        :data:`LIMIT` seconds); return what it returns."""
        raise NotImplementedError

    def client(self, host: str, authenticator: Any = None,
               **options: Any) -> contextlib.AbstractAsyncContextManager[Any]:
        """``async with driver.client(host, auth, **options) as client``: a
        client of this driver, closed at the end of the block. ``await
        client.request(...)``, ``client.get(...)``..."""
        raise NotImplementedError

    def pool(self, authenticator: Any = None,
             **options: Any) -> contextlib.AbstractAsyncContextManager[Any]:
        """``async with driver.pool(auth, **options) as pool``: a pool of
        this driver, closed at the end of the block."""
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        """Let the driver run for ``seconds``."""
        raise NotImplementedError

    async def gather(self, *awaitables: Awaitable[Any]) -> List[Any]:
        """Run the awaitables (coroutines of the test) at once; their results
        in order. An exception propagates."""
        raise NotImplementedError

    def spawn(self, function: Callable[[], Coroutine[Any, Any, Any]]) -> Background:
        """Run ``function()`` beside the test until :meth:`Background.stop`."""
        raise NotImplementedError

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0,
                         what: str = "the condition") -> None:
        """Poll ``condition`` every 10 ms until it is true.

        :raises AssertionError: naming ``what`` after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} was not met within {timeout:g} s")
            await self.sleep(0.01)

    def __repr__(self) -> str:
        return f"<{self.name} driver>"


# -- gevent -------------------------------------------------------------------------


class _GeventClient:
    """A :class:`napixclient.Client` behind awaitable methods."""

    def __init__(self, client: Any) -> None:
        self.raw = client

    async def request(self, method: str, url: str, body: Any = None, headers: Any = None,
                      **kwargs: Any) -> Any:
        return self.raw.request(method, url, body, headers, **kwargs)

    async def get(self, url: str, **kwargs: Any) -> Any:
        return self.raw.get(url, **kwargs)

    async def head(self, url: str, **kwargs: Any) -> Any:
        return self.raw.head(url, **kwargs)

    async def delete(self, url: str, **kwargs: Any) -> Any:
        return self.raw.delete(url, **kwargs)

    async def post(self, url: str, body: Any = None, **kwargs: Any) -> Any:
        return self.raw.post(url, body, **kwargs)

    async def put(self, url: str, body: Any = None, **kwargs: Any) -> Any:
        return self.raw.put(url, body, **kwargs)

    async def patch(self, url: str, body: Any = None, **kwargs: Any) -> Any:
        return self.raw.patch(url, body, **kwargs)


class _GeventPool:
    """A :class:`napixclient.ClientPool` behind awaitable methods."""

    def __init__(self, pool: Any) -> None:
        self.raw = pool

    def request(self, host: str, method: str, url: str, body: Any = None,
                headers: Any = None, **kwargs: Any) -> Any:
        """Start a request; its greenlet."""
        return self.raw.request(host, method, url, body, headers, **kwargs)

    @property
    def pending(self) -> int:
        return int(self.raw.pending)

    async def wait(self, timeout: Optional[float] = None) -> List[Any]:
        return list(self.raw.wait(timeout=timeout))

    async def wait_unordered(self, count: int = -1,
                             timeout: Optional[float] = None) -> AsyncIterator[Any]:
        for result in self.raw.wait_unordered(count=count, timeout=timeout):
            yield result

    def check_wait_unordered(self, count: int) -> None:
        """Call ``wait_unordered(count)`` only to see it refuse bad arguments."""
        self.raw.wait_unordered(count=count)

    async def iterate(self) -> AsyncIterator[Any]:
        """``for result in pool``."""
        for result in self.raw:
            yield result

    async def cancel(self) -> None:
        self.raw.cancel()

    @staticmethod
    def cancel_one(handle: Any) -> None:
        """Stop one request: kill its greenlet."""
        handle.kill(block=False)

    async def close(self) -> None:
        self.raw.close()

    @staticmethod
    async def result(handle: Any, timeout: float = 10.0) -> Any:
        """The result of what :meth:`request` returned."""
        return handle.get(timeout=timeout)

    @staticmethod
    def done(handle: Any) -> bool:
        return bool(handle.ready())


class GeventDriver(Driver):
    """napixclient's gevent driver: Client and ClientPool."""

    name = "gevent"

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        with gevent.Timeout(LIMIT, TimeoutError(f"the test ran longer than {LIMIT:g} s")):
            return drive(coroutine)

    @contextlib.asynccontextmanager
    async def client(self, host: str, authenticator: Any = None,
                     **options: Any) -> AsyncIterator[_GeventClient]:
        from napixclient import Client

        with Client(host, authenticator, **options) as client:
            yield _GeventClient(client)

    @contextlib.asynccontextmanager
    async def pool(self, authenticator: Any = None,
                   **options: Any) -> AsyncIterator[_GeventPool]:
        from napixclient import ClientPool

        with ClientPool(authenticator, **options) as pool:
            yield _GeventPool(pool)

    async def sleep(self, seconds: float) -> None:
        gevent.sleep(seconds)

    async def gather(self, *awaitables: Awaitable[Any]) -> List[Any]:
        greenlets = [gevent.spawn(drive, awaitable) for awaitable in awaitables]
        gevent.joinall(greenlets, raise_error=True)
        return [greenlet.value for greenlet in greenlets]

    def spawn(self, function: Callable[[], Coroutine[Any, Any, Any]]) -> Background:
        greenlet = gevent.spawn(drive, function())

        async def stop() -> None:
            greenlet.kill(block=True, timeout=5)

        return Background(stop)


# -- asyncio ------------------------------------------------------------------------


class _AsyncioPool:
    """A :class:`napixclient.aio.AsyncClientPool`, as the gevent face."""

    def __init__(self, pool: Any) -> None:
        self.raw = pool

    def request(self, host: str, method: str, url: str, body: Any = None,
                headers: Any = None, **kwargs: Any) -> Any:
        """Schedule a request; its task."""
        return self.raw.request(host, method, url, body, headers, **kwargs)

    @property
    def pending(self) -> int:
        return int(self.raw.pending)

    async def wait(self, timeout: Optional[float] = None) -> List[Any]:
        return list(await self.raw.wait(timeout=timeout))

    def wait_unordered(self, count: int = -1, timeout: Optional[float] = None) -> Any:
        return self.raw.wait_unordered(count=count, timeout=timeout)

    def check_wait_unordered(self, count: int) -> None:
        """Call ``wait_unordered(count)`` only to see it refuse bad arguments."""
        self.raw.wait_unordered(count=count)

    def iterate(self) -> Any:
        """``async for result in pool``."""
        return self.raw.__aiter__()

    async def cancel(self) -> None:
        await self.raw.cancel()

    @staticmethod
    def cancel_one(handle: Any) -> None:
        """Stop one request: cancel its task."""
        handle.cancel()

    async def close(self) -> None:
        await self.raw.aclose()

    @staticmethod
    async def result(handle: Any, timeout: float = 10.0) -> Any:
        """The result of what :meth:`request` returned."""
        return await asyncio.wait_for(asyncio.shield(handle), timeout)

    @staticmethod
    def done(handle: Any) -> bool:
        return bool(handle.done())


class AsyncioDriver(Driver):
    """napixclient's asyncio driver: AsyncClient and AsyncClientPool.

    :param loop_factory: a callable making the event loop (``uvloop``'s
        ``new_event_loop``, say); ``None``: asyncio's own.
    """

    name = "asyncio"

    def __init__(self, loop_factory: Optional[Callable[[], asyncio.AbstractEventLoop]] = None,
                 name: str = "asyncio") -> None:
        self._loop_factory = loop_factory
        self.name = name

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        async def bounded() -> Any:
            return await asyncio.wait_for(coroutine, LIMIT)

        if self._loop_factory is None:
            return asyncio.run(bounded())
        loop = self._loop_factory()
        try:
            return loop.run_until_complete(bounded())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    @contextlib.asynccontextmanager
    async def client(self, host: str, authenticator: Any = None,
                     **options: Any) -> AsyncIterator[Any]:
        from napixclient.aio import AsyncClient

        async with AsyncClient(host, authenticator, **options) as client:
            yield client

    @contextlib.asynccontextmanager
    async def pool(self, authenticator: Any = None,
                   **options: Any) -> AsyncIterator[_AsyncioPool]:
        from napixclient.aio import AsyncClientPool

        async with AsyncClientPool(authenticator, **options) as pool:
            yield _AsyncioPool(pool)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def gather(self, *awaitables: Awaitable[Any]) -> List[Any]:
        return list(await asyncio.gather(*awaitables))

    def spawn(self, function: Callable[[], Coroutine[Any, Any, Any]]) -> Background:
        task = asyncio.ensure_future(function())

        async def stop() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        return Background(stop)


def make_driver(name: str) -> Driver:
    """The :class:`Driver` called ``name`` (one of :data:`DRIVERS`)."""
    if name == "gevent":
        return GeventDriver()
    if name == "asyncio":
        return AsyncioDriver()
    raise ValueError(f"no driver named {name!r}")


def each_driver(test: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    """Make an ``async def`` behaviour test a plain pytest test run once per
    driver of :data:`DRIVERS`; its ``driver`` argument is the
    :class:`Driver`. Its other arguments are fixtures, as usual."""
    if not inspect.iscoroutinefunction(test):
        raise TypeError(f"{test.__name__}: a behaviour test is an async def function")

    @functools.wraps(test)
    def run(*args: Any, driver: str, **kwargs: Any) -> Any:
        chosen = make_driver(driver)
        return chosen.run(test(*args, driver=chosen, **kwargs))

    # pytest reads the signature through __wrapped__: the test's own,
    # ``driver`` included, which the parametrisation fills with a name.
    return pytest.mark.parametrize("driver", DRIVERS)(run)


# -- servers that serve whichever driver waits ------------------------------------------


@pytest.fixture
def fault_server():
    """tests/faultserver.py's FaultServer, in a thread with a hub of its own."""
    fault = FaultServer()
    serving = HubThread(fault.start, lambda timeout: fault.stop(), name="FaultServer")
    serving.start()
    yield fault
    serving.stop()


