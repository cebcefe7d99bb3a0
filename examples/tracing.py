"""The spans of an orchestration, traced with OpenTelemetry across servers.

Starts three NapixTestServers on 127.0.0.1:

* an IP allocator, answering POST /vm-ip/;
* a filer, a plain WSGI app that makes volumes, and fails for a size it
  has no room for;
* an orchestrator, a plain WSGI app that asks both at once with a
  ClientPool, and answers what they said.

The filer and the orchestrator are wrapped in ExceptionsCatcher, which
continues the trace each request brings and writes the trace id into its
error documents. The script configures the OpenTelemetry SDK with the
console exporter, asks the orchestrator for two machines under a span of
its own, and prints every span as it ends: one trace per machine, across
the three servers. The second machine fails at the filer; its error chain
names the trace at each hop.

    pip install 'napixclient[otel]' opentelemetry-sdk
    python examples/tracing.py
"""

import json
import logging
import sys

try:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
except ImportError:
    print("This example needs the OpenTelemetry SDK: "
          "pip install 'napixclient[otel]' opentelemetry-sdk")
    sys.exit(0)

from napixclient import Client, ClientPool, HTTPError
from napixclient.authenticators import LoginAuthenticator
from napixclient.testing import NapixTestServer
from napixclient.wsgi import ExceptionsCatcher

USERS = {"root": "toor"}
AUTH = LoginAuthenticator("root", "toor")


def one_line(span):
    """The console exporter's format: one line per span."""
    attributes = span.attributes
    parent = f"{span.parent.span_id:016x}" if span.parent else "(root)".ljust(16)
    where = attributes.get("url.full") or attributes.get("url.path") or ""
    status = attributes.get("http.response.status_code", "")
    error = attributes.get("error.type")
    line = (f"  {span.kind.name:<8} {span.name:<12} span {span.context.span_id:016x} "
            f"parent {parent} {where} {status}" + (f" error.type={error}" if error else ""))
    return line.rstrip() + "\n"


def filer_app(environ, start_response):
    """POST /volumes/ {"size": ...}: a volume, or no room for "10T"."""
    size = json.loads(environ["wsgi.input"].read() or b"{}").get("size")
    if size == "10T":
        raise ValueError(f"no room for a volume of {size}")
    start_response("201 Created", [("Content-Type", "application/json")])
    return [json.dumps({"volume": "vol-42", "size": size}).encode()]


def orchestrator(ip_allocator, filer):
    """POST /vms/ {"disk": ...}: an IP and a volume, asked for at once."""
    def app(environ, start_response):
        disk = json.loads(environ["wsgi.input"].read() or b"{}").get("disk")
        with ClientPool(AUTH, timeout=10) as pool:
            pool.request(ip_allocator, "POST", "/vm-ip/", {"size": 1})
            pool.request(filer, "POST", "/volumes/", {"size": disk})
            ip, volume = pool.wait()
        for result in (ip, volume):
            if isinstance(result, HTTPError):
                raise result
        start_response("201 Created", [("Content-Type", "application/json")])
        return [json.dumps({"ip": ip.body["ip"], "volume": volume.body["volume"]}).encode()]
    return ExceptionsCatcher(app)


def main():
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(
        ConsoleSpanExporter(out=sys.stdout, formatter=one_line)))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("examples.tracing")
    # Each server logs the 500s it answers; this example shows the caller's side.
    logging.getLogger("napixclient.wsgi").setLevel(logging.CRITICAL)

    with NapixTestServer(users=USERS) as ip_allocator, \
            NapixTestServer(users=USERS, app=ExceptionsCatcher(filer_app)) as filer:
        ip_allocator.route("/vm-ip/", "POST", status=201, body={"ip": "10.0.0.7"})
        with NapixTestServer(users=USERS,
                             app=orchestrator(ip_allocator.host, filer.host)) as orchestra:
            print(f"IP allocator {ip_allocator.url}, filer {filer.url}, "
                  f"orchestrator {orchestra.url}\n")
            failure = None
            for disk in ("10G", "10T"):
                with tracer.start_as_current_span(f"deploy a vm, {disk}") as span:
                    trace_id = f"{span.get_span_context().trace_id:032x}"
                    print(f"trace {trace_id}: a machine with a {disk} disk")
                    with Client(orchestra.host, AUTH, timeout=10) as client:
                        try:
                            print(f"  -> {client.post('/vms/', {'disk': disk}).body}")
                        except HTTPError as error:
                            failure = error
                            print(f"  -> {error}")
                print()
    provider.shutdown()

    if failure is None:
        print("the 10T machine did not fail: nothing to show", file=sys.stderr)
        return 1
    print("The failure, hop by hop (error.format_chain()):")
    for line in failure.format_chain().splitlines():
        print(f"  {line}")
    if {hop.trace_id for hop in failure.chain} != {trace_id}:
        print("a hop does not name the trace", failure.chain, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
