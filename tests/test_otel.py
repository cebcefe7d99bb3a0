"""OpenTelemetry (issue 14): spans, the duration histogram and the trace
context, recorded with the SDK's in-memory exporter and metric reader over
real NapixTestServers on 127.0.0.1; and, in fresh processes, that nothing of
OpenTelemetry is imported when it is not installed or not used."""

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from napixclient import Client, ClientPool, ConnectionError, HTTPError, Timeout
from napixclient.authenticators import LoginAuthenticator, TokenIdentifier
from napixclient.chain import Hop, read_chain, write_document
from napixclient.testing import hmac_token
from napixclient.wsgi import ExceptionsCatcher
from tests.faultserver import FaultServer
from tests.helpers import AUTH, closed_port

ROOT = Path(__file__).resolve().parent.parent
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


class Recorded:
    """What the instrumentation recorded through the SDK."""

    def __init__(self, exporter, reader, tracer_provider, meter_provider):
        self.exporter = exporter
        self.reader = reader
        self.providers = (tracer_provider, meter_provider)
        self.tracer = tracer_provider.get_tracer("tests")

    def spans(self, kind=None):
        spans = self.exporter.get_finished_spans()
        return sorted((span for span in spans if kind is None or span.kind == kind),
                      key=lambda span: span.start_time)

    def durations(self):
        """``{frozenset(attributes.items()): (count, unit)}`` of the
        ``http.client.request.duration`` data points."""
        points = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == "http.client.request.duration":
                        for point in metric.data.data_points:
                            points[frozenset(point.attributes.items())] = (point.count,
                                                                           metric.unit)
        return points


@pytest.fixture
def otel():
    """The instrumentation on, with SDK providers of the test's own (the
    global ones are left alone); back to the global, no-op ones after."""
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import napixclient.otel

    exporter = InMemorySpanExporter()
    tracer_provider = sdk_trace.TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    napixclient.otel.instrument(tracer_provider, meter_provider)
    try:
        yield Recorded(exporter, reader, tracer_provider, meter_provider)
    finally:
        napixclient.otel.instrument()
        tracer_provider.shutdown()
        meter_provider.shutdown()


@pytest.fixture
def no_sdk():
    """The instrumentation on, with the API's global providers: no SDK."""
    pytest.importorskip("opentelemetry.trace")
    import napixclient.otel

    napixclient.otel.instrument()
    yield napixclient.otel


def kinds():
    from opentelemetry.trace import SpanKind, StatusCode

    return SpanKind, StatusCode


def traceparent(span):
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def relay_to(host, path, auth=AUTH):
    """A WSGI app that asks ``host`` for ``path``; a failure escapes to
    ExceptionsCatcher."""
    def app(environ, start_response):
        with Client(host, auth, timeout=10) as client:
            answer = client.get(path)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [answer.content]
    return ExceptionsCatcher(app)


def failing(error):
    def app(environ, start_response):
        raise error
    return ExceptionsCatcher(app)


# -- client spans -------------------------------------------------------------


def test_a_pool_of_three_signed_requests_under_a_span_gives_three_client_spans_children_of_it(
        otel, napix_server_factory):
    SpanKind, StatusCode = kinds()
    servers = [napix_server_factory() for _ in range(3)]
    for server in servers:
        server.route("/capacity", body={"free": 3})
    with otel.tracer.start_as_current_span("handler") as parent:
        with ClientPool(LoginAuthenticator("root", "toor"), timeout=10) as pool:
            for server in servers:
                pool.request(server.host, "GET", "/capacity")
            results = pool.wait()
    # Signed after the traceparent was added, and accepted.
    assert [result.status for result in results] == [200, 200, 200]
    spans = {span.attributes["server.port"]: span for span in otel.spans(SpanKind.CLIENT)}
    assert sorted(spans) == sorted(server.port for server in servers)
    for server in servers:
        span = spans[server.port]
        assert span.name == "GET"
        assert span.parent.span_id == parent.get_span_context().span_id
        assert span.context.trace_id == parent.get_span_context().trace_id
        assert dict(span.attributes) == {
            "http.request.method": "GET",
            "url.full": f"{server.url}/capacity",
            "server.address": "127.0.0.1",
            "server.port": server.port,
            "network.protocol.version": "1.1",
            "http.response.status_code": 200,
        }
        assert span.status.status_code == StatusCode.UNSET
        (seen,) = server.requests
        assert seen.login == "root"
        assert seen.headers["Traceparent"] == traceparent(span)


