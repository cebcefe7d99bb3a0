"""``napix demo``: the three uses of napixclient, end to end, on loopback.

It starts Napix servers on 127.0.0.1 with :class:`~napixclient.testing.NapixTestServer`
(an IP allocator, a filer, twenty hypervisors of varied capacity and
latency, one dead and one hanging, and a chain A -> B -> C of Napix servers),
then runs, each in its own titled and timed section:

1. orchestration: an IP and a volume asked of two backends at once, then a
   failure of one of them handled cleanly (the other's allocation released);
2. capacity probing: the first hypervisor with room, within a time limit
   (``wait_unordered(timeout=...)``), the slower requests left pending and
   collected afterwards, none lost;
3. a chained error: C's 404 read hop by hop from A's 500.

It stops every server before returning. Nothing leaves 127.0.0.1, and the
credentials are made up for the run and never printed.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import textwrap
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, TextIO, Tuple

from rich.console import Console
from rich.text import Text

from napixclient import Client, ClientPool, HTTPError, Response
from napixclient.authenticators import LoginAuthenticator
from napixclient.pool import Result
from napixclient.testing import NapixTestServer, RecordedRequest
from napixclient.wsgi import ExceptionsCatcher

__all__ = [
    "BACKEND_LATENCY",
    "HYPERVISORS",
    "PROBE_TIMEOUT",
    "PROBE_WAIT",
    "SECTIONS",
    "SLOTS_NEEDED",
    "Backends",
    "run_demo",
    "start_backends",
]

#: The demo's hypervisors: ``(free slots, seconds before answering)``. The
#: first with :data:`SLOTS_NEEDED` free slots answers after 0.2 s; slower
#: ones with room come after the probe has chosen.
HYPERVISORS: List[Tuple[int, float]] = [
    (0, 0.03), (2, 0.05), (0, 0.07), (1, 0.09), (0, 0.12), (3, 0.15), (6, 0.20),
    (0, 0.25), (5, 0.30), (2, 0.35), (0, 0.40), (8, 0.50), (1, 0.55), (4, 0.60),
    (0, 0.70), (7, 0.75), (2, 0.80), (3, 0.85), (9, 0.90), (0, 1.00),
]
#: Free slots a new VM needs.
SLOTS_NEEDED = 4
#: Seconds the probe waits for a suitable answer before giving up.
PROBE_WAIT = 0.5
#: Seconds each probe request may take; the hanging hypervisor reaches it.
PROBE_TIMEOUT = 1.5
#: Seconds each backend of the orchestration takes to answer.
BACKEND_LATENCY = 0.25

_LOGIN = "demo"


@dataclass
class Backends:
    """The demo's running servers.

    :ivar ip_allocator: the IP allocator, one of the two orchestrated backends.
    :ivar filer: the filer, the other one.
    :ivar hypervisors: ``(name, host)`` pairs, ``host`` being ``"127.0.0.1:PORT"``;
        the dead one has a closed port, the hanging one never answers.
    :ivar chain: the servers A, B and C of the error chain, in that order.
    :ivar servers: every server started, to stop them all.
    """

    ip_allocator: NapixTestServer
    filer: NapixTestServer
    hypervisors: List[Tuple[str, str]] = field(default_factory=list)
    chain: List[NapixTestServer] = field(default_factory=list)
    servers: List[NapixTestServer] = field(default_factory=list)

    def stop(self) -> None:
        """Stop every server (each waits at most about a second)."""
        for server in self.servers:
            server.stop()


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ip_allocator(users: Dict[str, str]) -> NapixTestServer:
    """An IP allocator: ``POST /vm-ip/`` hands out the next free address,
    ``DELETE /vm-ip/<ip>`` gives it back."""
    server = NapixTestServer(users=users).start()
    free = [f"10.0.0.{n}" for n in range(7, 12)]
    taken: List[str] = []

    def allocate(request: RecordedRequest) -> Any:
        ip = free.pop(0)
        taken.append(ip)
        return 201, {"ip": ip, "size": (request.json or {}).get("size", 1)}

    def release(ip: str) -> Callable[[RecordedRequest], Any]:
        def handler(request: RecordedRequest) -> Any:
            taken.remove(ip)
            free.insert(0, ip)
            return 204, None
        return handler

    server.route("/vm-ip/", "POST", handler=allocate, latency=BACKEND_LATENCY)
    for ip in free:
        server.route(f"/vm-ip/{ip}", "DELETE", handler=release(ip))
    server.route("/vm-ip/", "GET", handler=lambda request: {"taken": list(taken)})
    return server


def _filer(users: Dict[str, str]) -> NapixTestServer:
    """A filer: ``POST /volumes/`` creates a volume, except one larger than
    it has room for (sizes in ``T``), which gets a 507 Napix error document."""
    server = NapixTestServer(users=users).start()
    created = iter(range(42, 1000))

    def create(request: RecordedRequest) -> Any:
        size = str((request.json or {}).get("size", ""))
        if size.endswith("T"):
            return 507, {"error_class": "InsufficientStorage",
                         "error_text": f"no room for a {size} volume on this filer",
                         "request": {"method": "POST", "path": "/volumes/"}}
        return 201, {"volume": f"vol-{next(created)}", "size": size}

    server.route("/volumes/", "POST", handler=create, latency=BACKEND_LATENCY)
    return server


def _chain(users: Dict[str, str], auth: LoginAuthenticator) -> List[NapixTestServer]:
    """A -> B -> C: A's handler calls B, B's calls C, C answers 404. A and B
    are WSGI apps wrapped in ExceptionsCatcher, which turns the HTTPError
    escaping them into a 500 document carrying the failed call, so the
    chain grows one hop per server (PROTOCOL.md, "Writing the chain")."""
    c = NapixTestServer(users=users).start()
    c.route("/slots/", body={"slots": ["/slots/1", "/slots/2"]})

    def relay(target: NapixTestServer, path: str) -> Any:
        def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            # An HTTPError raised here escapes the app on purpose.
            with Client(target.host, auth, timeout=5) as client:
                body = client.get(path).body
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps(body).encode("utf-8")]
        return app

    b = NapixTestServer(users=users, app=ExceptionsCatcher(
        relay(c, "/slots/42"), show_traceback=False)).start()
    a = NapixTestServer(users=users, app=ExceptionsCatcher(
        relay(b, "/capacity/hv42"), show_traceback=False)).start()
    return [a, b, c]


def start_backends(users: Dict[str, str], auth: LoginAuthenticator) -> Backends:
    """Start every demo server on 127.0.0.1.

    :param users: ``Dict[str, str]`` of login to key, accepted by every
        server.
    :param auth: a :class:`~napixclient.authenticators.LoginAuthenticator`:
        how A and B sign their calls down the chain.
    :returns: :class:`Backends`; call its ``stop()`` when done.
    :raises OSError: if a server cannot bind its port.
    """
    backends = Backends(_ip_allocator(users), _filer(users))
    backends.servers += [backends.ip_allocator, backends.filer]
    try:
        for number, (free_slots, latency) in enumerate(HYPERVISORS, 1):
            server = NapixTestServer(users=users).start()
            backends.servers.append(server)
            server.route("/capacity/capacity", latency=latency,
                         body={"free_slots": free_slots, "name": f"hv{number:02d}"})
            backends.hypervisors.append((f"hv{number:02d}", server.host))
        backends.hypervisors.append(("hv-dead", f"127.0.0.1:{_closed_port()}"))
        hanging = NapixTestServer(users=users).start()
        backends.servers.append(hanging)
        hanging.route("/capacity/capacity", hang=True)
        backends.hypervisors.append(("hv-hung", hanging.host))
        backends.chain = _chain(users, auth)
        backends.servers += backends.chain
    except BaseException:
        backends.stop()
        raise
    return backends


class _Report:
    """Prints the demo's sections, and remembers whether one went wrong."""

    def __init__(self, out: TextIO) -> None:
        self.console = Console(file=out, highlight=False, soft_wrap=True)
        self.failures: List[str] = []

    def title(self, text: str) -> None:
        self.console.print()
        self.console.rule(Text(text, style="bold"), align="left")

    def say(self, text: str, style: Optional[str] = None) -> None:
        """Print a paragraph, wrapped at spaces to the console's width (a
        URL or other long word is never cut); the continuation lines of an
        indented one (a result, an error) are indented two columns more."""
        lead = len(text) - len(text.lstrip(" "))
        lines = textwrap.wrap(text, max(self.console.width, 20),
                              subsequent_indent=" " * (lead + 2) if lead else "",
                              break_long_words=False, break_on_hyphens=False) or [""]
        for line in lines:
            self.console.print(Text(line, style=style or ""))

    def check(self, condition: bool, what: str) -> None:
        """Record (and show) an outcome the demo did not expect."""
        if not condition:
            self.failures.append(what)
            self.say(f"  unexpected: {what}", style="bold red")


