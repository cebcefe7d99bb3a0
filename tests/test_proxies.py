"""Proxies, as requests reads them: through tinyproxy on 127.0.0.1, with
NapixTestServer and TLS test servers (trustme certificates) as origins.

Plain http goes through the proxy with the request target in absolute form;
https goes through a CONNECT tunnel that verifies the origin's certificate.
The proxy's credentials go in Proxy-Authorization and nowhere else.
"""

import base64
import json
import logging
import os
import pickle
import ssl
import sys
import time
from pathlib import Path

import gevent
import gevent.ssl
import gevent.subprocess
import pytest
from gevent.pywsgi import WSGIServer

from napixclient import Client, ClientPool, ConnectionError, HTTPError, ProxyError
from napixclient.authenticators import LoginAuthenticator, TokenIdentifier
from napixclient.connections import ConnectionManager
from napixclient.core.proxies import Proxy, check_proxies, choose_proxy, parse_proxy
from napixclient.redact import redact_url_credentials
from napixclient.testing import NapixTestServer
from tests import proxyserver
from tests.helpers import closed_port

forward_proxy = proxyserver.forward_proxy
authenticated_proxy = proxyserver.authenticated_proxy

AUTH = {"login": "root", "key": "toor"}
USER, PASSWORD = proxyserver.PROXY_USER, proxyserver.PROXY_PASSWORD
# What the credentials look like on the wire, in Proxy-Authorization.
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SECRETS = (PASSWORD, BASIC)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No proxy variable from the machine running the tests: each test sets
    the ones it is about."""
    for name in list(os.environ):
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy",
                            "request_method"):
            monkeypatch.delenv(name)


@pytest.fixture
def origin():
    server = NapixTestServer(users={"root": "toor"}, require_auth=False).start()
    server.route("/x", body={"ok": True})
    yield server
    server.stop()


def forwarded(proxy, server, path="/x"):
    """How many times ``proxy`` forwarded ``GET <server>/path``."""
    return proxy.log().count(f"GET {server.url}{path} HTTP/1.1")


def via_proxy(request):
    return proxyserver.VIA_NAME in request.headers.get("Via", "")


# -- TLS origins ----------------------------------------------------------------


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"hello": "tls"}']


def tls_server(certificate):
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    certificate.configure_cert(context)
    server = WSGIServer(("127.0.0.1", 0), hello, ssl_context=context, log=None,
                        error_log=None)
    server.start()
    return server


@pytest.fixture
def tls_origin(ca):
    server = tls_server(ca.issue_cert("127.0.0.1"))
    yield f"https://127.0.0.1:{server.server_port}"
    server.stop(timeout=1)


@pytest.fixture
def second_tls_origin(ca):
    server = tls_server(ca.issue_cert("127.0.0.1"))
    yield f"https://127.0.0.1:{server.server_port}"
    server.stop(timeout=1)


def connects(proxy, url):
    """How many tunnels ``proxy`` opened to the origin ``url``."""
    return proxy.log().count(f"CONNECT {url.split('://', 1)[1]} HTTP/1.1")


# -- plain http: forwarded in absolute form ----------------------------------------


def test_a_request_reaches_the_origin_once_through_the_proxy_in_absolute_form(
        forward_proxy, origin):
    with Client(origin.host, proxies={"http": forward_proxy.url}, timeout=5) as client:
        assert client.proxy == forward_proxy.url
        response = client.get("/x")
    assert response.body == {"ok": True}
    assert forwarded(forward_proxy, origin) == 1
    assert [via_proxy(request) for request in origin.requests] == [True]
    # The origin sees the origin-form target and its own Host.
    assert origin.requests[0].path == "/x"
    assert origin.requests[0].headers["Host"] == origin.host


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
def test_the_environment_s_proxy_is_used_by_default(variable, monkeypatch, forward_proxy,
                                                    origin):
    monkeypatch.setenv(variable, forward_proxy.url)
    with Client(origin.host, timeout=5) as client:
        client.get("/x")
    assert forwarded(forward_proxy, origin) == 1
    assert via_proxy(origin.requests[0])


def test_a_proxy_url_without_a_scheme_means_http_as_requests_reads_it(
        monkeypatch, forward_proxy, origin):
    monkeypatch.setenv("HTTP_PROXY", f"127.0.0.1:{forward_proxy.port}")
    with Client(origin.host, timeout=5) as client:
        client.get("/x")
    assert forwarded(forward_proxy, origin) == 1


def test_trust_env_false_ignores_the_environment_s_proxies(monkeypatch, forward_proxy,
                                                           origin):
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    monkeypatch.setenv("ALL_PROXY", forward_proxy.url)
    with Client(origin.host, timeout=5, trust_env=False) as client:
        assert client.proxy is None
        client.get("/x")
    assert forwarded(forward_proxy, origin) == 0
    assert not via_proxy(origin.requests[0])


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost,127.0.0.1", "127.0.0.0/8",
                                      "*"])
@pytest.mark.parametrize("variable", ["NO_PROXY", "no_proxy"])
def test_no_proxy_hosts_bypass_the_environment_s_proxy(variable, no_proxy, monkeypatch,
                                                       forward_proxy, origin):
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    monkeypatch.setenv(variable, no_proxy)
    with Client(origin.host, timeout=5) as client:
        assert client.proxy is None
        client.get("/x")
    assert forwarded(forward_proxy, origin) == 0
    assert not via_proxy(origin.requests[0])


def test_no_proxy_that_names_other_hosts_leaves_the_proxy_in_place(
        monkeypatch, forward_proxy, origin):
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    monkeypatch.setenv("NO_PROXY", "napix.example,10.0.0.0/8")
    with Client(origin.host, timeout=5) as client:
        client.get("/x")
    assert forwarded(forward_proxy, origin) == 1


def test_proxies_given_win_over_the_environment_and_fill_in_for_other_schemes(
        monkeypatch, forward_proxy, origin):
    # The environment names a proxy where nothing listens: proxies= wins.
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    with Client(origin.host, timeout=5, proxies={"http": forward_proxy.url}) as client:
        client.get("/x")
    assert forwarded(forward_proxy, origin) == 1
    # A mapping for https only leaves http to the environment, as in requests.
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    with Client(origin.host, timeout=5, proxies={"https": "http://127.0.0.1:9"}) as client:
        client.get("/x")
    assert forwarded(forward_proxy, origin) == 2
    # None for a scheme (or a host) means no proxy, whatever the environment says.
    with Client(origin.host, timeout=5, proxies={"http://127.0.0.1": None}) as client:
        assert client.proxy is None
        client.get("/x")
    assert forwarded(forward_proxy, origin) == 2


def test_a_signed_request_through_the_proxy_is_accepted_by_the_napix_server(
        forward_proxy, origin):
    origin.route("/vm-ip/", "POST", status=201, body={"ip": "10.0.0.7"})
    with Client(origin.host, LoginAuthenticator("root", "toor"), timeout=5,
                proxies={"http": forward_proxy.url}) as client:
        created = client.post("/vm-ip/", {"size": 1}, params={"zone": "eu west"})
        read = client.get("/x")
    assert (created.status, created.body, read.status) == (201, {"ip": "10.0.0.7"}, 200)
    assert forwarded(forward_proxy, origin) == 1
    assert "POST http://" in forward_proxy.log()
    # The signature names the origin's Host and origin-form path, which the
    # server checked (it answers 403 otherwise).
    signed = origin.requests[0].headers["Authorization"]
    assert "host=127.0.0.1%3A" in signed and "path=%2Fvm-ip%2F%3Fzone%3Deu%2Bwest" in signed


def test_a_token_request_through_the_proxy_is_accepted(forward_proxy):
    from napixclient.testing import hmac_token

    server = NapixTestServer(users={"root": "toor"}).start()
    try:
        server.route("/x", body={"ok": True})
        with Client(server.host, TokenIdentifier(hmac_token("root", "toor")), timeout=5,
                    proxies={"http": forward_proxy.url}) as client:
            assert client.get("/x").body == {"ok": True}
        assert via_proxy(server.requests[0])
    finally:
        server.stop()


def test_a_407_to_a_forwarded_request_is_a_proxy_error_naming_the_proxy(
        authenticated_proxy, origin):
    with Client(origin.host, timeout=5, proxies={"http": authenticated_proxy.url}) as client:
        with pytest.raises(ProxyError) as caught:
            client.get("/x")
    error = caught.value
    assert isinstance(error, ConnectionError)
    assert error.status == 407
    assert error.remote_error == (f"the proxy {authenticated_proxy.url} answered "
                                  "407 Proxy Authentication Required")
    assert error.remote_call == f"GET {origin.url}/x"
    assert origin.requests == []


def test_credentials_in_the_proxy_url_are_sent_to_the_proxy_and_not_to_the_origin(
        authenticated_proxy, origin, tls_origin, ca_bundle):
    proxies = {"http": authenticated_proxy.url_with_credentials,
               "https": authenticated_proxy.url_with_credentials}
    with Client(origin.host, AUTH, timeout=5, proxies=proxies) as client:
        assert client.get("/x").body == {"ok": True}
    with Client(tls_origin, timeout=5, verify=ca_bundle, proxies=proxies) as client:
        assert client.get("/").body == {"hello": "tls"}
    assert via_proxy(origin.requests[0])
    assert "Proxy-Authorization" not in origin.requests[0].headers
    assert connects(authenticated_proxy, tls_origin) == 1


# -- https: a CONNECT tunnel --------------------------------------------------------


def test_https_goes_through_a_connect_tunnel_that_verifies_the_origin_s_certificate(
        forward_proxy, tls_origin, ca_bundle):
    events = []
    with Client(tls_origin, timeout=5, verify=ca_bundle, proxies={"https": forward_proxy.url},
                trace=lambda event, info: events.append((event, info))) as client:
        first = client.get("/")
        second = client.get("/")
    assert first.body == second.body == {"hello": "tls"}
    # One tunnel, kept alive for both requests.
    assert connects(forward_proxy, tls_origin) == 1
    assert [event for event, _ in events].count("connection.reused") == 1
    opened = next(info for event, info in events if event == "connection.opened")
    assert opened["proxy"] == forward_proxy.url
    assert opened["address"] == ("127.0.0.1", forward_proxy.port)
    assert opened["origin"] == tls_origin


def test_through_the_tunnel_a_certificate_the_bundle_does_not_trust_is_refused(
        forward_proxy, tls_origin):
    # The default bundle does not know the test CA: the origin's certificate
    # is what was checked, not the proxy's (it has none).
    with Client(tls_origin, timeout=5, proxies={"https": forward_proxy.url}) as client:
        with pytest.raises(ConnectionError) as caught:
            client.get("/")
    assert not isinstance(caught.value, ProxyError)
    assert "TLS failed: CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert connects(forward_proxy, tls_origin) == 1


def test_through_the_tunnel_a_certificate_for_another_name_is_refused(
        forward_proxy, ca, ca_bundle):
    server = tls_server(ca.issue_cert("napix.example"))
    url = f"https://127.0.0.1:{server.server_port}"
    try:
        with Client(url, timeout=5, verify=ca_bundle,
                    proxies={"https": forward_proxy.url}) as client:
            with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED.*"
                               "IP address mismatch"):
                client.get("/")
    finally:
        server.stop(timeout=1)
    assert connects(forward_proxy, url) == 1


def test_a_407_to_connect_is_a_proxy_error_naming_the_proxy_not_the_origin(
        authenticated_proxy, tls_origin, ca_bundle):
    with Client(tls_origin, timeout=5, verify=ca_bundle,
                proxies={"https": authenticated_proxy.url}) as client:
        with pytest.raises(ProxyError) as caught:
            client.get("/")
    error = caught.value
    assert isinstance(error, ConnectionError)
    assert error.status == 407
    assert error.remote_error == (f"the proxy {authenticated_proxy.url} answered 407 Proxy "
                                  "Authentication Required to CONNECT")
    assert str(error) == (f"GET {tls_origin}/ -> 407 (ProxyError) | the proxy "
                          f"{authenticated_proxy.url} answered 407 Proxy Authentication "
                          "Required to CONNECT")


def test_wrong_proxy_credentials_are_a_proxy_error_that_shows_none_of_them(
        authenticated_proxy, tls_origin, ca_bundle):
    wrong = authenticated_proxy.url_with_credentials.replace(PASSWORD, "wr0ng-pa55")
    with Client(tls_origin, timeout=5, verify=ca_bundle, proxies={"https": wrong}) as client:
        with pytest.raises(ProxyError) as caught:
            client.get("/")
    # RFC 9110 says 407; tinyproxy answers wrong credentials with 401.
    assert caught.value.status in (401, 407)
    for text in (str(caught.value), repr(caught.value), caught.value.format_chain()):
        assert "wr0ng-pa55" not in text and USER not in text


def test_a_refused_connection_to_the_proxy_is_a_proxy_error_naming_the_proxy(tls_origin):
    proxy = f"http://127.0.0.1:{closed_port()}"
    events = []
    for origin_url in (tls_origin, "http://127.0.0.1:9"):
        with Client(origin_url, timeout=5, proxies={"http": proxy, "https": proxy},
                    retries=1, trace=lambda event, info: events.append(event)) as client:
            with pytest.raises(ProxyError) as caught:
                client.get("/")
        assert caught.value.status is None
        assert caught.value.remote_error == (f"could not connect to the proxy {proxy}: "
                                             "connection refused")
    # Retried as any connection that could not be made.
    assert events.count("request.retry") == 2


def test_a_proxy_that_cannot_reach_the_origin_answers_connect_with_an_error_named_so(
        forward_proxy):
    origin = f"https://127.0.0.1:{closed_port()}"
    with Client(origin, timeout=5, proxies={"https": forward_proxy.url}) as client:
        with pytest.raises(ProxyError) as caught:
            client.get("/")
    # tinyproxy says 500 "Unable to connect"; others say 502 or 503.
    assert caught.value.status in (500, 502, 503)
    assert caught.value.remote_error.startswith(f"the proxy {forward_proxy.url} answered "
                                                f"{caught.value.status} ")
    assert caught.value.remote_error.endswith(" to CONNECT")


def test_a_dead_origin_behind_a_forwarding_proxy_is_an_error_naming_the_proxy(
        authenticated_proxy):
    dead = f"127.0.0.1:{closed_port()}"
    proxies = {"http": authenticated_proxy.url_with_credentials}
    with Client(dead, timeout=5, proxies=proxies) as client:
        with pytest.raises(HTTPError) as caught:
            client.get("/x")
    error = caught.value
    # tinyproxy answers 500 with an HTML page of its own; others say 502 or 503.
    assert error.status in (500, 502, 503)
    named = f"via the proxy {authenticated_proxy.url}"
    assert named in error.remote_call
    assert named in str(error)
    for text in (str(error), repr(error), error.remote_call, error.format_chain()):
        assert USER not in text and PASSWORD not in text


# tests/hostileserver.py as a proxy: to CONNECT 127.0.0.1:PORT it answers a
# head that never ends; to CONNECT 127.0.0.2:PORT, interim answers without end.
@pytest.mark.parametrize("origin_host, words", [
    pytest.param("127.0.0.1", ("head",), id="endless-head"),
    pytest.param("127.0.0.2", ("interim", "head"), id="endless-interim"),
])
def test_a_proxy_flooding_its_answer_to_connect_is_a_proxy_error_naming_the_bound(
        hostile_server, origin_host, words):
    # The origin is never reached: the proxy alone answers.
    origin = f"https://{origin_host}:{closed_port()}"
    with Client(origin, timeout=4, proxies={"https": hostile_server.url}) as client:
        started = time.monotonic()
        with pytest.raises(HTTPError) as caught:
            client.get("/")
        spent = time.monotonic() - started
    assert type(caught.value) is ProxyError, str(caught.value)
    assert spent < 2, f"the flood held the request {spent:.1f} s"
    assert any(word in str(caught.value) for word in words), str(caught.value)


# -- https:// proxies: TLS to the proxy --------------------------------------------------


def test_an_https_proxy_is_reached_over_verified_tls_for_http_and_https_origins(
        forward_proxy, ca, ca_bundle, origin, tls_origin):
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with proxyserver.tls_front(forward_proxy, context) as https_proxy:
        proxies = {"http": https_proxy, "https": https_proxy}
        with Client(origin.host, AUTH, timeout=5, verify=ca_bundle, proxies=proxies) as client:
            assert client.proxy == https_proxy
            assert client.get("/x").body == {"ok": True}
        # TLS inside TLS, kept alive for a second request.
        with Client(tls_origin, timeout=5, verify=ca_bundle, proxies=proxies) as client:
            assert [client.get("/").body for _ in range(2)] == [{"hello": "tls"}] * 2
        # The proxy's certificate is verified too: the default bundle does
        # not know the test CA.
        with Client(origin.host, timeout=5, proxies=proxies) as client:
            with pytest.raises(ProxyError) as caught:
                client.get("/x")
    assert caught.value.remote_error.startswith(
        f"TLS with the proxy {https_proxy} failed: CERTIFICATE_VERIFY_FAILED")
    assert forwarded(forward_proxy, origin) == 1
    assert connects(forward_proxy, tls_origin) == 1


# -- the connection layer: routes, caps ------------------------------------------------------


def test_connections_through_a_proxy_and_direct_ones_are_never_mixed(
        forward_proxy, tls_origin, second_tls_origin, ca_bundle):
    manager = ConnectionManager()
    try:
        proxied = Client(tls_origin, timeout=5, verify=ca_bundle, connections=manager,
                         proxies={"https": forward_proxy.url})
        direct = Client(tls_origin, timeout=5, verify=ca_bundle, connections=manager)
        proxied.get("/")              # a tunnel, kept idle
        direct.get("/")               # does not take the tunnel
        proxied.get("/")              # takes the tunnel again
        direct.get("/")               # takes its own idle connection
        assert manager.open_connections == 2
    finally:
        manager.close()
    assert connects(forward_proxy, tls_origin) == 1


def test_max_connections_counts_the_sockets_to_the_proxy(
        forward_proxy, tls_origin, second_tls_origin, ca_bundle):
    events = []
    with ClientPool(timeout=5, verify=ca_bundle, max_connections=1,
                    proxies={"https": forward_proxy.url},
                    trace=lambda event, info: events.append((event, info))) as pool:
        pool.request(tls_origin, "GET", "/")
        pool.request(second_tls_origin, "GET", "/")
        assert [r.status for r in pool.wait(timeout=10)] == [200, 200]
        assert pool.connections.open_connections == 1
    # The second tunnel waited for the first, whose idle socket was closed.
    reasons = [info["reason"] for event, info in events if event == "connection.closed"]
    assert reasons[0] == "evicted"
    assert connects(forward_proxy, tls_origin) == connects(forward_proxy,
                                                           second_tls_origin) == 1


def test_simultaneous_caps_each_origin_not_the_proxy(forward_proxy):
    servers = [NapixTestServer(require_auth=False).start() for _ in range(2)]
    try:
        for server in servers:
            server.route("/slow", body={"slow": True}, latency=0.5)
        with ClientPool(simultaneous=1, timeout=5,
                        proxies={"http": forward_proxy.url}) as pool:
            started = time.monotonic()
            for server in servers:
                pool.request(server.host, "GET", "/slow")
            assert [r.status for r in pool.wait(timeout=10)] == [200, 200]
            two_origins = time.monotonic() - started
            started = time.monotonic()
            for _ in range(2):
                pool.request(servers[0].host, "GET", "/slow")
            assert [r.status for r in pool.wait(timeout=10)] == [200, 200]
            one_origin = time.monotonic() - started
    finally:
        for server in servers:
            server.stop()
    # Two origins through one proxy overlap; one origin takes its turns.
    assert two_origins < 0.9
    assert one_origin >= 1.0
    assert forwarded(forward_proxy, servers[0], "/slow") == 3


# -- no credential anywhere -------------------------------------------------------------------


def test_no_proxy_credential_in_any_output(authenticated_proxy, origin, tls_origin,
                                           ca_bundle, caplog):
    caplog.set_level(logging.DEBUG, logger="napixclient")
    events = []
    outputs = []
    good = authenticated_proxy.url_with_credentials
    # The right credentials, then wrong ones (the password, as a user name).
    wrong = good.replace(USER, PASSWORD).replace(f":{PASSWORD}@", ":nope@")
    for proxy in (good, wrong):
        proxies = {"http": proxy, "https": proxy}
        with ClientPool(AUTH, timeout=5, verify=ca_bundle, proxies=proxies,
                        trace=lambda event, info: events.append((event, info))) as pool:
            pool.request(origin.host, "GET", "/x")
            pool.request(tls_origin, "GET", "/")
            results = pool.wait(timeout=10)
            clients = [pool.client(origin.host), pool.client(tls_origin)]
            outputs += [repr(pool), repr(pool.connections)]
            outputs += [repr(client) + repr(client.origin) + str(client.origin)
                        + str(client.proxy) for client in clients]
        for result in results:
            outputs += [repr(result), repr(result.request), result.request.call]
            if isinstance(result, HTTPError):
                outputs += [str(result), result.format_chain(), str(result.remote_call),
                            str(result.remote_error), repr(pickle.loads(pickle.dumps(result)))]
    # Refused (tinyproxy answers wrong credentials with 401, not 407).
    assert [isinstance(r, HTTPError) for r in results] == [True, True]
    assert isinstance(results[1], ProxyError)
    outputs += [repr(event) + repr(info) for event, info in events]
    outputs += [record.getMessage() for record in caplog.records]
    assert any("through the proxy" in record.getMessage() for record in caplog.records)
    text = "\n".join(outputs)
    for secret in SECRETS + (USER, "nope"):
        assert secret not in text
    assert "Proxy-Authorization" not in origin.requests[0].headers


@pytest.mark.parametrize("url, message", [
    ("socks5://u:s3cr3t@127.0.0.1:1080", "SOCKS proxies are not supported"),
    ("ftp://u:s3cr3t@127.0.0.1:21", "the scheme must be http or https"),
    ("http://u:s3cr3t@127.0.0.1:3128/path", "no path, query or fragment"),
    ("http://u:s3cr3t@127.0.0.1:99999", "not a valid proxy URL"),
    ("http://u:s3cr3t@:3128", "has no host"),
    ("http://u:s3 cr3t@127.0.0.1:3128", "white space"),
    ("", "must be a proxy URL"),
])
def test_a_bad_proxy_url_raises_value_error_at_once_without_its_credentials(url, message):
    for make in (lambda: Client("127.0.0.1:1", proxies={"http": url}),
                 lambda: ClientPool(proxies={"https": url})):
        with pytest.raises(ValueError, match=message) as caught:
            make()
        assert "s3cr3t" not in str(caught.value) and "cr3t" not in str(caught.value)


def test_a_bad_proxy_in_the_environment_names_the_variable_not_the_credentials(
        monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "socks5h://u:s3cr3t@127.0.0.1:1080")
    with pytest.raises(ValueError, match="the proxy in HTTPS_PROXY 'socks5h://\\*\\*\\*@") \
            as caught:
        Client("https://127.0.0.1:1")
    assert "s3cr3t" not in str(caught.value)
    # Not in the way when the host does not use it.
    Client("http://127.0.0.1:1").close()


@pytest.mark.parametrize("proxies, message", [
    ("http://127.0.0.1:3128", "proxies must be a mapping"),
    ({"http": 3128}, "must be a proxy URL"),
    ({1: "http://127.0.0.1:3128"}, "keys are schemes"),
])
def test_bad_proxies_raise_value_error_at_once(proxies, message):
    with pytest.raises(ValueError, match=message):
        Client("127.0.0.1:1", proxies=proxies)


def test_trust_env_must_be_a_bool():
    with pytest.raises(ValueError, match="trust_env must be True or False"):
        Client("127.0.0.1:1", trust_env="no")


# -- units: parsing and choosing, no I/O ---------------------------------------------------------


def test_percent_encoded_credentials_are_decoded_into_basic_proxy_authorization():
    proxy = parse_proxy("http://ops%40corp:p%40ss%3Aw0rd%25@[::1]:3128")
    assert (proxy.scheme, proxy.host, proxy.port) == ("http", "::1", 3128)
    assert proxy.authorization == "Basic " + base64.b64encode(b"ops@corp:p@ss:w0rd%").decode()
    assert str(proxy) == "http://[::1]:3128"
    assert repr(proxy) == "Proxy('http://[::1]:3128', with credentials)"
    # A raw "@" in a password, as people write them: the last one ends it.
    assert parse_proxy("http://ops:p@ss@127.0.0.1:1").authorization == \
        "Basic " + base64.b64encode(b"ops:p@ss").decode()


def test_proxy_ports_default_as_urllib3_s_do():
    assert parse_proxy("http://proxy.example") == Proxy("http", "proxy.example", 80)
    assert parse_proxy("https://proxy.example/") == Proxy("https", "proxy.example", 443)


def test_choose_proxy_prefers_the_most_precise_key_as_requests_does():
    proxies = {"all": "http://all:1", "http": "http://scheme:1",
               "http://napix.example": "http://host:1", "all://other.example": "http://o:1"}
    assert str(choose_proxy("http://napix.example:8002", proxies, False)) == "http://host:1"
    assert str(choose_proxy("http://napix2.example", proxies, False)) == "http://scheme:1"
    assert str(choose_proxy("https://other.example", proxies, False)) == "http://o:1"
    assert str(choose_proxy("https://napix.example", proxies, False)) == "http://all:1"
    assert choose_proxy("https://napix.example", {}, False) is None


ENVIRONMENTS = [
    {"HTTP_PROXY": "http://p1:3128"},
    {"http_proxy": "http://lower:3128", "HTTP_PROXY": "http://upper:3128"},
    {"HTTPS_PROXY": "https://p2:3129"},
    {"ALL_PROXY": "p3:8080"},
    {"HTTP_PROXY": "http://p1:3128", "HTTPS_PROXY": "http://p2:1", "NO_PROXY": "napix.example"},
    {"ALL_PROXY": "http://p3:1", "no_proxy": ".napix.example"},
    {"ALL_PROXY": "http://p3:1", "NO_PROXY": "napix.example:8002, other.example"},
    {"ALL_PROXY": "http://p3:1", "NO_PROXY": "10.0.0.0/8"},
    {"ALL_PROXY": "http://p3:1", "NO_PROXY": "127.0.0.1,::1"},
    {"ALL_PROXY": "http://p3:1", "NO_PROXY": "*"},
    {"HTTP_PROXY": "http://p1:3128", "REQUEST_METHOD": "GET"},
    {"NO_PROXY": "napix.example"},
]
URLS = ["http://napix.example/", "http://napix.example:8002/", "https://hv-1.napix.example/",
        "http://10.1.2.3:8002/", "http://127.0.0.1:8002/", "https://[::1]:8443/",
        "http://other.example/", "https://napix.example:8002/"]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_environment_routes_each_host_as_requests_routes_it(environment, monkeypatch):
    import requests.utils

    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    for url in URLS:
        expected = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
        chosen = choose_proxy(url)
        assert chosen == (None if expected is None else parse_proxy(expected)), url


def test_proxies_no_proxy_key_bypasses_the_environment_only(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://env:1")
    assert choose_proxy("http://napix.example", {"no_proxy": "napix.example"}) is None
    assert str(choose_proxy("http://napix.example",
                            {"no_proxy": "napix.example", "http": "http://given:1"})) \
        == "http://given:1"
    assert check_proxies(None) == {}


def test_redact_url_credentials_masks_the_user_information_of_every_url():
    assert redact_url_credentials("via http://u:p@h:1/x and https://a:b@c") == \
        "via http://***@h:1/x and https://***@c"
    assert redact_url_credentials("http://ops:p@ss@127.0.0.1:1") == "http://***@127.0.0.1:1"
    assert redact_url_credentials("write to ops@example.com") == "write to ops@example.com"


def test_the_proxy_is_part_of_the_origin_and_str_shows_the_destination_only(forward_proxy):
    url = forward_proxy.url.replace("http://", f"http://{USER}:{PASSWORD}@")
    with Client("127.0.0.1:8002", proxies={"http": url}) as client:
        origin = client.origin
    assert str(origin) == "http://127.0.0.1:8002"
    assert origin.proxy == parse_proxy(url)
    assert origin != origin._replace(proxy=None)
    assert PASSWORD not in repr(origin) and BASIC not in repr(origin)


def test_connect_waits_for_the_proxy_at_most_the_connect_timeout():
    """A proxy that accepts and never answers CONNECT: a Timeout, in time."""
    import gevent.event
    import gevent.server

    from napixclient import Timeout

    done = gevent.event.Event()
    silent = gevent.server.StreamServer(("127.0.0.1", 0),
                                        lambda sock, address: done.wait(10))
    silent.start()
    try:
        proxy = f"http://127.0.0.1:{silent.server_port}"
        with Client("https://127.0.0.1:9", timeout=(0.5, 5), proxies={"https": proxy}) as c:
            started = time.monotonic()
            with pytest.raises(Timeout, match=f"the proxy {proxy} to answer CONNECT"):
                c.get("/")
        assert time.monotonic() - started < 2
    finally:
        done.set()
        silent.stop(timeout=1)


# -- the napix command -----------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def napix(*args, env=None, timeout=30):
    """Run ``python -m napixclient ARGS`` with no NAPIX_* or proxy variable
    but those in ``env``; return the CompletedProcess (text)."""
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("NAPIX_") and name.lower() not in PROXY_VARIABLES}
    environ.update(env or {}, PYTHONPATH=str(ROOT))
    return gevent.subprocess.run(
        [sys.executable, "-m", "napixclient", *map(str, args)],
        capture_output=True, text=True, env=environ, timeout=timeout, cwd=str(ROOT))


def test_napix_request_uses_the_environment_s_proxy_and_no_proxy_ignores_it(
        forward_proxy, origin):
    env = {"HTTP_PROXY": forward_proxy.url}
    done = napix("request", origin.host, "GET", "/x", "-v", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"ok": True}
    assert f"through the proxy {forward_proxy.url}" in done.stderr
    done = napix("request", origin.host, "GET", "/x", "--no-proxy", env=env)
    assert done.returncode == 0, done.stderr
    assert forwarded(forward_proxy, origin) == 1
    assert [via_proxy(request) for request in origin.requests] == [True, False]


def test_napix_request_and_probe_go_through_the_proxy_given(forward_proxy, origin):
    # Given on the command line, it wins over the environment's.
    env = {"HTTP_PROXY": f"http://127.0.0.1:{closed_port()}", "NO_PROXY": "127.0.0.1"}
    done = napix("request", origin.host, "GET", "/x", "--proxy", forward_proxy.url, env=env)
    assert done.returncode == 0, done.stderr
    done = napix("probe", origin.host, origin.host, "/x", "--json", "--proxy",
                 forward_proxy.url, env=env)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["status"] for line in done.stdout.splitlines()] == [200, 200]
    assert forwarded(forward_proxy, origin) == 3


def test_napix_with_an_authenticated_proxy_shows_its_credentials_nowhere(
        authenticated_proxy, origin):
    # Right credentials, in the environment, with every debug line.
    env = {"HTTP_PROXY": authenticated_proxy.url_with_credentials}
    done = napix("request", origin.host, "GET", "/x", "-vv", env=env)
    assert done.returncode == 0, done.stderr
    outputs = [done.stdout, done.stderr]
    # None: a ProxyError naming the proxy, exit 1.
    done = napix("request", origin.host, "GET", "/x", "-vv", "--proxy", authenticated_proxy.url)
    assert done.returncode == 1
    assert (f"root cause: the proxy {authenticated_proxy.url} answered 407 Proxy "
            "Authentication Required") in done.stderr
    assert "Traceback" not in done.stderr
    outputs += [done.stdout, done.stderr]
    # Wrong ones, in a probe.
    wrong = authenticated_proxy.url_with_credentials.replace(PASSWORD, PASSWORD[::-1])
    done = napix("probe", origin.host, "/x", "-vv", "--proxy", wrong)
    assert done.returncode == 1
    outputs += [done.stdout, done.stderr]
    text = "\n".join(outputs)
    for secret in SECRETS + (PASSWORD[::-1],):
        assert secret not in text
    assert "Proxy-Authorization" not in origin.requests[0].headers


@pytest.mark.parametrize("argv, message", [
    (["--proxy", "http://127.0.0.1:1", "--no-proxy"], "either --proxy or --no-proxy"),
    (["--proxy", "socks5://ops:s3cr3t@127.0.0.1:1080"], "SOCKS proxies are not supported"),
    (["--proxy", "http://ops:s3cr3t@127.0.0.1:1/x"], "'http://***@127.0.0.1:1/x'"),
    (["--cert-key", "key.pem"], "--cert-key needs --cert"),
    (["--cert", "/nonexistent/client.pem"], "cert: no file at '/nonexistent/client.pem'"),
])
@pytest.mark.parametrize("command", [["request", "127.0.0.1:1", "GET", "/"],
                                     ["probe", "127.0.0.1:1", "/"]])
def test_napix_refuses_bad_proxy_and_cert_options_with_exit_2(command, argv, message):
    done = napix(*command, *argv)
    assert done.returncode == 2
    assert message in done.stderr
    assert "s3cr3t" not in done.stderr and "Traceback" not in done.stderr


def test_napix_refuses_a_bad_proxy_in_the_environment_with_exit_2():
    done = napix("request", "https://127.0.0.1:1", "GET", "/",
                 env={"https_proxy": "ftp://ops:s3cr3t@127.0.0.1:21"})
    assert done.returncode == 2
    assert "the proxy in https_proxy 'ftp://***@127.0.0.1:21'" in done.stderr
    assert "s3cr3t" not in done.stderr
