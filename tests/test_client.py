"""Client against real NapixTestServers on 127.0.0.1."""

import re

import gevent
import pytest

from napixclient import Client, ClientPool, ConnectionError, HTTPError, Response, Timeout
from napixclient.authenticators import LoginAuthenticator, TokenIdentifier
from napixclient.exceptions import BodyTooLarge
from napixclient.testing import hmac_token
from tests.helpers import AUTH, closed_port


def echo(request):
    return {"method": request.method, "path": request.path, "json": request.json,
            "content_type": request.headers.get("Content-Type")}


def test_signed_request_is_accepted_and_decoded(napix_server):
    napix_server.route("/", body={"managers": ["vm-ip"]})
    with Client(napix_server.host, AUTH) as client:
        response = client.get("/")
    assert isinstance(response, Response)
    assert response.status == 200 and response.reason == "OK"
    assert response.body == {"managers": ["vm-ip"]}
    assert response.headers["content-type"].startswith("application/json")
    assert response.elapsed > 0
    assert response.request.method == "GET"
    assert response.request.host == napix_server.host
    assert response.request.url == f"{napix_server.url}/"
    assert napix_server.requests[-1].login == "root"


def test_signed_requests_with_query_strings_and_non_ascii_paths_are_accepted(napix_server):
    napix_server.route("/café/", handler=echo)
    napix_server.route("/vm-ip/", handler=echo)
    with Client(napix_server.host, AUTH) as client:
        accented = client.get("/café/", params={"zone": "eu west"})
        query = client.post("/vm-ip/?size=1&zone=eu%20west")
    assert accented.body["path"] == "/caf%C3%A9/?zone=eu+west"
    assert query.body["path"] == "/vm-ip/?size=1&zone=eu%20west"


def test_a_wrong_key_gets_a_403_whose_text_never_contains_the_key(napix_server):
    napix_server.route("/", body=[])
    secret = "not-the-key-0123456789"
    with Client(napix_server.host, LoginAuthenticator("root", secret)) as client:
        with pytest.raises(HTTPError) as caught:
            client.get("/")
    error = caught.value
    assert error.status == 403
    for text in (str(error), repr(error), error.remote_call, str(error.remote_error),
                 error.format_chain()):
        assert secret not in text


def test_a_request_without_credentials_gets_a_401(napix_server):
    napix_server.route("/", body=[])
    with Client(napix_server.host) as client:
        with pytest.raises(HTTPError) as caught:
            client.get("/")
    assert caught.value.status == 401


def test_sixty_requests_in_a_row_carry_fresh_nonces(napix_server_factory):
    server = napix_server_factory(users={"root": "toor"}, reject_replayed_nonces=True)
    server.route("/", body=[])
    with Client(server.host, AUTH) as client:
        statuses = [client.get("/").status for _ in range(60)]
    assert statuses == [200] * 60
    nonces = [request.nonce for request in server.requests]
    assert len(nonces) == 60 and len(set(nonces)) == 60 and None not in nonces


def test_a_token_travels_as_a_parameter_and_is_redacted_in_remote_call(napix_server):
    napix_server.route("/x", status=404, body="`x` not found")
    napix_server.route("/y", body={"ok": True})
    token = hmac_token("root", "toor")
    with Client(napix_server.host, TokenIdentifier(token)) as client:
        assert client.get("/y", params={"a": "1"}).status == 200
        with pytest.raises(HTTPError) as caught:
            client.get("/x?a=1")
    error = caught.value
    assert error.status == 404
    assert error.remote_call == f"GET {napix_server.url}/x?a=1&token=***"
    assert token not in str(error) and token not in repr(error)
    assert error.request.path == "/x?a=1&token=***"


@pytest.mark.parametrize("body", [{"size": 1, "zone": "é"}, [1, 2, {"a": None}]])
def test_dict_and_list_bodies_go_out_as_json(napix_server, body):
    napix_server.route("/vm-ip/", handler=echo)
    with Client(napix_server.host, AUTH) as client:
        response = client.post("/vm-ip/", body)
    assert response.body["json"] == body
    assert response.body["content_type"] == "application/json"


def test_str_and_bytes_bodies_are_sent_as_they_are(napix_server):
    napix_server.route("/raw", handler=lambda request: request.body.decode())
    with Client(napix_server.host, AUTH) as client:
        assert client.put("/raw", "a=1").body == "a=1"
        assert client.put("/raw", b"\x00\x01".decode("latin-1")).body == "\x00\x01"
        assert client.patch("/raw", b"bytes").body == "bytes"


