"""The authenticators: the Napix protocol's test vectors, what is accepted,
and native signing (what a Client sends without a requests.PreparedRequest)."""

from urllib.parse import quote_plus, urlencode

import pytest
import requests
import requests.auth
from hypothesis import given, settings
from hypothesis import strategies as st

import napixclient.core.client
from napixclient import Client, HTTPError
from napixclient.authenticators import (
    LoginAuthenticator,
    NativeAuthenticator,
    SignedRequest,
    TokenIdentifier,
    coerce_authenticator,
    sign,
    signed_message,
)
from napixclient.testing import hmac_token

VECTORS = [
    (("root", "toor", "5f1b3c9e2a7d4e60", "server.napix.nx", "/abc", "GET", 1345195098),
     "login=root&nonce=5f1b3c9e2a7d4e60&host=server.napix.nx&path=%2Fabc&method=GET"
     "&timestamp=1345195098",
     "1672600486dfc839b50df6bf8d9e59630575e58f87c96a31728e2b9d7e74da34"),
    (("root", "toor", "5f1b3c9e2a7d4e60", "127.0.0.1:8002", "/vm-ip/?size=1&zone=eu%20west",
      "POST", 1700000000),
     "login=root&nonce=5f1b3c9e2a7d4e60&host=127.0.0.1%3A8002"
     "&path=%2Fvm-ip%2F%3Fsize%3D1%26zone%3Deu%2520west&method=POST&timestamp=1700000000",
     "4e7c07d94a028d3e62ab90b05fc4682cde01dcc9c403723fd9fb1ba2396f757e"),
    (("grégoire", "sécret", "00ff", "napix.example.com", "/caf%C3%A9/", "DELETE", 1700000001),
     "login=gr%C3%A9goire&nonce=00ff&host=napix.example.com&path=%2Fcaf%25C3%25A9%2F"
     "&method=DELETE&timestamp=1700000001",
     "90c83d785292f6a9214bef73a6ff7209983272e271f99d36e3df769481302cf5"),
]


@pytest.mark.parametrize("fields, message, signature", VECTORS)
def test_protocol_test_vectors_give_the_documented_message_and_signature(
        fields, message, signature):
    login, key, nonce, host, path, method, timestamp = fields
    assert signed_message(login, nonce, host, path, method, timestamp) == message
    assert sign(key, message) == signature
    header = LoginAuthenticator(login, key).authorization(
        method, host, path, nonce=nonce, timestamp=timestamp)
    assert header == f"{message}:{signature}"


def _prepared(url, method="GET", headers=None):
    request = requests.PreparedRequest()
    request.prepare(method=method, url=url, headers=headers)
    return request


def test_login_authenticator_signs_the_exact_target_and_host_header():
    request = _prepared("http://127.0.0.1:8002/vm-ip/?size=1", "POST",
                        headers={"Host": "127.0.0.1:8002"})
    LoginAuthenticator("root", "toor")(request)
    message, _, signature = request.headers["Authorization"].rpartition(":")
    assert "host=127.0.0.1%3A8002" in message
    assert "path=%2Fvm-ip%2F%3Fsize%3D1" in message
    assert "method=POST" in message
    assert sign("toor", message) == signature


def test_login_authenticator_uses_a_fresh_nonce_for_every_request():
    auth = LoginAuthenticator("root", "toor")
    nonces = set()
    for _ in range(200):
        header = auth.authorization("GET", "h", "/")
        nonce = dict(pair.split("=", 1) for pair in header.split("&"))["nonce"]
        assert len(nonce) >= 16
        nonces.add(nonce)
    assert len(nonces) == 200


def _nonce(header):
    return dict(pair.split("=", 1) for pair in header.split("&"))["nonce"]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_forked_child_never_signs_with_a_nonce_its_parent_will_use():
    # Nonces are drawn from the CSPRNG many at a time: a child made by fork
    # must not take the ones its parent has left.
    import os

    auth = LoginAuthenticator("root", "toor")
    _nonce(auth.authorization("GET", "h", "/"))  # the parent has nonces in hand
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first 10 nonces, then out at once
        try:
            os.write(writer, " ".join(_nonce(auth.authorization("GET", "h", "/"))
                                      for _ in range(10)).encode())
        finally:
            os._exit(0)
    os.close(writer)
    try:
        child = set()
        with os.fdopen(reader, "rb") as pipe:
            child = set(pipe.read().decode().split())
    finally:
        os.waitpid(pid, 0)
    parent = {_nonce(auth.authorization("GET", "h", "/")) for _ in range(300)}
    assert len(child) == 10 and not child & parent


def test_token_identifier_appends_its_parameter_to_the_query():
    request = _prepared("http://h/x?a=1")
    TokenIdentifier("root:abcdef")(request)
    assert request.url == "http://h/x?a=1&token=root%3Aabcdef"
    request = _prepared("http://h/x")
    TokenIdentifier("t0k", parameter="auth")(request)
    assert request.url == "http://h/x?auth=t0k"


