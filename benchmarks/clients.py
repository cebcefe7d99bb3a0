"""The clients under test, each written the way its users would write it.

run.py starts this file once per (client, workload, repeat) as its own
process, so that gevent monkey-patching (grequests patches on import) cannot
reach another client and so that peak RSS is one client's own::

    python benchmarks/clients.py '{"client": "aiohttp", "mode": "fanout", ...}'

It prints one JSON line with its measurements. Every client implements:

* ``fanout(bases, path, per_host, cap, timeout, library_defaults=False)``:
  ``per_host`` GETs of ``path`` on each base URL, all submitted at once, at
  most ``cap`` at a time per host; returns one ``(status, decoded JSON or
  None)`` or an exception per request. With ``library_defaults`` (W4), a
  client whose library caps the total of connections by default keeps that
  default (aiohttp's 100, httpx's 100) instead of having it lifted;
* ``sequential(base, path, count, warmup, timeout)``: ``warmup`` then
  ``count`` GETs one after the other on one client (one keep-alive
  connection); returns the seconds each of the last ``count`` took and the
  CPU seconds they used.

Imports happen inside the functions, so that only the client under test is
loaded. The child raises its soft limit of open files to the hard limit,
unless the spec gives ``nofile_soft`` (W4): run.py has then set that soft
limit before the child started, and it is kept. ``impl`` in the spec names
the functions to run when ``client`` is a label (``napixclient@88df591``:
the napixclient functions, with an older napixclient first on PYTHONPATH).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import warnings
from collections import Counter
from typing import Any, Callable, Dict, List, Tuple

Outcome = Any  # (status, body) or an exception
OneRequest = Callable[[], Tuple[int, Any]]

#: Threads for "requests + ThreadPoolExecutor": one per connection the cap
#: allows, but no more than a user would reasonably start.
MAX_THREADS = 256


def _order(bases: List[str], per_host: int) -> List[str]:
    """Every request's base URL, round-robin over the hosts."""
    return [base for _ in range(per_host) for base in bases]


def _sync_sequential(one: OneRequest, count: int, warmup: int) -> Tuple[List[float], float]:
    for _ in range(warmup):
        one()
    durations = []
    cpu = time.process_time()
    for _ in range(count):
        started = time.perf_counter()
        status, _body = one()
        durations.append(time.perf_counter() - started)
        if status != 200:
            raise RuntimeError(f"status {status}")
    return durations, time.process_time() - cpu


# -- napixclient -------------------------------------------------------------

def _napixclient_fanout(bases, path, per_host, cap, timeout, **options):
    # Always the defaults: max_connections follows the soft RLIMIT_NOFILE.
    from napixclient import ClientPool

    with ClientPool(simultaneous=cap, timeout=timeout, **options) as pool:
        for base in _order(bases, per_host):
            pool.request(base, "GET", path)
        results = pool.wait(timeout=timeout * 4)
    return [(r.status, r.body) if r.status == 200 else r for r in results]


def _napixclient_sequential(base, path, count, warmup, timeout, **options):
    from napixclient import Client

    with Client(base, timeout=timeout, **options) as client:
        def one():
            response = client.get(path)
            return response.status, response.body
        return _sync_sequential(one, count, warmup)


def _login():
    """What Napix users run: every request signed with HMAC-SHA256 (nginx
    does not check it; the client's cost is the same)."""
    from napixclient.authenticators import LoginAuthenticator

    return LoginAuthenticator("bench", "bench-key-not-a-secret")


def napixclient_fanout(bases, path, per_host, cap, timeout, library_defaults=False):
    """napixclient as installed: no authenticator, the default parser."""
    return _napixclient_fanout(bases, path, per_host, cap, timeout)


def napixclient_sequential(base, path, count, warmup, timeout):
    return _napixclient_sequential(base, path, count, warmup, timeout)


def napixclient_signed_fanout(bases, path, per_host, cap, timeout, library_defaults=False):
    """napixclient signing every request with a LoginAuthenticator."""
    return _napixclient_fanout(bases, path, per_host, cap, timeout, authenticator=_login())


def napixclient_signed_sequential(base, path, count, warmup, timeout):
    return _napixclient_sequential(base, path, count, warmup, timeout, authenticator=_login())


def napixclient_h11_fanout(bases, path, per_host, cap, timeout, library_defaults=False):
    """napixclient on its fallback parser, the pure-Python h11 (where
    httptools, and so llhttp, does not load)."""
    return _napixclient_fanout(bases, path, per_host, cap, timeout, parser="h11")


def napixclient_h11_sequential(base, path, count, warmup, timeout):
    return _napixclient_sequential(base, path, count, warmup, timeout, parser="h11")


