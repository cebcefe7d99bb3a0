"""One behaviour, two drivers: every test here runs with the gevent driver
(Client, ClientPool) and with the asyncio driver (AsyncClient,
AsyncClientPool), written once through the face of tests/drivers.py.

Caps, orders, deadlines, faults, proxies through tinyproxy, TLS (nginx),
compression, retries, cancellation, trace events, 3,000 hosts under 1,024
open files, and max_connections counted at the socket level. Every server
serves from a thread of its own (NapixTestServer.start(thread=True),
HubThread) or from a process of its own, so that it answers whichever
driver waits.

What only one driver has (a greenlet killed, a Task cancelled, an event
loop that must not stand still) is tested in test_pool.py, test_faults.py
and the like, and in test_aio.py.
"""

import contextvars
import gzip
import json
import os
import resource
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gevent
import gevent.ssl
import pytest
from gevent.pywsgi import WSGIServer
from urllib3.util import Retry

from napixclient import ConnectionError, HTTPError, ProxyError, Response, Timeout
from napixclient.exceptions import BodyTooLarge
from napixclient.testing import HubThread
from tests import drivers, proxyserver
from tests.drivers import each_driver
from tests.helpers import AUTH, closed_port
from tests.nginxserver import NginxServer, NginxTLS, find_nginx

ROOT = Path(__file__).resolve().parent.parent

forward_proxy = proxyserver.forward_proxy
authenticated_proxy = proxyserver.authenticated_proxy
fault_server = drivers.fault_server


# -- servers, each serving from a thread or a process of its own ------------------------


@pytest.fixture
def servers(threaded_napix_server_factory):
    """Three servers; ``/d/<seconds>`` answers after that latency with its name."""
    made = []
    for name in ("a", "b", "c"):
        server = threaded_napix_server_factory(users={"root": "toor"})
        for delay in ("0", "0.05", "0.1", "0.2", "0.3", "2"):
            server.route(f"/d/{delay}", body={"server": name, "delay": delay},
                         latency=float(delay))
        made.append(server)
    return made


@pytest.fixture
def server(threaded_napix_server_factory):
    """One server, users ``{"root": "toor"}``."""
    return threaded_napix_server_factory(users={"root": "toor"})


#: 320 KiB that no two offsets of less than 251 bytes confuse.
PATTERN = bytes(range(251)) * 1306


def _wsgi_hello(environ, start_response):
    """``/pattern``: :data:`PATTERN` in five writes; anything else: a small
    JSON document (head and body in two writes, as pywsgi sends them)."""
    if environ["PATH_INFO"] == "/pattern":
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(PATTERN)))])
        size = len(PATTERN) // 5 + 1
        return [PATTERN[n:n + size] for n in range(0, len(PATTERN), size)]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"hello": "tls"}']


@pytest.fixture
def tls_files(ca, tmp_path):
    """Paths: the CA bundle, a certificate for 127.0.0.1 and its key, one for
    another name and its key, and a client certificate and its key."""
    paths = {name: str(tmp_path / f"{name}.pem") for name in (
        "ca", "server", "server_key", "other", "other_key", "client", "client_key")}
    ca.cert_pem.write_to_path(paths["ca"])
    for name, issued in (("server", ca.issue_cert("127.0.0.1")),
                         ("other", ca.issue_cert("napix.example")),
                         ("client", ca.issue_cert("ops@napix.example", common_name="ops"))):
        issued.cert_chain_pems[0].write_to_path(paths[name])
        issued.private_key_pem.write_to_path(paths[f"{name}_key"])
    return paths


def _nginx_tls(tmp_path, name, tls):
    if find_nginx() is None:
        pytest.skip("nginx is not installed (the Debian package nginx)")
    return NginxServer(tmp_path / name, {"/index.html": b"index\n"}, tls=tls,
                       server='location = /who { return 200 "$ssl_client_verify\\n"; }')


@pytest.fixture
def nginx_tls(tmp_path, tls_files):
    """nginx over TLS on 127.0.0.1 with a certificate for 127.0.0.1."""
    with _nginx_tls(tmp_path, "nginx", NginxTLS(tls_files["server"],
                                                tls_files["server_key"])) as nginx:
        yield nginx


@pytest.fixture
def nginx_wrong_name(tmp_path, tls_files):
    """nginx over TLS with a certificate for napix.example, not 127.0.0.1."""
    with _nginx_tls(tmp_path, "nginx-other", NginxTLS(tls_files["other"],
                                                      tls_files["other_key"])) as nginx:
        yield nginx


@pytest.fixture
def nginx_mtls(tmp_path, tls_files):
    """nginx over TLS asking for a client certificate the test CA issued."""
    tls = NginxTLS(tls_files["server"], tls_files["server_key"], client_ca=tls_files["ca"])
    with _nginx_tls(tmp_path, "nginx-mtls", tls) as nginx:
        yield nginx


@pytest.fixture
def tls_origin(ca):
    """A gevent WSGI server over TLS (certificate for 127.0.0.1), in a thread
    of its own: its URL."""
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    def serve():
        # Clients refusing its certificate are what some tests are about:
        # the server's hub need not print each refusal.
        hub = gevent.get_hub()
        hub.NOT_ERROR = (*hub.NOT_ERROR, ssl.SSLError)
        # Made in the server's thread: a gevent server takes its maker's hub.
        wsgi = WSGIServer(("127.0.0.1", 0), _wsgi_hello, ssl_context=context, log=None,
                          error_log=None)
        wsgi.start()
        return wsgi

    serving = HubThread(serve, lambda timeout: serving.value.stop(timeout=timeout),
                        name="TLS origin")
    wsgi = serving.start()
    yield f"https://127.0.0.1:{wsgi.server_port}"
    serving.stop()


