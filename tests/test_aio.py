"""What only the asyncio driver has: a Task.cancel() in the middle of an
answer, the caller's asyncio.timeout() (asyncio.wait_for on 3.10), an event
loop that never stands still (1,000 requests; a host flooding), no gevent in
an asyncio program, the test servers serving async tests, and uvloop.

What both drivers share is tested once for both, in test_drivers.py.
"""

import asyncio
import itertools
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from napixclient import ConnectionError, HTTPError, Response, Timeout
from napixclient.authenticators import TokenIdentifier
from napixclient.testing import hmac_token
from tests import drivers
from tests.helpers import AUTH, closed_port

ROOT = Path(__file__).resolve().parent.parent

fault_server = drivers.fault_server

pytestmark = pytest.mark.anyio

try:
    import uvloop
except ImportError:  # optional: the tests below run on asyncio's own loop
    uvloop = None

#: anyio_backend values: asyncio's own loop, and uvloop when installed.
LOOPS = [pytest.param("asyncio", id="asyncio")] + (
    [pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")] if uvloop else [])


@pytest.fixture
def anyio_backend():
    """asyncio: napixclient.aio runs on asyncio (anyio would add trio)."""
    return "asyncio"


def aio():
    """napixclient.aio, imported when a test runs (it lands with the driver)."""
    import napixclient.aio

    return napixclient.aio


def _slow_body(fault_server, head_delay=0.0, delay=2.0):
    fault_server.mid_body.clear()
    return f"/slow-body?size=200000&delay={delay}&head-delay={head_delay}"


async def _until(condition, what, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout:g} s"
        await asyncio.sleep(0.01)


def _open_sockets():
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


# -- cancellation through Task.cancel() -----------------------------------------------


@pytest.mark.parametrize("anyio_backend", LOOPS)
@pytest.mark.parametrize("phase", ["headers", "body"])
async def test_a_request_cancelled_by_task_cancel_closes_its_connection(fault_server,
                                                                        phase):
    head_delay = 2.0 if phase == "headers" else 0.0
    async with aio().AsyncClient(fault_server.host, simultaneous=1, timeout=10) as client:
        before = await client.get("/ok?before=1")
        task = asyncio.ensure_future(client.get(_slow_body(fault_server, head_delay)))
        if phase == "body":
            await _until(fault_server.mid_body.is_set, "half the body sent")
        else:
            await _until(lambda: len(fault_server.requests) == 2, "the request read")
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _until(lambda: fault_server.open_connections == 0,
                     "the server saw the cancelled request's connection closed")
        after = await client.get("/ok?after=1")
    assert before.body["connection"] == 1
    assert after.body["connection"] == 2 and after.body["path"] == "/ok?after=1"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_cancelled_requests_leak_no_socket_and_no_task(fault_server):
    baseline = _open_sockets()
    tasks_before = len(asyncio.all_tasks())
    async with aio().AsyncClient(fault_server.host, simultaneous=4, timeout=10) as client:
        for round_ in range(5):
            fault_server.mid_body.clear()
            tasks = [asyncio.ensure_future(client.get(
                f"/slow-body?size=200000&delay=2&n={round_}.{n}")) for n in range(4)]
            await _until(fault_server.mid_body.is_set, "half a body sent")
            await asyncio.sleep(0.05)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await _until(lambda: fault_server.open_connections == 0, "every connection closed")
        assert _open_sockets() <= baseline
        assert (await client.get("/ok")).status == 200
    await asyncio.sleep(0.05)
    assert _open_sockets() <= baseline
    assert len(asyncio.all_tasks()) == tasks_before


async def test_cancelling_one_task_of_a_pool_leaves_the_others_to_finish(fault_server,
                                                                        napix_server):
    napix_server.route("/slow", body={"ok": True}, latency=0.3)
    async with aio().AsyncClientPool(AUTH, timeout=10) as pool:
        doomed = pool.request(fault_server.host, "GET", _slow_body(fault_server))
        first = pool.request(napix_server.host, "GET", "/slow")
        second = pool.request(napix_server.host, "GET", "/slow")
        assert all(isinstance(task, asyncio.Task) for task in (doomed, first, second))
        await _until(fault_server.mid_body.is_set, "half the body sent")
        doomed.cancel()
        assert [r.status for r in await asyncio.gather(first, second)] == [200, 200]
        await asyncio.wait_for(pool.wait(timeout=5), 10)
        assert pool.pending == 0
    await _until(lambda: fault_server.open_connections == 0, "the connection closed")


async def test_cancelling_the_task_waiting_on_a_pool_loses_no_result(napix_server):
    napix_server.route("/slow", body={"ok": True}, latency=0.3)
    async with aio().AsyncClientPool(AUTH, timeout=10) as pool:
        for n in range(3):
            pool.request(napix_server.host, "GET", "/slow", params={"n": n})
        waiter = asyncio.ensure_future(pool.wait())
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert pool.pending == 3
        results = await pool.wait(timeout=5)
    assert [r.request.path for r in results] == [f"/slow?n={n}" for n in range(3)]


# -- the caller's own deadline ---------------------------------------------------------


async def _within(kind, seconds, awaitable):
    """``awaitable`` under the caller's deadline: asyncio.timeout() or wait_for."""
    if kind == "timeout":
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


@pytest.mark.parametrize("anyio_backend", LOOPS)
@pytest.mark.parametrize("kind", ["timeout", "wait_for"])
async def test_the_caller_s_deadline_cuts_a_request_and_leaves_the_client_usable(
        fault_server, kind):
    if kind == "timeout" and not hasattr(asyncio, "timeout"):
        pytest.skip("asyncio.timeout() is new in Python 3.11")
    async with aio().AsyncClient(fault_server.host, simultaneous=1, timeout=30) as client:
        await client.get("/ok?before=1")
        started = time.monotonic()
        # asyncio's own TimeoutError: the built-in one from Python 3.11, a
        # class of its own in 3.10.
        with pytest.raises(asyncio.TimeoutError):
            await _within(kind, 0.3, client.get(_slow_body(fault_server, delay=5)))
        spent = time.monotonic() - started
        assert spent < 2, f"a deadline of 0.3 s fired after {spent:.1f} s"
        # Not a napixclient Timeout: the caller's deadline is the caller's.
        after = await client.get("/ok?after=1")
    assert after.body["connection"] == 2
    await _until(lambda: fault_server.open_connections == 0, "the connections closed")


async def test_a_napixclient_timeout_is_an_http_error_not_the_caller_s_timeout_error(
        fault_server):
    async with aio().AsyncClient(fault_server.host, timeout=0.3) as client:
        with pytest.raises(Timeout) as caught:
            await client.get("/stall-headers?seconds=3")
    assert isinstance(caught.value, HTTPError)
    assert not isinstance(caught.value, asyncio.CancelledError)


async def test_the_pool_wait_s_timeout_is_the_built_in_timeout_error(napix_server):
    napix_server.route("/slow", body={"ok": True}, latency=1)
    async with aio().AsyncClientPool(AUTH, timeout=10) as pool:
        pool.request(napix_server.host, "GET", "/slow")
        with pytest.raises(TimeoutError):
            await pool.wait(timeout=0.1)
        assert pool.pending == 1


# -- no event loop blocked -------------------------------------------------------------


#: The longest a ticker may wait for its next tick (s): a busy loop turns
#: more slowly, on a loaded machine more slowly still (0.56 s once, in a CI
#: run beside other work: a turn of the loop runs every task that is ready,
#: a thousand at the start); a loop held by one request (a blocking call of
#: 5 ms per exchange, a buffer parsed whole) stands still for seconds.
STILL = 1.0


class Ticker:
    """A task that ticks every 10 ms: the longest gap between two ticks is
    how long the event loop stood still."""

    def __init__(self):
        self.ticks = []
        self._task = asyncio.ensure_future(self._run())

    async def _run(self):
        for _ in range(6000):  # a minute at most
            self.ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def stop(self):
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def longest_gap(self, start, end):
        inside = [tick for tick in self.ticks if start <= tick <= end]
        edges = [start] + inside + [end]
        return max(later - earlier for earlier, later in itertools.pairwise(edges))


@pytest.mark.parametrize("anyio_backend", LOOPS)
async def test_a_ticker_keeps_ticking_while_1000_requests_run(many_hosts):
    hosts = many_hosts(100)
    ticker = Ticker()
    await asyncio.sleep(0.05)
    async with aio().AsyncClientPool(simultaneous=4, timeout=30) as pool:
        for host in hosts.hosts * 10:
            pool.request(host, "GET", "/")
        # From here on the loop runs 1,000 requests, 400 at a time: busy, its
        # turns take longer, but it turns.
        started = time.monotonic()
        results = await pool.wait(timeout=60)
    ended = time.monotonic()
    await ticker.stop()
    assert len(results) == 1000
    assert all(type(r) is Response and r.status == 200 for r in results)
    gap = ticker.longest_gap(started, ended)
    assert gap < STILL, f"the event loop stood still {gap:.2f} s"
    assert hosts.figures()["requests"] >= 1000


@pytest.mark.parametrize("anyio_backend", LOOPS)
@pytest.mark.parametrize("path", ["/flood-body?chunked=1&seconds=6",
                                  "/flood-body?seconds=6&then=hold",
                                  "/flood-head?seconds=6",
                                  "/flood-interim?seconds=6"])
async def test_a_ticker_keeps_ticking_while_a_hostile_host_floods(hostile_server, path):
    ticker = Ticker()
    await asyncio.sleep(0.05)
    async with aio().AsyncClient(hostile_server.host, timeout=2,
                                 max_body_size=2 ** 40) as client:
        started = time.monotonic()
        with pytest.raises(HTTPError):
            await client.get(path)
        ended = time.monotonic()
    await ticker.stop()
    assert ended - started < 2 + 1.5, f"a timeout of 2 s fired after {ended - started:.1f} s"
    gap = ticker.longest_gap(started, ended)
    assert gap < STILL, f"the event loop stood still {gap:.2f} s"


async def test_a_pool_s_open_connections_cost_little_memory_each(many_hosts):
    # Each connection had its own 64 KiB read buffer: 2,000 connections of a
    # probe (W3) held 128 MiB. They share their manager's now.
    import tracemalloc

    hosts = many_hosts(200)
    async with aio().AsyncClientPool(simultaneous=1, timeout=30) as pool:
        pool.request(hosts.hosts[0], "GET", "/")
        await pool.wait(timeout=30)  # the driver's own first-use costs
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for host in hosts.hosts[1:]:
                pool.request(host, "GET", "/")
            results = await pool.wait(timeout=30)
            # 199 connections are open, idle, kept alive.
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert all(type(r) is Response and r.status == 200 for r in results)
    assert held / 199 < 16 * 1024, f"{held / 199:,.0f} bytes per open connection"


async def test_a_retry_backoff_waits_without_blocking_the_loop():
    ticker = Ticker()
    await asyncio.sleep(0.05)
    async with aio().AsyncClient(f"127.0.0.1:{closed_port()}", retries=3, retry_backoff=0.1,
                                 timeout=5) as client:
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            await client.get("/")  # 0.2 + 0.4 s of backoff
        ended = time.monotonic()
    await ticker.stop()
    assert ended - started >= 0.5
    assert ticker.longest_gap(started, ended) < STILL


# -- no gevent in an asyncio program ---------------------------------------------------

GEVENT_MODULES = "sorted(m for m in sys.modules if m.split('.')[0] in ('gevent', 'greenlet'))"


def _fresh(code, **kwargs):
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          **kwargs)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_importing_napixclient_aio_loads_no_gevent():
    out = _fresh(f"""
        import sys
        import napixclient.aio
        from napixclient.aio import AsyncClient, AsyncClientPool
        print({GEVENT_MODULES})
    """)
    assert out.strip() == "[]"


def test_an_asyncio_program_using_napixclient_aio_end_to_end_loads_no_gevent(
        many_hosts, hostile_server):
    hosts = many_hosts(3)
    program = f"""
        import asyncio, json, sys
        from napixclient import HTTPError, Response
        from napixclient.aio import AsyncClient, AsyncClientPool

        async def main(hosts, dead, hostile):
            async with AsyncClient(hosts[0], {{"login": "root", "key": "toor"}},
                                   timeout=5) as client:
                one = await client.post("/vm-ip/", {{"size": 1}})
            async with AsyncClientPool(timeout=5, retries=1,
                                       trace=lambda event, info: None) as pool:
                for host in hosts + [dead]:
                    pool.request(host, "GET", "/")
                pool.request(hostile, "GET", "/missing")
                ordered = await pool.wait(timeout=10)
                for host in hosts:
                    pool.request(host, "GET", "/")
                unordered = [r async for r in pool.wait_unordered(timeout=10)]
            return one, ordered, unordered

        one, ordered, unordered = asyncio.run(main(*json.loads(sys.stdin.read())))
        print(json.dumps({{
            "one": one.status,
            "ordered": [type(r).__name__ for r in ordered],
            "chain": ordered[-1].format_chain(),
            "unordered": sorted(r.status for r in unordered),
            "gevent": {GEVENT_MODULES},
        }}))
    """
    dead = f"127.0.0.1:{closed_port()}"
    out = json.loads(_fresh(program, input=json.dumps([hosts.hosts, dead,
                                                       hostile_server.host])))
    assert out["one"] == 200
    assert out["ordered"] == ["Response"] * 3 + ["ConnectionError", "HTTPError"]
    assert "404" in out["chain"]
    assert out["unordered"] == [200, 200, 200]
    assert out["gevent"] == []


# -- the test servers serve async tests ------------------------------------------------


@pytest.mark.parametrize("anyio_backend", LOOPS)
async def test_an_async_test_calls_the_napix_server_fixture_with_async_client(napix_server):
    napix_server.route("/vm-ip/", "POST", handler=lambda request: (201, request.json))
    napix_server.route("/capacity", body={"free_slots": 3})
    token = TokenIdentifier(hmac_token("root", "toor"))
    async with aio().AsyncClient(napix_server.host, AUTH, timeout=5) as client:
        created = await client.post("/vm-ip/", {"size": 1})
    async with aio().AsyncClient(napix_server.host, token, timeout=5) as client:
        capacity = await client.get("/capacity")
    async with aio().AsyncClient(napix_server.host, {"login": "root", "key": "wrong"},
                                 timeout=5) as client:
        with pytest.raises(HTTPError) as refused:
            await client.get("/capacity")
    assert (created.status, created.body, capacity.body) == (201, {"size": 1},
                                                            {"free_slots": 3})
    assert refused.value.status == 403
    assert [r.login for r in napix_server.requests] == ["root"] * 3


async def test_async_with_napix_test_server_and_async_client_pool_together():
    from napixclient.testing import NapixTestServer

    async with NapixTestServer() as first, NapixTestServer() as second:
        first.route("/x", body="first", latency=0.2)
        second.route("/x", body="second")
        async with aio().AsyncClientPool(AUTH, timeout=5) as pool:
            pool.request(first.host, "GET", "/x")
            pool.request(second.host, "GET", "/x")
            assert [r.body async for r in pool.wait_unordered()] == ["second", "first"]
        assert first.max_open_connections == second.max_open_connections == 1
