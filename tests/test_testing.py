"""Tests for napixclient.testing: NapixTestServer and its pytest fixtures.

The server runs in this process's gevent hub, so the tests talk to it over
loopback with gevent sockets and hand-written HTTP/1.1 (a blocking client
would block the hub and never get an answer). Every socket has a timeout.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import gevent
import gevent.socket
import pytest

from napixclient.authenticators import LoginAuthenticator
from napixclient.testing import (
    RECORD_KEY,
    NapixTestServer,
    RecordedRequest,
    hmac_token,
)

ROOT_DIR = Path(__file__).resolve().parent.parent

#: Seconds any socket operation in these tests may take before failing.
IO_TIMEOUT = 2.0

ROOT = LoginAuthenticator("root", "toor")


class RawHTTP:
    """One keep-alive HTTP/1.1 connection over a gevent socket.

    :param port: the server's port on 127.0.0.1.
    :param timeout: seconds for connect and for each read or write.
    :raises OSError: if the connection cannot be made.
    """

    def __init__(self, port: int, timeout: float = IO_TIMEOUT) -> None:
        self.host = f"127.0.0.1:{port}"
        self.sock = gevent.socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def send(
        self,
        method: str,
        target: str,
        headers: Optional[Dict[str, str]] = None,
        body: bytes = b"",
    ) -> None:
        """Write one request; ``Host`` and ``Content-Length`` are added
        unless ``headers`` has them."""
        all_headers = {"Host": self.host, "Content-Length": str(len(body))}
        all_headers.update(headers or {})
        lines = [f"{method} {target} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in all_headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def read(self, method: str = "GET") -> Tuple[int, http.client.HTTPMessage, bytes]:
        """Read one response: ``(status, headers, body)``.

        :raises socket.timeout: if no complete answer comes in time.
        :raises http.client.RemoteDisconnected: if the server closed first.
        """
        response = http.client.HTTPResponse(self.sock, method=method)  # type: ignore[arg-type]
        response.begin()
        return response.status, response.headers, response.read()

    def request(
        self,
        method: str,
        target: str,
        headers: Optional[Dict[str, str]] = None,
        body: bytes = b"",
    ) -> Tuple[int, http.client.HTTPMessage, bytes]:
        """Send one request and read its response."""
        self.send(method, target, headers, body)
        return self.read(method)

    def signed(
        self,
        method: str,
        target: str,
        auth: LoginAuthenticator = ROOT,
        body: Any = None,
    ) -> Tuple[int, http.client.HTTPMessage, bytes]:
        """Send a request signed by ``auth`` (JSON body when given)."""
        headers = {"Authorization": auth.authorization(method, self.host, target)}
        data = b""
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        return self.request(method, target, headers, data)

    def recv_all(self, limit: int = 65536) -> bytes:
        """Read until the server closes; a reset counts as a close."""
        chunks = []
        for _ in range(64):
            try:
                chunk = self.sock.recv(limit)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 1.0) -> bool:
    """Yield to the hub until ``predicate()`` is true or ``timeout`` seconds
    pass; return the last value."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        gevent.sleep(0.01)
    return predicate()


@pytest.fixture
def server() -> Iterable[NapixTestServer]:
    srv = NapixTestServer(users={"root": "toor", "grégoire": "sécret"}).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def conn(server: NapixTestServer) -> Iterable[RawHTTP]:
    c = RawHTTP(server.port)
    try:
        yield c
    finally:
        c.close()


# -- authentication ----------------------------------------------------------


def test_valid_signature_is_answered(server: NapixTestServer, conn: RawHTTP) -> None:
    server.route("/abc", "GET", body={"ok": True})
    status, headers, body = conn.signed("GET", "/abc")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"ok": True}
    [record] = server.requests
    assert (record.method, record.path, record.login) == ("GET", "/abc", "root")
    assert record.nonce and len(record.nonce) >= 16
    assert record.headers["Host"] == server.host


