"""The authenticators: the Napix protocol's test vectors, and what is accepted."""

import pytest
import requests
import requests.auth

from napixclient.authenticators import (
    LoginAuthenticator,
    TokenIdentifier,
    coerce_authenticator,
    sign,
    signed_message,
)

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
