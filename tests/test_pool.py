"""ClientPool against real NapixTestServers on 127.0.0.1."""

import contextlib
import gc
import json
import os
import resource
import socket
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import gevent
import pytest

from napixclient import ClientPool, ConnectionError, HTTPError, Response, Timeout
from tests.helpers import AUTH, closed_port

ROOT = Path(__file__).resolve().parent.parent

# These tests run under gevent.monkey.patch_all() too: python tests/patched.py
pytestmark = pytest.mark.patched


@pytest.fixture
def servers(napix_server_factory):
    """Three servers; /d/<seconds> answers after that latency with its name."""
    made = []
    for name in ("a", "b", "c"):
        server = napix_server_factory(users={"root": "toor"})
        for delay in ("0", "0.05", "0.1", "0.2", "0.3", "2"):
            server.route(f"/d/{delay}", body={"server": name, "delay": delay},
                         latency=float(delay))
        made.append(server)
    return made


def test_wait_returns_results_in_submission_order(servers):
    a, b, c = servers
    with ClientPool(AUTH) as pool:
        pool.request(a.host, "GET", "/d/0.3")
        pool.request(b.host, "GET", "/d/0")
        pool.request(c.host, "GET", "/d/0.1")
        results = pool.wait()
        assert pool.pending == 0
    assert [r.body["server"] for r in results] == ["a", "b", "c"]


def test_request_returns_the_greenlet_whose_value_is_the_result(servers):
    with ClientPool(AUTH) as pool:
        greenlet = pool.request(servers[0].host, "GET", "/d/0")
        assert isinstance(greenlet, gevent.Greenlet)
        assert isinstance(greenlet.get(timeout=5), Response)


def test_wait_unordered_yields_in_completion_order(servers):
    a, b, c = servers
    with ClientPool(AUTH) as pool:
        pool.request(a.host, "GET", "/d/0.3")
        pool.request(b.host, "GET", "/d/0.05")
        pool.request(c.host, "GET", "/d/0.2")
        order = [r.body["server"] for r in pool.wait_unordered()]
    assert order == ["b", "c", "a"]


def test_wait_unordered_stops_quietly_at_timeout_and_keeps_the_rest(servers):
    a, b, c = servers
    with ClientPool(AUTH) as pool:
        pool.request(a.host, "GET", "/d/2")
        pool.request(b.host, "GET", "/d/0")
        pool.request(c.host, "GET", "/d/2")
        started = time.monotonic()
        # Stopping quietly: the iteration ends with no exception, and only
        # once the timeout has passed, long before the 2 s answers.
        seen = [result.body["server"] for result in pool.wait_unordered(timeout=0.5)]
        spent = time.monotonic() - started
        assert seen == ["b"]
        assert 0.4 <= spent < 1.5, f"wait_unordered(timeout=0.5) took {spent:.2f} s"
        assert pool.pending == 2
        rest = pool.wait(timeout=10)
        assert [r.body["server"] for r in rest] == ["a", "c"]
        assert pool.pending == 0


def test_wait_unordered_count_limits_what_is_yielded(servers):
    with ClientPool(AUTH) as pool:
        for server in servers:
            pool.request(server.host, "GET", "/d/0")
        first = list(pool.wait_unordered(count=1))
        assert len(first) == 1 and pool.pending == 2
        assert len(list(pool.wait_unordered())) == 2


def test_breaking_out_of_wait_unordered_keeps_the_rest_pending(servers):
    with ClientPool(AUTH) as pool:
        for server in servers:
            pool.request(server.host, "GET", "/d/0.05")
        for _ in pool.wait_unordered():
            break
        assert pool.pending == 2
        assert len(pool.wait()) == 2


def test_wait_with_a_timeout_raises_and_collects_nothing(servers):
    with ClientPool(AUTH) as pool:
        pool.request(servers[0].host, "GET", "/d/0")
        pool.request(servers[1].host, "GET", "/d/2")
        with pytest.raises(TimeoutError):
            pool.wait(timeout=0.2)
        assert pool.pending == 2
        assert [r.status for r in pool.wait()] == [200, 200]