# -- orders -----------------------------------------------------------------------------


@each_driver
async def test_wait_returns_results_in_submission_order(driver, servers):
    a, b, c = servers
    async with driver.pool(AUTH) as pool:
        pool.request(a.host, "GET", "/d/0.3")
        pool.request(b.host, "GET", "/d/0")
        pool.request(c.host, "GET", "/d/0.1")
        assert pool.pending == 3
        results = await pool.wait()
        assert pool.pending == 0
    assert [r.body["server"] for r in results] == ["a", "b", "c"]
    assert all(type(r) is Response for r in results)


@each_driver
async def test_request_returns_a_handle_whose_result_is_the_response(driver, servers):
    async with driver.pool(AUTH) as pool:
        handle = pool.request(servers[0].host, "GET", "/d/0")
        result = await pool.result(handle)
        assert type(result) is Response and result.body["server"] == "a"
        assert pool.done(handle)


@each_driver
async def test_wait_unordered_yields_in_completion_order(driver, servers):
    a, b, c = servers
    async with driver.pool(AUTH) as pool:
        pool.request(a.host, "GET", "/d/0.3")
        pool.request(b.host, "GET", "/d/0.05")
        pool.request(c.host, "GET", "/d/0.2")
        order = [r.body["server"] async for r in pool.wait_unordered()]
        assert pool.pending == 0
    assert order == ["b", "c", "a"]


@each_driver
async def test_wait_unordered_stops_quietly_at_its_timeout_and_keeps_the_rest(driver,
                                                                              servers):
    a, b, c = servers
    async with driver.pool(AUTH) as pool:
        pool.request(a.host, "GET", "/d/2")
        pool.request(b.host, "GET", "/d/0")
        pool.request(c.host, "GET", "/d/2")
        started = time.monotonic()
        seen = [r.body["server"] async for r in pool.wait_unordered(timeout=0.5)]
        spent = time.monotonic() - started
        assert seen == ["b"]
        assert 0.4 <= spent < 1.5, f"wait_unordered(timeout=0.5) took {spent:.2f} s"
        assert pool.pending == 2
        rest = await pool.wait(timeout=10)
        assert [r.body["server"] for r in rest] == ["a", "c"]
        assert pool.pending == 0


@each_driver
async def test_wait_unordered_count_and_breaking_out_keep_the_rest_pending(driver, servers):
    async with driver.pool(AUTH) as pool:
        for server in servers:
            pool.request(server.host, "GET", "/d/0.05")
        first = [r async for r in pool.wait_unordered(count=1)]
        assert len(first) == 1 and pool.pending == 2
        async for _ in pool.wait_unordered():
            break
        assert pool.pending == 1
        assert len(await pool.wait()) == 1


@each_driver
async def test_wait_with_a_timeout_raises_timeout_error_and_collects_nothing(driver,
                                                                             servers):
    async with driver.pool(AUTH) as pool:
        pool.request(servers[0].host, "GET", "/d/0")
        pool.request(servers[1].host, "GET", "/d/2")
        with pytest.raises(TimeoutError):
            await pool.wait(timeout=0.2)
        assert pool.pending == 2
        assert [r.status for r in await pool.wait(timeout=10)] == [200, 200]


@each_driver
async def test_iterating_over_the_pool_is_wait_one_result_at_a_time(driver, servers):
    async with driver.pool(AUTH) as pool:
        pool.request(servers[0].host, "GET", "/d/0.1")
        pool.request(servers[1].host, "GET", "/d/0")
        assert [r.body["server"] async for r in pool.iterate()] == ["a", "b"]
        assert pool.pending == 0


@each_driver
async def test_failures_come_back_as_results_while_other_hosts_succeed(driver, servers,
                                                                       server):
    server.route("/hang", hang=True)
    server.route("/drop", drop=True)
    server.route("/missing", status=404, body="`missing` not found")
    dead = f"127.0.0.1:{closed_port()}"
    async with driver.pool(AUTH, timeout=0.5) as pool:
        pool.request(dead, "GET", "/refused")
        pool.request(server.host, "GET", "/hang")
        pool.request(server.host, "GET", "/drop")
        pool.request(server.host, "GET", "/missing")
        pool.request(servers[0].host, "GET", "/d/0")
        refused, hung, dropped, missing, fine = await pool.wait(timeout=10)
    assert type(refused) is ConnectionError and refused.status is None
    assert "could not connect: connection refused" in str(refused)
    assert type(hung) is Timeout and hung.status is None
    assert type(dropped) is ConnectionError and dropped.status is None
    assert str(dropped).endswith("the server closed the connection without answering")
    assert type(missing) is HTTPError and missing.status == 404
    assert missing.remote_error == "404 Not Found: `missing` not found"
    assert missing.remote_call == f"GET http://{server.host}/missing"
    assert fine.status == 200
    assert [r.request.path for r in (refused, hung, dropped)] == ["/refused", "/hang", "/drop"]
    assert refused.request.host == dead


@each_driver
async def test_a_client_raises_http_error_with_its_chain_and_returns_responses(driver,
                                                                               server):
    server.route("/vm-ip/", "POST", handler=lambda request: (201, request.json))
    server.route("/gone", status=410, body={"error_class": "Gone", "error_text": "vm 7"})
    server.route("/status", body={"up": True})
    async with driver.client(server.host, AUTH, timeout=5) as client:
        created = await client.post("/vm-ip/", {"size": 1}, params={"zone": "eu"})
        with pytest.raises(HTTPError) as caught:
            await client.get("/gone")
        head = await client.head("/status", headers={"X-Probe": "1"})
    assert (created.status, created.body) == (201, {"size": 1})
    assert created.request.path == "/vm-ip/?zone=eu" and created.request.method == "POST"
    assert head.status == 200 and head.body is None
    error = caught.value
    assert error.status == 410 and error.root.error_text == "vm 7"
    assert str(error) == f"GET http://{server.host}/gone -> 410 (Gone) | vm 7"
    assert [r.login for r in server.requests] == ["root"] * 3
    assert server.requests[2].headers["X-Probe"] == "1"