def test_missing_authentication_is_401(server: NapixTestServer, conn: RawHTTP) -> None:
    server.route("/abc", body="hi")
    status, headers, body = conn.request("GET", "/abc")
    assert status == 401
    assert headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert doc["error_class"] == "Unauthorized"
    assert doc["request"] == {"method": "GET", "path": "/abc"}
    assert server.requests[0].login is None


def test_wrong_key_is_403_and_secret_not_echoed(server: NapixTestServer, conn: RawHTTP) -> None:
    server.route("/abc", body="hi")
    header = LoginAuthenticator("root", "wrong").authorization("GET", conn.host, "/abc")
    status, headers, body = conn.request("GET", "/abc", {"Authorization": header})
    assert status == 403
    doc = json.loads(body)
    assert doc["error_class"] == "Forbidden"
    assert doc["request"] == {"method": "GET", "path": "/abc"}
    assert header.rpartition(":")[2].encode() not in body
    assert b"toor" not in body and b"wrong" not in body


@pytest.mark.parametrize(
    "signed_method, signed_host, signed_path",
    [
        ("GET", None, "/other"),      # another path
        ("GET", None, "/abc?x=1"),    # same path, another query
        ("DELETE", None, "/abc"),     # another method
        ("GET", "127.0.0.1:1", "/abc"),  # another host
    ],
)
def test_signature_for_another_request_is_403(
    server: NapixTestServer,
    conn: RawHTTP,
    signed_method: str,
    signed_host: Optional[str],
    signed_path: str,
) -> None:
    server.route("/abc", body="hi")
    header = ROOT.authorization(signed_method, signed_host or conn.host, signed_path)
    status, _, _ = conn.request("GET", "/abc", {"Authorization": header})
    assert status == 403


def test_unknown_login_and_malformed_header_are_403(
    server: NapixTestServer, conn: RawHTTP
) -> None:
    server.route("/abc", body="hi")
    header = LoginAuthenticator("nobody", "toor").authorization("GET", conn.host, "/abc")
    assert conn.request("GET", "/abc", {"Authorization": header})[0] == 403
    assert conn.request("GET", "/abc", {"Authorization": "Basic cm9vdA=="})[0] == 403
    assert conn.request("GET", "/abc", {"Authorization": "nothing-to-split"})[0] == 403


def test_replayed_nonce_is_403(server: NapixTestServer, conn: RawHTTP) -> None:
    server.route("/abc", body="hi")
    header = ROOT.authorization("GET", conn.host, "/abc")
    assert conn.request("GET", "/abc", {"Authorization": header})[0] == 200
    assert conn.request("GET", "/abc", {"Authorization": header})[0] == 403


def test_replayed_nonce_accepted_when_allowed(napix_server_factory: Any) -> None:
    srv = napix_server_factory(reject_replayed_nonces=False).route("/abc", body="hi")
    c = RawHTTP(srv.port)
    header = ROOT.authorization("GET", c.host, "/abc")
    assert c.request("GET", "/abc", {"Authorization": header})[0] == 200
    assert c.request("GET", "/abc", {"Authorization": header})[0] == 200
    c.close()


@pytest.mark.parametrize("offset, status", [
    (-40, 403), (-25, 200), (0, 200), (25, 200), (40, 403),
])
def test_clock_skew_is_refused_past_max_clock_skew_either_way(
        napix_server_factory: Any, offset: int, status: int) -> None:
    """max_clock_skew=30: a timestamp 25 s away is accepted, 40 s away
    refused, behind or ahead of the server's clock (5 s of margin on each
    side of the edge for a slow machine)."""
    srv = napix_server_factory(max_clock_skew=30).route("/abc", body="hi")
    c = RawHTTP(srv.port)
    header = ROOT.authorization("GET", c.host, "/abc", timestamp=int(time.time()) + offset)
    assert c.request("GET", "/abc", {"Authorization": header})[0] == status
    c.close()


