"""Instructions per request on one keep-alive connection, counted by valgrind.

CPU time on a shared machine moves by 10-20% from one run to the next;
the count of instructions a process executes does not (a fraction of a
percent here), so this is the measure for comparing the CPU one request
costs in two versions of napixclient, or in two of its configurations. By
hand, never in CI (each client takes about a minute under callgrind):

    apt-get install -y nginx valgrind
    python benchmarks/cpu_per_request.py                      # every client
    python benchmarks/cpu_per_request.py --clients napixclient napixclient_signed
    python benchmarks/cpu_per_request.py --before /work/napix-before   # and an older checkout

nginx answers a small JSON document on 127.0.0.1 in its own process
(``--path``: ``/json``, from memory with a bare head, the default; or
``/file.json``, a static file, whose head carries what a real server sends:
Last-Modified, ETag, Accept-Ranges); each client runs in a child process under ``valgrind
--tool=callgrind``, so only the client's own instructions are counted (its
system calls are not: a ``sendall`` costs the same to every client). A
child makes ``--warmup`` requests, then ``count`` more, one after the other
on one connection, reading each answer whole and decoding its JSON. Each
client is run twice, with ``count`` = ``--small`` and ``--large``: the
difference of the two totals divided by ``large - small`` is the count per
request, free of the start-up (interpreter, imports, first connection).

Clients (``--clients``):

* ``napixclient``: a :class:`napixclient.Client`, no authenticator;
* ``napixclient_signed``: with a :class:`~napixclient.authenticators.LoginAuthenticator`
  (what Napix users run);
* ``napixclient_token``: with a :class:`~napixclient.authenticators.TokenIdentifier`;
* ``napixclient_callable``: with a plain ``auth(request) -> request``
  callable setting a header (the requests-style path);
* ``geventhttpclient``: geventhttpclient's own ``HTTPClient``, the peer to beat;
* ``floor``: a gevent socket, ``sendall`` of fixed bytes and ``recv`` of the
  whole answer, then :func:`json.loads`: what no client avoids.

``--parser NAME`` runs the napixclient clients with that parser (default:
napixclient's default). ``--before PATH`` adds each napixclient client run
from the checkout at PATH (first on PYTHONPATH), named ``CLIENT@COMMIT``.
The table is printed in Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CLIENTS = ["napixclient", "napixclient_signed", "napixclient_token", "napixclient_callable",
           "geventhttpclient", "floor"]
#: The path asked for (``--path``; the child's own is set from it).
PATH = "/json"
PATHS = ["/json", "/file.json"]
#: ``--fanout``: the hosts (nginx ports) and the cap per host, as in W1.
FANOUT_HOSTS = 20
FANOUT_CAP = 4
_COLLECTED = re.compile(r"==\d+== Collected : (\d+)")


# -- in the child -------------------------------------------------------------------

def napix_one(port: int, auth: Any, parser: Optional[str],
           **options: Any) -> Callable[[], Tuple[int, Any]]:
    """A :class:`napixclient.Client` of nginx at ``port`` signing with
    ``auth``; ``options`` go to the Client too (``headers=``...)."""
    from napixclient import Client

    if parser is not None:
        options["parser"] = parser
    client = Client(f"127.0.0.1:{port}", auth, simultaneous=1, timeout=30.0, **options)

    def one() -> Tuple[int, Any]:
        response = client.get(PATH)
        return response.status, response.body
    return one


def _callable_auth(request: Any) -> Any:
    request.headers["X-Napix-Bench"] = "1"
    return request


def _geventhttpclient(port: int) -> Callable[[], Tuple[int, Any]]:
    from geventhttpclient import HTTPClient

    client = HTTPClient("127.0.0.1", port, concurrency=1, connection_timeout=30.0,
                        network_timeout=30.0)

    def one() -> Tuple[int, Any]:
        response = client.get(PATH)
        try:
            return response.status_code, json.loads(response.read())
        finally:
            response.release()
    return one


def _floor(port: int) -> Callable[[], Tuple[int, Any]]:
    import gevent.socket

    sock = gevent.socket.create_connection(("127.0.0.1", port), timeout=30.0)
    request = (f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               "Accept: application/json\r\n\r\n").encode("ascii")

    def one() -> Tuple[int, Any]:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore
        while len(body) < length:
            body += sock.recv(65536)
        return int(head[9:12]), json.loads(body)
    return one


def one_request(client: str, port: int, parser: Optional[str] = None
                ) -> Callable[[], Tuple[int, Any]]:
    """``one()`` for ``client`` (a name of :data:`CLIENTS`): one GET of
    nginx's JSON at ``port``, returning its status and decoded body.

    :raises SystemExit: for a name not in :data:`CLIENTS`.
    """
    if client == "napixclient":
        return napix_one(port, None, parser)
    if client == "napixclient_signed":
        from napixclient.authenticators import LoginAuthenticator
        return napix_one(port, LoginAuthenticator("root", "toor"), parser)
    if client == "napixclient_token":
        from napixclient.authenticators import TokenIdentifier
        return napix_one(port, TokenIdentifier("root:0123456789abcdef"), parser)
    if client == "napixclient_callable":
        return napix_one(port, _callable_auth, parser)
    if client == "geventhttpclient":
        return _geventhttpclient(port)
    if client == "floor":
        return _floor(port)
    raise SystemExit(f"unknown client {client!r}")


_CANNED_BODY = b'{"status": "ok", "hosts": 20, "free": [1, 2, 3]}'
#: nginx's answers (backends.Nginx), as it sends them, by path: /json, a bare
#: head; /file.json, a static file's.
CANNED = {
    "/json": (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n"
              b"Date: Sun, 06 Dec 2026 07:46:05 GMT\r\nContent-Type: application/json\r\n"
              b"Content-Length: 48\r\nConnection: keep-alive\r\n\r\n" + _CANNED_BODY),
    "/file.json": (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n"
                   b"Date: Sun, 06 Dec 2026 07:46:05 GMT\r\n"
                   b"Content-Type: application/json\r\nContent-Length: 48\r\n"
                   b"Last-Modified: Sun, 06 Dec 2026 07:46:05 GMT\r\n"
                   b"Connection: keep-alive\r\nETag: \"6b1512bd-30\"\r\n"
                   b"Accept-Ranges: bytes\r\n\r\n" + _CANNED_BODY),
}


def canned_servers(count: int, answer: bytes) -> List[int]:
    """``count`` servers in greenlets of this process, on 127.0.0.1, each
    answering every request it reads (up to its blank line) with
    ``answer``; their ports. They end with the process."""
    import gevent
    import gevent.socket

    def serve(sock: Any) -> None:
        buffer = b""
        while True:
            data = sock.recv(65536)
            if not data:
                sock.close()
                return
            buffer += data
            end = buffer.find(b"\r\n\r\n")
            while end >= 0:
                buffer = buffer[end + 4:]
                sock.sendall(answer)
                end = buffer.find(b"\r\n\r\n")

    def accept(listener: Any) -> None:
        while True:
            sock, _ = listener.accept()
            gevent.spawn(serve, sock)

    ports = []
    for _ in range(count):
        listener = gevent.socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        ports.append(listener.getsockname()[1])
        gevent.spawn(accept, listener)
    return ports


def child(client: str, port: int, count: int, warmup: int, parser: Optional[str]) -> None:
    """Make ``warmup`` + ``count`` requests with ``client``; exit 1 on a bad answer."""
    one = one_request(client, port, parser)
    for _ in range(warmup + count):
        status, body = one()
        if status != 200 or body.get("status") != "ok":
            raise SystemExit(f"{client}: unexpected answer {status} {body!r}")


def fanout(client: str, ports: List[int], parser: Optional[str]
           ) -> Callable[[int], List[Tuple[int, Any]]]:
    """``run(per_host)`` for ``client``: ``per_host`` GETs to each port,
    all submitted at once, at most :data:`FANOUT_CAP` at a time per port,
    as W1 makes them (keep-alive connections kept between two runs);
    returns each ``(status, body)``.

    :raises SystemExit: for a client without a fan-out here.
    """
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    if client.startswith("napixclient"):
        from napixclient import ClientPool, Response

        auth = {"napixclient": None, "napixclient_signed": "login",
                "napixclient_token": "token"}.get(client, "?")
        if auth == "?":
            raise SystemExit(f"{client} has no fan-out here")
        options: Dict[str, Any] = {} if parser is None else {"parser": parser}
        if auth == "login":
            from napixclient.authenticators import LoginAuthenticator
            options["authenticator"] = LoginAuthenticator("root", "toor")
        elif auth == "token":
            from napixclient.authenticators import TokenIdentifier
            options["authenticator"] = TokenIdentifier("root:0123456789abcdef")
        pool = ClientPool(simultaneous=FANOUT_CAP, timeout=30.0, **options)

        def run_napix(per_host: int) -> List[Tuple[int, Any]]:
            for _ in range(per_host):
                for base in bases:
                    pool.request(base, "GET", PATH)
            return [(r.status, r.body) if isinstance(r, Response) else (0, r)
                    for r in pool.wait(timeout=120)]
        return run_napix
    if client == "geventhttpclient":
        import gevent
        from geventhttpclient import HTTPClient

        clients = {base: HTTPClient.from_url(base, concurrency=FANOUT_CAP,
                                             connection_timeout=30.0, network_timeout=30.0)
                   for base in bases}

        def one(base: str) -> Tuple[int, Any]:
            response = clients[base].get(PATH)
            try:
                return response.status_code, json.loads(response.read())
            finally:
                response.release()

        def run_gevent(per_host: int) -> List[Tuple[int, Any]]:
            greenlets = [gevent.spawn(one, base) for _ in range(per_host) for base in bases]
            gevent.joinall(greenlets, timeout=120)
            return [g.value for g in greenlets]
        return run_gevent
    raise SystemExit(f"{client} has no fan-out here")


def fanout_child(client: str, ports: List[int], count: int, warmup: int,
                 parser: Optional[str]) -> None:
    """Fan out ``warmup`` then ``count`` requests over ``ports`` (rounded
    down to whole rounds of one request per port); exit 1 on a bad answer."""
    run = fanout(client, ports, parser)
    for total in (warmup, count):
        for status, body in run(max(1, total // len(ports))):
            if status != 200 or body.get("status") != "ok":
                raise SystemExit(f"{client}: unexpected answer {status} {body!r}")


# -- in the parent ------------------------------------------------------------------

def commit_of(path: str) -> str:
    """The short commit of the checkout at ``path``, or its folder's name
    when it is not a git checkout."""
    done = subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    return done.stdout.strip() or os.path.basename(os.path.abspath(path))


def _child_command(client: str, ports: List[int], count: int, warmup: int,
                   parser: Optional[str], path: str, fan: bool,
                   inprocess: bool = False) -> List[str]:
    command = [sys.executable, os.path.abspath(__file__), "--child", client,
               "--port", ",".join(map(str, ports)), "--count", str(count),
               "--warmup", str(warmup), "--path", path]
    if fan:
        command.append("--fanout")
    if inprocess:
        command.append("--inprocess")
    if parser:
        command += ["--parser", parser]
    return command


def count_instructions(client: str, ports: List[int], count: int, warmup: int,
                       parser: Optional[str], checkout: str, path: str = "/json",
                       fan: bool = False, inprocess: bool = False) -> int:
    """Instructions the child executed (all of them, start-up included)."""
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=checkout)
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
               *_child_command(client, ports, count, warmup, parser, path, fan, inprocess)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=checkout,
                          timeout=1800)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{client} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return int(found.group(1))


# A line of `strace -c`'s table: % time, seconds, usecs/call, calls, [errors], syscall.
_STRACE_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


def count_syscalls(client: str, ports: List[int], count: int, warmup: int,
                   parser: Optional[str], checkout: str, path: str = "/json",
                   fan: bool = False, inprocess: bool = False) -> Dict[str, int]:
    """System calls the child made, by name (``strace -f -c``: every thread;
    start-up included)."""
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=checkout)
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        command = ["strace", "-f", "-c", "-o", out.name,
                   *_child_command(client, ports, count, warmup, parser, path, fan,
                                   inprocess)]
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=checkout,
                              timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"{client} failed (exit {done.returncode}):\n"
                               f"{done.stderr[-3000:]}")
        calls: Dict[str, int] = {}
        for line in out.read().splitlines():
            row = _STRACE_ROW.match(line)
            if row and row.group(2) != "total":
                calls[row.group(2)] = int(row.group(1))
    return calls


def print_table(figures: Dict[str, float], column: str, number: str) -> None:
    """Print ``figures`` as a Markdown table, each with its ratio to
    napixclient's (when there is one); ``number`` formats a figure."""
    base = figures.get("napixclient")
    print(f"| client | {column} | / napixclient |")
    print("|---|---|---|")
    for label, value in figures.items():
        ratio = f"{value / base:.2f}" if base else ""
        print(f"| {label} | {number.format(value)} | {ratio} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", nargs="+", default=CLIENTS, choices=CLIENTS)
    parser.add_argument("--parser", default=None,
                        help="napixclient's parser (default: napixclient's default)")
    parser.add_argument("--path", choices=PATHS, default="/json",
                        help="what nginx answers: /json (a bare head) or /file.json "
                             "(a static file: Last-Modified, ETag, Accept-Ranges too)")
    parser.add_argument("--fanout", action="store_true",
                        help=f"W1's fan-out instead of one connection: {FANOUT_HOSTS} hosts "
                             f"(nginx ports), at most {FANOUT_CAP} at a time per host, every "
                             "request submitted at once (napixclient: a ClientPool)")
    parser.add_argument("--syscalls", action="store_true",
                        help="count system calls per request (strace -f -c), by name, "
                             "instead of instructions")
    parser.add_argument("--inprocess", action="store_true",
                        help="answer from greenlets in the client's own process (nginx's "
                             "answers, canned) instead of nginx: every run does the same, "
                             "instruction for instruction, whatever else the machine runs; "
                             "the server's instructions are counted too")
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=1200)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--before", metavar="PATH",
                        help="also run the napixclient clients from this checkout")
    parser.add_argument("--json", metavar="FILE", help="write the figures there too")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--port", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        global PATH
        PATH = args.path
        ports = [int(port) for port in args.port.split(",")]
        if args.inprocess:
            ports = canned_servers(len(ports), CANNED[args.path])
        if args.fanout:
            fanout_child(args.child, ports, args.count, args.warmup, args.parser)
        else:
            child(args.child, ports[0], args.count, args.warmup, args.parser)
        return 0
    if args.large <= args.small:
        parser.error("--large must be more than --small")

    sys.path.insert(0, HERE)
    from backends import Nginx

    runs: List[Tuple[str, str, str]] = [(name, name, ROOT) for name in args.clients]
    if args.before:
        label = commit_of(args.before)
        runs += [(f"{name}@{label}", name, os.path.abspath(args.before))
                 for name in args.clients if name.startswith("napixclient")]
    if args.fanout:
        names = [label for label, _, _ in runs]
        if "floor" in names or "napixclient_callable" in names:
            parser.error("--fanout: floor and napixclient_callable have no fan-out")
        if args.small % FANOUT_HOSTS or args.large % FANOUT_HOSTS:
            parser.error(f"--fanout: --small and --large must be multiples of {FANOUT_HOSTS}")
    hosts = FANOUT_HOSTS if args.fanout else 1
    nginx = None if args.inprocess else Nginx(hosts).start()
    figures: Dict[str, float] = {}
    syscalls: Dict[str, Dict[str, float]] = {}
    try:
        ports = [0] * hosts if nginx is None else nginx.ports
        for label, name, checkout in runs:
            if args.syscalls:
                few = count_syscalls(name, ports, args.small, args.warmup, args.parser,
                                     checkout, args.path, args.fanout, args.inprocess)
                many = count_syscalls(name, ports, args.large, args.warmup, args.parser,
                                      checkout, args.path, args.fanout, args.inprocess)
                spread = args.large - args.small
                syscalls[label] = {call: (many.get(call, 0) - few.get(call, 0)) / spread
                                   for call in many}
                figures[label] = sum(syscalls[label].values())
                print(f"{label}: {figures[label]:.2f} system calls per request",
                      file=sys.stderr)
                continue
            small = count_instructions(name, ports, args.small, args.warmup, args.parser,
                                       checkout, args.path, args.fanout, args.inprocess)
            large = count_instructions(name, ports, args.large, args.warmup, args.parser,
                                       checkout, args.path, args.fanout, args.inprocess)
            figures[label] = (large - small) / (args.large - args.small)
            print(f"{label}: {figures[label]:,.0f} instructions per request", file=sys.stderr)
    finally:
        if nginx is not None:
            nginx.stop()
    what = (f"{args.large} - {args.small} requests of {args.path}"
            f"{' in a fan-out' if args.fanout else ''}"
            f"{' answered in-process' if args.inprocess else ''}, "
            f"parser {args.parser or 'default'}")
    if args.syscalls:
        print(f"\nSystem calls per request (strace -f -c), {what}:\n")
        names = sorted({call for calls in syscalls.values() for call in calls
                        if any(abs(c.get(call, 0)) >= 0.01 for c in syscalls.values())})
        print("| client | all | " + " | ".join(names) + " |")
        print("|---|---|" + "---|" * len(names))
        for label, calls in syscalls.items():
            print(f"| {label} | {figures[label]:.2f} | "
                  + " | ".join(f"{calls.get(call, 0):.2f}" for call in names) + " |")
    else:
        print(f"\nInstructions per request (valgrind --tool=callgrind), {what}:\n")
        print_table(figures, "instructions / request", "{:,.0f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