@each_driver
async def test_bad_arguments_raise_at_once_and_start_nothing(driver, servers):
    async with driver.pool(AUTH) as pool:
        with pytest.raises(ValueError, match="host"):
            pool.request("bad host", "GET", "/")
        with pytest.raises(ValueError, match="method"):
            pool.request(servers[0].host, "GE T", "/")
        with pytest.raises(ValueError, match="header"):
            pool.request(servers[0].host, "GET", "/", headers={"X": "a\nb"})
        with pytest.raises(ValueError, match="count"):
            pool.check_wait_unordered(-2)
        assert pool.pending == 0
    for options, name in [({"simultaneous": 0}, "simultaneous"),
                          ({"max_connections": 0}, "max_connections"),
                          ({"keepalive_expiry": 0}, "keepalive_expiry"),
                          ({"retries": -1}, "retries"),
                          ({"trace": "print"}, "trace")]:
        with pytest.raises(ValueError, match=name):
            async with driver.pool(AUTH, **options):
                pass
        with pytest.raises(ValueError, match=name):
            async with driver.client(servers[0].host, AUTH, **options):
                pass
    for authenticator in ("x", {}):
        with pytest.raises(ValueError, match="authenticator"):
            async with driver.pool(authenticator):
                pass
    assert [len(server.requests) for server in servers] == [0, 0, 0]


@each_driver
async def test_a_bug_in_an_authenticator_is_raised_not_dressed_as_http_error(driver,
                                                                            servers):
    def broken(request):
        raise KeyError("bug")

    async with driver.pool(broken) as pool:
        pool.request(servers[0].host, "GET", "/d/0")
        with pytest.raises(KeyError):
            await pool.wait(timeout=5)
        assert pool.pending == 0


@each_driver
async def test_leaving_the_block_cancels_what_is_pending_and_closes_the_pool(driver,
                                                                            servers):
    started = time.monotonic()
    async with driver.pool(AUTH) as pool:
        handle = pool.request(servers[0].host, "GET", "/d/2")
        await driver.sleep(0.1)
    assert time.monotonic() - started < 1.5
    assert pool.done(handle) and pool.pending == 0
    with pytest.raises(RuntimeError, match="closed"):
        pool.request(servers[0].host, "GET", "/d/0")


# -- caps -------------------------------------------------------------------------------


@each_driver
async def test_simultaneous_caps_each_destination_not_the_total(driver, servers):
    async with driver.pool(AUTH, simultaneous=3) as pool:
        for _ in range(12):
            for server in servers:
                pool.request(server.host, "GET", "/d/0.05")
        results = await pool.wait(timeout=20)
    assert [r.status for r in results] == [200] * 36
    assert [s.max_open_connections for s in servers] == [3, 3, 3]
    assert [s.max_in_flight for s in servers] == [3, 3, 3]


@each_driver
async def test_a_client_runs_at_most_simultaneous_requests_at_once(driver, server):
    server.route("/slow", body={"ok": True}, latency=0.1)
    async with driver.client(server.host, AUTH, simultaneous=2, timeout=10) as client:
        results = await driver.gather(*(client.get("/slow", params={"n": n})
                                        for n in range(6)))
    assert [r.status for r in results] == [200] * 6
    assert server.max_in_flight == 2 and server.max_open_connections == 2


@each_driver
async def test_requests_beyond_the_cap_wait_their_turn_in_submission_order(driver, server):
    server.route("/slow", body={"ok": True}, latency=0.05)
    async with driver.pool(AUTH, simultaneous=2) as pool:
        for n in range(6):
            pool.request(server.host, "GET", "/slow", params={"n": n})
        results = await pool.wait(timeout=10)
    assert [r.status for r in results] == [200] * 6
    paths = [r.path for r in server.requests]
    # Two at a time, in waves of submission order (the two of a wave run on
    # two connections at once: which one the server reads first is theirs).
    assert set(paths[:2]) == {"/slow?n=0", "/slow?n=1"}
    assert set(paths[2:4]) == {"/slow?n=2", "/slow?n=3"}
    assert set(paths[4:]) == {"/slow?n=4", "/slow?n=5"}
    assert server.max_in_flight == 2


@each_driver
async def test_a_request_stopped_while_waiting_its_turn_never_runs_and_is_a_result(driver,
                                                                                  server):
    server.route("/slow", body={"ok": True}, latency=0.05)
    async with driver.pool(AUTH, simultaneous=2) as pool:
        handles = [pool.request(server.host, "GET", "/slow", params={"n": n})
                   for n in range(6)]
        pool.cancel_one(handles[4])  # still waiting for its turn
        results = await pool.wait(timeout=10)
    assert [type(r) for r in results] == [Response] * 4 + [ConnectionError, Response]
    assert results[4].request.path == "/slow?n=4"
    assert sorted(r.path for r in server.requests) == [f"/slow?n={n}" for n in (0, 1, 2, 3, 5)]


@each_driver
async def test_beyond_max_connections_requests_wait_in_submission_order(driver, server):
    server.route("/slow", body={"ok": True}, latency=0.05)
    async with driver.pool(AUTH, simultaneous=5, max_connections=1, timeout=5) as pool:
        for n in range(6):
            pool.request(server.host, "GET", "/slow", params={"n": n})
        results = await pool.wait(timeout=10)
    assert [r.status for r in results] == [200] * 6
    assert [r.path for r in server.requests] == [f"/slow?n={n}" for n in range(6)]
    assert server.max_open_connections == 1