def test_protocol_test_vectors_are_accepted(server: NapixTestServer, conn: RawHTTP) -> None:
    """PROTOCOL.md's vectors 2 and 3, sent as is, with their own Host."""
    server.route("/vm-ip/", "POST", body={"ip": "10.0.0.1"})
    server.route("/café/", "DELETE", status=204)
    vector2 = (
        "login=root&nonce=5f1b3c9e2a7d4e60&host=127.0.0.1%3A8002"
        "&path=%2Fvm-ip%2F%3Fsize%3D1%26zone%3Deu%2520west&method=POST"
        "&timestamp=1700000000:"
        "4e7c07d94a028d3e62ab90b05fc4682cde01dcc9c403723fd9fb1ba2396f757e"
    )
    status, _, _ = conn.request(
        "POST", "/vm-ip/?size=1&zone=eu%20west",
        {"Host": "127.0.0.1:8002", "Authorization": vector2},
    )
    assert status == 200
    vector3 = (
        "login=gr%C3%A9goire&nonce=00ff&host=napix.example.com"
        "&path=%2Fcaf%25C3%25A9%2F&method=DELETE&timestamp=1700000001:"
        "90c83d785292f6a9214bef73a6ff7209983272e271f99d36e3df769481302cf5"
    )
    status, _, _ = conn.request(
        "DELETE", "/caf%C3%A9/", {"Host": "napix.example.com", "Authorization": vector3}
    )
    assert status == 204
    assert server.requests[1].login == "grégoire"


def test_raw_percent_encoded_path_with_query(server: NapixTestServer, conn: RawHTTP) -> None:
    server.route("/café/", "GET", handler=lambda req: req.path)
    target = "/caf%C3%A9/?zone=eu%20west&name=%C3%A9t%C3%A9"
    status, _, body = conn.signed("GET", target)
    assert status == 200
    assert body.decode() == target
    # The decoded spelling of the same target is another request target.
    header = ROOT.authorization("GET", conn.host, "/café/?zone=eu west&name=été")
    assert conn.request("GET", target, {"Authorization": header})[0] == 403


def test_route_matches_encoded_spelling(server: NapixTestServer, conn: RawHTTP) -> None:
    server.route("/caf%C3%A9/", body="raw")
    assert conn.signed("GET", "/caf%C3%A9/")[2] == b"raw"


def test_tokens(napix_server_factory: Any) -> None:
    srv = napix_server_factory(tokens=["opaque-central-token"], token_parameter="tk")
    srv.route("/abc", body="hi")
    c = RawHTTP(srv.port)
    good = hmac_token("root", "toor").replace(":", "%3A")
    assert c.request("GET", f"/abc?tk={good}")[0] == 200
    assert srv.requests[-1].login == "root"
    assert c.request("GET", "/abc?x=1&tk=opaque-central-token")[0] == 200
    assert srv.requests[-1].login is None
    status, _, body = c.request("GET", "/abc?tk=root%3Adeadbeef")
    assert status == 403 and b"deadbeef" not in body
    assert c.request("GET", f"/abc?tk={hmac_token('root', 'bad')}")[0] == 403
    # The default parameter name means nothing to this server.
    assert c.request("GET", f"/abc?token={good}")[0] == 401
    c.close()


def test_require_auth_false(napix_server_factory: Any) -> None:
    srv = napix_server_factory(require_auth=False).route("/abc", body="hi")
    c = RawHTTP(srv.port)
    assert c.request("GET", "/abc")[0] == 200
    bad = LoginAuthenticator("root", "nope").authorization("GET", c.host, "/abc")
    assert c.request("GET", "/abc", {"Authorization": bad})[0] == 403
    assert c.request("GET", "/abc?token=root%3Abad")[0] == 403
    c.close()


# -- routes --------------------------------------------------------------------


def test_recorded_headers_are_read_in_any_case_like_a_response_s(
        server: NapixTestServer, conn: RawHTTP) -> None:
    # headers.get("traceparent") was None for a Traceparent field.
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    server.route("/t", body="ok")
    conn.request("GET", "/t?token=t", {"Authorization": "x", "traceparent": parent,
                                        "X-Twice": "a"})
    headers = server.requests[-1].headers
    assert headers.get("traceparent") == headers["TRACEPARENT"] == parent
    assert "Traceparent" in headers and "x-twice" in headers
    assert dict(headers)["Traceparent"] == parent  # names spelled in Title-Case


