"""The shared connection manager: a total cap, idle expiry, one TLS context
per configuration, trace events; over real loopback sockets."""

import json
import os
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gevent
import gevent.socket
import gevent.ssl
import pytest
import trustme
from gevent.pywsgi import WSGIServer

import napixclient.core.tls
import napixclient.dialing
from napixclient import Client, ClientPool, ConnectionError, Response
from napixclient.connections import ConnectionManager, default_max_connections
from napixclient.core.parser import available_parsers
from tests.faultserver import FaultServer
from tests.helpers import AUTH, descriptors_above_1023

ROOT = Path(__file__).resolve().parent.parent

# These tests run under gevent.monkey.patch_all() too: python tests/patched.py
pytestmark = pytest.mark.patched




PROBE = textwrap.dedent("""
    import json, resource, sys
    from napixclient import ClientPool, Response
    hosts = json.loads(sys.stdin.read())
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    with ClientPool(simultaneous=2, timeout=30) as pool:
        for host in hosts:
            pool.request(host, "GET", "/")
        results = pool.wait(timeout=120)
        cap = pool.connections.max_connections
    errors = sorted({str(r) for r in results if not isinstance(r, Response)})
    print(json.dumps({"soft": soft, "cap": cap, "answers": sum(
        isinstance(r, Response) and r.status == 200 for r in results),
        "errors": len(results) - sum(isinstance(r, Response) for r in results),
        "examples": errors[:3]}))
""")


def _limit_open_files(soft):
    def set_limit():
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return set_limit


def test_a_default_pool_probes_3000_hosts_under_1024_open_files_and_loses_none(many_hosts):
    hosts = many_hosts(3000)
    done = subprocess.run([sys.executable, "-c", PROBE], input=json.dumps(hosts.hosts),
                          capture_output=True, text=True, timeout=240,
                          preexec_fn=_limit_open_files(1024),
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["soft"] == 1024
    assert outcome["cap"] == 768
    assert (outcome["answers"], outcome["errors"]) == (3000, 0), outcome["examples"]
    figures = hosts.figures()
    assert figures["requests"] == 3000
    assert figures["max_open"] <= 768


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
def test_max_connections_caps_the_sockets_open_at_once_across_all_hosts(many_hosts):
    hosts = many_hosts(200, delay=0.02)
    baseline = _open_sockets()
    most = {"sockets": 0, "manager": 0}

    def watch():
        while True:
            most["sockets"] = max(most["sockets"], _open_sockets() - baseline)
            gevent.sleep(0.002)

    with ClientPool(simultaneous=2, max_connections=50, timeout=30) as pool:
        def trace(event, info):
            most["manager"] = max(most["manager"], pool.connections.open_connections)

        pool.connections.trace = trace
        watcher = gevent.spawn(watch)
        for host in hosts.hosts * 2:
            pool.request(host, "GET", "/")
        results = pool.wait(timeout=60)
        watcher.kill()
    assert len(results) == 400
    assert all(isinstance(r, Response) and r.status == 200 for r in results)
    figures = hosts.figures()
    assert figures["requests"] == 400
    assert 0 < figures["max_open"] <= 50
    assert 0 < most["sockets"] <= 50
    assert 0 < most["manager"] <= 50


def test_requests_beyond_the_total_cap_wait_in_submission_order_for_a_host(napix_server):
    napix_server.route("/slow", body={"ok": True}, latency=0.05)
    order = []
    with ClientPool(AUTH, simultaneous=5, max_connections=1, timeout=5) as pool:
        for n in range(6):
            greenlet = pool.request(napix_server.host, "GET", f"/slow?n={n}")
            greenlet.rawlink(lambda g, n=n: order.append(n))
        results = pool.wait(timeout=10)
    assert [r.status for r in results] == [200] * 6
    assert order == list(range(6))
    assert napix_server.max_open_connections == 1


def test_the_least_recently_used_idle_connection_is_closed_to_make_room(napix_server_factory):
    first, second, third = (napix_server_factory() for _ in range(3))
    for server in (first, second, third):
        server.route("/", body={"ok": True})
    closed = []

    def trace(event, info):
        if event == "connection.closed":
            closed.append((info["origin"], info["reason"]))

    with ClientPool(AUTH, max_connections=2, timeout=5, trace=trace) as pool:
        for server in (first, second, third):
            pool.request(server.host, "GET", "/")
            pool.wait(timeout=5)
        assert pool.connections.open_connections == 2
    assert closed[0] == (f"http://{first.host}", "evicted")


def test_an_idle_connection_past_keepalive_expiry_is_closed_and_not_reused(napix_server):
    napix_server.route("/", body={"ok": True})
    events = []
    with Client(napix_server.host, AUTH, keepalive_expiry=0.2, timeout=5,
                trace=lambda event, info: events.append((event, info.get("reason")))) as client:
        client.get("/")
        assert napix_server.open_connections == 1
        deadline = time.monotonic() + 3
        while napix_server.open_connections and time.monotonic() < deadline:
            gevent.sleep(0.02)
        assert napix_server.open_connections == 0  # the server saw the close
        assert ("connection.closed", "expired") in events
        client.get("/")
    opened = [event for event, _ in events if event == "connection.opened"]
    assert len(opened) == 2
    assert ("connection.reused", None) not in events
    assert napix_server.max_open_connections == 1


def test_one_reaper_serves_requests_one_after_the_other_on_one_connection(napix_server):
    """The keep-alive reaper is not started anew after each request: it
    lives while a connection is open, idle or in use (a reaper per request
    cost a greenlet, its frame stack and a page fault each time)."""
    napix_server.route("/", body={"ok": True})
    reapers = []
    with Client(napix_server.host, AUTH, timeout=5) as client:
        for _ in range(30):
            # The next request takes the connection before a new reaper
            # runs: one that ends when nothing is idle would end in its wait.
            client.get("/")
            reapers.append(client._manager._reaper)
        assert napix_server.max_open_connections == 1
    assert reapers[0] is not None
    assert all(reaper is reapers[0] for reaper in reapers)


def test_the_reaper_still_closes_a_connection_that_goes_idle_after_being_busy(napix_server):
    """A reaper that slept while the connection was in use closes it once it
    has been idle for keepalive_expiry."""
    napix_server.route("/", body={"ok": True})
    with Client(napix_server.host, AUTH, keepalive_expiry=0.3, timeout=5) as client:
        for _ in range(5):
            client.get("/")
            gevent.sleep(0.1)  # less than the expiry: reused each time
        assert napix_server.max_open_connections == 1
        deadline = time.monotonic() + 3
        while napix_server.open_connections and time.monotonic() < deadline:
            gevent.sleep(0.02)
        assert napix_server.open_connections == 0
        deadline = time.monotonic() + 3
        while client._manager._reaper is not None and time.monotonic() < deadline:
            gevent.sleep(0.02)
        assert client._manager._reaper is None  # no connection open: it ended


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"hello": "tls"}']