def test_iterating_over_the_pool_is_wait_one_result_at_a_time(servers):
    with ClientPool(AUTH) as pool:
        pool.request(servers[0].host, "GET", "/d/0.1")
        pool.request(servers[1].host, "GET", "/d/0")
        assert [r.body["server"] for r in pool] == ["a", "b"]


def test_failures_come_back_as_results_while_other_hosts_succeed(napix_server_factory,
                                                                 servers):
    faulty = napix_server_factory(users={"root": "toor"})
    faulty.route("/hang", hang=True)
    faulty.route("/drop", drop=True)
    faulty.route("/missing", status=404, body="`missing` not found")
    dead = f"127.0.0.1:{closed_port()}"
    with ClientPool(AUTH, timeout=0.5) as pool:
        pool.request(dead, "GET", "/refused")
        pool.request(faulty.host, "GET", "/hang")
        pool.request(faulty.host, "GET", "/drop")
        pool.request(faulty.host, "GET", "/missing")
        pool.request(servers[0].host, "GET", "/d/0")
        refused, hung, dropped, missing, fine = pool.wait(timeout=10)
    assert isinstance(refused, ConnectionError) and refused.status is None
    assert isinstance(hung, Timeout) and hung.status is None
    assert isinstance(dropped, ConnectionError) and dropped.status is None
    assert type(missing) is HTTPError and missing.status == 404
    assert missing.remote_error == "404 Not Found: `missing` not found"
    assert fine.status == 200
    assert [r.request.path for r in (refused, hung, dropped)] == ["/refused", "/hang", "/drop"]
    assert refused.request.host == dead


def test_the_cap_is_per_destination_not_in_total(servers):
    with ClientPool(AUTH, simultaneous=3) as pool:
        for _ in range(12):
            for server in servers:
                pool.request(server.host, "GET", "/d/0.05")
        results = pool.wait(timeout=20)
    assert [r.status for r in results] == [200] * 36
    assert [s.max_open_connections for s in servers] == [3, 3, 3]
    assert [s.max_in_flight for s in servers] == [3, 3, 3]


def test_one_client_per_host_is_created_and_reused(servers):
    with ClientPool(AUTH) as pool:
        assert pool.client(servers[0].host) is pool.client(servers[0].host)
        assert pool.client(servers[0].host) is pool.client("http://" + servers[0].host)
        assert pool.client(servers[0].host) is not pool.client(servers[1].host)


def test_cancel_kills_what_is_pending(servers):
    with ClientPool(AUTH) as pool:
        pool.request(servers[0].host, "GET", "/d/2")
        pool.request(servers[1].host, "GET", "/d/2")
        started = time.monotonic()
        pool.cancel()
        assert pool.pending == 0 and pool.wait() == []
        assert time.monotonic() - started < 1.5


def test_leaving_the_with_block_cancels_and_closes(servers):
    with ClientPool(AUTH) as pool:
        greenlet = pool.request(servers[0].host, "GET", "/d/2")
    assert greenlet.dead and pool.pending == 0
    with pytest.raises(RuntimeError, match="closed"):
        pool.request(servers[0].host, "GET", "/d/0")


def test_bad_arguments_raise_at_once_and_start_nothing(servers):
    with ClientPool(AUTH) as pool:
        with pytest.raises(ValueError, match="host"):
            pool.request("bad host", "GET", "/")
        with pytest.raises(ValueError, match="method"):
            pool.request(servers[0].host, "GE T", "/")
        with pytest.raises(ValueError, match="header"):
            pool.request(servers[0].host, "GET", "/", headers={"X": "a\nb"})
        with pytest.raises(ValueError, match="count"):
            pool.wait_unordered(count=-2)
        assert pool.pending == 0
    for kwargs, name in [({"authenticator": "x"}, "authenticator"),
                         ({"authenticator": {}}, "authenticator"),
                         ({"simultaneous": 0}, "simultaneous")]:
        arguments = {"authenticator": AUTH, **kwargs}
        with pytest.raises(ValueError, match=name):
            ClientPool(**arguments)


