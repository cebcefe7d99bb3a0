"""CooperativeAdapter: a plain requests.Session over gevent sockets."""

import itertools
import ssl
import time
import warnings

import gevent
import gevent.ssl
import pytest
import requests
from gevent.pywsgi import WSGIServer
from urllib3.util.retry import Retry

from napixclient.adapter import CooperativeAdapter, HubSleepRetry
from napixclient.authenticators import LoginAuthenticator
from tests import proxyserver
from tests.helpers import closed_port

# The fixture, for the tests below: a tinyproxy on 127.0.0.1.
forward_proxy = proxyserver.forward_proxy


def _session(**kwargs):
    session = requests.Session()
    adapter = CooperativeAdapter(**kwargs)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def test_a_session_with_the_adapter_is_signed_and_answered(napix_server):
    napix_server.route("/", body={"ok": True})
    with _session() as session:
        response = session.get(f"{napix_server.url}/", auth=LoginAuthenticator("root", "toor"),
                               timeout=5)
    assert response.status_code == 200 and response.json() == {"ok": True}


def test_requests_through_the_adapter_run_concurrently_without_patching(napix_server):
    napix_server.route("/slow", body=[], latency=0.3)
    auth = LoginAuthenticator("root", "toor")
    with _session(pool_maxsize=10) as session:
        started = time.monotonic()
        session.get(f"{napix_server.url}/slow", auth=auth, timeout=5)
        single = time.monotonic() - started
        started = time.monotonic()
        greenlets = [gevent.spawn(session.get, f"{napix_server.url}/slow", auth=auth,
                                  timeout=5) for _ in range(10)]
        gevent.joinall(greenlets, timeout=20, raise_error=True)
        makespan = time.monotonic() - started
    assert [g.value.status_code for g in greenlets] == [200] * 10
    # Serial would take ten latencies; a fourfold margin for a busy machine.
    assert makespan < 10 * single / 4
    assert napix_server.max_in_flight == 10


def test_the_adapter_refuses_a_blocking_pool():
    with pytest.raises(ValueError, match="pool_block"):
        CooperativeAdapter(pool_block=True)


def test_a_plain_retry_backoff_yields_to_the_hub_instead_of_blocking_it():
    retry = Retry(total=2, connect=2, backoff_factor=0.1)
    adapter = CooperativeAdapter(max_retries=retry)
    assert isinstance(adapter.max_retries, HubSleepRetry)
    assert adapter.max_retries.total == 2 and adapter.max_retries.backoff_factor == 0.1
    ticks = []

    def tick():
        for _ in range(50):
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    ticker = gevent.spawn(tick)
    with _session(max_retries=retry) as session:
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get(f"http://127.0.0.1:{closed_port()}/", timeout=2)
    ticker.kill()
    # Two retries wait 0.1 and 0.2 s of backoff; a blocked hub would show a
    # gap that long between ticks.
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) >= 10 and max(gaps) < 0.09


# -- through a proxy ------------------------------------------------------------


def _two_gets_beside_a_ticker(session, url, **kwargs):
    """Two GETs at once through ``session`` while a greenlet ticks every 0.1 s.

    :returns: ``(makespan in seconds, the two responses, ticks counted)``.
    """
    ticks = []

    def tick():
        for _ in range(100):  # 10 s at most
            gevent.sleep(0.1)
            ticks.append(time.monotonic())

    ticker = gevent.spawn(tick)
    gevent.sleep(0)  # the ticker is running before the requests start
    started = time.monotonic()
    greenlets = [gevent.spawn(session.get, url, timeout=5, **kwargs) for _ in range(2)]
    gevent.joinall(greenlets, timeout=15, raise_error=True)
    makespan = time.monotonic() - started
    ticker.kill()
    counted = sum(1 for t in ticks if t <= started + makespan)
    return makespan, [g.value for g in greenlets], counted