def test_forty_https_hosts_with_one_verify_setting_build_one_tls_context(tmp_path,
                                                                          monkeypatch):
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    servers = [WSGIServer(("127.0.0.1", 0), hello, ssl_context=context, log=None,
                          error_log=None) for _ in range(40)]
    built = []
    real = napixclient.core.tls.ssl_context
    monkeypatch.setattr(napixclient.core.tls, "ssl_context",
                        lambda verify=True, cert=None, context_class=None:
                        built.append(verify) or real(verify, cert, context_class))
    try:
        for server in servers:
            server.start()
        with ClientPool(verify=str(bundle), timeout=10) as pool:
            for server in servers:
                pool.request(f"https://127.0.0.1:{server.server_port}", "GET", "/")
            results = pool.wait(timeout=30)
            assert len(pool.connections.dialer.contexts) == 1
    finally:
        for server in servers:
            server.stop(timeout=1)
    assert [r.body for r in results] == [{"hello": "tls"}] * 40
    assert built == [str(bundle)]


@pytest.fixture
def fault_server():
    server = FaultServer()
    server.start()
    yield server
    server.stop()


def test_trace_receives_each_event_of_a_request_in_order_with_a_retry_and_a_close(
        fault_server):
    events = []

    def trace(event, info):
        assert isinstance(info["time"], float)
        request = info["request"]
        events.append((event, request.path if request else None,
                       info.get("reason"), info["connection"]))

    with Client(fault_server.host, simultaneous=1, trace=trace) as client:
        client.get("/race")
        client.get("/race?n=2")  # the server hangs up: stale, retried once
    assert [event for event, *_ in events] == [
        "connection.opened", "request.sent", "response.headers", "response.done",
        "request.done",
        "connection.reused", "request.sent", "connection.closed", "request.retry",
        "connection.opened", "request.sent", "response.headers", "response.done",
        "request.done",
        "connection.closed",
    ]
    assert events[7][2] == "failed" and events[7][3] == 1
    assert events[9][3] == 2
    assert events[-1][2] == "closed" and events[-1][1] is None
    assert all(path in ("/race", "/race?n=2") for _, path, *_ in events[:-1])