def test_bodies_decode_by_media_type(napix_server):
    napix_server.route("/text", body="plain text")
    napix_server.route("/bin", body=b"\x00\xff")
    napix_server.route("/empty", status=204)
    with Client(napix_server.host, AUTH) as client:
        assert client.get("/text").body == "plain text"
        assert client.get("/bin").body == b"\x00\xff"
        empty = client.delete("/empty")
    assert empty.status == 204 and empty.body is None and empty.content == b""


def test_redirects_come_back_as_responses(napix_server):
    napix_server.route("/old", status=302, headers={"Location": "/new"})
    with Client(napix_server.host, AUTH) as client:
        response = client.get("/old")
    assert response.status == 302 and response.headers["Location"] == "/new"
    assert [request.path for request in napix_server.requests] == ["/old"]


def test_keep_alive_connections_are_reused(napix_server):
    napix_server.route("/", body=[])
    with Client(napix_server.host, AUTH, simultaneous=2) as client:
        for _ in range(10):
            client.get("/")
    assert len(napix_server.requests) == 10
    assert napix_server.max_open_connections == 1


def test_the_per_host_cap_holds_under_load(napix_server):
    napix_server.route("/slow", body=[], latency=0.1)
    with Client(napix_server.host, AUTH, simultaneous=3) as client:
        greenlets = [gevent.spawn(client.get, "/slow") for _ in range(15)]
        gevent.joinall(greenlets, timeout=10, raise_error=True)
    assert all(g.value.status == 200 for g in greenlets)
    assert napix_server.max_open_connections == 3
    assert napix_server.max_in_flight == 3


def test_a_refused_connection_is_a_connection_error_without_status():
    with Client(f"127.0.0.1:{closed_port()}", AUTH, timeout=2) as client:
        with pytest.raises(ConnectionError) as caught:
            client.get("/x")
    assert caught.value.status is None
    assert caught.value.request.path == "/x"
    assert "refused" in str(caught.value)


def test_a_hung_answer_is_a_timeout(napix_server):
    napix_server.route("/hang", hang=True)
    napix_server.route("/ok", body=[])
    with Client(napix_server.host, AUTH, simultaneous=1, timeout=0.3) as client:
        with pytest.raises(Timeout) as caught:
            client.get("/hang")
        assert caught.value.status is None
        assert client.get("/ok").status == 200


def test_a_dropped_connection_is_a_connection_error(napix_server):
    napix_server.route("/drop", drop=True)
    napix_server.route("/ok", body=[])
    with Client(napix_server.host, AUTH, simultaneous=1, timeout=2) as client:
        with pytest.raises(ConnectionError) as caught:
            client.get("/drop")
        assert caught.value.status is None
        assert client.get("/ok").status == 200


def test_a_per_request_timeout_overrides_the_client_timeout(napix_server):
    napix_server.route("/slow", body=[], latency=0.5)
    with Client(napix_server.host, AUTH, timeout=5) as client:
        with pytest.raises(Timeout):
            client.get("/slow", timeout=0.1)
        assert client.get("/slow", timeout=(1, 2)).status == 200


def test_a_body_larger_than_max_body_size_is_refused(napix_server):
    napix_server.route("/big", body=b"x" * 5000)
    napix_server.route("/small", body=b"x" * 10)
    with Client(napix_server.host, AUTH, max_body_size=1000, simultaneous=1) as client:
        with pytest.raises(BodyTooLarge) as caught:
            client.get("/big")
        assert client.get("/small").content == b"x" * 10
    # The answer was a 200: its body alone was refused.
    assert caught.value.status == 200 and caught.value.response is None
    assert "max_body_size (1000 bytes)" in str(caught.value)


def test_a_closed_client_refuses_requests(napix_server):
    client = Client(napix_server.host, AUTH)
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.get("/")


@pytest.mark.parametrize("host", ["", "ftp://h", "http://user:pw@h", "h:notaport", "h:70000",
                                  "bad host", "h/x?y=1", "-h-"])
def test_a_malformed_host_is_refused_at_once(host):
    with pytest.raises(ValueError, match="host"):
        Client(host, AUTH)