def test_two_one_second_gets_through_an_http_proxy_overlap_and_the_hub_keeps_running(
        forward_proxy, napix_server):
    napix_server.route("/slow", body={"slow": True}, latency=1.0)
    proxies = {"http": forward_proxy.url, "https": forward_proxy.url}
    with _session() as session:
        makespan, responses, ticks = _two_gets_beside_a_ticker(
            session, f"{napix_server.url}/slow", proxies=proxies,
            auth=LoginAuthenticator("root", "toor"))
    assert [r.status_code for r in responses] == [200, 200]
    assert [r.json() for r in responses] == [{"slow": True}] * 2
    # Serial (or a blocked hub) takes 2 s; together they take one latency.
    assert makespan < 1.6
    # Ten ticks in a second when the hub is free; none while it is blocked.
    assert ticks >= 5
    # The proxy carried both: it says so in its log and in a Via field.
    target = f"GET {napix_server.url}/slow HTTP/1.1"
    assert forward_proxy.log().count(target) == 2
    assert [proxyserver.VIA_NAME in r.headers.get("Via", "") for r in napix_server.requests] \
        == [True, True]


# A slow TLS server on 127.0.0.1 with a certificate from a throwaway CA.


def _server_context(ca):
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


def _slow_hello(environ, start_response):
    gevent.sleep(0.5)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"hello": "tls"}']


@pytest.fixture
def slow_tls_server(ca):
    server = WSGIServer(("127.0.0.1", 0), _slow_hello, ssl_context=_server_context(ca),
                        log=None, error_log=None)
    server.start()
    yield f"https://127.0.0.1:{server.server_port}"
    server.stop(timeout=1)


def test_https_through_a_connect_tunnel_is_verified_and_cooperative(
        forward_proxy, slow_tls_server, ca_bundle):
    proxies = {"https": forward_proxy.url}
    with _session() as session:
        makespan, responses, ticks = _two_gets_beside_a_ticker(
            session, f"{slow_tls_server}/", proxies=proxies, verify=ca_bundle)
        assert [r.json() for r in responses] == [{"hello": "tls"}] * 2
        assert makespan < 0.9 and ticks >= 2
        # Tunnelled, the origin's certificate is checked: the default bundle
        # does not know the test CA.
        with pytest.raises(requests.exceptions.SSLError):
            session.get(f"{slow_tls_server}/", proxies=proxies, timeout=5)
    port = slow_tls_server.rsplit(":", 1)[1]
    assert forward_proxy.log().count(f"CONNECT 127.0.0.1:{port} HTTP/1.") >= 2


def test_an_https_proxy_is_reached_over_cooperative_verified_tls(
        forward_proxy, ca, ca_bundle, napix_server, slow_tls_server):
    napix_server.route("/slow", body={"slow": True}, latency=0.5)
    auth = LoginAuthenticator("root", "toor")
    with proxyserver.tls_front(forward_proxy, _server_context(ca)) as https_proxy:
        proxies = {"http": https_proxy, "https": https_proxy}
        with _session() as session:
            # An http origin, forwarded by the proxy; then an https one,
            # tunnelled: TLS inside TLS.
            for url in (f"{napix_server.url}/slow", f"{slow_tls_server}/"):
                makespan, responses, ticks = _two_gets_beside_a_ticker(
                    session, url, proxies=proxies, verify=ca_bundle, auth=auth)
                assert [r.status_code for r in responses] == [200, 200], url
                assert makespan < 0.9 and ticks >= 2, url
            # The proxy's certificate is checked against verify too.
            with pytest.raises(requests.exceptions.ProxyError,
                               match="CERTIFICATE_VERIFY_FAILED"):
                session.get(f"{napix_server.url}/slow", proxies=proxies, timeout=5,
                            auth=auth)
    assert forward_proxy.log().count(f"GET {napix_server.url}/slow HTTP/1.1") == 2
    assert forward_proxy.log().count("CONNECT 127.0.0.1:") >= 2


def test_a_socks_proxy_is_refused_with_a_clear_error_that_hides_its_credentials():
    with _session() as session:
        with pytest.raises(ValueError, match="SOCKS.*not supported.*gevent hub") as caught:
            session.get("http://127.0.0.1:9/", timeout=1,
                        proxies={"http": "socks5://user:s3cret@127.0.0.1:9"})
    assert "s3cret" not in str(caught.value)


def test_an_unreachable_proxy_fails_without_showing_its_credentials():
    proxy = f"http://user:s3cret@127.0.0.1:{closed_port()}"
    with _session() as session:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(requests.exceptions.ProxyError) as caught:
                session.get("http://127.0.0.1:9/", timeout=2, proxies={"http": proxy})
    assert "s3cret" not in str(caught.value)
