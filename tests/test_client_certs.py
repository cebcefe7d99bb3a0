"""Client certificates (mutual TLS), as requests takes them: ``cert=PATH`` or
``cert=(CERT, KEY)``, against nginx (``ssl_verify_client on``) and a gevent
WSGI server that requires a certificate, all with trustme certificates."""

import json
import os
import re
import ssl
import sys
from pathlib import Path

import gevent.ssl
import gevent.subprocess
import pytest
import trustme
from gevent.pywsgi import WSGIServer

from napixclient import Client, ClientPool, ConnectionError, HTTPError
from napixclient.connections import ConnectionManager
from tests import proxyserver
from tests.nginxserver import NginxServer, NginxTLS, find_nginx

forward_proxy = proxyserver.forward_proxy

# nginx says who presented what: the verification result and the subject.
WHO = 'location = /who { return 200 "$ssl_client_verify $ssl_client_s_dn\\n"; }'


def presented(body):
    """Whether nginx verified the client certificate of ``ops``."""
    return body.startswith("SUCCESS CN=ops,")


# What a key's PEM text starts with: never in a message.
KEY_MARK = "PRIVATE KEY"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(name)


@pytest.fixture
def files(ca, tmp_path):
    """The paths of what the tests use: the CA bundle, the server's
    certificate and key, and a client certificate issued by the CA, as two
    files and as one."""
    paths = {name: str(tmp_path / f"{name}.pem") for name in
             ("ca", "server", "server_key", "client", "client_key", "client_both")}
    ca.cert_pem.write_to_path(paths["ca"])
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(paths["server"])
    server.private_key_pem.write_to_path(paths["server_key"])
    client = ca.issue_cert("ops@napix.example", common_name="ops")
    client.cert_chain_pems[0].write_to_path(paths["client"])
    client.private_key_pem.write_to_path(paths["client_key"])
    client.private_key_and_cert_chain_pem.write_to_path(paths["client_both"])
    return paths


@pytest.fixture
def nginx_mtls(files, tmp_path):
    if find_nginx() is None:
        pytest.skip("nginx is not installed (the Debian package nginx)")
    tls = NginxTLS(files["server"], files["server_key"], client_ca=files["ca"])
    with NginxServer(tmp_path / "nginx", {"/index.html": b"index\n"}, tls=tls,
                     server=WHO) as server:
        yield server


def test_nginx_accepts_a_client_certificate_given_as_cert_and_key(nginx_mtls, files):
    with Client(nginx_mtls.host, timeout=5, verify=files["ca"],
                cert=(files["client"], files["client_key"])) as client:
        response = client.get("/who")
    assert response.status == 200
    assert presented(response.body)


def test_nginx_accepts_a_client_certificate_and_key_in_one_file(nginx_mtls, files):
    with Client(nginx_mtls.host, timeout=5, verify=files["ca"],
                cert=files["client_both"]) as client:
        assert presented(client.get("/who").body)


def test_nginx_answers_400_without_a_client_certificate(nginx_mtls, files):
    # nginx completes the handshake and then refuses with a page of its own.
    with Client(nginx_mtls.host, timeout=5, verify=files["ca"]) as client:
        with pytest.raises(HTTPError) as caught:
            client.get("/who")
    assert caught.value.status == 400
    assert "No required SSL certificate was sent" in caught.value.response.body


def test_nginx_answers_400_to_a_certificate_from_another_ca(nginx_mtls, files, tmp_path):
    stranger = trustme.CA().issue_cert("ops@napix.example")
    path = str(tmp_path / "stranger.pem")
    stranger.private_key_and_cert_chain_pem.write_to_path(path)
    with Client(nginx_mtls.host, timeout=5, verify=files["ca"], cert=path) as client:
        with pytest.raises(HTTPError) as caught:
            client.get("/who")
    assert caught.value.status == 400
    assert "The SSL certificate error" in caught.value.response.body