def test_bad_connection_options_are_refused_at_once():
    for options in ({"max_connections": 0}, {"max_connections": "9"},
                    {"keepalive_expiry": 0}, {"keepalive_expiry": float("inf")},
                    {"trace": "print"}):
        with pytest.raises(ValueError, match=next(iter(options))):
            ClientPool(**options)
        with pytest.raises(ValueError, match=next(iter(options))):
            Client("127.0.0.1:1", **options)
    with pytest.raises(ValueError, match="shared ConnectionManager"):
        Client("127.0.0.1:1", connections=ConnectionManager(), max_connections=3)


def test_the_default_cap_follows_the_soft_limit_on_open_files(monkeypatch):
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 4096))
    assert default_max_connections() == 768
    monkeypatch.setattr(resource, "getrlimit", lambda which: (100000, 100000))
    assert default_max_connections() == 75000
    monkeypatch.setattr(resource, "getrlimit", lambda which: (40, 40))
    assert default_max_connections() == 8


@pytest.mark.parametrize("parser", available_parsers())
def test_the_response_headers_event_carries_the_answer_s_status(napix_server, parser):
    napix_server.route("/made", "POST", status=201, body={"made": True})
    events = []
    with Client(napix_server.host, AUTH, parser=parser,
                trace=lambda event, info: events.append((event, info))) as client:
        assert client.post("/made", {}).status == 201
    (info,) = [info for event, info in events if event == "response.headers"]
    assert info["status"] == 201


# -- one name lookup shared by the requests that wait for it (issue 19, item 5) ------

#: The name the slow lookup answers for. "localhost" is in /etc/hosts: were
#: the lookup not intercepted, no query would leave the machine.
SLOW_NAME = "localhost"


@pytest.fixture
def slow_lookup(monkeypatch):
    """The name lookup napixclient.dialing calls (gevent.socket.getaddrinfo
    today) takes 0.5 s for SLOW_NAME and gives 127.0.0.1; returns the list
    of the names it was asked for. If the library looks names up elsewhere,
    patch that instead."""
    real = gevent.socket.getaddrinfo
    asked = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != SLOW_NAME:
            return real(host, port, *args, **kwargs)
        asked.append(host)
        gevent.sleep(0.5)
        return real("127.0.0.1", port, *args, **kwargs)

    monkeypatch.setattr(napixclient.dialing.gevent.socket, "getaddrinfo", getaddrinfo)
    return asked


def test_killing_a_request_during_a_shared_name_lookup_leaves_the_other_to_succeed(
        napix_server, slow_lookup):
    napix_server.route("/ok", body={"ok": True})
    host = f"{SLOW_NAME}:{napix_server.port}"
    with ClientPool(AUTH, timeout=5) as pool:
        first = pool.request(host, "GET", "/ok")
        pool.request(host, "GET", "/ok")
        gevent.sleep(0.2)  # both wait for the one lookup
        assert slow_lookup == [SLOW_NAME]
        first.kill()
        killed, other = pool.wait(timeout=10)
    assert isinstance(killed, ConnectionError)
    assert isinstance(other, Response) and other.body == {"ok": True}


def test_a_caller_s_timeout_during_a_shared_name_lookup_leaves_the_other_to_succeed(
        napix_server, slow_lookup):
    napix_server.route("/ok", body={"ok": True})
    with Client(f"{SLOW_NAME}:{napix_server.port}", AUTH, timeout=5) as client:

        def impatient():
            with gevent.Timeout(0.1, False):
                client.get("/ok")

        first = gevent.spawn(impatient)
        gevent.sleep(0)  # it starts the lookup
        other = gevent.spawn(client.get, "/ok")
        gevent.joinall([first, other], timeout=10)
        assert slow_lookup[:1] == [SLOW_NAME]
        assert first.successful()
        assert other.successful(), repr(other.exception)
        assert other.value.body == {"ok": True}


def test_an_idle_connection_on_a_descriptor_above_1023_is_reused(napix_server):
    # The idle check used select(), which refuses descriptors from 1,024 on
    # (FD_SETSIZE): each such connection passed for dropped by its server and
    # a new one was dialled for every request (W3's 2,000 connections became
    # 5,940).
    napix_server.route("/", body={"ok": True})
    events = []
    with descriptors_above_1023():
        with Client(napix_server.host, AUTH,
                    trace=lambda name, info: events.append(name)) as client:
            for _ in range(3):
                assert client.get("/").status == 200
    assert events.count("connection.opened") == 1, events
    assert events.count("connection.reused") == 2, events


def test_a_large_body_is_sent_on_a_descriptor_above_1023(napix_server):
    # A body over 64 KiB is sent piece by piece, watching for an early
    # answer; that watch used select() too, which raised ValueError there.
    napix_server.route("/upload", method="POST", body={"ok": True})
    body = {"blob": "x" * 600_000}
    with descriptors_above_1023():
        with Client(napix_server.host, AUTH, timeout=10) as client:
            assert client.post("/upload", body).status == 200