@pytest.mark.parametrize("host, base_url", [
    ("server.napix.nx", "http://server.napix.nx"),
    ("server.napix.nx:8002", "http://server.napix.nx:8002"),
    ("https://server.napix.nx/napix/", "https://server.napix.nx/napix"),
    ("http://127.0.0.1:80", "http://127.0.0.1"),
    ("[::1]:8002", "http://[::1]:8002"),
])
def test_hosts_are_names_ports_or_base_urls(host, base_url):
    with Client(host, AUTH) as client:
        assert client.base_url == base_url


@pytest.mark.parametrize("kwargs, name", [
    ({"authenticator": "root:toor"}, "authenticator"),
    ({"authenticator": {}}, "authenticator"),
    ({"simultaneous": 0}, "simultaneous"),
    ({"simultaneous": 1.5}, "simultaneous"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": (1,)}, "timeout"),
    ({"max_body_size": 0}, "max_body_size"),
])
def test_bad_client_arguments_are_refused_naming_the_argument(kwargs, name):
    arguments = {"authenticator": AUTH, **kwargs}
    with pytest.raises(ValueError, match=name):
        Client("127.0.0.1:8002", **arguments)


@pytest.mark.parametrize("method, url, headers, name", [
    ("GE T", "/", None, "method"),
    ("GET\r\n", "/", None, "method"),
    ("", "/", None, "method"),
    ("GET", "/a\r\nX: y", None, "url"),
    ("GET", "/a#b", None, "url"),
    ("GET", "/a\x00b", None, "url"),
    ("GET", "http://elsewhere/", None, "url"),
    ("GET", "/", {"X-A": "1\r\nX-B: 2"}, "header"),
    ("GET", "/", {"X A": "1"}, "header"),
    ("GET", "/", {"X-A\n": "1"}, "header"),
])
def test_bad_requests_are_refused_before_anything_is_sent(napix_server, method, url,
                                                          headers, name):
    with Client(napix_server.host, AUTH) as client:
        with pytest.raises(ValueError, match=name):
            client.request(method, url, headers=headers)
    assert napix_server.requests == []


def test_a_closed_client_says_so_in_its_repr():
    client = Client("127.0.0.1:8002", timeout=5)
    assert repr(client) == "<Client http://127.0.0.1:8002 simultaneous=2>"
    client.close()
    assert repr(client) == "<Client http://127.0.0.1:8002 simultaneous=2 closed>"


def test_a_header_value_outside_latin_1_is_refused_at_once_naming_the_header(napix_server):
    with Client(napix_server.host, AUTH) as client:
        with pytest.raises(ValueError) as caught:
            client.request("GET", "/", headers={"X-Price": "5 €"})
    assert "X-Price" in str(caught.value)
    # Today's UnicodeEncodeError holds the request's bytes, its signature included.
    assert not isinstance(caught.value, UnicodeError)
    assert "Authorization" not in repr(caught.value)
    with ClientPool(AUTH) as pool:
        with pytest.raises(ValueError) as caught:
            pool.request(napix_server.host, "GET", "/", headers={"X-Price": "5 €"})
        assert pool.pending == 0
    assert "X-Price" in str(caught.value)
    assert napix_server.requests == []


def test_a_bare_question_mark_is_neither_sent_nor_signed(napix_server):
    napix_server.route("/items/", body=[])
    with Client(napix_server.host, AUTH) as client:
        assert client.get("/items/?").status == 200
        assert client.get("/items/?", params={"a": "1"}).status == 200
    # What napixd signs: the path, and "?" + query only when there is a query.
    assert [request.path for request in napix_server.requests] == ["/items/", "/items/?a=1"]


def test_empty_params_add_no_question_mark(napix_server):
    napix_server.route("/items/", body=[])
    with Client(napix_server.host, AUTH) as client:
        assert client.get("/items/", params={}).status == 200
        assert client.get("/items/", params=[]).status == 200
    assert [request.path for request in napix_server.requests] == ["/items/", "/items/"]


def test_an_ipv6_address_with_a_port_and_no_brackets_is_refused_saying_how_to_write_it():
    with pytest.raises(ValueError, match=re.escape("write [::1]:8002")):
        Client("::1:8002")


def test_a_bare_ipv6_address_is_a_host_on_the_default_port():
    with Client("::1") as client:
        assert client.base_url == "http://[::1]"
        assert client.host == "[::1]"
    with Client("https://[::1]:8443") as client:
        assert client.base_url == "https://[::1]:8443"