def test_body_types_and_headers(server: NapixTestServer, conn: RawHTTP) -> None:
    server.route("/json", body=[1, 2])
    server.route("/text", body="héllo", headers={"X-Extra": "1"})
    server.route("/bytes", body=b"\x00\x01")
    server.route("/empty", status=202)
    server.route("/typed", body="{}", headers=[("Content-Type", "application/x-custom")])
    status, headers, body = conn.signed("GET", "/json")
    assert (headers["Content-Type"], json.loads(body)) == ("application/json", [1, 2])
    status, headers, body = conn.signed("GET", "/text")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["X-Extra"] == "1" and body.decode() == "héllo"
    _, headers, body = conn.signed("GET", "/bytes")
    assert (headers["Content-Type"], body) == ("application/octet-stream", b"\x00\x01")
    status, _, body = conn.signed("GET", "/empty")
    assert (status, body) == (202, b"")
    assert conn.signed("GET", "/typed")[1]["Content-Type"] == "application/x-custom"


def test_unknown_path_404_and_wrong_method_405(server: NapixTestServer, conn: RawHTTP) -> None:
    server.route("/only-get", "GET", body="hi")
    status, headers, body = conn.signed("GET", "/nope?x=1")
    assert (status, body) == (404, b"`/nope` not found")
    assert headers["Content-Type"].startswith("text/plain")
    status, headers, _ = conn.signed("POST", "/only-get")
    assert status == 405 and headers["Allow"] == "GET"


def test_method_specific_route_wins(server: NapixTestServer, conn: RawHTTP) -> None:
    server.route("/x", body="any").route("/x", "post", body="post")
    assert conn.signed("POST", "/x")[2] == b"post"
    assert conn.signed("PUT", "/x")[2] == b"any"


def test_head_keeps_connection_usable(server: NapixTestServer, conn: RawHTTP) -> None:
    server.route("/x", body="twelve bytes")
    status, headers, body = conn.signed("HEAD", "/x")
    assert (status, headers["Content-Length"], body) == (200, "12", b"")
    assert conn.signed("GET", "/x")[2] == b"twelve bytes"


def test_latency_delays_the_answer(server: NapixTestServer, conn: RawHTTP) -> None:
    server.route("/slow", latency=0.2, body="late")
    started = time.monotonic()
    status, _, body = conn.signed("GET", "/slow")
    elapsed = time.monotonic() - started
    assert (status, body) == (200, b"late")
    assert 0.2 <= elapsed < 1.0


def test_latency_is_served_on_a_descriptor_above_1023(server: NapixTestServer) -> None:
    # The wait watched the connection with select(), which raised ValueError
    # for descriptors from 1,024 on: a test suite with many files open got
    # no answer.
    from napixclient import Client
    from tests.helpers import descriptors_above_1023

    server.route("/slow", latency=0.2, body="late")
    with descriptors_above_1023():
        with Client(server.host, {"login": "root", "key": "toor"}, timeout=5) as client:
            assert client.get("/slow").body == "late"


def test_drop_closes_without_a_byte(server: NapixTestServer, conn: RawHTTP) -> None:
    server.route("/dead", drop=True)
    conn.send("GET", "/dead", {"Authorization": ROOT.authorization("GET", conn.host, "/dead")})
    assert conn.recv_all() == b""
    assert wait_until(lambda: server.open_connections == 0)
    assert len(server.requests) == 1


def test_hang_never_answers_until_stop(server: NapixTestServer, conn: RawHTTP) -> None:
    server.route("/hang", hang=True)
    conn.send("GET", "/hang", {"Authorization": ROOT.authorization("GET", conn.host, "/hang")})
    conn.sock.settimeout(0.3)
    with pytest.raises(socket.timeout):
        conn.sock.recv(1)
    assert server.in_flight == 1
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 0.5
    conn.sock.settimeout(IO_TIMEOUT)
    assert conn.recv_all() == b""
    assert server.in_flight == 0 and server.open_connections == 0


