"""Instructions per request spent in each part of napixclient's request path,
without a socket, counted by valgrind.

cpu_per_request.py counts a whole request; this script counts the I/O-free
parts one at a time, each in a loop in a child process under ``valgrind
--tool=callgrind`` (twice, ``--small`` and ``--large`` loops: the
difference over ``large - small`` is the count per loop, free of the
start-up), so that a change to one part is measured on that part alone,
repeatably, whatever else the machine runs. By hand, never in CI:

    apt-get install -y valgrind
    python benchmarks/instructions_by_part.py                    # every part
    python benchmarks/instructions_by_part.py --parts parse_file parse_json
    python benchmarks/instructions_by_part.py --before /work/napix-before --parts parse_file

Parts (``--parts``):

* ``parse_json``, ``parse_file``: an answer of nginx read whole by
  :class:`~napixclient.core.parser.Reading` into an
  :class:`~napixclient.core.parser.Answer`: the ``/json`` answer (a bare
  head of 5 fields) and the ``/file.json`` one (8 fields: the head a real
  server sends), in one piece, as a ``recv`` gets them;
* ``prepare``: :meth:`BaseClient.prepare` of ``GET /json``;
* ``build``, ``build_signed``: :meth:`BaseClient.build` of that call,
  unsigned and with a :class:`~napixclient.authenticators.LoginAuthenticator`;
* ``attempts``: an :class:`~napixclient.core.client.Attempts` from its start
  to its :class:`~napixclient.Response` (``next``, ``answered``,
  ``result``), the answer already parsed;
* ``body``: the decoded body of a :class:`~napixclient.Response` of the
  ``/file.json`` answer (its ``Content-Type`` looked up, the JSON decoded);
* ``leases``: one :meth:`Leases.request` granted at once and its
  :meth:`Leases.release`, an idle connection handed over and taken back.

``--parser`` picks the parser (default: napixclient's). ``--before PATH``
also runs the parts from the checkout at PATH (those it has). The table is
printed in Markdown.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from typing import Any, Callable, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
_COLLECTED = re.compile(r"==\d+== Collected : (\d+)")

_BODY = b'{"status": "ok", "hosts": 20, "free": [1, 2, 3]}'
#: nginx's answers, as it sends them (backends.Nginx): /json, then /file.json.
ANSWER_JSON = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n"
               b"Date: Sun, 06 Dec 2026 07:46:05 GMT\r\nContent-Type: application/json\r\n"
               b"Content-Length: 48\r\nConnection: keep-alive\r\n\r\n" + _BODY)
ANSWER_FILE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n"
               b"Date: Sun, 06 Dec 2026 07:46:05 GMT\r\nContent-Type: application/json\r\n"
               b"Content-Length: 48\r\nLast-Modified: Sun, 06 Dec 2026 07:46:05 GMT\r\n"
               b"Connection: keep-alive\r\nETag: \"6b1512bd-30\"\r\nAccept-Ranges: bytes\r\n"
               b"\r\n" + _BODY)
PARTS = ["parse_json", "parse_file", "prepare", "build", "build_signed", "attempts", "body",
         "leases"]


# -- in the child -------------------------------------------------------------------

def _client(parser: Optional[str], signed: bool = False) -> Any:
    from napixclient.core.client import BaseClient, ClientOptions

    authenticator = None
    if signed:
        from napixclient.authenticators import LoginAuthenticator
        authenticator = LoginAuthenticator("root", "toor")
    return BaseClient("127.0.0.1:8080", ClientOptions(authenticator, simultaneous=4,
                                                      timeout=30.0, parser=parser))


def _answer(raw: bytes, parser: Optional[str]) -> Any:
    from napixclient.core.parser import Reading, check_parser

    reading = Reading("GET", 64 << 20, check_parser(parser))
    if not reading.feed(raw):
        raise SystemExit("the answer is not whole")
    return reading.answer()


def part(name: str, parser: Optional[str]) -> Callable[[], Any]:
    """The loop body that makes the part ``name`` (see the module).

    :raises SystemExit: for an unknown part, or one this checkout lacks.
    """
    try:
        return _part(name, parser)
    except (ImportError, AttributeError) as error:
        raise SystemExit(f"{name}: not in this checkout ({error})") from None


def _part(name: str, parser: Optional[str]) -> Callable[[], Any]:
    if name in ("parse_json", "parse_file"):
        from napixclient.core.parser import Reading, check_parser

        raw = ANSWER_JSON if name == "parse_json" else ANSWER_FILE
        engine = check_parser(parser)

        def parse() -> Any:
            reading = Reading("GET", 64 << 20, engine)
            reading.feed(raw)
            return reading.answer()
        return parse
    if name == "prepare":
        client = _client(parser)
        return lambda: client.prepare("GET", "/json")
    if name in ("build", "build_signed"):
        client = _client(parser, name == "build_signed")
        call = client.prepare("GET", "/json")
        return lambda: client.build(call)
    if name == "attempts":
        from napixclient.core.trace import Tracer

        client = _client(parser)
        call = client.prepare("GET", "/json")
        answer = _answer(ANSWER_FILE, parser)
        tracer = Tracer()

        def attempts() -> Any:
            run = client.attempts(call, tracer)
            run.next()
            run.answered(answer)
            return run.result()
        return attempts
    if name == "body":
        from napixclient.response import RequestRecord, Response

        answer = _answer(ANSWER_FILE, parser)
        record = RequestRecord("GET", "h", "http://h/json", "/json")
        return lambda: Response(answer.status, answer.reason, answer.headers,
                                answer.content, 0.001, record).body
    if name == "leases":
        from napixclient.core.leases import Grant, Leases

        leases = Leases(100, 5.0)
        key = ("http", "127.0.0.1", 8080)
        connection = object()
        first = leases.request(key, 4, "first", 0.0)[0]
        assert type(first) is Grant
        lease = first.lease
        lease.connection = connection
        leases.release(lease, 0.0)

        def lease_cycle() -> Any:
            actions = leases.request(key, 4, "w", 1.0)
            granted = actions[-1]
            assert type(granted) is Grant and granted.lease.connection is connection
            return leases.release(granted.lease, 1.0)
        return lease_cycle
    raise SystemExit(f"unknown part {name!r}")


def child(name: str, count: int, parser: Optional[str], checkout: str) -> None:
    """Run the part ``name`` ``count`` times (after 100 unmeasured).

    :raises SystemExit: when a module of napixclient came from elsewhere
        than ``checkout`` (an editable install of another checkout fills in
        the modules an older checkout lacks).
    """
    body = part(name, parser)
    where = os.path.realpath(os.path.join(checkout, "napixclient"))
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None) or ""
        if (module.__name__.split(".")[0] == "napixclient"
                and not os.path.realpath(path).startswith(where + os.sep)):
            raise SystemExit(f"{name}: not in this checkout ({module.__name__} is {path})")
    for _ in range(100 + count):
        body()


# -- in the parent ------------------------------------------------------------------

def count_instructions(name: str, count: int, parser: Optional[str], checkout: str) -> int:
    """Instructions the child executed (start-up included).

    :raises RuntimeError: when the child failed.
    """
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=checkout)
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
               sys.executable, os.path.abspath(__file__), "--child", name,
               "--count", str(count), "--checkout", checkout]
    if parser:
        command += ["--parser", parser]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=checkout,
                          timeout=1800)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{name} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1))


def commit_of(path: str) -> str:
    """The short commit of the checkout at ``path`` (or its folder's name)."""
    done = subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    return done.stdout.strip() or os.path.basename(os.path.abspath(path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", default=PARTS, choices=PARTS)
    parser.add_argument("--parser", default=None,
                        help="napixclient's parser (default: napixclient's default)")
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=6000)
    parser.add_argument("--before", metavar="PATH", help="also run the parts from there")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--checkout", default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.count, args.parser, args.checkout)
        return 0
    if args.large <= args.small or args.small < 1:
        parser.error("--large must be more than --small, and --small at least 1")
    checkouts = [("now", ROOT)]
    if args.before:
        checkouts.append((commit_of(args.before), os.path.abspath(args.before)))
    figures: Dict[str, Dict[str, Optional[float]]] = {}
    for name in args.parts:
        figures[name] = {}
        for label, checkout in checkouts:
            try:
                small = count_instructions(name, args.small, args.parser, checkout)
                large = count_instructions(name, args.large, args.parser, checkout)
            except RuntimeError as error:
                print(f"{name} @ {label}: {str(error).splitlines()[-1]}", file=sys.stderr)
                figures[name][label] = None
                continue
            figures[name][label] = (large - small) / (args.large - args.small)
            print(f"{name} @ {label}: {figures[name][label]:,.0f} instructions",
                  file=sys.stderr)
    labels: List[str] = [label for label, _ in checkouts]
    print(f"\nInstructions per loop (valgrind --tool=callgrind), {args.large} - {args.small} "
          f"loops, parser {args.parser or 'default'}:\n")
    print("| part | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for name, by_label in figures.items():
        cells = ["n/a" if by_label[label] is None else f"{by_label[label]:,.0f}"
                 for label in labels]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
