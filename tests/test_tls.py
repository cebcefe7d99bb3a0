"""TLS is verified by default: against gevent WSGI servers on 127.0.0.1 with
certificates from a throwaway certificate authority made by trustme."""

import ssl

import gevent.ssl
import pytest
import trustme
from gevent.pywsgi import WSGIServer

from napixclient import Client, ClientPool, ConnectionError, Response
from napixclient.core.tls import ssl_context


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"hello": "tls"}']


def tls_server(configure):
    """A started WSGIServer on 127.0.0.1 whose TLS context ``configure`` fills."""
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    configure(context)
    server = WSGIServer(("127.0.0.1", 0), hello, ssl_context=context, log=None,
                        error_log=None)
    server.start()
    return server


@pytest.fixture
def good_server(ca):
    """A certificate for 127.0.0.1 signed by the test CA."""
    server = tls_server(ca.issue_cert("127.0.0.1", "localhost").configure_cert)
    yield server
    server.stop(timeout=1)


@pytest.fixture
def self_signed_server(tmp_path):
    """A server whose certificate signed itself: a fresh CA's own certificate."""
    own = trustme.CA()
    cert, key = tmp_path / "self.pem", tmp_path / "self.key"
    own.cert_pem.write_to_path(str(cert))
    own.private_key_pem.write_to_path(str(key))
    server = tls_server(lambda context: context.load_cert_chain(str(cert), str(key)))
    yield server
    server.stop(timeout=1)


@pytest.fixture
def wrong_name_server(ca):
    """A certificate signed by the test CA, for another host name."""
    server = tls_server(ca.issue_cert("napix.example").configure_cert)
    yield server
    server.stop(timeout=1)


def url(server):
    return f"https://127.0.0.1:{server.server_port}"


def test_a_server_signed_by_an_unknown_ca_is_refused_by_default(good_server):
    with Client(url(good_server), timeout=5) as client:
        with pytest.raises(ConnectionError) as caught:
            client.get("/")
    text = str(caught.value)
    assert "TLS failed: CERTIFICATE_VERIFY_FAILED" in text
    assert "unable to get local issuer certificate" in text
    assert caught.value.status is None


def test_a_self_signed_server_is_refused_naming_tls(self_signed_server, ca_bundle):
    for verify in (True, ca_bundle):
        with Client(url(self_signed_server), timeout=5, verify=verify) as client:
            with pytest.raises(ConnectionError) as caught:
                client.get("/")
        assert "TLS failed" in str(caught.value)
        assert "self-signed" in str(caught.value) or "self signed" in str(caught.value)


def test_a_custom_ca_bundle_is_accepted(good_server, ca_bundle):
    with Client(url(good_server), timeout=5, verify=ca_bundle) as client:
        response = client.get("/")
        assert client.get("/").body == {"hello": "tls"}  # kept alive, reused
    assert isinstance(response, Response) and response.body == {"hello": "tls"}


def test_a_pool_verifies_with_its_ca_bundle(good_server, ca_bundle):
    with ClientPool(verify=ca_bundle, timeout=5) as pool:
        pool.request(url(good_server), "GET", "/")
        (result,) = pool.wait(timeout=10)
    assert isinstance(result, Response) and result.status == 200
    with ClientPool(timeout=5) as pool:
        pool.request(url(good_server), "GET", "/")
        (result,) = pool.wait(timeout=10)
    assert type(result) is ConnectionError and "TLS failed" in str(result)


@pytest.mark.parametrize("name, words", [("127.0.0.1", "IP address mismatch"),
                                         ("localhost", "Hostname mismatch")])
def test_a_host_name_mismatch_is_refused(wrong_name_server, ca_bundle, name, words):
    host = f"https://{name}:{wrong_name_server.server_port}"
    with Client(host, timeout=5, verify=ca_bundle) as client:
        with pytest.raises(ConnectionError) as caught:
            client.get("/")
    text = str(caught.value)
    assert "TLS failed: CERTIFICATE_VERIFY_FAILED" in text
    assert words in text, text


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_verify_false_accepts_anything(wrong_name_server):
    with Client(url(wrong_name_server), timeout=5, verify=False) as client:
        assert client.get("/").body == {"hello": "tls"}


def test_the_default_context_verifies_certificates_and_names():
    context = ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_a_missing_ca_bundle_is_refused_at_once(tmp_path):
    with pytest.raises(FileNotFoundError):
        Client("https://127.0.0.1:1", verify=str(tmp_path / "nothing.pem"))