@pytest.mark.parametrize("route", [{"hang": True}, {"latency": 30.0}])
def test_a_client_giving_up_releases_a_held_request(
    server: NapixTestServer, conn: RawHTTP, route: Dict[str, Any]
) -> None:
    server.route("/held", **route)
    conn.send("GET", "/held", {"Authorization": ROOT.authorization("GET", conn.host, "/held")})
    assert wait_until(lambda: server.in_flight == 1)
    conn.close()
    assert wait_until(lambda: server.in_flight == 0 and server.open_connections == 0)


def test_stop_closes_idle_keepalive_connections(server: NapixTestServer, conn: RawHTTP) -> None:
    server.route("/x", body="hi")
    assert conn.signed("GET", "/x")[0] == 200
    assert server.open_connections == 1
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 0.5
    assert conn.recv_all() == b""
    assert server.open_connections == 0
    with pytest.raises(OSError):
        RawHTTP(server.port, timeout=0.5)
    server.stop()  # a second stop does nothing


def test_handler_echo_and_status(server: NapixTestServer, conn: RawHTTP) -> None:
    server.route(
        "/echo", "POST",
        handler=lambda req: (201, {"got": req.json, "login": req.login}, {"X-Seen": "yes"}),
    )
    status, headers, body = conn.signed("POST", "/echo", body={"size": 1})
    assert status == 201 and headers["X-Seen"] == "yes"
    assert json.loads(body) == {"got": {"size": 1}, "login": "root"}
    assert server.requests[0].json == {"size": 1}
    assert server.requests[0].body == b'{"size": 1}'


def test_handler_error_is_500_document(server: NapixTestServer, conn: RawHTTP) -> None:
    def broken(req: RecordedRequest) -> Any:
        raise KeyError("slot")

    server.route("/broken", handler=broken)
    status, _, body = conn.signed("GET", "/broken")
    assert status == 500
    doc = json.loads(body)
    assert doc["error_class"] == "KeyError"
    assert doc["request"] == {"method": "GET", "path": "/broken"}
    assert conn.signed("GET", "/nope")[0] == 404  # the connection still works


def test_app_delegation(napix_server_factory: Any) -> None:
    seen: List[Dict[str, Any]] = []

    def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> List[bytes]:
        seen.append(environ)
        payload = {
            "user": environ.get("REMOTE_USER"),
            "raw": environ["RAW_URI"],
            "body": environ["wsgi.input"].read().decode(),
        }
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(payload).encode()]

    srv = napix_server_factory(app=app).route("/routed", body="route")
    c = RawHTTP(srv.port)
    status, _, body = c.signed("POST", "/app/caf%C3%A9?q=1", body={"a": 1})
    assert status == 200
    assert json.loads(body) == {"user": "root", "raw": "/app/caf%C3%A9?q=1", "body": '{"a": 1}'}
    assert seen[0][RECORD_KEY] is srv.requests[0]
    assert c.signed("GET", "/routed")[2] == b"route"
    assert c.request("GET", "/app/")[0] == 401  # the app only sees authenticated calls
    assert len(seen) == 1
    c.close()


# -- counters ------------------------------------------------------------------


def test_keepalive_connections_are_counted(server: NapixTestServer) -> None:
    server.route("/x", body="hi")
    first, second = RawHTTP(server.port), RawHTTP(server.port)
    for _ in range(2):
        assert first.signed("GET", "/x")[0] == 200
        assert second.signed("GET", "/x")[0] == 200
    assert len(server.requests) == 4
    assert server.open_connections == 2
    assert server.max_open_connections == 2
    first.close()
    second.close()
    assert wait_until(lambda: server.open_connections == 0)
    assert server.max_open_connections == 2
    server.reset_counters()
    assert server.max_open_connections == 0 and server.max_in_flight == 0