@each_driver
async def test_connections_are_kept_alive_and_reused(driver, fault_server):
    async with driver.client(fault_server.host, simultaneous=1, timeout=5) as client:
        answers = [await client.get(f"/ok?n={n}") for n in range(5)]
    assert [a.body["connection"] for a in answers] == [1] * 5
    assert fault_server.connections == 1


@each_driver
async def test_the_least_recently_used_idle_connection_is_closed_to_make_room(
        driver, threaded_napix_server_factory):
    first, second, third = (threaded_napix_server_factory() for _ in range(3))
    closed = []

    def trace(event, info):
        if event == "connection.closed":
            closed.append((info["origin"], info["reason"]))

    async with driver.pool(AUTH, max_connections=2, timeout=5, trace=trace) as pool:
        for server in (first, second, third):
            server.route("/", body={"ok": True})
            pool.request(server.host, "GET", "/")
            await pool.wait(timeout=5)
        await driver.wait_until(lambda: first.open_connections == 0,
                                what="the first server saw its connection closed")
        assert second.open_connections == third.open_connections == 1
    assert closed[0] == (f"http://{first.host}", "evicted")


@each_driver
async def test_an_idle_connection_past_keepalive_expiry_is_closed_and_not_reused(driver,
                                                                                server):
    server.route("/", body={"ok": True})
    events = []
    async with driver.client(server.host, AUTH, keepalive_expiry=0.2, timeout=5,
                             trace=lambda event, info: events.append(
                                 (event, info.get("reason")))) as client:
        await client.get("/")
        await driver.wait_until(lambda: server.open_connections == 0, timeout=3,
                                what="the server saw the expired connection closed")
        assert ("connection.closed", "expired") in events
        await client.get("/")
    assert [event for event, _ in events].count("connection.opened") == 2
    assert ("connection.reused", None) not in events
    assert server.max_open_connections == 1


def _open_sockets():
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@each_driver
async def test_max_connections_caps_the_sockets_open_at_once_across_all_hosts(driver,
                                                                             many_hosts):
    hosts = many_hosts(200, delay=0.02)
    baseline = _open_sockets()
    most = [0]

    async def watch():
        while True:
            most[0] = max(most[0], _open_sockets() - baseline)
            await driver.sleep(0.002)

    async with driver.pool(simultaneous=2, max_connections=50, timeout=30) as pool:
        watcher = driver.spawn(watch)
        for host in hosts.hosts * 2:
            pool.request(host, "GET", "/")
        results = await pool.wait(timeout=60)
        await watcher.stop()
    assert len(results) == 400
    assert all(type(r) is Response and r.status == 200 for r in results)
    figures = hosts.figures()
    assert figures["requests"] == 400
    assert 0 < figures["max_open"] <= 50
    assert 0 < most[0] <= 50


PROBES = {
    "gevent": """
        from napixclient import ClientPool, Response

        def probe(hosts):
            with ClientPool(simultaneous=2, timeout=30) as pool:
                for host in hosts:
                    pool.request(host, "GET", "/")
                return pool.wait(timeout=150)
    """,
    "asyncio": """
        import asyncio

        from napixclient import Response
        from napixclient.aio import AsyncClientPool

        async def main(hosts):
            async with AsyncClientPool(simultaneous=2, timeout=30) as pool:
                for host in hosts:
                    pool.request(host, "GET", "/")
                return await pool.wait(timeout=150)

        def probe(hosts):
            return asyncio.run(main(hosts))
    """,
}

PROBE_MAIN = """
    import json, resource, sys

    hosts = json.loads(sys.stdin.read())
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    results = probe(hosts)
    errors = sorted({str(r) for r in results if not isinstance(r, Response)})
    print(json.dumps({"soft": soft, "count": len(results), "answers": sum(
        isinstance(r, Response) and r.status == 200 for r in results),
        "examples": errors[:3], "gevent": "gevent" in sys.modules}))
"""


def _limit_open_files(soft):
    def set_limit():
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return set_limit