def test_repr_of_authenticators_never_shows_a_key_or_token():
    assert "toor" not in repr(LoginAuthenticator("root", "toor"))
    assert "s3cr3t" not in repr(TokenIdentifier("s3cr3t"))


def test_coerce_accepts_a_login_key_mapping_and_any_auth_callable():
    auth = coerce_authenticator({"login": "root", "key": "toor"})
    assert isinstance(auth, LoginAuthenticator) and auth.login == "root"
    basic = requests.auth.HTTPBasicAuth("u", "p")
    assert coerce_authenticator(basic) is basic

    def plain(request):
        return request

    assert coerce_authenticator(plain) is plain


@pytest.mark.parametrize("value", ["root:toor", b"token", {}, {"login": "root"}, None, 42])
def test_coerce_refuses_anything_else_naming_what_is_accepted(value):
    with pytest.raises(ValueError, match="authenticator must be a callable") as caught:
        coerce_authenticator(value)
    assert "toor" not in str(caught.value)


@pytest.mark.parametrize("login, key", [("", "k"), ("root", ""), (None, "k"), ("root", 1)])
def test_login_authenticator_refuses_empty_or_non_str_credentials(login, key):
    with pytest.raises(ValueError):
        LoginAuthenticator(login, key)


# -- native signing: what a Client sends, with no requests.PreparedRequest ----------