def _orchestrate(report: _Report, backends: Backends, auth: LoginAuthenticator) -> None:
    ip_host, filer_host = backends.ip_allocator.host, backends.filer.host
    report.say(f"An IP from the allocator ({ip_host}) and a volume from the filer "
               f"({filer_host}), both asked at once; each takes {BACKEND_LATENCY:.1f} s "
               "to answer.")
    report.say("")
    report.say("  pool.request(allocator, 'POST', '/vm-ip/', {'size': 1})")
    report.say("  pool.request(filer, 'POST', '/volumes/', {'size': '10G'})")
    report.say("  ip, volume = pool.wait()")
    started = time.monotonic()
    with ClientPool(auth, timeout=5) as pool:
        pool.request(ip_host, "POST", "/vm-ip/", {"size": 1})
        pool.request(filer_host, "POST", "/volumes/", {"size": "10G"})
        ip, volume = pool.wait()
    took = time.monotonic() - started
    report.check(isinstance(ip, Response) and isinstance(volume, Response),
                 f"both backends should answer, got {ip!r} and {volume!r}")
    if isinstance(ip, Response) and isinstance(volume, Response):
        report.say(f"  -> ip {ip.body['ip']}, volume {volume.body['volume']} in {took:.2f} s "
                   f"(one after the other: {2 * BACKEND_LATENCY:.1f} s)", style="green")

    report.say("")
    report.say("Now the filer fails (no room for 10T). The IP already allocated is "
               "released, so the failure leaves nothing behind, and the filer's error is "
               "reported:")
    started = time.monotonic()
    with ClientPool(auth, timeout=5) as pool:
        pool.request(ip_host, "POST", "/vm-ip/", {"size": 1})
        pool.request(filer_host, "POST", "/volumes/", {"size": "10T"})
        ip, volume = pool.wait()
        failed = [r for r in (ip, volume) if isinstance(r, HTTPError)]
        # Roll back what succeeded before reporting what failed.
        if failed and isinstance(ip, Response):
            pool.request(ip_host, "DELETE", f"/vm-ip/{ip.body['ip']}")
            (released,) = pool.wait()
            report.check(isinstance(released, Response),
                         f"releasing the IP should work, got {released!r}")
            report.say(f"  -> released {ip.body['ip']} (DELETE answered "
                       f"{released.status})", style="green")
        for error in failed:
            report.say(f"  -> {type(error).__name__}: {error}", style="yellow")
    report.check(isinstance(ip, Response) and isinstance(volume, HTTPError)
                 and volume.status == 507,
                 f"the IP should succeed and the volume fail with 507, got {ip!r}, {volume!r}")
    with Client(ip_host, auth, timeout=5) as client:
        taken = client.get("/vm-ip/").body["taken"]
    report.check(len(taken) == 1, f"only the first IP should stay allocated, got {taken}")
    report.say(f"  -> addresses still allocated: {', '.join(taken)}; "
               f"failed cleanly in {time.monotonic() - started:.2f} s")


