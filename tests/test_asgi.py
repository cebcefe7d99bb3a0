"""napixclient.asgi.ExceptionsCatcher under a real uvicorn on 127.0.0.1 (in
a thread of the test process, with its own asyncio loop), called with the
gevent Client: plain ASGI and Starlette applications, a chain A (ASGI) -> B
(WSGI) -> C read hop by hop, and the trace carried with OpenTelemetry."""

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time

import gevent
import pytest

from napixclient import Client, ConnectionError, HTTPError
from napixclient.asgi import ExceptionsCatcher
from napixclient.wsgi import ExceptionsCatcher as WSGICatcher
from tests.helpers import AUTH

uvicorn = pytest.importorskip("uvicorn")

LOGGER = "napixclient.asgi"
#: Seconds uvicorn may take to start or to stop.
STARTUP = 10.0


@contextlib.contextmanager
def running_uvicorn(app, lifespan="auto"):
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port, bound here) in a
    thread; yield its ``"127.0.0.1:PORT"``; stop it on exit."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan=lifespan, log_config=None, log_level="critical",
                            access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            gevent.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        deadline = time.monotonic() + STARTUP
        while thread.is_alive() and time.monotonic() < deadline:
            gevent.sleep(0.01)  # the hub keeps serving the WSGI servers meanwhile
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


def call(host, method="GET", path="/boom", timeout=10):
    """Call ``host`` and return the HTTPError it answers with."""
    with Client(host, AUTH, timeout=timeout) as client:
        with pytest.raises(HTTPError) as caught:
            client.request(method, path)
    return caught.value


def fetch(host, path):
    """``host``'s answer to GET ``path`` with the gevent Client, from a
    thread of the executor (its own gevent hub): what an async handler does
    with a blocking client. A failure escapes as the HTTPError."""
    with Client(host, AUTH, timeout=10) as client:
        return client.get(path).body


async def send_json(send, status, body):
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def plain_app(events=None, next_host=None):
    """A plain ASGI application: its paths fail in each way the middleware
    must answer; /relay asks ``next_host`` for /slots/10."""
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].split(".")[-1]  # startup, shutdown
                events.append(kind)
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        path = scope["path"]
        if path == "/ok":
            await send_json(send, 200, {"ok": True})
        elif path == "/relay":
            body = await asyncio.to_thread(fetch, next_host, "/slots/10")
            await send_json(send, 200, body)
        elif path == "/started-then-boom":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain")]})
            raise ValueError("late")
        elif path == "/mid-body":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
            raise ValueError("mid-body")
        else:
            raise KeyError("size")
    return app


def starlette_app(next_host=None, show_traceback=False):
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def boom(request):
        raise KeyError("size")

    async def relay(request):
        return JSONResponse(await asyncio.to_thread(fetch, next_host, "/slots/10"))

    return Starlette(routes=[Route("/boom", boom, methods=["GET", "POST"]),
                             Route("/relay", relay)],
                     middleware=[Middleware(ExceptionsCatcher, show_traceback=show_traceback)])


@pytest.fixture
def quiet_logs(caplog):
    """The failures the middleware logs, kept from the test's output."""
    caplog.set_level(logging.CRITICAL + 1, logger=LOGGER)
    return caplog


def wsgi_relay(next_host):
    """B: a WSGI app calling ``next_host``, wrapped in the WSGI catcher."""
    def app(environ, start_response):
        with Client(next_host, AUTH, timeout=10) as client:
            client.get("/slots/10")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"unreachable"]
    return WSGICatcher(app)


# -- a plain ASGI application -----------------------------------------------------------


def test_an_escaping_exception_becomes_a_500_napix_document(quiet_logs):
    with running_uvicorn(ExceptionsCatcher(plain_app())) as host:
        error = call(host, "POST", "/vm-ip/?size=1&token=s3cret")
    assert error.status == 500
    assert error.response.headers["Content-Type"] == "application/json"
    assert error.remote_error == {"error_class": "KeyError", "error_text": "'size'",
                                  "request": {"method": "POST", "path": "/vm-ip/"}}
    assert str(error) == f"POST http://{host}/vm-ip/?size=1&token=*** -> 500 (KeyError)" \
                         " | 'size'"
    assert b"s3cret" not in error.response.content