def _no_prepared_request(monkeypatch):
    """Make any use of requests.PreparedRequest by the client fail the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the client built a requests.PreparedRequest")

    monkeypatch.setattr(napixclient.core.client.requests, "PreparedRequest", refuse)


def test_login_signatures_are_made_natively_and_accepted_by_a_napix_server(
        napix_server_factory, monkeypatch):
    server = napix_server_factory(users={"root": "toor"}, reject_replayed_nonces=True)
    server.route("/vm-ip/", handler=lambda request: {"path": request.path})
    _no_prepared_request(monkeypatch)
    with Client(server.host, LoginAuthenticator("root", "toor"),
                headers={"X-Client": "1"}) as client:
        plain = client.get("/vm-ip/?size=1&zone=eu%20west")
        extra = client.post("/vm-ip/", {"size": 1}, headers={"X-Request": "2"})
        accented = client.get("/vm-ip/", params={"name": "été"})
    assert plain.body == {"path": "/vm-ip/?size=1&zone=eu%20west"}
    assert extra.status == 200 and accented.status == 200
    assert [request.login for request in server.requests] == ["root"] * 3
    assert server.requests[1].headers["X-Request"] == "2"
    assert plain.request.url == f"{server.url}/vm-ip/?size=1&zone=eu%20west"


def test_a_token_is_appended_natively_and_reads_as_stars_in_the_record(
        napix_server, monkeypatch):
    napix_server.route("/x", handler=lambda request: {"path": request.path})
    token = hmac_token("root", "toor")
    _no_prepared_request(monkeypatch)
    with Client(napix_server.host, TokenIdentifier(token)) as client:
        bare = client.get("/x")
        query = client.get("/x", params={"a": "1"})
        with pytest.raises(HTTPError) as refused:  # two tokens: the server says 403
            client.get("/x?token=mine&b=2")
    own = refused.value
    assert bare.body["path"] == f"/x?token={quote_plus(token)}"
    assert query.body["path"] == f"/x?a=1&token={quote_plus(token)}"
    assert bare.request.path == "/x?token=***"
    assert query.request.url == f"{napix_server.url}/x?a=1&token=***"
    # A parameter of the token's name that the caller wrote is masked too.
    assert own.request.path == "/x?token=***&b=2&token=***"
    for record in (bare.request, query.request, own.request):
        assert token not in repr(record) and quote_plus(token) not in repr(record)
        assert "mine" not in record.url


class _Custom(NativeAuthenticator):
    """A third-party native authenticator: a header and a secret parameter."""

    def __init__(self, header=("X-Signed", "yes"), target=None):
        self.header = header
        self.target = target
        self.seen = []

    def sign_request(self, method, host, target, headers, body):
        # The headers are a case-insensitive mapping.
        assert headers["HOST"] == host
        self.seen.append((method, host, target, {k.lower(): v for k, v in headers.items()},
                          body))
        sent = self.target if self.target is not None else target + "?key=K-42"
        return SignedRequest(sent, dict([self.header]), target + "?key=***")


def test_a_native_authenticator_sees_the_request_as_sent_and_its_fields_win(
        napix_server_factory, monkeypatch):
    server = napix_server_factory(require_auth=False)
    server.route("/ok", body=[])
    _no_prepared_request(monkeypatch)
    auth = _Custom(header=("x-api-key", "K-1"))
    with Client(server.host, auth, headers={"X-Api-Key": "from the client"}) as client:
        response = client.put("/ok", b"data", headers={"X-Request": "1"})
    method, host, target, headers, body = auth.seen[0]
    assert (method, host, target, body) == ("PUT", server.host, "/ok", b"data")
    assert headers["x-request"] == "1" and headers["host"] == server.host
    sent = server.requests[0]
    assert sent.path == "/ok?key=K-42"
    assert sent.headers["X-Api-Key"] == "K-1"  # one field: the authenticator's
    assert response.request.path == "/ok?key=***"
    assert response.request.url == f"{server.url}/ok?key=***"


@pytest.mark.parametrize("auth, problem", [
    (_Custom(header=("X-Bad", "a\r\nX-Injected: 1")), "header 'X-Bad'"),
    (_Custom(header=("Bad Name", "x")), "header 'Bad Name'"),
    (_Custom(target="/ok?key=K 42"), "request target"),
])
def test_what_a_native_authenticator_returns_is_checked_without_quoting_it(
        napix_server_factory, auth, problem):
    server = napix_server_factory(require_auth=False)
    with Client(server.host, auth) as client:
        with pytest.raises(ValueError, match=problem) as caught:
            client.get("/ok")
    assert "X-Injected" not in str(caught.value) and "K 42" not in str(caught.value)
    assert server.requests == []


def test_a_requests_style_callable_still_gets_a_prepared_request(napix_server_factory):
    server = napix_server_factory(require_auth=False)
    server.route("/ok", body=[])
    seen = []

    def auth(request):
        seen.append(type(request))
        request.headers["X-Signed"] = "yes"
        return request

    with Client(server.host, auth) as client:
        assert client.get("/ok").status == 200
    assert seen == [requests.PreparedRequest]
    assert server.requests[0].headers["X-Signed"] == "yes"


def test_builtin_authenticators_still_sign_a_prepared_request_for_requests_users():
    request = _prepared("http://server.napix.nx/abc?x=1", "DELETE", headers={"Host": "h:81"})
    LoginAuthenticator("root", "toor")(request)
    fields = dict(pair.split("=", 1) for pair in
                  request.headers["Authorization"].rpartition(":")[0].split("&"))
    assert (fields["host"], fields["path"], fields["method"]) == ("h%3A81", "%2Fabc%3Fx%3D1",
                                                                  "DELETE")
    request = _prepared("http://h/x?a=1#frag")
    TokenIdentifier("t0k")(request)
    assert request.url == "http://h/x?a=1&token=t0k#frag"  # as requests had it


@settings(max_examples=300, deadline=None)
@given(login=st.text(min_size=1), nonce=st.text(min_size=1), host=st.text(),
       path=st.text(), method=st.text(min_size=1), timestamp=st.integers(0, 2**40))
def test_the_signed_message_is_what_urlencode_gives_for_the_six_fields(
        login, nonce, host, path, method, timestamp):
    expected = urlencode([("login", login), ("nonce", nonce), ("host", host), ("path", path),
                          ("method", method.upper()), ("timestamp", str(timestamp))])
    assert signed_message(login, nonce, host, path, method, timestamp) == expected
    # Twice: the second time from the quoted values kept.
    assert signed_message(login, nonce, host, path, method, timestamp) == expected


def test_a_signature_is_the_hmac_of_its_message_with_the_key_every_time():
    auth = LoginAuthenticator("grégoire", "sécret")
    for path in ("/a", "/b?x=1", "/a"):
        message, _, signature = auth.authorization("GET", "h:1", path).rpartition(":")
        assert signature == sign("sécret", message)


@pytest.mark.parametrize("bad", ["a\r\nX-Injected: 1", "a\nb", "a\x00b"])
def test_a_field_value_that_turns_bad_after_good_ones_is_still_refused(
        napix_server_factory, bad):
    server = napix_server_factory(require_auth=False)
    server.route("/ok", body=[])
    auth = _Custom(header=("X-Turns", "good"), target="/ok")
    with Client(server.host, auth) as client:
        assert client.get("/ok").status == 200
        auth.header = ("X-Turns", bad)
        with pytest.raises(ValueError, match="header 'X-Turns'"):
            client.get("/ok")
    assert len(server.requests) == 1


def test_a_login_authenticator_subclass_overriding_call_is_called(napix_server):
    napix_server.route("/ok", body=[])

    class Traced(LoginAuthenticator):
        def __call__(self, request):
            request.headers["X-Traced"] = "yes"
            return super().__call__(request)

    with Client(napix_server.host, Traced("root", "toor")) as client:
        assert client.get("/ok").status == 200
    traced = napix_server.requests[0].headers.get("X-Traced")
    assert traced == "yes"