def test_a_bug_in_an_authenticator_is_raised_not_dressed_as_http_error(servers):
    def broken(request):
        raise KeyError("bug")

    with ClientPool(broken) as pool:
        pool.request(servers[0].host, "GET", "/d/0")
        with pytest.raises(KeyError):
            pool.wait(timeout=5)
        assert pool.pending == 0


def test_results_share_status_and_request_so_pool_code_treats_them_alike(servers):
    dead = f"127.0.0.1:{closed_port()}"
    with ClientPool(AUTH, timeout=1) as pool:
        pool.request(servers[0].host, "GET", "/d/0")
        pool.request(dead, "GET", "/x")
        good = [r.request.host for r in pool.wait() if r.status == 200]
    assert good == [servers[0].host]


def test_requests_beyond_the_cap_wait_their_turn_in_order_and_a_killed_one_never_runs(
        servers):
    a = servers[0]
    with ClientPool(AUTH, simultaneous=2) as pool:
        greenlets = [pool.request(a.host, "GET", "/d/0.05", params={"n": n})
                     for n in range(6)]
        greenlets[4].kill()  # still waiting for its turn
        results = pool.wait(timeout=10)
    assert [type(r) for r in results] == [Response] * 4 + [ConnectionError, Response]
    assert "killed before it completed" in str(results[4])
    paths = [r.path for r in a.requests]
    # Two at a time: the first two sent first, then the others; n=4 never.
    assert sorted(paths) == [f"/d/0.05?n={n}" for n in (0, 1, 2, 3, 5)]
    assert set(paths[:2]) == {"/d/0.05?n=0", "/d/0.05?n=1"} and paths[-1] == "/d/0.05?n=5"
    assert a.max_in_flight == 2


def test_two_spellings_of_one_destination_share_one_client_and_its_cap():
    with ClientPool(AUTH) as pool:
        client = pool.client("server.napix.nx")
        assert pool.client("http://server.napix.nx:80/") is client
        assert pool.client("server.napix.nx:80") is client
        assert pool.client("https://server.napix.nx") is not client


def test_the_pool_repr_counts_each_host_once_whatever_its_spelling(napix_server):
    napix_server.route("/", body=[])
    port = napix_server.port
    spellings = [f"127.0.0.1:{port}", f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/",
                 f"127.0.0.1:{port} "]
    with ClientPool(AUTH, timeout=5) as pool:
        for host in spellings:
            pool.request(host, "GET", "/")
        pool.wait(timeout=5)
        assert repr(pool) == "<ClientPool hosts=1 pending=0>"
    assert repr(pool) == "<ClientPool hosts=0 pending=0 closed>"


# -- under gevent.monkey.patch_all() (issue 19, item 3) ---------------------------

PATCHED_POOLS = textwrap.dedent("""
    from gevent import monkey; monkey.patch_all()
    import json, sys, time
    from napixclient import ClientPool, Response
    from napixclient.testing import NapixTestServer

    TRIALS, BUDGET = int(sys.argv[1]), float(sys.argv[2])
    server = NapixTestServer(users={"root": "toor"}).start()
    server.route("/ok", body={"ok": True})
    ran, failures, started = 0, [], time.monotonic()
    while ran < TRIALS and time.monotonic() - started < BUDGET:
        ran += 1
        with ClientPool({"login": "root", "key": "toor"}, simultaneous=2, timeout=10) as pool:
            for n in range(25):
                pool.request(server.host, "GET", "/ok", params={"n": n})
            try:
                results = pool.wait(timeout=20)
            except Exception as error:
                failures.append(f"trial {ran}: {type(error).__name__}: {error}"[:300])
                continue
        good = [r for r in results if isinstance(r, Response) and r.status == 200]
        if len(good) != 25:
            bad = [str(r)[:200] for r in results if r not in good][:2]
            failures.append(f"trial {ran}: {len(good)} of 25 answered 200; {bad}")
    server.stop()
    print(json.dumps({"trials": ran, "failed": len(failures), "examples": failures[:3]}))
""")