def test_tracebacks_leave_only_with_show_traceback(quiet_logs):
    with running_uvicorn(ExceptionsCatcher(plain_app())) as quiet, \
            running_uvicorn(ExceptionsCatcher(plain_app(), show_traceback=True)) as loud:
        hidden, shown = call(quiet), call(loud)
    assert not {"traceback", "filename", "line"} & set(hidden.remote_error)
    assert __file__.encode() not in hidden.response.content
    assert shown.remote_error["filename"] == __file__
    assert shown.remote_error["traceback"][-1] == {
        "filename": __file__, "line": shown.remote_error["line"], "in": "app",
        "call": 'raise KeyError("size")'}


def test_a_failure_after_the_start_but_before_the_body_still_gets_the_document(quiet_logs):
    with running_uvicorn(ExceptionsCatcher(plain_app())) as host:
        error = call(host, path="/started-then-boom")
    assert error.status == 500
    assert error.remote_error["error_class"] == "ValueError"


def test_a_failure_mid_body_is_logged_and_cuts_the_connection(caplog):
    caplog.set_level(logging.ERROR, logger=LOGGER)  # uvicorn's own log is at CRITICAL
    with running_uvicorn(ExceptionsCatcher(plain_app())) as host:
        error = call(host, path="/mid-body")
        with Client(host, AUTH, timeout=10) as client:
            assert client.get("/ok").body == {"ok": True}  # the server still serves
    assert isinstance(error, ConnectionError), repr(error)
    assert error.status is None
    records = [r for r in caplog.records if r.name == LOGGER]
    assert [r.getMessage() for r in records] == [
        "GET /mid-body failed after its response started; cutting the connection"]
    assert records[0].exc_info[0] is ValueError


def test_a_head_request_gets_a_500_without_a_body(quiet_logs):
    with running_uvicorn(ExceptionsCatcher(plain_app())) as host:
        error = call(host, "HEAD", "/boom")
    assert error.status == 500
    assert error.response.content == b""
    assert error.response.headers["Content-Type"] == "application/json"


def test_a_successful_answer_and_the_lifespan_pass_through():
    events = []
    with running_uvicorn(ExceptionsCatcher(plain_app(events)), lifespan="on") as host:
        assert events == ["startup"]
        with Client(host, AUTH, timeout=10) as client:
            answer = client.get("/ok")
    assert (answer.status, answer.body) == (200, {"ok": True})
    assert answer.headers["Content-Length"] == "12"
    assert events == ["startup", "shutdown"]


@pytest.mark.parametrize("kind", ["websocket", "lifespan", "something-else"])
def test_connections_other_than_http_reach_the_app_untouched(kind):
    seen = []

    async def app(scope, receive, send):
        seen.append((scope, receive, send))
        raise KeyError("not ours to answer")

    async def receive():
        return {"type": "websocket.connect"}

    async def send(message):
        raise AssertionError("the middleware sent a message")

    scope = {"type": kind, "path": "/ws"}
    with pytest.raises(KeyError):
        asyncio.run(ExceptionsCatcher(app)(scope, receive, send))
    assert len(seen) == 1 and seen[0][0] is scope
    assert seen[0][1] is receive and seen[0][2] is send


def test_a_non_callable_app_is_refused_at_once():
    with pytest.raises(TypeError, match="app must be an ASGI application"):
        ExceptionsCatcher("app:main")


# -- Starlette, and a chain A (ASGI) -> B (WSGI) -> C --------------------------------------