async def _timed_sequence(one, count, warmup):
    """Await ``one()`` (which returns ``(status, body)``) ``warmup`` times,
    then ``count`` times timed: per-request seconds and the CPU seconds."""
    for _ in range(warmup):
        await one()
    durations = []
    cpu = time.process_time()
    for _ in range(count):
        started = time.perf_counter()
        status, _ = await one()
        durations.append(time.perf_counter() - started)
        if status != 200:
            raise RuntimeError(f"status {status}")
    return durations, time.process_time() - cpu


# -- napixclient.aio ---------------------------------------------------------

def _run_async(main, uvloop=False):
    """Run the coroutine ``main`` in a new event loop: asyncio's own, or
    uvloop's (the optional extra) when ``uvloop``."""
    if uvloop:
        import uvloop as _uvloop

        return _uvloop.run(main)
    import asyncio

    return asyncio.run(main)


def _aio_fanout(bases, path, per_host, cap, timeout, uvloop=False, **options):
    # Always the defaults: max_connections follows the soft RLIMIT_NOFILE.
    from napixclient.aio import AsyncClientPool

    async def main():
        async with AsyncClientPool(simultaneous=cap, timeout=timeout, **options) as pool:
            for base in _order(bases, per_host):
                pool.request(base, "GET", path)
            results = await pool.wait(timeout=timeout * 4)
        return [(r.status, r.body) if r.status == 200 else r for r in results]
    return _run_async(main(), uvloop)


def _aio_sequential(base, path, count, warmup, timeout, uvloop=False, **options):
    from napixclient.aio import AsyncClient

    async def main():
        async with AsyncClient(base, timeout=timeout, **options) as client:
            async def one():
                response = await client.get(path)
                return response.status, response.body
            return await _timed_sequence(one, count, warmup)
    return _run_async(main(), uvloop)


def napixclient_aio_fanout(bases, path, per_host, cap, timeout, library_defaults=False):
    """napixclient.aio's AsyncClientPool on asyncio's own event loop."""
    return _aio_fanout(bases, path, per_host, cap, timeout)


def napixclient_aio_sequential(base, path, count, warmup, timeout):
    return _aio_sequential(base, path, count, warmup, timeout)


def napixclient_aio_signed_fanout(bases, path, per_host, cap, timeout, library_defaults=False):
    """napixclient.aio signing every request with a LoginAuthenticator."""
    return _aio_fanout(bases, path, per_host, cap, timeout, authenticator=_login())


def napixclient_aio_signed_sequential(base, path, count, warmup, timeout):
    return _aio_sequential(base, path, count, warmup, timeout, authenticator=_login())


def napixclient_aio_uvloop_fanout(bases, path, per_host, cap, timeout, library_defaults=False):
    """napixclient.aio, unsigned, on uvloop's event loop."""
    return _aio_fanout(bases, path, per_host, cap, timeout, uvloop=True)


def napixclient_aio_uvloop_sequential(base, path, count, warmup, timeout):
    return _aio_sequential(base, path, count, warmup, timeout, uvloop=True)


# -- aiohttp -----------------------------------------------------------------

def aiohttp_fanout(bases, path, per_host, cap, timeout, library_defaults=False,
                   uvloop=False):
    import asyncio

    import aiohttp

    async def main():
        # limit=0: no cap on the total, only per host, like the others. With
        # library_defaults, the connector a user gets without asking
        # (TCPConnector(): at most 100 connections in use, no per-host cap).
        connector = None if library_defaults else aiohttp.TCPConnector(
            limit=0, limit_per_host=cap)
        async with aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async def one(url):
                async with session.get(url) as response:
                    return response.status, await response.json()
            return await asyncio.gather(*(one(base + path) for base in _order(bases, per_host)),
                                        return_exceptions=True)
    return _run_async(main(), uvloop)


def aiohttp_sequential(base, path, count, warmup, timeout, uvloop=False):
    import aiohttp

    async def main():
        connector = aiohttp.TCPConnector(limit_per_host=1)
        async with aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async def one():
                async with session.get(base + path) as response:
                    return response.status, await response.json()
            return await _timed_sequence(one, count, warmup)
    return _run_async(main(), uvloop)


def aiohttp_uvloop_fanout(bases, path, per_host, cap, timeout, library_defaults=False):
    """aiohttp on uvloop's event loop."""
    return aiohttp_fanout(bases, path, per_host, cap, timeout, library_defaults, uvloop=True)


def aiohttp_uvloop_sequential(base, path, count, warmup, timeout):
    return aiohttp_sequential(base, path, count, warmup, timeout, uvloop=True)