def test_concurrent_requests_are_counted(server: NapixTestServer) -> None:
    server.route("/slow", latency=0.2, body="done")
    clients = [RawHTTP(server.port) for _ in range(3)]
    started = time.monotonic()
    jobs = [gevent.spawn(c.signed, "GET", "/slow") for c in clients]
    gevent.joinall(jobs, timeout=IO_TIMEOUT, raise_error=True)
    elapsed = time.monotonic() - started
    assert [job.value[0] for job in jobs] == [200, 200, 200]
    assert server.max_in_flight == 3
    assert server.in_flight == 0
    assert server.max_open_connections == 3
    assert elapsed < 0.5  # served concurrently, not one after another
    for c in clients:
        c.close()


# -- API details -------------------------------------------------------------


def test_reprs_hide_secrets(napix_server_factory: Any) -> None:
    srv = napix_server_factory(users={"root": "supersecretkey"}, tokens=["opaquetok"])
    srv.route("/x", body="hi")
    c = RawHTTP(srv.port)
    assert c.request("GET", "/x?a=1&token=opaquetok")[0] == 200
    assert c.signed("GET", "/x", LoginAuthenticator("root", "supersecretkey"))[0] == 200
    text = repr(srv) + repr(srv.requests)
    assert "supersecretkey" not in text and "opaquetok" not in text
    assert "token=***" in text
    signature = srv.requests[1].headers["Authorization"].rpartition(":")[2]
    assert signature not in text
    c.close()