def test_a_lone_client_request_nests_under_the_current_span(otel, napix_server):
    SpanKind, _ = kinds()
    with otel.tracer.start_as_current_span("handler") as parent:
        with Client(napix_server.host, AUTH, timeout=10) as client:
            with pytest.raises(HTTPError):
                client.get("/")  # the test server's 404
    (span,) = otel.spans(SpanKind.CLIENT)
    assert span.parent.span_id == parent.get_span_context().span_id


def test_a_failed_request_span_has_error_type_and_the_status(otel, napix_server):
    SpanKind, StatusCode = kinds()
    napix_server.route("/slots/10", status=404, body="`10` not found")
    with Client(napix_server.host, AUTH, timeout=10) as client:
        with pytest.raises(HTTPError):
            client.get("/slots/10")
    (span,) = otel.spans(SpanKind.CLIENT)
    assert span.attributes["http.response.status_code"] == 404
    assert span.attributes["error.type"] == "404"
    assert span.status.status_code == StatusCode.ERROR


def test_a_request_without_an_answer_has_the_failure_class_as_error_type(otel, napix_server):
    SpanKind, StatusCode = kinds()
    napix_server.route("/slow", latency=5)
    with Client(f"127.0.0.1:{closed_port()}", timeout=5) as client:
        with pytest.raises(ConnectionError):
            client.get("/x")
    with Client(napix_server.host, AUTH, timeout=0.3) as client:
        with pytest.raises(Timeout):
            client.get("/slow")
    refused, late = otel.spans(SpanKind.CLIENT)
    for span, kind in ((refused, "ConnectionError"), (late, "Timeout")):
        assert span.attributes["error.type"] == kind
        assert "http.response.status_code" not in span.attributes
        assert span.status.status_code == StatusCode.ERROR


def test_a_retried_request_gives_one_span_per_attempt_each_sending_its_own_traceparent(otel):
    SpanKind, StatusCode = kinds()
    with FaultServer() as server:
        with otel.tracer.start_as_current_span("handler") as parent:
            with Client(server.host, retries=1, timeout=5) as client:
                assert client.get("/flaky?fail=1&key=otel").status == 200
        sent = [dict(seen.fields)["traceparent"] for seen in server.requests]
    first, second = otel.spans(SpanKind.CLIENT)
    for span in (first, second):
        assert span.name == "GET"
        assert span.parent.span_id == parent.get_span_context().span_id
    assert first.attributes["error.type"] == "ConnectionError"
    assert first.status.status_code == StatusCode.ERROR
    assert "http.request.resend_count" not in first.attributes
    assert second.attributes["http.request.resend_count"] == 1
    assert second.attributes["http.response.status_code"] == 200
    assert "error.type" not in second.attributes
    assert first.end_time <= second.start_time
    # Each attempt is signed anew, with its own span's traceparent.
    assert sent == [traceparent(first), traceparent(second)]
    measured = otel.durations()
    assert sum(count for count, _ in measured.values()) == 2


def test_a_retried_request_made_outside_any_span_is_one_trace(otel):
    SpanKind, _ = kinds()
    with FaultServer() as server:
        with Client(server.host, retries=1, timeout=5) as client:
            client.get("/flaky?fail=1&key=root")
    first, second = otel.spans(SpanKind.CLIENT)
    assert first.parent is None
    assert second.parent.span_id == first.context.span_id
    assert second.context.trace_id == first.context.trace_id


def test_each_attempt_is_measured_in_http_client_request_duration(otel, napix_server):
    napix_server.route("/ok", body={"ok": True})
    napix_server.route("/missing", status=404, body="no")
    with Client(napix_server.host, AUTH, timeout=10) as client:
        client.get("/ok")
        client.get("/ok")
        with pytest.raises(HTTPError):
            client.get("/missing")
    common = {"http.request.method": "GET", "server.address": "127.0.0.1",
              "server.port": napix_server.port, "network.protocol.version": "1.1"}
    assert otel.durations() == {
        frozenset({**common, "http.response.status_code": 200}.items()): (2, "s"),
        frozenset({**common, "http.response.status_code": 404,
                   "error.type": "404"}.items()): (1, "s"),
    }


def test_a_traceparent_the_caller_set_itself_is_sent_as_it_is(otel, napix_server):
    SpanKind, _ = kinds()
    mine = f"00-{TRACE_ID}-{SPAN_ID}-01"
    with otel.tracer.start_as_current_span("handler"):
        with Client(napix_server.host, AUTH, timeout=10) as client:
            with pytest.raises(HTTPError):
                client.get("/", headers={"TraceParent": mine})
    (seen,) = napix_server.requests
    assert seen.headers["Traceparent"] == mine
    assert len(otel.spans(SpanKind.CLIENT)) == 1