# -- httpx -------------------------------------------------------------------

def httpx_fanout(bases, path, per_host, cap, timeout, library_defaults=False):
    import asyncio

    import httpx

    async def main():
        # httpx has no per-host limit: a semaphore per host, as its users do.
        # Its default total (100 connections) is lifted unless library_defaults.
        semaphores = {base: asyncio.Semaphore(cap) for base in bases}
        limits = httpx.Limits() if library_defaults else httpx.Limits(
            max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
            async def one(base):
                async with semaphores[base]:
                    response = await client.get(base + path)
                    return response.status_code, response.json()
            return await asyncio.gather(*(one(base) for base in _order(bases, per_host)),
                                        return_exceptions=True)
    return asyncio.run(main())


def httpx_sequential(base, path, count, warmup, timeout):
    import asyncio

    import httpx

    async def main():
        async with httpx.AsyncClient(timeout=timeout) as client:
            async def one():
                response = await client.get(base + path)
                return response.status_code, response.json()
            return await _timed_sequence(one, count, warmup)
    return asyncio.run(main())


# -- geventhttpclient --------------------------------------------------------

def geventhttpclient_fanout(bases, path, per_host, cap, timeout, library_defaults=False):
    import gevent
    from geventhttpclient import HTTPClient

    # concurrency= is the client's own per-host connection pool: it blocks
    # the greenlet (cooperatively) when every connection is busy.
    clients = {base: HTTPClient.from_url(base, concurrency=cap, connection_timeout=timeout,
                                         network_timeout=timeout) for base in bases}

    def one(base):
        response = clients[base].get(path)
        try:
            return response.status_code, json.loads(response.read())
        finally:
            response.release()

    greenlets = [gevent.spawn(one, base) for base in _order(bases, per_host)]
    gevent.joinall(greenlets, timeout=timeout * 4)
    for client in clients.values():
        client.close()
    return [g.value if g.successful() else (g.exception or TimeoutError()) for g in greenlets]


def geventhttpclient_sequential(base, path, count, warmup, timeout):
    from geventhttpclient import HTTPClient

    client = HTTPClient.from_url(base, concurrency=1, connection_timeout=timeout,
                                 network_timeout=timeout)

    def one():
        response = client.get(path)
        try:
            return response.status_code, json.loads(response.read())
        finally:
            response.release()
    try:
        return _sync_sequential(one, count, warmup)
    finally:
        client.close()


# -- grequests ---------------------------------------------------------------

def _blocking_sessions(bases, cap):
    """One requests Session per host whose pool holds ``cap`` connections and
    blocks when they are all busy: the per-host cap of requests' users."""
    import requests
    from requests.adapters import HTTPAdapter

    sessions = {}
    for base in bases:
        session = requests.Session()
        session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=cap,
                                             pool_block=True))
        sessions[base] = session
    return sessions


def grequests_fanout(bases, path, per_host, cap, timeout, library_defaults=False):
    import grequests  # monkey-patches everything on import

    sessions = _blocking_sessions(bases, cap)
    pending = [grequests.get(base + path, session=sessions[base], timeout=timeout)
               for base in _order(bases, per_host)]
    outcomes: List[Outcome] = []
    for request, response in zip(pending, grequests.map(pending), strict=True):
        if response is None:
            outcomes.append(request.exception or RuntimeError("no response"))
        else:
            outcomes.append((response.status_code, response.json()))
    return outcomes


def grequests_sequential(base, path, count, warmup, timeout):
    import grequests
    import requests

    session = requests.Session()

    def one():
        response = grequests.get(base + path, session=session, timeout=timeout).send().response
        return response.status_code, response.json()
    return _sync_sequential(one, count, warmup)


# -- gevent + requests, monkey-patched, a semaphore per host ------------------

def gevent_requests_fanout(bases, path, per_host, cap, timeout, library_defaults=False):
    from gevent import monkey

    monkey.patch_all()
    import gevent
    import gevent.lock
    import requests
    from requests.adapters import HTTPAdapter

    sessions = {}
    semaphores = {}
    for base in bases:
        session = requests.Session()
        session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=cap))
        sessions[base] = session
        semaphores[base] = gevent.lock.BoundedSemaphore(cap)

    def one(base):
        with semaphores[base]:
            response = sessions[base].get(base + path, timeout=timeout)
            return response.status_code, response.json()

    greenlets = [gevent.spawn(one, base) for base in _order(bases, per_host)]
    gevent.joinall(greenlets, timeout=timeout * 4)
    return [g.value if g.successful() else (g.exception or TimeoutError()) for g in greenlets]


