"""What napixclient's OpenTelemetry instrumentation costs (issue 14). By hand:

    python benchmarks/otel_overhead.py [--runs 7] [--requests 3000] [--batches 40]

Requests per second over one keep-alive connection to nginx on 127.0.0.1
(a ``ClientPool`` with ``simultaneous=1``, every request submitted at once,
as W1 does per host), each run in a fresh process, in three setups:

* ``absent``: OpenTelemetry cannot be imported (an import hook hides it, as
  if the ``otel`` extra were not installed);
* ``api``: ``opentelemetry.trace`` imported, so napixclient's
  instrumentation is on, but no SDK configured: the no-op path every
  program with the API but no SDK takes;
* ``sdk``: the SDK configured, every span sampled and handed to a span
  processor that drops it, and a meter provider with no reader: the cost of
  recording.

The setups take turns within each run, the order rotating between runs; the
medians of the runs are printed, with each setup's figure against
``absent``.

On a loaded machine a whole run's throughput swings by more than the
difference sought, so a finer comparison comes first: in one process with
the API imported and no SDK, batches of ``--batch`` requests alternate
between the instrumentation on and off (``napixclient.otel.uninstrument()``:
the path of a program without OpenTelemetry but for one attribute read),
and the medians of the batches are compared. Needs nginx (``apt-get install
-y nginx``) and the ``otel`` and ``test`` extras (``opentelemetry-api``,
``opentelemetry-sdk``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

from backends import Nginx  # noqa: E402

SETUPS = ("absent", "api", "sdk")
WARM_UP = 200

HIDE_OPENTELEMETRY = """
import importlib.abc, sys

class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


def prepare(setup: str) -> None:
    """Make this (child) process look like ``setup``."""
    if setup == "absent":
        exec(HIDE_OPENTELEMETRY, {})
    elif setup == "api":
        import opentelemetry.trace  # noqa: F401
    elif setup == "sdk":
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

        provider = TracerProvider()
        provider.add_span_processor(SpanProcessor())  # the base class drops spans
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider())
    else:
        raise ValueError(f"unknown setup {setup!r}; one of {SETUPS}")


def child(setup: str, port: int, requests: int) -> None:
    """Run the requests and print one JSON line of figures."""
    prepare(setup)
    from napixclient import ClientPool

    host = f"127.0.0.1:{port}"
    with ClientPool(simultaneous=1, timeout=30) as pool:
        for _ in range(WARM_UP):
            pool.request(host, "GET", "/json")
        pool.wait()
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(requests):
            pool.request(host, "GET", "/json")
        results = pool.wait()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert all(result.status == 200 for result in results), "a request failed"
    loaded = sorted(name for name in sys.modules if name == "napixclient.otel")
    print(json.dumps({"setup": setup, "rps": requests / seconds,
                      "cpu_us": cpu / requests * 1e6, "instrumented": bool(loaded)}))


def batches(port: int, size: int, count: int) -> None:
    """Alternate batches with the instrumentation on and off (API, no SDK);
    print one JSON line: the req/s and CPU us/req of each batch."""
    import opentelemetry.trace  # noqa: F401

    import napixclient.otel
    from napixclient import ClientPool

    host = f"127.0.0.1:{port}"
    figures: dict = {"on": [], "off": []}
    with ClientPool(simultaneous=1, timeout=30) as pool:
        for _ in range(WARM_UP):
            pool.request(host, "GET", "/json")
        pool.wait()
        for index in range(2 * count):
            setup = ("on", "off")[(index + index // 2) % 2]  # on off off on on off...
            if setup == "on":
                napixclient.otel.instrument()
            else:
                napixclient.otel.uninstrument()
            started, cpu = time.perf_counter(), time.process_time()
            for _ in range(size):
                pool.request(host, "GET", "/json")
            results = pool.wait()
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            assert all(result.status == 200 for result in results), "a request failed"
            figures[setup].append((size / seconds, cpu / size * 1e6))
    print(json.dumps(figures))


def run_child(setup: str, port: int, requests: int, *extra: str) -> dict:
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", setup, "--port", str(port),
         "--requests", str(requests), *extra],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT))
    if done.returncode != 0:
        raise RuntimeError(f"{setup} failed:\n{done.stdout}{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--setups", nargs="+", choices=SETUPS, default=list(SETUPS))
    parser.add_argument("--batch", type=int, default=500,
                        help="requests per batch of the in-process comparison")
    parser.add_argument("--batches", type=int, default=40,
                        help="batches on, and as many off (0: skip the comparison)")
    parser.add_argument("--child", choices=SETUPS + ("batches",), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "batches":
        batches(args.port, args.batch, args.batches)
        return 0
    if args.child:
        child(args.child, args.port, args.requests)
        return 0

    nginx = Nginx(1).start()
    figures: dict = {setup: [] for setup in args.setups}
    try:
        if args.batches:
            alternated = run_child("batches", nginx.ports[0], 0, "--batch", str(args.batch),
                                   "--batches", str(args.batches))
            on = [statistics.median(f[i] for f in alternated["on"]) for i in (0, 1)]
            off = [statistics.median(f[i] for f in alternated["off"]) for i in (0, 1)]
            print(f"Instrumentation on (API, no SDK) against off, in one process: medians "
                  f"of {args.batches} alternated batches of {args.batch} GETs each, one "
                  f"keep-alive connection to nginx:\n")
            print("| instrumentation | req/s | CPU us/req |")
            print("|---|---|---|")
            print(f"| off | {off[0]:,.0f} | {off[1]:.1f} |")
            print(f"| on, no SDK | {on[0]:,.0f} | {on[1]:.1f} |")
            print(f"| on / off | {on[0] / off[0]:.3f} | {on[1] / off[1]:.3f} |\n")
        for run in range(args.runs):
            order = args.setups[run % len(args.setups):] + args.setups[:run % len(args.setups)]
            for setup in order:
                result = run_child(setup, nginx.ports[0], args.requests)
                assert result["instrumented"] == (setup != "absent"), result
                figures[setup].append(result)
                print(f"run {run + 1}/{args.runs} {setup:6s} {result['rps']:8.0f} req/s "
                      f"{result['cpu_us']:6.1f} us CPU/req", file=sys.stderr)
    finally:
        nginx.stop()

    if not args.runs:
        return 0
    base = statistics.median(r["rps"] for r in figures.get("absent", [])) \
        if "absent" in figures else None
    print(f"\nMedians of {args.runs} interleaved runs, {args.requests} GETs each, "
          "one keep-alive connection to nginx:\n")
    print("| setup | req/s | CPU us/req | req/s vs absent |")
    print("|---|---|---|---|")
    for setup in args.setups:
        rps = statistics.median(r["rps"] for r in figures[setup])
        cpu = statistics.median(r["cpu_us"] for r in figures[setup])
        ratio = f"{rps / base:.3f}" if base else "n/a"
        print(f"| {setup} | {rps:,.0f} | {cpu:.1f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