@pytest.mark.parametrize("show_traceback", [False, True])
def test_a_starlette_app_gets_the_document_from_its_middleware(quiet_logs, show_traceback):
    pytest.importorskip("starlette")
    with running_uvicorn(starlette_app(show_traceback=show_traceback)) as host:
        error = call(host, "POST", "/boom?zone=eu")
    assert error.status == 500
    assert error.remote_error["error_class"] == "KeyError"
    assert error.remote_error["request"] == {"method": "POST", "path": "/boom"}
    assert ("traceback" in error.remote_error) is show_traceback


@pytest.mark.parametrize("kind", ["plain", "starlette"])
def test_a_chain_asgi_to_wsgi_to_a_failing_server_reads_hop_by_hop(
        napix_server_factory, quiet_logs, kind):
    if kind == "starlette":
        pytest.importorskip("starlette")
    logging.getLogger("napixclient.wsgi").setLevel(logging.CRITICAL + 1)
    c = napix_server_factory()
    c.route("/slots/10", status=404, body="`10` not found")
    b = napix_server_factory(app=wsgi_relay(c.host))
    app = ExceptionsCatcher(plain_app(next_host=b.host)) if kind == "plain" \
        else starlette_app(next_host=b.host)
    try:
        with running_uvicorn(app) as a:
            error = call(a, path="/relay")
    finally:
        logging.getLogger("napixclient.wsgi").setLevel(logging.NOTSET)
    assert [(hop.call, hop.status, hop.error_class) for hop in error.chain] == [
        (f"GET http://{a}/relay", 500, "HTTPError"),
        (f"GET {b.url}/slots/10", 500, "HTTPError"),
        (f"GET {c.url}/slots/10", 404, None),
    ]
    assert error.root.error_text == "`10` not found"
    assert error.remote_error["remote_call"] == f"GET {b.url}/slots/10"
    assert error.remote_error["remote_status"] == 500
    assert error.format_chain().splitlines()[-1] == "root cause: `10` not found"


# -- OpenTelemetry: the incoming trace continued, its ids written -------------------------


@pytest.fixture
def otel():
    """The instrumentation on with an SDK tracer provider of the test's own,
    its finished spans in memory; back to the global providers after."""
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import napixclient.otel

    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    napixclient.otel.instrument(provider)
    try:
        yield provider.get_tracer("tests"), exporter
    finally:
        napixclient.otel.instrument()
        provider.shutdown()


def test_the_incoming_trace_is_continued_and_its_ids_written_on_every_hop(
        otel, napix_server_factory, quiet_logs):
    from opentelemetry.trace import SpanKind, StatusCode

    tracer, exporter = otel
    logging.getLogger("napixclient.wsgi").setLevel(logging.CRITICAL + 1)
    c = napix_server_factory()
    c.route("/slots/10", status=404, body="`10` not found")
    b = napix_server_factory(app=wsgi_relay(c.host))
    try:
        with running_uvicorn(ExceptionsCatcher(plain_app(next_host=b.host))) as a:
            with tracer.start_as_current_span("caller") as caller:
                error = call(a, path="/relay?token=s3cret")
    finally:
        logging.getLogger("napixclient.wsgi").setLevel(logging.NOTSET)
    trace_id = f"{caller.get_span_context().trace_id:032x}"
    servers = [span for span in exporter.get_finished_spans() if span.kind == SpanKind.SERVER]
    (asgi_span,) = [span for span in servers if span.attributes.get("url.path") == "/relay"]
    assert {f"{span.context.trace_id:032x}" for span in servers} == {trace_id}
    assert [hop.trace_id for hop in error.chain[:2]] == [trace_id, trace_id]
    assert error.chain[0].span_id == f"{asgi_span.context.span_id:016x}"
    assert error.remote_error["trace_id"] == trace_id
    attributes = dict(asgi_span.attributes)
    assert attributes["http.request.method"] == "GET"
    assert attributes["server.port"] == int(a.rsplit(":", 1)[1])
    assert attributes["http.response.status_code"] == 500
    assert asgi_span.status.status_code == StatusCode.ERROR
    assert "s3cret" not in repr(attributes)
