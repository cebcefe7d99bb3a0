"""ExceptionsCatcher, served by real NapixTestServers on 127.0.0.1."""

import logging

import gevent
import pytest
from flask import Flask

from napixclient import Client, ConnectionError, HTTPError
from napixclient.authenticators import TokenIdentifier
from napixclient.testing import hmac_token
from napixclient.wsgi import ExceptionsCatcher
from tests.helpers import AUTH

LOGGER = "napixclient.wsgi"


def failing_app(error):
    def app(environ, start_response):
        raise error
    return app


def call(server, method="GET", path="/x", client_auth=AUTH):
    """Call ``server`` and return the HTTPError it answers with."""
    with Client(server.host, client_auth) as client:
        with pytest.raises(HTTPError) as caught:
            client.request(method, path)
    return caught.value


def calling_app(host, path, auth=AUTH):
    """A plain WSGI app that calls ``host`` with napixclient and lets the
    HTTPError escape, as a Napix server relaying a failed call does."""
    def app(environ, start_response):
        with Client(host, auth) as client:
            client.get(path)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"unreachable"]
    return app


def wait_for(condition, seconds=2.0):
    """Yield to the hub until ``condition()`` is true, at most ``seconds``."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return True
        gevent.sleep(0.01)
    return condition()


def test_an_escaping_exception_becomes_a_500_napix_document(napix_server_factory):
    server = napix_server_factory(app=ExceptionsCatcher(failing_app(KeyError("size"))))
    error = call(server, "POST", "/vm-ip/?size=1")
    assert error.status == 500
    assert error.response.headers["Content-Type"] == "application/json"
    assert error.remote_error == {
        "error_class": "KeyError",
        "error_text": "'size'",
        "request": {"method": "POST", "path": "/vm-ip/"},
    }
    assert error.root.error_class == "KeyError"
    assert str(error) == f"POST {server.url}/vm-ip/?size=1 -> 500 (KeyError) | 'size'"


def test_tracebacks_and_file_paths_leave_only_with_show_traceback(napix_server_factory):
    quiet = napix_server_factory(app=ExceptionsCatcher(failing_app(ValueError("bad"))))
    loud = napix_server_factory(app=ExceptionsCatcher(failing_app(ValueError("bad")),
                                                      show_traceback=True))
    hidden = call(quiet).remote_error
    shown = call(loud).remote_error
    assert not {"traceback", "filename", "line"} & set(hidden)
    assert __file__ not in call(quiet).response.content.decode()
    assert shown["filename"] == __file__
    assert isinstance(shown["line"], int)
    assert shown["traceback"][-1] == {"filename": __file__, "line": shown["line"],
                                      "in": "app", "call": "raise error"}


def test_an_escaping_http_error_adds_its_call_and_the_far_side_document(
        napix_server_factory):
    far = napix_server_factory()
    far.route("/vm/10", status=404, body="`10` not found")
    far.route("/ip", status=409, body={"error_class": "Conflict", "error_text": "in use",
                                       "traceback": ["x"], "line": 3})
    near_text = napix_server_factory(app=ExceptionsCatcher(calling_app(far.host, "/vm/10")))
    near_doc = napix_server_factory(app=ExceptionsCatcher(calling_app(far.host, "/ip")))

    text = call(near_text, path="/a").remote_error
    assert text["error_class"] == "HTTPError"
    assert text["remote_call"] == f"GET {far.url}/vm/10"
    assert text["remote_error"] == "404 Not Found: `10` not found"
    assert text["remote_status"] == 404
    assert text["request"] == {"method": "GET", "path": "/a"}

    doc = call(near_doc, path="/b").remote_error
    assert doc["remote_call"] == f"GET {far.url}/ip"
    assert doc["remote_error"] == {"error_class": "Conflict", "error_text": "in use",
                                   "traceback": ["x"], "line": 3}
    assert doc["remote_status"] == 409


def test_transport_failures_travel_as_their_description(napix_server_factory):
    far = napix_server_factory()
    far.route("/dead", drop=True)
    near = napix_server_factory(app=ExceptionsCatcher(calling_app(far.host, "/dead")))
    document = call(near).remote_error
    assert document["error_class"] == "ConnectionError"
    assert document["remote_call"] == f"GET {far.url}/dead"
    assert "connection" in document["remote_error"]
    assert "remote_status" not in document


def test_no_token_or_signature_appears_in_the_document(napix_server_factory):
    far = napix_server_factory()
    far.route("/vm", status=404, body="nope")
    far_token = hmac_token("root", "toor")
    near_token = "caller-secret-token-value"
    near = napix_server_factory(tokens=[near_token], app=ExceptionsCatcher(
        calling_app(far.host, "/vm", TokenIdentifier(far_token)), show_traceback=True))
    error = call(near, path="/x?a=1", client_auth=TokenIdentifier(near_token))
    content = error.response.content.decode()
    assert error.remote_error["remote_call"] == f"GET {far.url}/vm?token=***"
    assert error.remote_error["request"] == {"method": "GET", "path": "/x"}
    for secret in (far_token, far_token.split(":")[1], near_token, "toor"):
        assert secret not in content


def test_a_failure_before_the_first_block_replaces_the_started_response(
        napix_server_factory):
    closed = []

    class Body:
        def __iter__(self):
            yield b""
            raise RuntimeError("disk gone")

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Kept", "no")])
        return Body()

    server = napix_server_factory(app=ExceptionsCatcher(app))
    error = call(server)
    assert error.status == 500
    assert "X-Kept" not in error.response.headers
    assert error.remote_error["error_text"] == "disk gone"
    assert wait_for(lambda: closed == [True])


def test_a_failure_after_the_body_started_is_logged_and_cuts_the_connection(
        napix_server_factory, caplog):
    closed = []

    class Body:
        def __iter__(self):
            yield b"first block"
            raise RuntimeError("disk gone halfway")

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    server = napix_server_factory(app=ExceptionsCatcher(app))
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        with Client(server.host, AUTH) as client:
            with pytest.raises(ConnectionError):
                client.get("/stream")
        assert wait_for(lambda: closed == [True])
    records = [r for r in caplog.records if r.name == LOGGER]
    assert len(records) == 1
    assert "after its response started" in records[0].getMessage()
    assert "GET /stream" in records[0].getMessage()
    assert str(records[0].exc_info[1]) == "disk gone halfway"


def test_a_failure_after_write_is_logged_and_cuts_the_connection(
        napix_server_factory, caplog):
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"legacy write")
        raise RuntimeError("after write")

    server = napix_server_factory(app=ExceptionsCatcher(app))
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        with Client(server.host, AUTH) as client:
            with pytest.raises(ConnectionError):
                client.get("/w")
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert messages == ["GET /w failed after its response started; cutting the connection"]


def test_a_successful_body_passes_through_and_is_closed(napix_server_factory):
    closed = []

    class Body:
        def __iter__(self):
            yield b"hello "
            yield b""
            yield b"world"

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    server = napix_server_factory(app=ExceptionsCatcher(app))
    with Client(server.host, AUTH) as client:
        assert client.get("/").body == "hello world"
    assert wait_for(lambda: closed == [True])


def test_an_exception_from_close_is_logged(napix_server_factory, caplog):
    class Body:
        def __iter__(self):
            return iter([b"ok"])

        def close(self):
            raise OSError("close failed")

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    server = napix_server_factory(app=ExceptionsCatcher(app))
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        with Client(server.host, AUTH) as client:
            assert client.get("/c").body == "ok"
        assert wait_for(lambda: any(r.name == LOGGER for r in caplog.records))
    record = [r for r in caplog.records if r.name == LOGGER][0]
    assert "closing the response body raised" in record.getMessage()


def test_a_document_that_cannot_be_encoded_still_answers_a_text_500(napix_server_factory):
    def app(environ, start_response):
        raise HTTPError(_record(), status=502,
                        remote_error={"when": object()})

    server = napix_server_factory(app=ExceptionsCatcher(app))
    error = call(server)
    assert error.status == 500
    assert error.response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert error.response.body.startswith("HTTPError: GET http://far/y -> 502")


def test_an_exception_whose_str_raises_still_gets_a_document(napix_server_factory):
    class Nasty(Exception):
        def __str__(self):
            raise RuntimeError("no text for you")

    server = napix_server_factory(app=ExceptionsCatcher(failing_app(Nasty())))
    error = call(server)
    assert error.remote_error["error_class"] == "Nasty"
    assert error.remote_error["error_text"] == "<unprintable Nasty>"


def test_an_app_returning_no_iterable_gets_a_document(napix_server_factory):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return None

    error = call(napix_server_factory(app=ExceptionsCatcher(app)))
    assert error.status == 500
    assert error.remote_error["error_class"] == "TypeError"


def test_a_head_request_gets_a_500_without_a_body(napix_server_factory):
    server = napix_server_factory(app=ExceptionsCatcher(failing_app(ValueError("x"))))
    error = call(server, "HEAD")
    assert error.status == 500
    assert error.response.content == b""
    assert int(error.response.headers["Content-Length"]) > 0


def _record():
    from napixclient.response import RequestRecord
    return RequestRecord("GET", "far", "http://far/y", "/y")


def make_flask_app(far_host):
    app = Flask(__name__)
    # Flask answers its own HTML 500 unless told to let exceptions through.
    app.config["PROPAGATE_EXCEPTIONS"] = True

    @app.route("/ok")
    def ok():
        return {"fine": True}

    @app.route("/broken")
    def broken():
        raise LookupError("no such slot")

    @app.route("/relay")
    def relay():
        with Client(far_host, AUTH) as client:
            return client.get("/missing").body

    return app


@pytest.mark.parametrize("show_traceback", [False, True])
def test_flask_apps_are_wrapped_whole(napix_server_factory, show_traceback):
    far = napix_server_factory()
    app = make_flask_app(far.host)
    server = napix_server_factory(app=ExceptionsCatcher(app, show_traceback=show_traceback))
    with Client(server.host, AUTH) as client:
        assert client.get("/ok").body == {"fine": True}
    broken = call(server, path="/broken").remote_error
    relayed = call(server, path="/relay")
    assert broken["error_class"] == "LookupError"
    assert broken["error_text"] == "no such slot"
    assert ("traceback" in broken) is show_traceback
    assert ("filename" in broken) is show_traceback
    if show_traceback:
        assert broken["filename"] == __file__
        assert broken["traceback"][-1]["in"] == "broken"
    assert relayed.remote_error["remote_call"] == f"GET {far.url}/missing"
    assert relayed.remote_error["remote_error"] == "404 Not Found: `/missing` not found"
    assert [hop.call for hop in relayed.chain] == [f"GET {server.url}/relay",
                                                   f"GET {far.url}/missing"]
    assert relayed.root.error_text == "`/missing` not found"


def test_lists_pass_through_untouched():
    body = [b"a", b"b"]

    def app(environ, start_response):
        start_response("200 OK", [])
        return body

    assert ExceptionsCatcher(app)({}, lambda status, headers, exc_info=None: None) is body


def test_exceptions_that_are_not_errors_pass_through():
    catcher = ExceptionsCatcher(failing_app(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        catcher({"REQUEST_METHOD": "GET"}, lambda *args: None)


def test_a_non_callable_app_is_refused_at_once():
    with pytest.raises(TypeError, match="WSGI callable"):
        ExceptionsCatcher("not an app")


def test_a_relayed_napixd_validation_answer_reads_as_the_root_text(napix_server_factory):
    far = napix_server_factory()
    far.route("/vm-ip/", status=400, body={"size": "Bad type: size has type unicode"})
    near = napix_server_factory(app=ExceptionsCatcher(calling_app(far.host, "/vm-ip/")))
    error = call(near, path="/allocate")
    assert error.remote_error["remote_status"] == 400
    assert error.remote_error["remote_error"] == {"size": "Bad type: size has type unicode"}
    assert str(error) == (f"GET {near.url}/allocate -> 500 (HTTPError) | "
                          f"GET {far.url}/vm-ip/ -> 400 | size: Bad type: size has type unicode")