def _probe_line(result: Result, names: Dict[str, str], since: float) -> Tuple[str, str]:
    host = result.request.host
    name = names.get(host, host)
    at = f"+{time.monotonic() - since:.2f} s"
    if isinstance(result, Response):
        return f"  {at:>8}  {name:<8} {result.status}  free_slots={result.body['free_slots']}", ""
    return (f"  {at:>8}  {name:<8} {type(result).__name__}: {result.root.error_text}",
            "yellow")


def _capacity_probe(report: _Report, backends: Backends, auth: LoginAuthenticator) -> None:
    names = {host: name for name, host in backends.hypervisors}
    count = len(backends.hypervisors)
    report.say(f"{count} hypervisors (hv-dead refuses connections, hv-hung never "
               f"answers). Take the first with {SLOTS_NEEDED} free slots answering within "
               f"{PROBE_WAIT:g} s; each request may take {PROBE_TIMEOUT:g} s.")
    report.say("")
    report.say(f"  for result in pool.wait_unordered(timeout={PROBE_WAIT}):")
    report.say(f"      if result.status == 200 and result.body['free_slots'] >= "
               f"{SLOTS_NEEDED}: break")
    started = time.monotonic()
    with ClientPool(auth, timeout=PROBE_TIMEOUT) as pool:
        for _, host in backends.hypervisors:
            pool.request(host, "GET", "/capacity/capacity")
        chosen: Optional[Response] = None
        seen = 0
        for result in pool.wait_unordered(timeout=PROBE_WAIT):
            seen += 1
            line, style = _probe_line(result, names, started)
            if (isinstance(result, Response) and result.status == 200
                    and result.body["free_slots"] >= SLOTS_NEEDED):
                chosen = result
                report.say(line + "   <- chosen", style="bold green")
                break
            report.say(line, style=style or None)
        else:
            report.say(f"  nobody suitable within {PROBE_WAIT} s")
        report.check(chosen is not None, "a hypervisor with room should answer in time")
        if chosen is not None:
            report.say(f"  -> chose {names[chosen.request.host]} after "
                       f"{time.monotonic() - started:.2f} s, having read {seen} of "
                       f"{count} answers")
        pending = pool.pending
        report.say(f"  -> pool.pending == {pending}: the slower requests are still running, "
                   "not lost", style="green")
        report.check(pending > 0, "some requests should still be pending")

        report.say("")
        report.say("A later wait collects them (in an orchestrator, leaving the with block "
                   "would cancel them):")
        report.say(f"  for result in pool.wait_unordered(timeout={PROBE_TIMEOUT + 1:g}): ...")
        later = 0
        for result in pool.wait_unordered(timeout=PROBE_TIMEOUT + 1):
            later += 1
            line, style = _probe_line(result, names, started)
            report.say(line, style=style or None)
        report.check(later == pending, f"{pending} results expected later, got {later}")
        report.check(pool.pending == 0, "nothing should stay pending")
        report.say(f"  -> {seen} + {later} = {seen + later} results for {count} requests; "
                   f"pool.pending == {pool.pending}", style="green")


