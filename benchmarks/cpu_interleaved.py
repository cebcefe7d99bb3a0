"""CPU time per request, every client in one process, in interleaved batches.

valgrind's instruction counts (cpu_per_request.py) are repeatable, but they
leave out the kernel and they count what valgrind's virtual CPU runs: under
valgrind OpenSSL sees no SHA extensions, so an HMAC costs there several
times what it costs natively. This script measures what a process pays, user
and system CPU (:func:`time.process_time`), with the run-to-run drift of a
shared machine taken out by interleaving: every client holds one keep-alive
connection to the same nginx, and the clients take turns, a batch of
``--batch`` requests each, ``--batches`` times, the order rotating. Each
client's figure is the median of its batches; the ratios are against
napixclient unsigned. By hand, never in CI:

    apt-get install -y nginx
    python benchmarks/cpu_interleaved.py                       # about 1 minute
    python benchmarks/cpu_interleaved.py --batches 60 --batch 500

Clients: as in cpu_per_request.py (napixclient, napixclient_signed,
napixclient_token, napixclient_callable, geventhttpclient, floor). nginx
listens on 127.0.0.1 only and is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

import cpu_per_request  # noqa: E402
from backends import Nginx  # noqa: E402
from cpu_per_request import CLIENTS, PATHS, one_request, print_table  # noqa: E402

OneRequest = Callable[[], Tuple[int, Any]]


def batch(one: OneRequest, count: int) -> float:
    """CPU seconds ``count`` requests took; raises on a bad answer."""
    started = time.process_time()
    for _ in range(count):
        status, body = one()
        if status != 200 or body.get("status") != "ok":
            raise RuntimeError(f"unexpected answer {status} {body!r}")
    return time.process_time() - started


def interleave(ones: Dict[str, OneRequest], batches: int, size: int) -> Dict[str, float]:
    """CPU microseconds per request of each ``one()``: ``batches`` turns,
    each a batch of ``size`` requests per client, the order rotating; the
    median of each client's batches."""
    seconds: Dict[str, List[float]] = {name: [] for name in ones}
    names = list(ones)
    for turn in range(batches):
        shift = turn % len(names)
        for name in names[shift:] + names[:shift]:
            seconds[name].append(batch(ones[name], size))
    return {name: statistics.median(values) / size * 1e6 for name, values in seconds.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", nargs="+", default=CLIENTS, choices=CLIENTS)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch", type=int, default=300, help="requests per batch")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--path", choices=PATHS, default="/json",
                        help="/json (a bare head) or /file.json (nginx's static file)")
    args = parser.parse_args()
    cpu_per_request.PATH = args.path
    if args.batches < 1 or args.batch < 1 or args.warmup < 0:
        parser.error("--batches and --batch must be >= 1, --warmup >= 0")
    nginx = Nginx(1).start()
    try:
        port = nginx.ports[0]
        ones = {client: one_request(client, port) for client in args.clients}
        for one in ones.values():
            batch(one, args.warmup)
        per_request = interleave(ones, args.batches, args.batch)
    finally:
        nginx.stop()
    print(f"CPU per request (user + system), one keep-alive connection each to one "
          f"nginx ({args.path}), medians of {args.batches} interleaved batches of {args.batch}:\n")
    print_table(per_request, "CPU us/req", "{:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