@pytest.mark.parametrize("driver", ["gevent", "asyncio"])
def test_a_default_pool_probes_3000_hosts_under_1024_open_files_and_loses_none(driver,
                                                                              many_hosts):
    hosts = many_hosts(3000)
    script = textwrap.dedent(PROBES[driver]) + textwrap.dedent(PROBE_MAIN)
    done = subprocess.run([sys.executable, "-c", script], input=json.dumps(hosts.hosts),
                          capture_output=True, text=True, timeout=240,
                          preexec_fn=_limit_open_files(1024),
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["soft"] == 1024
    assert (outcome["count"], outcome["answers"]) == (3000, 3000), outcome["examples"]
    assert outcome["gevent"] is (driver == "gevent")
    figures = hosts.figures()
    # At least: 3,000 ephemeral ports are a tenth of the range, and another
    # program's test of a "closed" port may reach one of them meanwhile.
    assert figures["requests"] >= 3000
    assert figures["max_open"] <= 768  # the default cap: three quarters of 1,024


# -- deadlines --------------------------------------------------------------------------


@each_driver
async def test_trickling_headers_are_cut_by_the_whole_exchange_deadline(driver,
                                                                        fault_server):
    interval, count = 0.02, 400  # 8 s of trickle if nobody stops it
    async with driver.client(fault_server.host, simultaneous=1, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(Timeout) as caught:
            await client.get(f"/trickle-headers?interval={interval}&count={count}")
        spent = time.monotonic() - started
        assert "the exchange took longer than 0.3 s" in str(caught.value)
        assert spent < interval * count / 4
        after = await client.get("/ok?after=1")
    assert after.body["path"] == "/ok?after=1"


@each_driver
async def test_a_request_s_timeout_overrides_the_client_s(driver, fault_server):
    async with driver.client(fault_server.host, timeout=30) as client:
        started = time.monotonic()
        with pytest.raises(Timeout):
            await client.get("/stall-headers?seconds=5", timeout=0.3)
        assert time.monotonic() - started < 3
        # A (connect, read) pair: the read part is what a stall runs into.
        with pytest.raises(Timeout):
            await client.get("/stall-body?seconds=5", timeout=(2.0, 0.3))
    assert fault_server.paths().count("/stall-headers?seconds=5") == 1


@each_driver
async def test_a_pool_s_timeout_ends_each_request_and_the_pool_goes_on(driver, servers,
                                                                       server):
    server.route("/hang", hang=True)
    async with driver.pool(AUTH, timeout=0.3) as pool:
        for _ in range(3):
            pool.request(server.host, "GET", "/hang")
        pool.request(servers[0].host, "GET", "/d/0")
        started = time.monotonic()
        results = await pool.wait(timeout=10)
        spent = time.monotonic() - started
    assert [type(r) for r in results] == [Timeout, Timeout, Timeout, Response]
    assert spent < 2.5


# -- faults -----------------------------------------------------------------------------

BROKE = "the connection broke during the exchange: "
FAULTS = [
    ("/reset", ConnectionError, BROKE + "connection reset by peer"),
    ("/short", ConnectionError, BROKE + "the body ended after 10 bytes, 90 fewer than "
                                        "announced"),
    ("/bad-chunked", ConnectionError, "its chunked encoding is malformed"),
    ("/not-http", ConnectionError, BROKE + "the answer is not HTTP"),
]


@pytest.mark.parametrize("path, error_class, words", FAULTS, ids=[f[0] for f in FAULTS])
@each_driver
async def test_each_fault_gives_one_error_of_its_class_then_the_client_works(
        driver, fault_server, path, error_class, words):
    async with driver.client(fault_server.host, simultaneous=1, timeout=2) as client:
        await client.get("/ok?before=1")
        with pytest.raises(HTTPError) as caught:
            await client.get(path)
        after = await client.get("/ok?after=1")
    error = caught.value
    assert type(error) is error_class
    assert error.status is None and error.response is None
    assert words in str(error), str(error)
    assert error.remote_call == f"GET http://{fault_server.host}{path}"
    assert after.body["path"] == "/ok?after=1"
    assert fault_server.paths().count(path) == 1


@each_driver
async def test_a_keep_alive_connection_closed_between_requests_is_replaced(driver,
                                                                         fault_server):
    async with driver.client(fault_server.host, simultaneous=1, timeout=5) as client:
        await client.get("/close-after")
        await driver.sleep(0.05)  # the FIN arrives while the connection is idle
        response = await client.get("/ok?after=1")
    assert response.body["connection"] == 2
    assert fault_server.paths() == ["/close-after", "/ok?after=1"]


@each_driver
async def test_a_stale_connection_is_retried_once_for_a_get_and_never_for_a_post(
        driver, fault_server):
    async with driver.client(fault_server.host, simultaneous=1, retries=3,
                             timeout=5) as client:
        await client.get("/race")
        second = await client.get("/race?n=2")  # the server hangs up on this one
        assert second.status == 200 and second.body["connection"] == 2
        with pytest.raises(ConnectionError) as caught:
            await client.post("/race?n=3", {"size": 1})
    assert "closed the kept-alive connection" in str(caught.value)
    assert "a POST may not be repeated" in str(caught.value)
    assert fault_server.paths() == ["/race", "/race?n=2", "/race?n=2", "/race?n=3"]


@each_driver
async def test_an_answer_arriving_in_pieces_is_read_whole_byte_for_byte(driver,
                                                                        fault_server):
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(PATTERN)
    pieces = [PATTERN[n:n + 70_001] for n in range(0, len(PATTERN), 70_001)]
    fault_server.canned["/pieces"] = [head[:10], 0.02, head[10:]] + [
        part for piece in pieces for part in (0.02, piece)]
    async with driver.client(fault_server.host, simultaneous=1, timeout=10) as client:
        answers = [(await client.get("/pieces")).content for _ in range(2)]
    assert answers == [PATTERN, PATTERN]
    assert fault_server.connections == 1


@each_driver
async def test_a_body_larger_than_max_body_size_is_refused_clearly(driver, fault_server):
    async with driver.client(fault_server.host, simultaneous=1,
                             max_body_size=100_000, timeout=5) as client:
        for query in ("size=100001", "size=5000000&chunked=1"):
            with pytest.raises(BodyTooLarge) as caught:
                await client.get(f"/big?{query}")
            assert caught.value.status == 200
            assert "max_body_size (100000 bytes)" in str(caught.value)
        assert len((await client.get("/big?size=100000&chunked=1")).content) == 100_000


@each_driver
async def test_every_fault_at_once_through_a_pool_gives_one_result_each(driver,
                                                                        fault_server):
    paths = ["/ok?i=0"]
    for index, (path, _, _) in enumerate(FAULTS, start=1):
        paths += [path, f"/ok?i={index}"]
    paths += ["/race", "/race?n=2", "/big?size=2000001", "/stall-headers?seconds=3", "/ok?i=9"]
    async with driver.pool(simultaneous=1, timeout=0.5, max_body_size=2_000_000) as pool:
        for path in paths:
            pool.request(fault_server.host, "GET", path)
        results = await pool.wait(timeout=30)
    expected = {path: error_class for path, error_class, _ in FAULTS}
    expected.update({"/big?size=2000001": BodyTooLarge, "/stall-headers?seconds=3": Timeout})
    assert [r.request.path for r in results] == paths
    for path, result in zip(paths, results, strict=True):
        if path in expected:
            assert type(result) is expected[path], path
        else:
            assert type(result) is Response and result.body["path"] == path


@each_driver
async def test_a_flood_of_headers_fails_naming_the_bound_well_within_the_timeout(
        driver, hostile_server):
    async with driver.client(hostile_server.host, timeout=4) as client:
        started = time.monotonic()
        with pytest.raises(HTTPError) as caught:
            await client.get("/flood-head?seconds=6")
        spent = time.monotonic() - started
    assert type(caught.value) is ConnectionError, str(caught.value)
    assert "head" in str(caught.value)
    assert spent < 2, f"the flood held the request {spent:.1f} s"


@each_driver
async def test_a_body_flood_is_cut_by_the_timeout_and_other_hosts_are_answered(
        driver, hostile_server, servers):
    async with driver.pool(AUTH, timeout=2, max_body_size=2 ** 40) as pool:
        pool.request(hostile_server.host, "GET", "/flood-body?chunked=1&seconds=6")
        for server in servers:
            pool.request(server.host, "GET", "/d/0")
        started = time.monotonic()
        flood, *fine = await pool.wait(timeout=10)
        spent = time.monotonic() - started
    assert type(flood) is Timeout
    assert [r.status for r in fine] == [200, 200, 200]
    assert spent < 2 + 1.5, f"a timeout of 2 s fired after {spent:.1f} s"


# -- retries ----------------------------------------------------------------------------


@each_driver
async def test_retries_retry_a_reset_before_the_answer_and_never_repeat_a_post(
        driver, fault_server):
    async with driver.client(fault_server.host, retries=2, timeout=5) as client:
        response = await client.get("/flaky?fail=2")
        with pytest.raises(ConnectionError):
            await client.post("/flaky?fail=1&key=post", {"a": 1})
    assert response.status == 200
    assert fault_server.paths() == ["/flaky?fail=2"] * 3 + ["/flaky?fail=1&key=post"]


@each_driver
async def test_retries_are_off_by_default(driver, fault_server):
    async with driver.client(fault_server.host, timeout=5) as client:
        with pytest.raises(ConnectionError):
            await client.get("/flaky?fail=1")
    assert fault_server.paths() == ["/flaky?fail=1"]


@each_driver
async def test_a_urllib3_retry_retries_a_503_and_signs_each_attempt_anew(driver, server):
    attempts = []

    def busy_once(request):
        attempts.append(request.nonce)
        if len(attempts) == 1:
            return 503, {"error_class": "Unavailable", "error_text": "busy"}
        return 200, {"attempt": len(attempts)}

    server.route("/capacity", handler=busy_once)
    retry = Retry(total=3, status_forcelist=[503], backoff_factor=0)
    async with driver.client(server.host, AUTH, retries=retry, timeout=5) as client:
        response = await client.get("/capacity")
    assert response.body == {"attempt": 2}
    assert len(attempts) == 2 and all(attempts) and attempts[0] != attempts[1]
    assert server.reject_replayed_nonces


@each_driver
async def test_a_pool_passes_retries_to_its_clients(driver, fault_server):
    async with driver.pool(retries=1, timeout=5) as pool:
        pool.request(fault_server.host, "GET", "/flaky?fail=1&key=a")
        pool.request(fault_server.host, "GET", "/flaky?fail=2&key=b")
        good, bad = await pool.wait(timeout=10)
    assert type(good) is Response and good.status == 200
    assert type(bad) is ConnectionError


@each_driver
async def test_a_retried_refused_connection_backs_off_without_holding_anything_else(
        driver, servers):
    dead = f"127.0.0.1:{closed_port()}"
    async with driver.pool(AUTH, retries=3, retry_backoff=0.1, timeout=5) as pool:
        pool.request(dead, "GET", "/")  # waits 0.2 + 0.4 s in backoff
        pool.request(servers[0].host, "GET", "/d/0")
        first = [r async for r in pool.wait_unordered(count=1, timeout=5)]
        assert [r.status for r in first] == [200]
        (refused,) = await pool.wait(timeout=10)
    assert type(refused) is ConnectionError


# -- cancellation -----------------------------------------------------------------------


def _slow_body(fault_server, head_delay=0.0, delay=0.3):
    fault_server.mid_body.clear()
    return f"/slow-body?size=200000&delay={delay}&head-delay={head_delay}"


@each_driver
async def test_cancel_ends_what_is_pending_at_once(driver, servers):
    async with driver.pool(AUTH) as pool:
        pool.request(servers[0].host, "GET", "/d/2")
        pool.request(servers[1].host, "GET", "/d/2")
        await driver.sleep(0.1)
        started = time.monotonic()
        await pool.cancel()
        assert pool.pending == 0 and await pool.wait() == []
        assert time.monotonic() - started < 1.5
        pool.request(servers[2].host, "GET", "/d/0")
        assert [r.status for r in await pool.wait(timeout=5)] == [200]


@each_driver
async def test_cancel_mid_body_never_returns_the_half_read_connection(driver, fault_server):
    async with driver.pool(simultaneous=1, timeout=10) as pool:
        pool.request(fault_server.host, "GET", _slow_body(fault_server))
        await driver.wait_until(fault_server.mid_body.is_set, what="half the body sent")
        await driver.sleep(0.02)  # the client is now reading the body
        await pool.cancel()
        assert pool.pending == 0
        pool.request(fault_server.host, "GET", "/ok?after=cancel")
        (result,) = await pool.wait(timeout=5)
    assert type(result) is Response
    assert result.body["path"] == "/ok?after=cancel"
    assert result.body["connection"] == 2


@each_driver
async def test_leaving_the_block_mid_body_closes_the_connection(driver, fault_server):
    async with driver.pool(simultaneous=1, timeout=10) as pool:
        handle = pool.request(fault_server.host, "GET", _slow_body(fault_server, delay=2))
        await driver.wait_until(fault_server.mid_body.is_set, what="half the body sent")
        await driver.sleep(0.02)
    assert pool.done(handle)
    await driver.wait_until(lambda: fault_server.open_connections == 0,
                            what="the server saw the connection closed")


# -- trace events -----------------------------------------------------------------------


@each_driver
async def test_trace_receives_each_event_of_a_request_in_order_with_a_retry_and_a_close(
        driver, fault_server):
    events = []

    def trace(event, info):
        request = info["request"]
        events.append((event, request.path if request else None, info.get("reason")))

    async with driver.client(fault_server.host, simultaneous=1, trace=trace,
                             timeout=5) as client:
        await client.get("/race")
        await client.get("/race?n=2")  # the server hangs up: stale, retried once
    assert [event for event, *_ in events] == [
        "connection.opened", "request.sent", "response.headers", "response.done",
        "request.done",
        "connection.reused", "request.sent", "connection.closed", "request.retry",
        "connection.opened", "request.sent", "response.headers", "response.done",
        "request.done",
        "connection.closed",
    ]
    assert events[7][2] == "failed" and events[-1][2] == "closed"


REQUESTER = contextvars.ContextVar("requester", default=None)


@each_driver
async def test_the_caller_s_context_reaches_the_trace_events_of_its_requests(driver,
                                                                            servers):
    seen = []

    def trace(event, info):
        if event == "request.sent":
            seen.append((info["request"].host, REQUESTER.get()))

    async with driver.pool(AUTH, trace=trace, timeout=5) as pool:
        for server in servers:
            REQUESTER.set(f"asked for {server.host}")
            pool.request(server.host, "GET", "/d/0.05")
        REQUESTER.set(None)
        await pool.wait(timeout=10)
    assert sorted(seen) == sorted((s.host, f"asked for {s.host}") for s in servers)


# -- proxies through tinyproxy ----------------------------------------------------------


@each_driver
async def test_a_signed_request_goes_through_the_proxy_in_absolute_form(driver,
                                                                       forward_proxy,
                                                                       server):
    server.route("/vm-ip/", "POST", status=201, body={"ip": "10.0.0.7"})
    async with driver.client(server.host, AUTH, timeout=5,
                             proxies={"http": forward_proxy.url}) as client:
        created = await client.post("/vm-ip/", {"size": 1})
    assert (created.status, created.body) == (201, {"ip": "10.0.0.7"})
    assert forward_proxy.log().count(f"POST {server.url}/vm-ip/ HTTP/1.1") == 1
    (seen,) = server.requests
    assert proxyserver.VIA_NAME in seen.headers.get("Via", "")
    assert seen.path == "/vm-ip/" and seen.headers["Host"] == server.host


@each_driver
async def test_the_environment_s_proxy_is_used_unless_trust_env_is_false(
        driver, forward_proxy, server, monkeypatch):
    server.route("/x", body={"ok": True})
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    async with driver.client(server.host, AUTH, timeout=5) as client:
        await client.get("/x")
    async with driver.client(server.host, AUTH, timeout=5, trust_env=False) as client:
        await client.get("/x")
    assert forward_proxy.log().count(f"GET {server.url}/x HTTP/1.1") == 1
    assert [proxyserver.VIA_NAME in r.headers.get("Via", "") for r in server.requests] == [
        True, False]


@each_driver
async def test_https_goes_through_a_connect_tunnel_that_verifies_the_origin(
        driver, forward_proxy, tls_origin, ca_bundle):
    async with driver.client(tls_origin, timeout=5, verify=ca_bundle,
                             proxies={"https": forward_proxy.url}) as client:
        first = await client.get("/")
        second = await client.get("/")
    async with driver.client(tls_origin, timeout=5,
                             proxies={"https": forward_proxy.url}) as client:
        with pytest.raises(ConnectionError) as caught:
            await client.get("/")
    assert first.body == second.body == {"hello": "tls"}
    tunnel = f"CONNECT {tls_origin.split('://', 1)[1]} HTTP/1.1"
    assert forward_proxy.log().count(tunnel) == 2  # one kept alive, one refused
    assert not isinstance(caught.value, ProxyError)
    assert "TLS failed: CERTIFICATE_VERIFY_FAILED" in str(caught.value)


@each_driver
async def test_a_407_is_a_proxy_error_naming_the_proxy_and_showing_no_credential(
        driver, authenticated_proxy, server, tls_origin, ca_bundle):
    server.route("/x", body={"ok": True})
    async with driver.client(server.host, AUTH, timeout=5,
                             proxies={"http": authenticated_proxy.url}) as client:
        with pytest.raises(ProxyError) as caught:
            await client.get("/x")
    async with driver.client(server.host, AUTH, timeout=5,
                             proxies={"http": authenticated_proxy.url_with_credentials}
                             ) as client:
        assert (await client.get("/x")).body == {"ok": True}
    wrong = authenticated_proxy.url_with_credentials.replace(proxyserver.PROXY_PASSWORD,
                                                             "wr0ng-pa55")
    async with driver.client(tls_origin, timeout=5, verify=ca_bundle,
                             proxies={"https": wrong}) as client:
        with pytest.raises(ProxyError) as refused:
            await client.get("/")
    error = caught.value
    assert error.status == 407
    assert error.remote_error == (f"the proxy {authenticated_proxy.url} answered "
                                  "407 Proxy Authentication Required")
    # RFC 9110 says 407; tinyproxy answers wrong credentials with 401.
    assert refused.value.status in (401, 407)
    for text in (str(refused.value), repr(refused.value), refused.value.format_chain()):
        assert "wr0ng-pa55" not in text and proxyserver.PROXY_USER not in text
    assert len(server.requests) == 1
    assert "Proxy-Authorization" not in server.requests[0].headers


@each_driver
async def test_simultaneous_caps_each_origin_behind_one_proxy(driver, forward_proxy,
                                                              threaded_napix_server_factory):
    origins = [threaded_napix_server_factory().route("/slow", body={"ok": True},
                                                      latency=0.1) for _ in range(2)]
    async with driver.pool(AUTH, simultaneous=2, timeout=10,
                           proxies={"http": forward_proxy.url}) as pool:
        for _ in range(4):
            for origin in origins:
                pool.request(origin.host, "GET", "/slow")
        results = await pool.wait(timeout=20)
    assert [r.status for r in results] == [200] * 8
    assert [origin.max_in_flight for origin in origins] == [2, 2]


# -- TLS (nginx) ------------------------------------------------------------------------


@each_driver
async def test_tls_is_verified_by_default_and_a_ca_bundle_is_accepted(driver, nginx_tls,
                                                                      tls_files):
    async with driver.client(nginx_tls.host, timeout=5) as client:
        with pytest.raises(ConnectionError) as unknown:
            await client.get("/index.html")
    async with driver.client(nginx_tls.host, timeout=5, verify=tls_files["ca"]) as client:
        answer = await client.get("/index.html")
    async with driver.pool(timeout=5, verify=tls_files["ca"]) as pool:
        pool.request(nginx_tls.host, "GET", "/index.html")
        (pooled,) = await pool.wait(timeout=10)
    assert "TLS failed: CERTIFICATE_VERIFY_FAILED" in str(unknown.value)
    assert answer.status == pooled.status == 200 and answer.body == "index\n"


@each_driver
async def test_answers_over_tls_are_read_whole_on_new_and_kept_alive_connections(
        driver, tls_origin, ca_bundle):
    async with driver.client(tls_origin, simultaneous=1, timeout=5,
                             verify=ca_bundle) as client:
        small = [(await client.get("/")).content for _ in range(3)]
        big = [(await client.get("/pattern")).content for _ in range(2)]
    async with driver.client(tls_origin, simultaneous=1, timeout=5,
                             verify=ca_bundle) as client:
        first_big = (await client.get("/pattern")).content
    assert small == [b'{"hello": "tls"}'] * 3
    assert big == [PATTERN, PATTERN] and first_big == PATTERN


@each_driver
async def test_a_certificate_for_another_name_is_refused_unless_verify_is_false(
        driver, nginx_wrong_name, tls_files):
    async with driver.client(nginx_wrong_name.host, timeout=5,
                             verify=tls_files["ca"]) as client:
        with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED.*"
                                                  "IP address mismatch"):
            await client.get("/index.html")
    async with driver.client(nginx_wrong_name.host, timeout=5, verify=False) as client:
        assert (await client.get("/index.html")).status == 200


@each_driver
async def test_a_client_certificate_is_presented_to_nginx_asking_for_one(driver, nginx_mtls,
                                                                        tls_files):
    async with driver.client(nginx_mtls.host, timeout=5, verify=tls_files["ca"],
                             cert=(tls_files["client"], tls_files["client_key"])) as client:
        who = await client.get("/who")
    async with driver.client(nginx_mtls.host, timeout=5, verify=tls_files["ca"]) as client:
        with pytest.raises(HTTPError) as caught:
            await client.get("/who")
    assert (who.status, who.body) == (200, "SUCCESS\n")
    assert caught.value.status == 400  # nginx: no required SSL certificate was sent


# -- compression ------------------------------------------------------------------------

DOCUMENT = {"hypervisors": [{"name": f"hv-{n}", "slots": n % 7} for n in range(200)]}


@pytest.fixture
def gzip_nginx(tmp_path):
    """nginx compressing JSON with gzip, whatever its size."""
    if find_nginx() is None:
        pytest.skip("nginx is not installed (the Debian package nginx)")
    directives = ("    types { application/json json; }\n"
                  "    gzip on;\n    gzip_types application/json;\n    gzip_min_length 0;")
    with NginxServer(tmp_path / "nginx", {"/capacity.json": json.dumps(DOCUMENT).encode()},
                     directives) as nginx:
        yield nginx


@each_driver
async def test_a_json_file_nginx_gzips_is_decoded(driver, gzip_nginx):
    async with driver.client(gzip_nginx.host, timeout=5) as client:
        response = await client.get("/capacity.json")
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.body == DOCUMENT


@each_driver
async def test_br_and_gzip_are_asked_for_and_decoded(driver, server):
    brotli = pytest.importorskip("brotli")
    data = json.dumps(DOCUMENT).encode()
    for path, coding, encoded in (("/br", "br", brotli.compress(data)),
                                  ("/gzip", "gzip", gzip.compress(data))):
        server.route(path, body=encoded, headers={"Content-Encoding": coding,
                                                  "Content-Type": "application/json"})
    async with driver.client(server.host, AUTH, timeout=5) as client:
        answers = [await client.get("/br"), await client.get("/gzip")]
    assert [a.body for a in answers] == [DOCUMENT, DOCUMENT]
    asked = server.requests[0].headers["Accept-Encoding"]
    assert "gzip" in asked and "br" in asked


@each_driver
async def test_a_gzip_bomb_is_refused_as_body_too_large(driver, server):
    bomb = gzip.compress(bytes(20 * 1024 * 1024))
    server.route("/bomb", body=bomb, headers={"Content-Encoding": "gzip"})
    async with driver.client(server.host, AUTH, timeout=10,
                             max_body_size=1024 * 1024) as client:
        with pytest.raises(BodyTooLarge):
            await client.get("/bomb")