def _chained_error(report: _Report, backends: Backends, auth: LoginAuthenticator) -> None:
    a, b, c = backends.chain
    report.say(f"A ({a.host}) calls B ({b.host}), which calls C ({c.host}); C answers "
               "404. A and B are wrapped in ExceptionsCatcher, so each adds a hop.")
    report.say("")
    report.say("  client.get('/reserve/hv42')  # on A")
    try:
        with Client(a.host, auth, timeout=5) as client:
            response = client.get("/reserve/hv42")
    except HTTPError as error:
        report.say("")
        for line in error.format_chain().splitlines():
            report.say(f"  {line}", style="yellow")
        report.say("")
        report.say(f"  str(error): {error}")
        report.say(f"  error.root: {error.root.call} -> {error.root.status}, "
                   f"{error.root.error_text!r}")
        report.check(error.status == 500 and len(error.chain) == 3
                     and error.root.status == 404,
                     f"a 500 from A with three hops ending in C's 404, got {error.chain!r}")
    else:
        report.check(False, f"A should fail, it answered {response!r}")


#: The demo's sections, in order: ``(title, function)``; each function takes
#: the report, the :class:`Backends` and the authenticator.
SECTIONS: List[Tuple[str, Callable[..., None]]] = [
    ("1. Orchestration: two backends at once, failing cleanly", _orchestrate),
    ("2. Capacity probing: the first suitable hypervisor, the slow ones kept",
     _capacity_probe),
    ("3. A chained error, read hop by hop", _chained_error),
]


def run_demo(out: TextIO, verbose: int = 0) -> int:
    """Start the demo servers, run the three sections, stop the servers.

    :param out: where to print (a text stream).
    :param verbose: ``0`` hides the error logs of the chain's servers (the
        failures section 3 causes on purpose); ``1`` or more shows them.
    :returns: 0 when every section behaved as the demo expects, else 1
        (the unexpected outcomes are printed).
    :raises OSError: if a demo server cannot bind its port.
    """
    report = _Report(out)
    server_log = logging.getLogger("napixclient.wsgi")
    level = server_log.level
    if not verbose:
        server_log.setLevel(logging.CRITICAL)
    key = secrets.token_hex(16)
    auth = LoginAuthenticator(_LOGIN, key)
    users = {_LOGIN: key}
    total = time.monotonic()
    started = time.monotonic()
    backends = start_backends(users, auth)
    try:
        report.say(f"napix demo: {len(backends.servers)} Napix servers started on 127.0.0.1 "
                   f"in {time.monotonic() - started:.2f} s (every request is signed)",
                   style="bold")
        for title, section in SECTIONS:
            report.title(title)
            started = time.monotonic()
            section(report, backends, auth)
            report.say(f"[{title.split('.')[0]}. took {time.monotonic() - started:.2f} s]",
                       style="dim")
    finally:
        backends.stop()
        server_log.setLevel(level)
    report.say("")
    report.say(f"All servers stopped; the demo took {time.monotonic() - total:.2f} s.",
               style="bold")
    if report.failures:
        report.say(f"{len(report.failures)} unexpected outcomes (see above).", style="bold red")
        return 1
    return 0