def test_a_connection_made_with_a_certificate_never_serves_a_client_without_one(
        nginx_mtls, files):
    """Both clients share one manager and one origin; the connection that
    presented a certificate stays with the client that has it."""
    manager = ConnectionManager()
    try:
        with_cert = Client(nginx_mtls.host, timeout=5, verify=files["ca"],
                           cert=files["client_both"], connections=manager)
        without = Client(nginx_mtls.host, timeout=5, verify=files["ca"], connections=manager)
        assert with_cert.get("/who").status == 200      # its connection goes idle
        with pytest.raises(HTTPError) as caught:
            without.get("/who")                         # not on that connection
        assert caught.value.status == 400
        assert with_cert.get("/who").status == 200
        # Two TLS configurations, one context each.
        assert len(manager.dialer.contexts) == 2
    finally:
        manager.close()


def test_a_pool_builds_one_tls_context_for_all_its_hosts(nginx_mtls, files, tmp_path):
    tls = NginxTLS(files["server"], files["server_key"], client_ca=files["ca"])
    with NginxServer(tmp_path / "nginx2", {"/index.html": b"index\n"}, tls=tls,
                     server=WHO) as second:
        with ClientPool(timeout=5, verify=files["ca"], cert=files["client_both"]) as pool:
            pool.request(nginx_mtls.host, "GET", "/who")
            pool.request(second.host, "GET", "/who")
            assert [presented(r.body) for r in pool.wait(timeout=10)] == [True, True]
            assert len(pool.connections.dialer.contexts) == 1


def test_the_client_certificate_goes_to_the_origin_through_a_connect_tunnel(
        nginx_mtls, files, forward_proxy):
    with Client(nginx_mtls.host, timeout=5, verify=files["ca"], cert=files["client_both"],
                proxies={"https": forward_proxy.url}) as client:
        assert presented(client.get("/who").body)
    assert f"CONNECT 127.0.0.1:{nginx_mtls.port} HTTP/1.1" in forward_proxy.log()


# -- a gevent server that requires a certificate in the handshake ------------------------


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"hello": "mutual"}']


@pytest.fixture
def gevent_mtls(ca):
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    server = WSGIServer(("127.0.0.1", 0), hello, ssl_context=context, log=None,
                        error_log=None)
    server.start()
    yield f"https://127.0.0.1:{server.server_port}"
    server.stop(timeout=1)


def test_a_server_requiring_a_certificate_in_the_handshake_accepts_cert(gevent_mtls, files):
    with Client(gevent_mtls, timeout=5, verify=files["ca"],
                cert=(files["client"], files["client_key"])) as client:
        assert client.get("/").body == {"hello": "mutual"}


def test_a_server_requiring_a_certificate_in_the_handshake_refuses_a_client_without(
        gevent_mtls, files):
    # In TLS 1.3 the client's handshake ends before the server checks its
    # certificate: the refusal (an alert) comes when the answer is read.
    with Client(gevent_mtls, timeout=5, verify=files["ca"]) as client:
        with pytest.raises(ConnectionError) as caught:
            client.get("/")
    assert caught.value.status is None
    assert caught.value.remote_error.endswith(
        "TLSV13_ALERT_CERTIFICATE_REQUIRED: the server asks for a client certificate (cert=)")


# -- bad arguments raise at once ---------------------------------------------------------


def test_a_missing_certificate_file_raises_file_not_found_naming_cert(tmp_path):
    missing = str(tmp_path / "nope.pem")
    for cert, what in ((missing, "cert:"), ((missing, missing), "cert[0] (the certificate)")):
        for make in (lambda c: Client("https://127.0.0.1:1", cert=c),
                     lambda c: ClientPool(cert=c)):
            with pytest.raises(FileNotFoundError, match=re.escape(what) + ".*nope.pem"):
                make(cert)