def test_an_unknown_method_is_recorded_as_other(otel, napix_server):
    SpanKind, _ = kinds()
    napix_server.route("/x", body="ok")
    with Client(napix_server.host, AUTH, timeout=10) as client:
        client.request("PURGE", "/x")
    (span,) = otel.spans(SpanKind.CLIENT)
    assert span.name == "HTTP"
    assert span.attributes["http.request.method"] == "_OTHER"
    assert span.attributes["http.request.method_original"] == "PURGE"


# -- across servers ---------------------------------------------------------------


def test_a_chain_of_three_catcher_servers_is_one_trace_with_the_trace_id_on_each_hop(
        otel, napix_server_factory, caplog):
    SpanKind, StatusCode = kinds()
    caplog.set_level("CRITICAL", logger="napixclient.wsgi")
    c = napix_server_factory(app=failing(KeyError("slot 10")))
    b = napix_server_factory(app=relay_to(c.host, "/slots/10"))
    a = napix_server_factory(app=relay_to(b.host, "/vms/10"))
    with otel.tracer.start_as_current_span("caller") as root:
        with Client(a.host, AUTH, timeout=10) as client:
            with pytest.raises(HTTPError) as caught:
                client.post("/vms/10/start")
    trace_id = root.get_span_context().trace_id
    spans = otel.spans()
    assert {span.context.trace_id for span in spans} == {trace_id}
    # caller -> client -> server A -> client -> server B -> client -> server C
    by_id = {span.context.span_id: span for span in spans}
    servers = {span.attributes["server.port"]: span for span in otel.spans(SpanKind.SERVER)}
    assert sorted(servers) == sorted([a.port, b.port, c.port])
    walk, span = [], servers[c.port]
    while span is not None:
        walk.append((span.kind, span.attributes.get("server.port")))
        span = by_id.get(span.parent.span_id) if span.parent else None
    assert walk == [(SpanKind.SERVER, c.port), (SpanKind.CLIENT, c.port),
                    (SpanKind.SERVER, b.port), (SpanKind.CLIENT, b.port),
                    (SpanKind.SERVER, a.port), (SpanKind.CLIENT, a.port),
                    (SpanKind.INTERNAL, None)]
    for server in servers.values():
        assert server.attributes["http.response.status_code"] == 500
        assert server.attributes["error.type"] == "500"
        assert server.status.status_code == StatusCode.ERROR
    error = caught.value
    hops = error.chain
    assert [hop.call for hop in hops] == [f"POST {a.url}/vms/10/start",
                                          f"GET {b.url}/vms/10", f"GET {c.url}/slots/10"]
    assert [hop.trace_id for hop in hops] == [f"{trace_id:032x}"] * 3
    assert [hop.span_id for hop in hops] == [
        f"{servers[port].context.span_id:016x}" for port in (a.port, b.port, c.port)]
    assert error.root.error_class == "KeyError"
    lines = error.format_chain().splitlines()
    assert lines[:3] == [
        f"hop 0: POST {a.url}/vms/10/start -> 500 (HTTPError) [trace {trace_id:032x}]",
        f"hop 1: GET {b.url}/vms/10 -> 500 (HTTPError) [trace {trace_id:032x}]",
        f"hop 2: GET {c.url}/slots/10 -> 500 (KeyError) [trace {trace_id:032x}]",
    ]
    # str(err), the one-line form for logs, is unchanged.
    assert "trace" not in str(error)


def test_a_streamed_body_that_fails_is_answered_in_the_request_trace(otel, napix_server_factory,
                                                                       caplog):
    SpanKind, _ = kinds()
    caplog.set_level("CRITICAL", logger="napixclient.wsgi")

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b""
        raise ValueError("disk full")
    server = napix_server_factory(app=ExceptionsCatcher(app))
    with otel.tracer.start_as_current_span("caller"):
        with Client(server.host, AUTH, timeout=10) as client:
            with pytest.raises(HTTPError) as caught:
                client.get("/stream")
    (served,) = otel.spans(SpanKind.SERVER)
    assert served.attributes["http.response.status_code"] == 500
    assert served.attributes["url.path"] == "/stream"
    document = caught.value.remote_error
    assert document["trace_id"] == f"{served.context.trace_id:032x}"
    assert document["span_id"] == f"{served.context.span_id:016x}"