def gevent_requests_sequential(base, path, count, warmup, timeout):
    from gevent import monkey

    monkey.patch_all()
    import requests

    session = requests.Session()

    def one():
        response = session.get(base + path, timeout=timeout)
        return response.status_code, response.json()
    return _sync_sequential(one, count, warmup)


# -- requests + ThreadPoolExecutor -------------------------------------------

def requests_threads_fanout(bases, path, per_host, cap, timeout, library_defaults=False):
    from concurrent.futures import ThreadPoolExecutor, wait

    sessions = _blocking_sessions(bases, cap)

    def one(base):
        response = sessions[base].get(base + path, timeout=timeout)
        return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=min(len(bases) * cap, MAX_THREADS)) as executor:
        futures = [executor.submit(one, base) for base in _order(bases, per_host)]
        wait(futures, timeout=timeout * 4)
    return [f.result() if f.done() and f.exception() is None
            else (f.exception() if f.done() else TimeoutError()) for f in futures]


def requests_threads_sequential(base, path, count, warmup, timeout):
    import requests

    session = requests.Session()

    def one():
        response = session.get(base + path, timeout=timeout)
        return response.status_code, response.json()
    return _sync_sequential(one, count, warmup)


CLIENTS = ["napixclient", "napixclient_signed", "napixclient_h11", "napixclient_aio",
           "napixclient_aio_signed", "napixclient_aio_uvloop", "aiohttp", "aiohttp_uvloop",
           "geventhttpclient", "grequests", "gevent_requests", "requests_threads", "httpx"]


# -- the child process -------------------------------------------------------

def _fds() -> Tuple[int, int]:
    """(open file descriptors, of which sockets) of this process; the one
    ``listdir`` used to list them, closed by then, is not counted."""
    total = sockets = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        total += 1
        sockets += target.startswith("socket:")
    return total, sockets


def _summarise(outcomes: List[Outcome]) -> Dict[str, Any]:
    ok = sum(1 for o in outcomes if isinstance(o, tuple) and o[0] == 200
             and isinstance(o[1], dict))
    errors = [o for o in outcomes if not (isinstance(o, tuple) and o[0] == 200)]
    kinds = Counter(f"status {o[0]}" if isinstance(o, tuple) else type(o).__name__
                    for o in errors)
    return {"ok": ok, "errors": len(outcomes) - ok,
            "error_kinds": dict(kinds.most_common(3)),
            "error_sample": repr(errors[0])[:200] if errors else None}


def main(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Run one measurement described by ``spec``; return what was measured."""
    from backends import raise_fd_limit

    if spec.get("nofile_soft") is None:
        raise_fd_limit()
    module = sys.modules[__name__]
    name = spec["client"]
    impl = spec.get("impl", name)
    result: Dict[str, Any] = {"client": name, "mode": spec["mode"],
                              "nofile_soft": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}
    if impl.startswith("napixclient"):
        import napixclient

        # Which checkout ran: run.py checks it for the "before" client.
        result["napixclient_from"] = os.path.dirname(os.path.abspath(napixclient.__file__))
    timeout = spec["timeout"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default", DeprecationWarning)
        if spec["mode"] in ("cpu", "single"):
            sequential = getattr(module, f"{impl}_sequential")
            durations, cpu = sequential(spec["bases"][0], spec["path"], spec["count"],
                                        spec["warmup"], timeout)
            durations.sort()
            result["median_latency_s"] = durations[len(durations) // 2]
            result["cpu_per_request_s"] = cpu / len(durations)
        if spec["mode"] in ("fanout", "single"):
            fanout = getattr(module, f"{impl}_fanout")
            fds, sockets = _fds()
            result["baseline_fds"], result["baseline_sockets"] = fds, sockets
            bases, per_host = spec["bases"], spec["per_host"]
            started = time.perf_counter()
            cpu = time.process_time()
            outcomes = fanout(bases, spec["fan_path"], per_host, spec["cap"], timeout,
                              library_defaults=spec.get("library_defaults", False))
            result["makespan_s"] = time.perf_counter() - started
            result["fanout_cpu_s"] = time.process_time() - cpu
            result["requests"] = len(bases) * per_host
            result.update(_summarise(list(outcomes)))
            # Descriptors opened during the fan-out that are not sockets (the
            # gevent hub's epoll and eventfd, created at its first use); none
            # is left to list them when a client still holds every one.
            try:
                fds, sockets = _fds()
                result["end_other_fds"] = fds - sockets
            except OSError:
                pass
    deprecations = sorted({f"{w.category.__name__}: {w.message}"[:160] for w in caught
                           if issubclass(w.category, DeprecationWarning)})
    if deprecations:
        result["deprecations"] = deprecations[:3]
    result["maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)