def test_a_missing_key_file_raises_file_not_found_naming_the_key(files, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cert\[1\] \(the private key\)"):
        Client("https://127.0.0.1:1", cert=(files["client"], str(tmp_path / "nope.key")))


def test_pem_text_given_as_cert_is_refused_without_being_shown(files):
    with open(files["client_both"], encoding="ascii") as handle:
        pem = handle.read()
    for cert in (pem, (files["client"], pem)):
        with pytest.raises(ValueError, match="not the PEM text itself") as caught:
            Client("https://127.0.0.1:1", cert=cert)
        assert KEY_MARK not in str(caught.value)


def test_a_key_that_does_not_match_the_certificate_is_a_value_error(files, ca, tmp_path):
    other_key = str(tmp_path / "other.key")
    ca.issue_cert("x").private_key_pem.write_to_path(other_key)
    with pytest.raises(ValueError, match="cert: .*could not be loaded: the key does not "
                       "match the certificate") as caught:
        Client("https://127.0.0.1:1", cert=(files["client"], other_key))
    assert KEY_MARK not in str(caught.value)


def test_a_certificate_without_its_key_says_how_to_give_the_key(files):
    with pytest.raises(ValueError, match=r"give cert=\(certificate, key\)"):
        Client("https://127.0.0.1:1", cert=files["client"])


def test_an_encrypted_key_is_refused_without_prompting_for_a_password(files, tmp_path):
    from cryptography.hazmat.primitives import serialization

    with open(files["client_key"], "rb") as handle:
        key = serialization.load_pem_private_key(handle.read(), None)
    encrypted = str(tmp_path / "encrypted.key")
    with open(encrypted, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"pw")))
    with pytest.raises(ValueError, match="the private key is encrypted"):
        Client("https://127.0.0.1:1", cert=(files["client"], encrypted))


def test_a_certificate_of_another_type_is_a_value_error():
    for cert in (b"/etc/client.pem", ("a.pem",), ("a.pem", "b.pem", "c.pem"), 42):
        with pytest.raises(ValueError, match="cert must be the path of a PEM file"):
            Client("https://127.0.0.1:1", cert=cert)


def test_a_certificate_is_checked_even_for_an_http_host(files, tmp_path):
    """A pool's first host may be http: its certificate is still loaded at once."""
    with pytest.raises(ValueError, match="the key does not match the certificate"):
        other_key = str(tmp_path / "other.key")
        trustme.CA().issue_cert("x").private_key_pem.write_to_path(other_key)
        Client("127.0.0.1:1", cert=(files["client"], other_key))


# -- the napix command: --cert and --cert-key -----------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
# The command has no option for a CA bundle: it verifies against the bundle
# requests uses, which this runner points at the test CA.
RUN_NAPIX = ("import sys, requests.utils; requests.utils.DEFAULT_CA_BUNDLE_PATH = sys.argv[1]; "
             "from napixclient.cli import main; sys.exit(main(sys.argv[2:]))")


def napix_trusting(ca_bundle, *args):
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("NAPIX_")
               and name.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    environ["PYTHONPATH"] = str(ROOT)
    return gevent.subprocess.run([sys.executable, "-c", RUN_NAPIX, ca_bundle, *args],
                                 capture_output=True, text=True, env=environ, timeout=30,
                                 cwd=str(ROOT))


def test_napix_presents_the_client_certificate_given_with_cert_and_cert_key(
        nginx_mtls, files):
    done = napix_trusting(files["ca"], "request", nginx_mtls.host, "GET", "/who",
                          "--cert", files["client"], "--cert-key", files["client_key"])
    assert done.returncode == 0, done.stderr
    assert presented(done.stdout)
    done = napix_trusting(files["ca"], "probe", nginx_mtls.host, "/who", "--json",
                          "--cert", files["client_both"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == 200
    # Without, nginx refuses.
    done = napix_trusting(files["ca"], "request", nginx_mtls.host, "GET", "/who")
    assert done.returncode == 1
    assert "-> 400" in done.stderr and "No required SSL certificate was sent" in done.stderr


def test_napix_refuses_a_key_that_does_not_match_with_exit_2(files, tmp_path):
    other_key = str(tmp_path / "other.key")
    trustme.CA().issue_cert("x").private_key_pem.write_to_path(other_key)
    done = napix_trusting(files["ca"], "request", "https://127.0.0.1:1", "GET", "/",
                          "--cert", files["client"], "--cert-key", other_key)
    assert done.returncode == 2
    assert "the key does not match the certificate" in done.stderr
    assert KEY_MARK not in done.stderr and "Traceback" not in done.stderr