def test_without_an_sdk_a_trace_that_came_in_is_passed_on_and_written(
        no_sdk, napix_server_factory, caplog):
    caplog.set_level("CRITICAL", logger="napixclient.wsgi")
    c = napix_server_factory(app=failing(KeyError("slot 10")))
    b = napix_server_factory(app=relay_to(c.host, "/slots/10"))
    with Client(b.host, AUTH, timeout=10) as client:
        with pytest.raises(HTTPError) as caught:
            client.get("/vms/10", headers={"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01"})
    # No span is recorded anywhere: B passes the context it was given on.
    assert c.requests[0].headers["Traceparent"] == f"00-{TRACE_ID}-{SPAN_ID}-01"
    assert [(hop.trace_id, hop.span_id) for hop in caught.value.chain] == [
        (TRACE_ID, SPAN_ID), (TRACE_ID, SPAN_ID)]


def test_without_an_sdk_and_no_trace_nothing_is_added(no_sdk, napix_server_factory, caplog):
    caplog.set_level("CRITICAL", logger="napixclient.wsgi")
    server = napix_server_factory(app=failing(KeyError("slot 10")))
    with ClientPool(AUTH, timeout=10) as pool:
        pool.request(server.host, "GET", "/x")
        (error,) = pool.wait()
    assert "Traceparent" not in server.requests[0].headers
    assert "trace_id" not in error.remote_error


def test_uninstrument_turns_spans_and_headers_off_and_instrument_back_on(otel, napix_server):
    SpanKind, _ = kinds()
    import napixclient.otel

    napix_server.route("/x", body="ok")
    with otel.tracer.start_as_current_span("handler"):
        with Client(napix_server.host, AUTH, timeout=10) as client:
            napixclient.otel.uninstrument()
            assert not napixclient.otel.is_instrumented()
            client.get("/x")
            assert otel.spans(SpanKind.CLIENT) == []
            napixclient.otel.instrument(*otel.providers)
            client.get("/x")
    assert len(otel.spans(SpanKind.CLIENT)) == 1
    off, on = napix_server.requests
    assert "Traceparent" not in off.headers
    assert "Traceparent" in on.headers


# -- secrets ------------------------------------------------------------------------


def test_no_key_token_or_signature_in_any_span_attribute_event_or_measurement(
        otel, napix_server_factory, caplog):
    caplog.set_level("CRITICAL", logger="napixclient.wsgi")
    key = "k3y-0f-r00t-do-not-show"
    token = hmac_token("tok", "t0ken-key-do-not-show")
    signed = napix_server_factory(users={"root": key})
    signed.route("/ok", body={"ok": True})
    signed.route("/fail", status=500, body={"error_class": "E", "error_text": "x"})
    by_token = napix_server_factory(users={"tok": "t0ken-key-do-not-show"},
                                    app=relay_to(signed.host, "/fail",
                                                 LoginAuthenticator("root", key)))
    with otel.tracer.start_as_current_span("caller"):
        with ClientPool(LoginAuthenticator("root", key), timeout=10) as pool:
            pool.request(signed.host, "GET", "/ok", params={"q": "1"})
            pool.request(signed.host, "GET", "/fail")
            pool.wait()
        with Client(by_token.host, TokenIdentifier(token), timeout=10) as client:
            with pytest.raises(HTTPError):
                client.get("/relay", params={"q": "2"})
        with Client(signed.host, LoginAuthenticator("root", "wrong-k3y-do-not-show"),
                    timeout=10) as client:
            with pytest.raises(HTTPError):
                client.get("/ok")
    signatures = {seen.headers["Authorization"].rpartition(":")[2]
                  for seen in signed.requests}
    assert len(signatures) == 4
    secrets = [key, "wrong-k3y-do-not-show", "t0ken-key-do-not-show", token,
               token.split(":")[1], *signatures]
    spans = otel.spans()
    assert len(spans) == 7  # caller, 4 client spans, by_token's server span and its call
    shown = []
    for span in spans:
        shown.append(span.name)
        shown.append(repr(dict(span.attributes)))
        shown.append(str(span.status.description))
        for event in span.events:
            shown.append(event.name + repr(dict(event.attributes)))
    shown.append(repr(otel.durations()))
    text = "\n".join(shown)
    for secret in secrets:
        assert secret not in text
    assert f"{by_token.url}/relay?q=2&token=***" in text


# -- the error document ------------------------------------------------------------------


def test_read_chain_takes_valid_trace_ids_and_ignores_anything_else():
    document = {"error_class": "HTTPError", "error_text": "x", "trace_id": TRACE_ID,
                "span_id": SPAN_ID, "remote_call": "GET http://c/y",
                "remote_error": {"error_class": "KeyError", "error_text": "y",
                                 "trace_id": "0" * 32, "span_id": SPAN_ID}}
    first, second = read_chain("GET http://b/x", 500, document)
    assert (first.trace_id, first.span_id) == (TRACE_ID, SPAN_ID)
    assert (second.trace_id, second.span_id) == (None, SPAN_ID)
    for hostile in (TRACE_ID.upper(), TRACE_ID + "0", "\x1b[31m" + TRACE_ID[8:], 42,
                    ["x"], None):
        (hop,) = read_chain("GET http://b/x", 500, {"error_class": "E", "trace_id": hostile})
        assert hop.trace_id is None


