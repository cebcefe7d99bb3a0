"""NapixTestServer from asyncio code and from blocking code: served from a
thread with a gevent hub of its own (napixclient/testing/threads.py).

The client here is a few lines of plain asyncio streams, so that these
tests are about the server alone; tests/test_aio.py runs napixclient.aio's
AsyncClient against the same servers.
"""

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import gevent
import gevent.ssl
import pytest
import requests
from gevent.pywsgi import WSGIServer

from napixclient import Client
from napixclient.authenticators import LoginAuthenticator
from napixclient.testing import HubThread, NapixTestServer, hmac_token
from tests.faultserver import FaultServer
from tests.helpers import AUTH

ROOT = Path(__file__).resolve().parent.parent
SIGNER = LoginAuthenticator("root", "toor")

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    """asyncio only: the client below is made of asyncio streams."""
    return "asyncio"


async def fetch(server, path, method="GET", *, sign=True, authorization=None, limit=5.0):
    """Send one request on a connection of its own (``Connection: close``)
    and read until the server closes it.

    :returns: ``(status, body)``; ``(None, b"")`` when the connection closed
        without a byte of answer.
    :raises TimeoutError: after ``limit`` seconds without the server closing.
    """
    async def exchange():
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            fields = [f"{method} {path} HTTP/1.1", f"Host: {server.host}", "Connection: close"]
            if authorization is not None:
                fields.append(f"Authorization: {authorization}")
            elif sign:
                fields.append(f"Authorization: {SIGNER.authorization(method, server.host, path)}")
            writer.write(("\r\n".join(fields) + "\r\n\r\n").encode("latin-1"))
            answer = await reader.read()
        finally:
            writer.close()
        if not answer:
            return None, b""
        head, _, body = answer.partition(b"\r\n\r\n")
        return int(head.split()[1]), body

    return await asyncio.wait_for(exchange(), limit)


def server_threads():
    return [t for t in threading.enumerate() if t.name == "NapixTestServer"]


async def test_an_async_test_s_napix_server_answers_while_the_event_loop_waits(napix_server):
    napix_server.route("/capacity", body={"free_slots": 3})
    status, body = await fetch(napix_server, "/capacity")
    assert (status, body) == (200, b'{"free_slots": 3}')
    assert [r.login for r in napix_server.requests] == ["root"]


async def test_napix_server_factory_serves_async_tests_from_threads(napix_server_factory):
    servers = [napix_server_factory(users={"root": "toor"}).route("/who", body=str(n))
               for n in range(3)]
    answers = await asyncio.gather(*(fetch(server, "/who") for server in servers))
    assert answers == [(200, b"0"), (200, b"1"), (200, b"2")]
    assert len(server_threads()) >= 3


async def test_async_with_offers_routes_statuses_latency_hang_drop_and_counters():
    async with NapixTestServer(users={"root": "toor"}, tokens=["opaque"]) as server:
        server.route("/ok", body={"ok": True})
        server.route("/broken", status=503, body="down for maintenance")
        server.route("/slow", body="late", latency=0.3)
        server.route("/dead", drop=True)
        server.route("/never", hang=True)
        server.route("/echo", "GET", handler=lambda request: (201, {"login": request.login}))

        assert await fetch(server, "/ok") == (200, b'{"ok": true}')
        assert await fetch(server, "/broken") == (503, b"down for maintenance")
        assert await fetch(server, "/echo") == (201, b'{"login": "root"}')
        assert await fetch(server, "/dead") == (None, b"")
        # Three held for 0.3 s at once: served together, not one by one.
        server.reset_counters()
        started = time.monotonic()
        slow = await asyncio.gather(*(fetch(server, "/slow") for _ in range(3)))
        spent = time.monotonic() - started
        assert slow == [(200, b"late")] * 3
        assert 0.25 <= spent < 0.8, spent
        assert server.max_in_flight == 3 and server.max_open_connections == 3
        with pytest.raises(asyncio.TimeoutError):
            await fetch(server, "/never", limit=0.3)

        # The identity checks, as in the gevent hub.
        status, body = await fetch(server, "/ok", authorization="login=root&x=1:" + "0" * 64)
        assert status == 403
        assert (await fetch(server, "/ok", sign=False))[0] == 401
        token = hmac_token("root", "toor")
        assert (await fetch(server, f"/ok?token={token}", sign=False))[0] == 200
        assert (await fetch(server, "/ok?token=opaque", sign=False))[0] == 200
        assert (await fetch(server, "/ok?token=wrong", sign=False))[0] == 403

        paths = [request.path for request in server.requests]
        assert paths[:4] == ["/ok", "/broken", "/echo", "/dead"]
        assert paths[-3:] == [f"/ok?token={token}", "/ok?token=opaque", "/ok?token=wrong"]
        assert token not in repr(server.requests[-3])


async def test_leaving_async_with_stops_the_server_and_ends_its_thread():
    before = len(server_threads())
    async with NapixTestServer() as server:
        server.route("/never", hang=True)
        held = asyncio.ensure_future(fetch(server, "/never", limit=10))
        await asyncio.sleep(0.2)
        assert len(server_threads()) == before + 1
        assert "running in a thread" in repr(server)
    # The held request was dropped, not left to its 10 s limit.
    assert await asyncio.wait_for(held, 3) == (None, b"")
    assert len(server_threads()) == before
    assert "stopped" in repr(server)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", server.port)