def test_a_pool_of_25_gets_to_one_host_in_a_patched_process_gets_25_answers_every_time():
    trials = 100
    process = subprocess.run([sys.executable, "-c", PATCHED_POOLS, str(trials), "100"],
                             capture_output=True, text=True, timeout=180, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = process.stdout.strip().splitlines()
    assert process.returncode == 0 and lines, process.stderr[-2000:]
    summary = json.loads(lines[-1])
    assert summary["trials"] == trials, summary
    assert summary["failed"] == 0, summary


# -- a long-lived pool forgets the hosts it is done with (issue 19, item 9) --------

@contextlib.contextmanager
def _ports_where_nothing_listens(count):
    """``count`` distinct ports of 127.0.0.1, each held by a socket bound and
    never listening (a connection to it is refused) for as long as the block
    runs, so that no other server can take one meanwhile; the soft limit on
    open files is raised for them if need be, and put back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 1024
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"needs {wanted} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        yield [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_pool_keeps_little_memory_for_the_2000_hosts_it_is_done_with():
    with _ports_where_nothing_listens(2000) as ports:
        hosts = [f"127.0.0.1:{port}" for port in ports]
        gc.collect()
        tracemalloc.start()
        try:
            with ClientPool(keepalive_expiry=0.1, timeout=5, max_connections=768) as pool:
                # A first round of 1,000 hosts loads what is loaded on first
                # use and grows the pool's tables; the second round, to 1,000
                # other hosts, must leave nothing of them behind.
                for batch in (hosts[:1000], hosts[1000:]):
                    gevent.sleep(0.5)
                    gc.collect()
                    before = tracemalloc.get_traced_memory()[0]
                    for host in batch:
                        pool.request(host, "GET", "/")
                    results = pool.wait(timeout=60)
                    assert len(results) == 1000
                    assert {type(result) for result in results} == {ConnectionError}
                    del results
                gevent.sleep(0.5)
                gc.collect()
                retained = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert retained / 1000 < 300, f"{retained / 1000:.0f} bytes kept per host"


def test_the_requests_of_a_pool_leave_no_garbage_cycle():
    # Each request of a pool left its job, greenlet, call and answer in a
    # reference cycle (through the waiter the connection manager kept), 35
    # objects a request freed only by the cyclic garbage collector, whose
    # passes over thousands of queued requests then cost more than parsing.
    import gevent.socket

    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
              b"Content-Length: 2\r\n\r\n{}")

    def serve(sock):
        buffer = b""
        with sock:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                buffer += data
                while b"\r\n\r\n" in buffer:
                    buffer = buffer.split(b"\r\n\r\n", 1)[1]
                    sock.sendall(answer)

    def accept(listener):
        while True:
            sock, _ = listener.accept()
            gevent.spawn(serve, sock)

    listener = gevent.socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    acceptor = gevent.spawn(accept, listener)
    host = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        with ClientPool(simultaneous=2, timeout=10) as pool:
            for _ in range(10):
                pool.request(host, "GET", "/")
            assert all(r.status == 200 for r in pool.wait(timeout=10))
            gc.collect()
            gc.disable()
            try:
                for _ in range(50):
                    pool.request(host, "GET", "/")
                assert all(r.status == 200 for r in pool.wait(timeout=10))
                assert gc.collect() == 0
            finally:
                gc.enable()
    finally:
        acceptor.kill()
        listener.close()