def test_write_document_writes_trace_ids_only_when_valid():
    assert write_document("E", "x", trace_id=TRACE_ID, span_id=SPAN_ID) == {
        "error_class": "E", "error_text": "x", "trace_id": TRACE_ID, "span_id": SPAN_ID}
    assert write_document("E", "x", trace_id="nope", span_id=SPAN_ID) == {
        "error_class": "E", "error_text": "x"}
    assert write_document("E", "x", trace_id=TRACE_ID, span_id="0" * 16) == {
        "error_class": "E", "error_text": "x", "trace_id": TRACE_ID}


def test_a_hop_of_four_fields_still_works():
    hop = Hop("GET http://b/y", 500, "HTTPError", "boom")
    assert (hop.trace_id, hop.span_id) == (None, None)
    assert hop == Hop("GET http://b/y", 500, "HTTPError", "boom", None, None)
    assert pickle.loads(pickle.dumps(hop)) == hop
    assert str(hop) == "GET http://b/y -> 500 (HTTPError)"


def test_a_validation_document_with_a_span_id_is_an_error_document():
    (hop,) = read_chain("GET http://b/x", 400, {"size": "bad", "span_id": SPAN_ID})
    assert hop.error_text is None
    assert hop.span_id == SPAN_ID


# -- imports, in fresh processes --------------------------------------------------------

SCENARIO = """
import json, sys
from napixclient import Client, ClientPool, HTTPError
from napixclient.testing import NapixTestServer
from napixclient.wsgi import ExceptionsCatcher
import logging
logging.getLogger("napixclient.wsgi").setLevel(logging.CRITICAL)

def failing(environ, start_response):
    raise KeyError("slot 10")

def run():
    with NapixTestServer(app=ExceptionsCatcher(failing)) as server:
        server.route("/ok", body={"ok": True})
        with ClientPool({"login": "root", "key": "toor"}, timeout=10) as pool:
            pool.request(server.host, "GET", "/ok")
            pool.request(server.host, "GET", "/boom")
            ok, error = pool.wait()
        assert ok.status == 200 and isinstance(error, HTTPError), (ok, error)
        assert error.root.error_class == "KeyError"
        with Client(server.host, {"login": "root", "key": "toor"}, timeout=10) as client:
            assert client.get("/ok").body == {"ok": True}
        return server.requests, error

def loaded():
    return sorted(name for name in sys.modules
                  if name.startswith("opentelemetry") or name == "napixclient.otel")
"""

BLOCKER = """
import importlib.abc, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
"""


def run_python(code, **env):
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), **env))
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_without_the_extra_nothing_opentelemetry_is_imported_and_all_works():
    report = run_python(BLOCKER + SCENARIO + """
requests, error = run()
try:
    import napixclient.otel
except ImportError as missing:
    hint = str(missing)
print(json.dumps({"loaded": loaded(), "hint": hint,
                  "trace_id": "trace_id" in error.remote_error,
                  "traceparent": any("Traceparent" in r.headers for r in requests)}))
""")
    assert report == {"loaded": [], "trace_id": False, "traceparent": False,
                      "hint": report["hint"]}
    assert "pip install 'napixclient[otel]'" in report["hint"]


def test_with_the_api_installed_nothing_is_imported_until_the_program_imports_it():
    pytest.importorskip("opentelemetry.trace")
    report = run_python(SCENARIO + """
run()
before = loaded()
import opentelemetry.trace
run()
print(json.dumps({"before": before, "after": "napixclient.otel" in loaded()}))
""")
    assert report == {"before": [], "after": True}


def test_the_disable_variable_keeps_the_instrumentation_off():
    pytest.importorskip("opentelemetry.trace")
    report = run_python(SCENARIO + """
from opentelemetry import context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
incoming = SpanContext(int("%s", 16), int("%s", 16), is_remote=True,
                       trace_flags=TraceFlags(1))
token = context.attach(trace.set_span_in_context(NonRecordingSpan(incoming)))
requests, error = run()
import napixclient.otel
print(json.dumps({"on": napixclient.otel.is_instrumented(),
                  "traceparent": any("Traceparent" in r.headers for r in requests)}))
""" % (TRACE_ID, SPAN_ID), OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="urllib3, napixclient")
    assert report == {"on": False, "traceparent": False}