async def test_leaving_async_with_lets_the_event_loop_run_while_the_server_stops():
    gaps = []

    async def tick():
        last = time.monotonic()
        for _ in range(1000):
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.ensure_future(tick())
    async with NapixTestServer(require_auth=False) as server:
        # A handler that blocks its thread: stopping has to wait for it.
        server.route("/busy", handler=lambda request: time.sleep(0.6) or "done")
        held = asyncio.ensure_future(fetch(server, "/busy", sign=False))
        await asyncio.sleep(0.1)
        leaving = time.monotonic()
        del gaps[:]
    spent = time.monotonic() - leaving
    ticker.cancel()
    await asyncio.gather(held, return_exceptions=True)
    assert spent >= 0.3, "the server stopped without waiting for its handler"
    assert max(gaps) < 0.2, f"the event loop stood still {max(gaps):.2f} s"


async def test_async_with_refuses_a_server_started_in_the_calling_thread_s_hub():
    server = NapixTestServer().start()
    try:
        with pytest.raises(RuntimeError, match="start.thread=True"):
            async with server:
                pass
    finally:
        server.stop()


async def test_async_with_refuses_a_stopped_server():
    server = NapixTestServer().start(thread=True)
    server.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        async with server:
            pass


async def test_a_route_handler_may_stop_its_own_threaded_server():
    async with NapixTestServer(require_auth=False) as server:
        server.route("/stop", handler=lambda request: server.stop() or "bye")
        await fetch(server, "/stop", sign=False)
        for _ in range(100):
            if not server_threads():
                break
            await asyncio.sleep(0.02)
        assert "stopped" in repr(server)
        assert not server._thread.running


def test_a_blocking_client_is_answered_by_a_threaded_server(threaded_napix_server):
    threaded_napix_server.route("/capacity", body={"free_slots": 3})
    signed = requests.get(threaded_napix_server.url + "/capacity", auth=SIGNER, timeout=5)
    assert (signed.status_code, signed.json()) == (200, {"free_slots": 3})


def test_threaded_factory_servers_run_in_threads_even_for_a_plain_test(
        threaded_napix_server_factory):
    server = threaded_napix_server_factory(require_auth=False).route("/x", body="x")
    assert len(server_threads()) >= 1
    assert asyncio.run(fetch(server, "/x", sign=False)) == (200, b"x")


def test_a_plain_test_s_napix_server_still_serves_from_the_test_s_hub(napix_server):
    napix_server.route("/x", body="x")
    assert not server_threads()
    assert "running in a thread" not in repr(napix_server)


def test_stop_waits_for_the_thread_and_is_idempotent():
    server = NapixTestServer().start(thread=True)
    thread = server._thread
    server.stop()
    assert not thread.running
    server.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        server.start(thread=True)


def test_what_start_raises_in_the_thread_is_raised_in_the_caller_s_thread():
    def bind_a_taken_port():
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            with socket.socket() as second:
                second.bind(taken.getsockname())

    serving = HubThread(bind_a_taken_port, lambda timeout: None)
    with pytest.raises(OSError, match="in use"):
        serving.start()
    assert not serving.running


def test_a_gevent_server_of_any_kind_runs_in_a_hub_thread():
    fault = FaultServer()
    serving = HubThread(fault.start, lambda timeout: fault.stop())
    serving.start()
    try:
        with socket.create_connection(("127.0.0.1", fault.port), timeout=5) as sock:
            sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        serving.stop()
    assert not serving.running


async def test_a_tls_server_made_in_its_hub_thread_serves_an_asyncio_client(ca, tmp_path):
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    def hello(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello over tls"]

    def serve():
        server = WSGIServer(("127.0.0.1", 0), hello, ssl_context=context, log=None,
                            error_log=None)
        server.start()
        return server

    serving = HubThread(serve, lambda timeout: serving.value.stop(timeout=timeout))
    server = serving.start()
    assert server is serving.value
    try:
        bundle = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(bundle))
        client_context = ssl.create_default_context(cafile=str(bundle))
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", server.server_port, ssl=client_context), 5)
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    finally:
        serving.stop()
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello over tls")


def test_gevent_code_keeps_its_own_hub_beside_a_threaded_server():
    hub = gevent.get_hub()
    with NapixTestServer() as in_hub:
        in_hub.route("/x", body="x")
        threaded = NapixTestServer().start(thread=True)
        threaded.route("/y", body="y")
        with Client(in_hub.host, AUTH, timeout=5) as a, Client(threaded.host, AUTH,
                                                                timeout=5) as b:
            assert (a.get("/x").body, b.get("/y").body) == ("x", "y")
        threaded.stop()
        assert gevent.get_hub() is hub
        with Client(in_hub.host, AUTH, timeout=5) as a:
            assert a.get("/x").body == "x"


USER_SUITE = textwrap.dedent('''
    import asyncio

    import pytest

    from napixclient.authenticators import LoginAuthenticator

    SIGNER = LoginAuthenticator("root", "toor")


    async def get(server, path):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        authorization = SIGNER.authorization("GET", server.host, path)
        writer.write(f"GET {path} HTTP/1.1\\r\\nHost: {server.host}\\r\\n"
                     f"Authorization: {authorization}\\r\\nConnection: close\\r\\n\\r\\n".encode())
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return answer


    @pytest.mark.MARK
    async def test_capacity(napix_server):
        napix_server.route("/capacity", body={"free_slots": 3})
        assert (await get(napix_server, "/capacity")).endswith(b'{"free_slots": 3}')
''')


@pytest.mark.parametrize("plugin, mark, backend", [
    ("anyio", "anyio", "@pytest.fixture\ndef anyio_backend():\n    return 'asyncio'\n"),
    ("pytest_asyncio", "asyncio", ""),
])
def test_a_user_s_async_suite_needs_nothing_but_the_installed_plugin(tmp_path, plugin, mark,
                                                                     backend):
    pytest.importorskip(plugin)
    (tmp_path / "test_user.py").write_text(USER_SUITE.replace("MARK", mark) + "\n" + backend)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