def test_addresses_and_context_manager() -> None:
    with NapixTestServer() as srv:
        assert srv.host == f"127.0.0.1:{srv.port}"
        assert srv.url == f"http://127.0.0.1:{srv.port}"
        with pytest.raises(RuntimeError):
            srv.start()
    with pytest.raises(OSError):
        RawHTTP(srv.port, timeout=0.5)
    with pytest.raises(RuntimeError):
        _ = NapixTestServer().port


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"path": "no-slash"}, ValueError),
        ({"path": "/x", "status": 99}, ValueError),
        ({"path": "/x", "latency": -1}, ValueError),
        ({"path": "/x", "hang": True, "drop": True}, ValueError),
        ({"path": "/x", "body": 12}, TypeError),
        ({"path": "/x", "handler": "not callable"}, TypeError),
    ],
)
def test_route_rejects_bad_arguments(kwargs: Dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        NapixTestServer().route(**kwargs)


def test_constructor_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError):
        NapixTestServer(users={"root": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        NapixTestServer(tokens="abc")
    with pytest.raises(ValueError):
        NapixTestServer(token_parameter="")
    with pytest.raises(ValueError):
        NapixTestServer(max_clock_skew=-1)


# -- pytest plugin ---------------------------------------------------------------


def test_napix_server_fixture(napix_server: NapixTestServer) -> None:
    napix_server.route("/", body=[])
    c = RawHTTP(napix_server.port)
    status, _, body = c.signed("GET", "/")
    assert (status, json.loads(body)) == (200, [])
    c.close()


def test_napix_server_factory_fixture(napix_server_factory: Any) -> None:
    a = napix_server_factory()
    b = napix_server_factory(users={"other": "key"})
    assert a.port != b.port
    c = RawHTTP(b.port)
    assert c.signed("GET", "/")[0] == 403  # root is unknown to b
    assert c.signed("GET", "/", LoginAuthenticator("other", "key"))[0] == 404
    c.close()


# -- starting, stopping, and clients that do not speak HTTP -----------------------


def test_napixclient_testing_exports_every_public_name_of_its_modules() -> None:
    import napixclient.testing as testing
    from napixclient.testing import plugin, server, signatures

    for module in (server, signatures, plugin):
        for name in module.__all__:
            if module is signatures and name not in ("hmac_token",):
                continue  # the checks themselves are the server's business
            assert getattr(testing, name) is getattr(module, name), name
            assert name in testing.__all__, name


def test_the_pytest_plugin_module_stands_alone(tmp_path: Path) -> None:
    """What the pytest11 entry point and a conftest name, loaded alone (no
    other plugin of this machine, no conftest of this project)."""
    entry = re.search(r'"pytest11": \["([\w.]+) = ([\w.]+)"\]',
                      (ROOT_DIR / "setup.py").read_text())
    assert entry and entry.group(1) == entry.group(2) == "napixclient.testing.plugin"
    (tmp_path / "test_alone.py").write_text(
        "def test_fixtures(napix_server, napix_server_factory):\n"
        "    assert napix_server.host.startswith('127.0.0.1:')\n"
        "    assert napix_server_factory(users={'a': 'b'}).port\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", entry.group(2), "-p",
         "no:cacheprovider", str(tmp_path / "test_alone.py")],
        capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": str(ROOT_DIR), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_start_on_a_stopped_server_says_it_is_stopped_and_cannot_restart() -> None:
    srv = NapixTestServer().start()
    with pytest.raises(RuntimeError, match="already started"):
        srv.start()
    srv.stop()
    for again in (srv.start, srv.__enter__):
        with pytest.raises(RuntimeError) as caught:
            again()
        assert "stopped" in str(caught.value) and "cannot be restarted" in str(caught.value)
        assert "already started" not in str(caught.value)


#: The start of a TLS ClientHello: a handshake record (0x16), TLS 1.0 record
#: version, a length, then bytes of any value (no newline among them here).
CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\xce\xa1@\x93\xbc\xa0"


def read_until_closed(sock: Any) -> bytes:
    """Every byte ``sock`` receives until the server closes it (a few
    reads; each bounded by the socket's timeout)."""
    data = b""
    for _ in range(100):
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    raise AssertionError("the server kept the connection open")


def server_log(caplog: pytest.LogCaptureFixture) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.name == "napixclient.testing"]


def test_a_tls_client_is_closed_at_once_with_one_clean_log_line(
        server: NapixTestServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "napixclient.testing")
    sock = gevent.socket.create_connection(("127.0.0.1", server.port), timeout=IO_TIMEOUT)
    started = time.monotonic()
    sock.sendall(CLIENT_HELLO)
    try:
        # A plain HTTP server must not wait for a line end that never comes.
        assert read_until_closed(sock).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    finally:
        sock.close()
    assert time.monotonic() - started < 1.0
    records = server_log(caplog)
    assert len(records) == 1
    assert "not HTTP (TLS handshake?)" in records[0]
    assert records[0].isascii() and "\\x16" not in records[0] and "\n" not in records[0]


def test_a_garbage_request_line_is_logged_on_one_ascii_line(
        server: NapixTestServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "napixclient.testing")
    sock = gevent.socket.create_connection(("127.0.0.1", server.port), timeout=IO_TIMEOUT)
    try:
        sock.sendall(b"\xc3\xa9\xff\x1b[2J " + b"z" * 5000 + b"\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400 ")
    finally:
        sock.close()
    gevent.sleep(0.05)
    records = server_log(caplog)
    bad = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(bad) == 1 and bad[0].startswith("bad request from 127.0.0.1:")
    assert "<gevent" not in bad[0]
    for message in records:  # the access log line included
        assert message.isascii() and "\x1b" not in message and "\n" not in message
        assert len(message) < 600


def test_an_https_client_on_a_plain_server_puts_no_raw_bytes_on_stderr() -> None:
    script = (
        "from napixclient import Client, ConnectionError\n"
        "from napixclient.testing import NapixTestServer\n"
        "server = NapixTestServer().start()\n"
        "for _ in range(3):\n"
        "    try:\n"
        "        Client(f'https://{server.host}', {'login': 'root', 'key': 'toor'},\n"
        "               timeout=5).get('/')\n"
        "    except ConnectionError as error:\n"
        "        print('client:', type(error).__name__)\n"
        "server.stop()\n"
    )
    # The child runs its own server: nothing here needs the hub meanwhile.
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60,
                          cwd=str(ROOT_DIR),
                          env={"PYTHONPATH": str(ROOT_DIR), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ["client: ConnectionError"] * 3
    lines = done.stderr.decode("latin-1").splitlines()
    assert len(lines) == 3, lines
    for line in lines:
        assert re.fullmatch(r"not HTTP \(TLS handshake\?\) from 127\.0\.0\.1:\d+ on "
                            r"127\.0\.0\.1:\d+; closing the connection", line), line
