"""No secret leaves the process: not in any log record of any logger at DEBUG,
nor in a repr, an exception or a remote_call; header injection is refused
before anything is sent; nonces are fresh and signatures cannot be replayed
on another path, method or host. Over real loopback sockets."""

import logging
import re
import traceback

import gevent
import gevent.socket
import pytest

import napixclient.authenticators
from napixclient import Client, ClientPool, HTTPError, Response
from napixclient.authenticators import LoginAuthenticator, TokenIdentifier
from napixclient.redact import URLLIB3_LOGGERS, SecretParameterFilter
from napixclient.testing import hmac_token
from tests.faultserver import FaultServer
from tests.helpers import closed_port

KEY = "Key-0f-r00t-5ecret"
USERS = {"root": KEY}


@pytest.fixture
def fault_server():
    with FaultServer() as server:
        yield server


@pytest.fixture
def every_log_record():
    """Every record of every logger, at DEBUG, formatted with its traceback.

    The handler sits on the root logger; every logger that exists is set to
    DEBUG for the test, and those that do not propagate get the handler too.
    """
    lines = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    handler = Keep(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    names = ["", "urllib3", *URLLIB3_LOGGERS, "napixclient", "napixclient.testing",
             "gevent", "requests"]
    names += list(logging.Logger.manager.loggerDict)
    loggers = {logging.getLogger(name) for name in names}
    saved = {logger: logger.level for logger in loggers}
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        if logger.name != "root" and not logger.propagate:
            logger.addHandler(handler)
    logging.getLogger().addHandler(handler)
    try:
        yield lines
    finally:
        for logger, level in saved.items():
            logger.setLevel(level)
            logger.removeHandler(handler)


def texts_of(error):
    """Every text an error shows, its chained exceptions' included."""
    texts = [str(error), repr(error), error.remote_call, str(error.remote_error),
             repr(error.remote_error), error.format_chain(), repr(error.request),
             str(error.chain),
             "".join(traceback.format_exception(type(error), error, error.__traceback__))]
    cause = error.__cause__ or error.__context__
    while cause is not None:
        texts += [str(cause), repr(cause)]
        cause = cause.__cause__ or cause.__context__
    return texts


def assert_no_secret(texts, secrets):
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"a secret leaked in: {text[:300]!r}"


# -- log records ------------------------------------------------------------------

def test_no_token_in_any_log_record_whatever_happens(
        napix_server_factory, fault_server, every_log_record):
    token = hmac_token("root", KEY)
    server = napix_server_factory(users=USERS)
    server.route("/ok", body={"ok": True})
    server.route("/missing", status=404, body="`missing` not found")
    auth = TokenIdentifier(token)
    errors = []
    with Client(server.host, auth) as client:
        assert client.get("/ok", params={"a": "1"}).status == 200
        with pytest.raises(HTTPError) as caught:
            client.get("/missing?b=2")
        errors.append(caught.value)
    # Faults make the client log its retries ("Retrying GET /path?token=").
    with Client(fault_server.host, auth, simultaneous=1, retries=2, timeout=0.3,
                max_body_size=1_000_000) as client:
        client.get("/race")
        assert client.get("/race?n=2").status == 200                  # stale, retried
        for path in ("/flaky?fail=5", "/stall-headers?seconds=2", "/reset", "/short",
                     "/not-http", "/big?size=3000000"):
            with pytest.raises(HTTPError) as caught:
                client.get(path, headers={"X-Trace": "1"})
            errors.append(caught.value)
    with ClientPool(auth, retries=1, timeout=2) as pool:
        pool.request(f"127.0.0.1:{closed_port()}", "GET", "/dead", params={"c": "3"})
        pool.request(server.host, "GET", "/ok")
        dead, good = pool.wait(timeout=10)
        errors.append(dead)
        assert isinstance(good, Response)
        texts = [repr(pool), repr(pool.client(server.host)), repr(good), repr(good.request)]
    for error in errors:
        texts += texts_of(error)
    assert_no_secret(texts + every_log_record, [token, token.split(":")[1], KEY])
    # The records that would have held the token are there, redacted: the
    # check above looked at real URL lines.
    logged = "\n".join(every_log_record)
    assert re.search(r'"GET /ok\?a=1&token=\*\*\* HTTP/1.1" 200', logged)
    assert "Retrying GET /race?n=2&token=***" in logged
    assert "Retrying GET /flaky?fail=5&token=***" in logged


def test_no_key_or_signature_in_any_log_record(napix_server_factory, every_log_record):
    server = napix_server_factory(users=USERS)
    server.route("/ok", body={"ok": True})
    server.route("/fail", status=500, body={"error_class": "Boom", "error_text": "no"})
    auth = LoginAuthenticator("root", KEY)
    errors = []
    with Client(server.host, auth, retries=1) as client:
        for _ in range(5):
            assert client.get("/ok").status == 200
        with pytest.raises(HTTPError) as caught:
            client.post("/fail", {"a": 1})
        errors.append(caught.value)
        texts = [repr(client), repr(auth), repr(client.prepare("GET", "/ok"))]
    authorizations = [r.headers["Authorization"] for r in server.requests]
    signatures = [value.rpartition(":")[2] for value in authorizations]
    assert len(signatures) == 6 and all(len(s) == 64 for s in signatures)
    for error in errors:
        texts += texts_of(error)
    assert_no_secret(texts + every_log_record, [KEY, *signatures, *authorizations])
    assert any("/ok HTTP/1.1" in line for line in every_log_record)


def test_parameters_an_authenticator_adds_are_redacted_in_logs_too(
        fault_server, every_log_record):
    """A custom authenticator that adds a query parameter without declaring
    it secret: the client still treats it as one."""

    def api_key(request):
        request.url += ("&" if "?" in request.url else "?") + "api_key=AK-123456789"
        return request

    with Client(fault_server.host, api_key) as client:
        response = client.get("/ok?x=1")
    assert response.body["path"] == "/ok?x=1&api_key=AK-123456789"  # it was sent
    assert response.request.url.endswith("/ok?x=1&api_key=***")
    assert_no_secret(every_log_record, ["AK-123456789"])
    assert any("api_key=***" in line for line in every_log_record)


def test_a_custom_token_parameter_is_redacted_in_the_client_s_log_records(
        fault_server, every_log_record):
    """The records napixclient writes (its connection layer's DEBUG lines;
    a Client makes no urllib3 record) show the request with the token
    parameter masked."""
    with Client(fault_server.host, TokenIdentifier("TK-987654321", parameter="auth")) as c:
        assert c.get("/ok").status == 200
    assert fault_server.paths() == ["/ok?auth=TK-987654321"]  # it was sent
    assert_no_secret(every_log_record, ["TK-987654321"])
    assert any(line.startswith("napixclient.connections DEBUG ")
               and '"GET /ok?auth=*** HTTP/1.1" 200' in line for line in every_log_record)


def test_the_filter_redacts_only_secret_values():
    record = logging.LogRecord(
        "urllib3.connectionpool", logging.DEBUG, __file__, 1,
        '%s "%s %s"', ("http://h:1", "GET", "/a?mytoken=keep&token=SECRET&x=1&token=S2"),
        None)
    assert SecretParameterFilter().filter(record) is True
    assert record.getMessage() == 'http://h:1 "GET /a?mytoken=keep&token=***&x=1&token=***"'
    # Records keep text only, not the objects logged (exceptions, tracebacks).
    error = ConnectionResetError(104, "reset")
    plain = logging.LogRecord("urllib3.connectionpool", logging.WARNING, __file__, 1,
                              "Retrying after %r: %s", (error, "/a?b=1"), None)
    assert SecretParameterFilter().filter(plain) is True
    assert plain.args is None
    assert plain.getMessage() == "Retrying after ConnectionResetError(104, 'reset'): /a?b=1"


def test_the_filter_is_attached_to_every_urllib3_logger_that_prints_urls():
    Client("127.0.0.1:1").close()
    for name in URLLIB3_LOGGERS:
        assert any(isinstance(f, SecretParameterFilter)
                   for f in logging.getLogger(name).filters), name


# -- header injection ---------------------------------------------------------------

INJECTIONS = [
    dict(method="GET\r\nX-Injected: 1"),
    dict(method="GET\n"),
    dict(url="/a\r\nHost: evil.example"),
    dict(url="/a\nb"),
    dict(url="/a\rb"),
    dict(url="/a\x00b"),
    dict(headers={"X-A\r\nX-B": "v"}),
    dict(headers={"X-A\n": "v"}),
    dict(headers={"X-A": "v\r\nX-Injected: 1"}),
    dict(headers={"X-A": "v\nw"}),
    dict(headers={"X-A": "v\rw"}),
    dict(headers={"X-A": "v\x00w"}),
    dict(headers={"X-A": b"v\r\nw"}),
    dict(headers={"X A": "v"}),
    dict(headers={"": "v"}),
]


@pytest.mark.parametrize("bad", INJECTIONS, ids=[repr(b) for b in INJECTIONS])
def test_cr_or_lf_in_a_request_raises_before_anything_is_sent(fault_server, bad):
    arguments = {"method": "GET", "url": "/ok", "headers": None, **bad}
    with Client(fault_server.host) as client:
        with pytest.raises(ValueError):
            client.request(arguments["method"], arguments["url"],
                           headers=arguments["headers"])
    with ClientPool() as pool:
        with pytest.raises(ValueError):
            pool.request(fault_server.host, arguments["method"], arguments["url"],
                         headers=arguments["headers"])
        assert pool.pending == 0
    gevent.sleep(0.01)
    assert fault_server.connections == 0


@pytest.mark.parametrize("headers", [{"X-A\r\n": "v"}, {"X-A": "v\r\nX-B: w"}])
def test_cr_or_lf_in_a_client_header_is_refused_at_construction(headers):
    with pytest.raises(ValueError, match="header"):
        Client("127.0.0.1:1", headers=headers)
    with pytest.raises(ValueError, match="header"):
        ClientPool(headers=headers)


@pytest.mark.parametrize("host", ["a\nb.example", "a\r\nb:80", "http://a\tb/", "a.example\x00"])
def test_control_characters_in_a_host_are_refused_not_dropped(host):
    # urlsplit silently removes tabs, CR and LF: "a\nb" would become "ab".
    with pytest.raises(ValueError, match="control character"):
        Client(host)
    with ClientPool() as pool:
        with pytest.raises(ValueError, match="control character"):
            pool.request(host, "GET", "/")


def test_cr_and_lf_in_query_parameters_are_percent_encoded_not_sent_raw(fault_server):
    with Client(fault_server.host) as client:
        response = client.get("/ok", params={"a": "x\r\nX-Injected: 1"})
    assert response.body["path"] == "/ok?a=x%0D%0AX-Injected%3A+1"


# -- nonces ------------------------------------------------------------------------

def test_nonces_come_from_the_os_csprng_and_are_never_reused(
        napix_server_factory, monkeypatch):
    # Nonces are drawn from os.urandom many at a time (a system call per
    # signature cost 3 us): every nonce sent is one slice of what was drawn.
    drawn = []
    real = napixclient.core.authenticators.os.urandom

    def spy(nbytes):
        value = real(nbytes)
        drawn.append(value.hex())
        return value

    monkeypatch.setattr(napixclient.core.authenticators.os, "urandom", spy)
    authenticator = LoginAuthenticator("root", KEY)
    for _ in range(1000):  # use up the nonces drawn before the spy came
        authenticator.authorization("GET", "h", "/")
        if drawn:
            break
    assert drawn, "no nonce was drawn from os.urandom"
    server = napix_server_factory(users=USERS, reject_replayed_nonces=True)
    server.route("/ok", body=[])
    with ClientPool(authenticator, simultaneous=4) as pool:
        for _ in range(200):
            pool.request(server.host, "GET", "/ok")
        results = pool.wait(timeout=30)
    assert [r.status for r in results] == [200] * 200
    nonces = [r.nonce for r in server.requests]
    assert len(set(nonces)) == 200
    slices = {block[start:start + 32] for block in drawn for start in range(0, len(block), 32)}
    assert set(nonces) <= slices
    assert all(re.fullmatch(r"[0-9a-f]{32}", nonce) for nonce in nonces)


# -- replay ------------------------------------------------------------------------

def raw_request(port, method, target, host, authorization):
    """Send one request by hand on a new socket; return the status."""
    sock = gevent.socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.sendall((f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"
                      f"Authorization: {authorization}\r\nContent-Length: 0\r\n"
                      "Connection: close\r\n\r\n").encode("latin-1"))
        answer = b""
        while b"\r\n" not in answer:
            piece = sock.recv(4096)
            if not piece:
                break
            answer += piece
    finally:
        sock.close()
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("reject_replayed_nonces", [True, False])
def test_a_captured_signature_cannot_be_replayed_on_another_path_method_or_host(
        napix_server_factory, reject_replayed_nonces):
    first = napix_server_factory(users=USERS, reject_replayed_nonces=reject_replayed_nonces)
    other = napix_server_factory(users=USERS, reject_replayed_nonces=reject_replayed_nonces)
    for server in (first, other):
        server.route("/a", body={"a": 1})
        server.route("/b", body={"b": 2})
    auth = LoginAuthenticator("root", KEY)
    with Client(first.host, auth) as client:
        assert client.get("/a").status == 200
    captured = first.requests[-1].headers["Authorization"]

    assert raw_request(first.port, "GET", "/b", first.host, captured) == 403
    assert raw_request(first.port, "GET", "/a?x=1", first.host, captured) == 403
    assert raw_request(first.port, "DELETE", "/a", first.host, captured) == 403
    assert raw_request(other.port, "GET", "/a", other.host, captured) == 403
    # The same request again: refused only where nonces are remembered. This
    # also shows the raw requests above were well formed.
    expected = 403 if reject_replayed_nonces else 200
    assert raw_request(first.port, "GET", "/a", first.host, captured) == expected
    # A fresh signature sent the same raw way is accepted.
    fresh = auth.authorization("GET", first.host, "/b")
    assert raw_request(first.port, "GET", "/b", first.host, fresh) == 200


# -- issue 19, item 8: proxy passwords with raw delimiters, tokens echoed back ----------

RAW_PASSWORD = "pr0xy#s3cr/t?9"  # "#", "/" and "?" unencoded: a malformed URL


@pytest.mark.parametrize("password", ["pr0xy#s3cret", "pr0xy/s3cret", "pr0xy?s3cret",
                                      RAW_PASSWORD])
def test_a_malformed_proxy_url_never_shows_its_password(password, monkeypatch):
    url = f"http://ops:{password}@127.0.0.1:3128"
    for variable in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(variable.upper(), raising=False)
    messages = []
    with pytest.raises(ValueError) as caught:
        Client("127.0.0.1:8002", proxies={"http": url})
    messages.append(str(caught.value))
    with pytest.raises(ValueError) as caught:
        ClientPool(AUTH_MAP, proxies={"all": url.replace("http://", "")})
    messages.append(str(caught.value))
    monkeypatch.setenv("HTTPS_PROXY", url)
    with pytest.raises(ValueError) as caught:
        Client("https://127.0.0.1:8443")
    messages.append(str(caught.value))
    assert "HTTPS_PROXY" in messages[-1]
    for message in messages:
        assert "***@127.0.0.1:3128" in message, message
    assert_no_secret(messages, [password, password.split("#")[0].split("/")[0].split("?")[0]])


def test_napix_proxy_never_shows_a_raw_password_in_its_messages(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    url = f"http://ops:{RAW_PASSWORD}@127.0.0.1:3128"
    environ = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}
    outputs = []
    for argv in (["--proxy", url], []):
        env = dict(environ) if argv else dict(environ, HTTPS_PROXY=url)
        done = subprocess.run(
            [sys.executable, "-m", "napixclient", "request", "https://127.0.0.1:8443",
             "GET", "/", *argv], capture_output=True, text=True, env=env, timeout=30,
            cwd=str(tmp_path))
        assert done.returncode == 2, done.stderr
        assert "***@127.0.0.1:3128" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        outputs += [done.stdout, done.stderr]
    assert_no_secret(outputs, [RAW_PASSWORD, "pr0xy"])


AUTH_MAP = {"login": "root", "key": KEY}


def echo_target(request):
    """napixd's 404: the request target echoed between backquotes."""
    return 404, f"`{request.path}` not found"


def echo_target_document(request):
    return 404, {"error_class": "NotFound", "error_text": f"{request.path} not found",
                 "request": {"method": request.method, "path": request.path}}


@pytest.mark.parametrize("handler, root_text", [
    (echo_target, "`/vm/10?zone=eu&token=***` not found"),
    (echo_target_document, "/vm/10?zone=eu&token=*** not found"),
])
def test_a_token_the_server_echoes_in_its_error_never_shows(napix_server_factory, handler,
                                                           root_text):
    token = hmac_token("root", KEY)
    server = napix_server_factory(users=USERS)
    server.route("/vm/10", handler=handler)
    with Client(server.host, TokenIdentifier(token)) as client:
        with pytest.raises(HTTPError) as caught:
            client.get("/vm/10", params={"zone": "eu"})
    error = caught.value
    assert error.root.error_text == root_text
    assert str(error).endswith(f" | {root_text}"), str(error)
    assert error.format_chain().endswith(f"root cause: {root_text}")
    assert root_text in str(error.remote_error)
    signature = token.split(":", 1)[1]
    assert_no_secret(texts_of(error), [token, signature])


def test_a_relaying_server_never_passes_on_a_token_its_next_hop_echoed(napix_server_factory):
    """A calls B (an ExceptionsCatcher app) which calls C with a token; C
    echoes the target in its 404. B's document, as it crosses the wire to
    A, holds no token: neither in remote_error nor in error_text."""
    from napixclient.wsgi import ExceptionsCatcher

    token = hmac_token("root", KEY)
    c = napix_server_factory(users=USERS)
    c.route("/slot/10", handler=echo_target)

    def relay(environ, start_response):
        with Client(c.host, TokenIdentifier(token)) as client:
            client.get("/slot/10")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"unreachable"]

    def leaky(environ, start_response):
        raise ValueError(f"could not read http://{c.host}/slot/10?token={token}")

    b = napix_server_factory(users=USERS, app=ExceptionsCatcher(relay))
    d = napix_server_factory(users=USERS, app=ExceptionsCatcher(leaky))
    errors = []
    for server in (b, d):
        with Client(server.host, LoginAuthenticator("root", KEY)) as client:
            with pytest.raises(HTTPError) as caught:
                client.get("/vm/12")
        errors.append(caught.value)
    relayed, leaked = errors
    assert relayed.root.error_text == "`/slot/10?token=***` not found"
    assert relayed.response.body["remote_error"] == "404 Not Found: `/slot/10?token=***` not found"
    assert leaked.root.error_text.endswith("/slot/10?token=***")
    signature = token.split(":", 1)[1]
    for error in errors:
        assert_no_secret([error.response.content.decode(), *texts_of(error)],
                         [token, signature])
