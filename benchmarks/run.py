"""napixclient next to its peers, on loopback backends. Run by hand, never in CI.

    pip install -r benchmarks/requirements.txt && apt-get install -y nginx
    python benchmarks/run.py                       # every workload, every client, 3 runs
    python benchmarks/run.py --write BENCHMARKS.md # ...and put the table there

Workloads (see BENCHMARKS.md):

* W1 throughput: 10,000 GETs of a small JSON over 20 nginx "hosts" (one port
  each), at most 4 at a time per host; requests per second. nginx answers
  from memory (``return 200``), with a bare head.
* W1F: W1 with nginx serving the document as a static file, so that each
  answer carries the head a real server sends (Server, Date, Content-Type,
  Content-Length, Last-Modified, Connection, ETag, Accept-Ranges).
* W2 latency fan-out: 20 hosts x 10 GETs answered after 100 ms, at most 2 at
  a time per host (so 5 rounds); the makespan, and the latency of a single
  request measured in the same process just before.
* W3 scale: 1,000 hosts x 10 GETs answered after 20 ms, at most 2 per host;
  the makespan, the peak RSS of the client's process, the most sockets it had
  open at once.
* CPU: GETs one after the other on one keep-alive connection to nginx; CPU
  microseconds per request.
* W4 many hosts, few files: 3,000 hosts x 1 GET answered after 20 ms, in a
  client process whose soft RLIMIT_NOFILE is 1,024 (the hard limit as it
  was), each library with its default limits; answers received, errors,
  makespan, peak RSS, most sockets open at once.

``--before PATH`` adds napixclient as it was in another checkout (``git
worktree add --detach PATH COMMIT``), run with PATH first on PYTHONPATH and
named ``napixclient@COMMIT`` in the tables.

Each (client, workload, run) is its own process (benchmarks/clients.py), so
gevent monkey-patching cannot leak from one client to another and RSS is per
client. Clients take turns within a run, in an order rotated between runs.
Backends listen on 127.0.0.1 only and are stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Union

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from backends import FILE_PATH, DelayServer, Nginx, raise_fd_limit  # noqa: E402
from clients import CLIENTS  # noqa: E402

WORKLOADS = ["W1", "W1F", "W2", "W3", "CPU", "W4"]
#: The longest one child may run before it is killed (seconds), by workload.
CHILD_DEADLINE_S = {"W1": 180.0, "W1F": 180.0, "W2": 60.0, "W3": 120.0, "CPU": 120.0, "W4": 120.0}
#: W4's soft limit of open files in the client's process: the common default.
W4_NOFILE_SOFT = 1024
BASELINE = "aiohttp"
#: The napixclient variants --before also runs from the older checkout.
BEFORE_VARIANTS = ["napixclient", "napixclient_signed"]
START_MARK = "<!-- benchmark-table:start -->"
END_MARK = "<!-- benchmark-table:end -->"


class FdSampler(threading.Thread):
    """Counts a process's open file descriptors every ``interval`` seconds and
    keeps the highest count; stops with the process or after ``deadline_s``."""

    def __init__(self, pid: int, deadline_s: float, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.path = f"/proc/{pid}/fd"
        self.interval = interval
        self.deadline = time.monotonic() + deadline_s
        self.peak = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set() and time.monotonic() < self.deadline:
            try:
                self.peak = max(self.peak, len(os.listdir(self.path)))
            except OSError:
                return
            self.stopped.wait(self.interval)


def lower_soft_nofile(soft: int) -> Callable[[], None]:
    """A ``preexec_fn`` setting the child's soft ``RLIMIT_NOFILE`` to ``soft``
    (``int``), its hard limit left as it was."""
    def preexec() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return preexec


def run_child(spec: Dict[str, Any], deadline_s: float, checkout: str = ROOT) -> Dict[str, Any]:
    """Run one measurement in its own process, with ``checkout``'s napixclient
    first on PYTHONPATH; return its result, with ``peak_sockets`` added,
    ``{"failed": reason}``, or ``{"killed": seconds}`` when it ran longer
    than ``deadline_s``. ``spec["nofile_soft"]``, when given, is the child's
    soft limit of open files, set before it starts."""
    env = dict(os.environ, PYTHONPATH=checkout + os.pathsep + HERE)
    soft = spec.get("nofile_soft")
    process = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "clients.py"), json.dumps(spec)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        preexec_fn=None if soft is None else lower_soft_nofile(soft))
    sampler = FdSampler(process.pid, deadline_s)
    sampler.start()
    try:
        out, err = process.communicate(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return {"killed": deadline_s}
    finally:
        sampler.stopped.set()
        sampler.join(5)
    if process.returncode != 0:
        return {"failed": (err.strip().splitlines() or ["?"])[-1][:300]}
    result: Dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    where = result.get("napixclient_from")
    expected = os.path.join(os.path.abspath(checkout), "napixclient")
    if where is not None and os.path.realpath(where) != os.path.realpath(expected):
        return {"failed": f"napixclient was imported from {where}, not {expected}"}
    if soft is not None and result.get("nofile_soft") != soft:
        return {"failed": f"soft RLIMIT_NOFILE was {result.get('nofile_soft')}, not {soft}"}
    if "baseline_fds" in result:
        # Descriptors other than sockets: those open before the fan-out, or
        # after it when it opened more (an event loop's), whichever is more.
        others = max(result["baseline_fds"] - result["baseline_sockets"],
                     result.get("end_other_fds", 0))
        result["peak_sockets"] = max(0, sampler.peak - others)
    return result


def specs(workload: str, client: str, impl: str, nginx: Optional[Nginx],
          delay: Optional[DelayServer], args: argparse.Namespace) -> Dict[str, Any]:
    base = {"client": client, "impl": impl, "timeout": 60.0}
    if workload in ("W1", "W1F"):
        assert nginx is not None
        bases = [f"http://127.0.0.1:{p}" for p in nginx.ports]
        return dict(base, mode="fanout", bases=bases,
                    fan_path="/json" if workload == "W1" else FILE_PATH,
                    per_host=args.w1_requests // len(bases), cap=4)
    if workload == "W2":
        assert delay is not None
        bases = [f"http://127.0.0.1:{p}" for p in delay.ports[:20]]
        return dict(base, mode="single", bases=bases, path="/delay/100", count=5, warmup=0,
                    fan_path="/delay/100", per_host=10, cap=2)
    if workload == "W3":
        assert delay is not None
        bases = [f"http://127.0.0.1:{p}" for p in delay.ports[:args.w3_hosts]]
        return dict(base, mode="fanout", bases=bases, fan_path="/delay/20", per_host=10, cap=2)
    if workload == "W4":
        assert delay is not None
        bases = [f"http://127.0.0.1:{p}" for p in delay.ports[:args.w4_hosts]]
        return dict(base, mode="fanout", bases=bases, fan_path="/delay/20", per_host=1, cap=2,
                    nofile_soft=args.w4_nofile, library_defaults=True)
    assert nginx is not None
    return dict(base, mode="cpu", bases=[f"http://127.0.0.1:{nginx.ports[0]}"], path="/json",
                count=args.cpu_requests, warmup=200)


# -- what is reported --------------------------------------------------------

METRICS = {
    # key: (workload, label, how to get it from one result, format, higher is better)
    "w1_rps": ("W1", "W1 req/s", lambda r: r["requests"] / r["makespan_s"], "{:,.0f}", True),
    "w1f_rps": ("W1F", "W1F req/s", lambda r: r["requests"] / r["makespan_s"], "{:,.0f}", True),
    "w2_makespan": ("W2", "W2 makespan ms", lambda r: r["makespan_s"] * 1e3, "{:.1f}", False),
    "w2_single": ("W2", "W2 single ms", lambda r: r["median_latency_s"] * 1e3, "{:.1f}", False),
    "w2_ratio": ("W2", "W2 makespan / 5 x single",
                 lambda r: r["makespan_s"] / (5 * r["median_latency_s"]), "{:.3f}", False),
    "w3_makespan": ("W3", "W3 makespan ms", lambda r: r["makespan_s"] * 1e3, "{:,.0f}", False),
    "w3_rss": ("W3", "W3 peak RSS MB", lambda r: r["maxrss_bytes"] / 2**20, "{:.0f}", False),
    "w3_sockets": ("W3", "W3 peak sockets", lambda r: r["peak_sockets"], "{:.0f}", False),
    "cpu_us": ("CPU", "CPU us/req", lambda r: r["cpu_per_request_s"] * 1e6, "{:.0f}", False),
    # W4 reports failed requests as such: losing them is what it measures.
    "w4_answers": ("W4", "W4 answers", lambda r: r["ok"], "{:,.0f}", True),
    "w4_errors": ("W4", "W4 errors", lambda r: r["errors"], "{:,.0f}", False),
    "w4_makespan": ("W4", "W4 makespan ms", lambda r: r["makespan_s"] * 1e3, "{:,.0f}", False),
    "w4_rss": ("W4", "W4 peak RSS MB", lambda r: r["maxrss_bytes"] / 2**20, "{:.0f}", False),
    "w4_sockets": ("W4", "W4 peak sockets", lambda r: r["peak_sockets"], "{:.0f}", False),
}
#: Workloads whose runs count requests that failed rather than being FAILED.
COUNTS_ERRORS = {"W4"}


Cell = Union[float, str]


def summarise(raw: Dict[str, Dict[str, List[Dict[str, Any]]]], clients: List[str]
              ) -> Dict[str, Dict[str, Cell]]:
    """The median of each metric over the runs, per client; a text instead
    when a run failed, lost requests (except in :data:`COUNTS_ERRORS`, which
    report them) or was killed (shown as such, never averaged away)."""
    table: Dict[str, Dict[str, Cell]] = {}
    for client in clients:
        row: Dict[str, Cell] = {}
        for key, (workload, _label, get, _fmt, _higher) in METRICS.items():
            runs = raw.get(workload, {}).get(client)
            if not runs:
                continue
            killed = [r["killed"] for r in runs if "killed" in r]
            if killed:
                row[key] = f"killed > {max(killed):g} s"
            elif any("failed" in r or (r.get("errors") and workload not in COUNTS_ERRORS)
                     for r in runs):
                row[key] = "FAILED"
            else:
                row[key] = statistics.median(get(r) for r in runs)
        table[client] = row
    return table


def render(table: Dict[str, Dict[str, Cell]], clients: List[str], keys: List[str]) -> str:
    """A Markdown table of ``keys`` (of :data:`METRICS`) by client; empty when
    no client has any of them."""
    keys = [k for k in keys if any(k in table[c] for c in clients)]
    if not keys:
        return ""
    header = ["client"] + [METRICS[k][1] for k in keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for client in clients:
        if not any(key in table[client] for key in keys):
            continue
        cells = [client]
        for key in keys:
            value = table[client].get(key, "n/a")
            cells.append(value if isinstance(value, str) else METRICS[key][3].format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_ratios(table: Dict[str, Dict[str, Cell]], clients: List[str],
                  ours: str = "napixclient") -> str:
    """The client ``ours`` (``napixclient``, the gevent driver, or
    ``napixclient_aio``, the asyncio one) against each other client, and,
    for the gevent driver, each napixclient variant against itself in the
    "before" checkout (``napixclient_signed@...`` against
    ``napixclient_signed``): > 1 means ``ours`` (now) is better."""
    keys = ["w1_rps", "w1f_rps", "w2_makespan", "w3_makespan", "w3_rss", "cpu_us"]
    keys = [k for k in keys if k in table.get(ours, {})]
    if not keys:
        return ""
    header = [f"{ours} vs"] + [METRICS[k][1] for k in keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for client in clients:
        if client == ours or (client.startswith(ours) and "@" not in client):
            continue
        if ours == "napixclient" and client.startswith("napixclient") and "@" not in client:
            continue
        if ours != "napixclient" and "@" in client:
            continue
        # A "before" row is compared with the same variant now.
        mine_name = client.split("@", 1)[0] if "@" in client and ours == "napixclient" else ours
        mine_row = table.get(mine_name, {})
        cells = [client if mine_name == ours else f"{client} (vs {mine_name})"]
        for key in keys:
            mine, theirs = mine_row.get(key), table[client].get(key)
            if not isinstance(mine, float) or not isinstance(theirs, float):
                cells.append("n/a")
                continue
            cells.append(f"{(mine / theirs if METRICS[key][4] else theirs / mine):.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_signing(table: Dict[str, Dict[str, Cell]], clients: List[str]) -> str:
    """What signing costs in throughput: each signed napixclient's W1 and
    W1F requests per second over its unsigned self's (``< 1``: signing
    costs), one line per checkout and driver, and the signed asyncio driver
    over aiohttp (unsigned); empty when no pair was measured."""
    lines = []
    for client in clients:
        if not client.startswith("napixclient") or "_signed" not in client:
            continue
        others = [client.replace("_signed", "", 1)]
        if client.startswith("napixclient_aio"):
            others.append(BASELINE)
        for other in others:
            cells = []
            for key in ("w1_rps", "w1f_rps"):
                mine, theirs = table[client].get(key), table.get(other, {}).get(key)
                if isinstance(mine, float) and isinstance(theirs, float):
                    cells.append(f"{METRICS[key][1]} {mine / theirs:.2f}x")
            if cells:
                lines.append(f"- {client} / {other}: " + ", ".join(cells))
    return "\n".join(lines)


def machine() -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from importlib.metadata import version

    def v(name: str) -> str:
        try:
            return version(name)
        except Exception:
            return "absent"
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    return (f"nproc {os.cpu_count()}, CPU {model}, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, "
            f"gevent {v('gevent')}, httptools {v('httptools')}, uvloop {v('uvloop')}, "
            f"requests {v('requests')}, urllib3 {v('urllib3')}, "
            f"aiohttp {v('aiohttp')}, httpx {v('httpx')}, geventhttpclient "
            f"{v('geventhttpclient')}, grequests {v('grequests')}, "
            f"{nginx.replace('nginx version: ', '')}")


def before_commit(path: str) -> str:
    """The short commit of the napixclient checkout at ``path``.

    :raises ValueError: when ``path`` holds no napixclient package or is not
        a git checkout.
    """
    if not os.path.isfile(os.path.join(path, "napixclient", "__init__.py")):
        raise ValueError(f"--before {path}: no napixclient/__init__.py there")
    try:
        done = subprocess.run(["git", "-C", path, "rev-parse", "--short=7", "HEAD"],
                              capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as error:
        raise ValueError(f"--before {path}: not a git checkout ({error})") from None
    return done.stdout.strip()


def write_table(path: str, text: str) -> None:
    """Replace the text between the markers in ``path`` (or append it)."""
    block = f"{START_MARK}\n{text}\n{END_MARK}"
    old = open(path).read() if os.path.exists(path) else ""
    if START_MARK in old and END_MARK in old:
        head, rest = old.split(START_MARK, 1)
        new = head + block + rest.split(END_MARK, 1)[1]
    else:
        new = old + ("\n" if old else "") + block + "\n"
    with open(path, "w") as handle:
        handle.write(new)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of everything (>= 1)")
    parser.add_argument("--clients", nargs="+", default=CLIENTS, choices=CLIENTS)
    parser.add_argument("--workloads", nargs="+", default=WORKLOADS, choices=WORKLOADS)
    parser.add_argument("--w1-requests", type=int, default=10_000)
    parser.add_argument("--w3-hosts", type=int, default=1000)
    parser.add_argument("--w4-hosts", type=int, default=3000)
    parser.add_argument("--w4-nofile", type=int, default=W4_NOFILE_SOFT,
                        help="W4: the client process's soft RLIMIT_NOFILE")
    parser.add_argument("--cpu-requests", type=int, default=3000)
    parser.add_argument("--before", metavar="PATH",
                        help="also run napixclient from this checkout (e.g. git worktree "
                             "add --detach PATH f951176), named napixclient@COMMIT")
    parser.add_argument("--nginx-workers", type=int, default=1,
                        help="nginx worker processes (1 leaves a core to the client)")
    parser.add_argument("--json", metavar="PATH", help="also save every raw result there")
    parser.add_argument("--write", metavar="PATH",
                        help="put the table in this Markdown file, between "
                             f"{START_MARK} and {END_MARK}")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    for flag in ("w1_requests", "w3_hosts", "w4_hosts", "w4_nofile", "cpu_requests"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    clients = list(args.clients)
    impls = {client: client for client in clients}
    checkouts = {client: ROOT for client in clients}
    if args.before:
        try:
            commit = before_commit(args.before)
        except ValueError as error:
            parser.error(str(error))
        # Each napixclient variant the older checkout can run (it has no
        # parser= argument), next to its current self in the tables.
        for impl in BEFORE_VARIANTS:
            if impl not in clients:
                continue
            label = f"{impl}@{commit}"
            clients.insert(clients.index(impl) + 1, label)
            impls[label] = impl
            checkouts[label] = os.path.abspath(args.before)
        if not any("@" in client for client in clients):
            parser.error(f"--before needs one of {', '.join(BEFORE_VARIANTS)} in --clients")
    hard = raise_fd_limit()
    if "W4" in args.workloads and args.w4_nofile > hard:
        parser.error(f"--w4-nofile {args.w4_nofile} is above the hard limit {hard}")
    needs_nginx = {"W1", "W1F", "CPU"} & set(args.workloads)
    hosts = {"W2": 20, "W3": args.w3_hosts, "W4": args.w4_hosts}
    needs_delay = max((hosts[w] for w in args.workloads if w in hosts), default=0)
    nginx = delay = None
    raw: Dict[str, Dict[str, List[Dict[str, Any]]]] = {}
    started = time.time()
    try:
        if needs_nginx:
            nginx = Nginx(20, workers=args.nginx_workers).start()
        if needs_delay:
            delay = DelayServer(max(20, needs_delay))
            delay.start()
        for run in range(args.runs):
            order = clients[run % len(clients):] + clients[:run % len(clients)]
            for workload in args.workloads:
                for client in order:
                    result = run_child(specs(workload, client, impls[client], nginx, delay, args),
                                       CHILD_DEADLINE_S[workload], checkouts[client])
                    raw.setdefault(workload, {}).setdefault(client, []).append(result)
                    brief = {k: (round(v, 4) if isinstance(v, float) else v)
                             for k, v in result.items()
                             if k not in ("client", "mode", "baseline_fds", "baseline_sockets",
                                          "end_other_fds", "napixclient_from")}
                    print(f"run {run + 1}/{args.runs} {workload} {client}: {brief}", flush=True)
    finally:
        if nginx is not None:
            nginx.stop()
        if delay is not None:
            delay.stop()
    table = summarise(raw, clients)
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:])
    w4 = [k for k in METRICS if METRICS[k][0] == "W4"]
    parts = [
        f"Medians of {args.runs} runs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{time.time() - started:.0f} s in all.  \n"
        f"Command: `{command.strip()}`  \nMachine: {machine()}",
        render(table, clients, [k for k in METRICS if k not in w4]),
    ]
    for ours, driver in (("napixclient", "the gevent driver"),
                         ("napixclient_aio", "the asyncio driver")):
        ratios = render_ratios(table, clients, ours) if ours in clients else ""
        if ratios and len(clients) > 1:
            parts += [f"{ours} ({driver}) against each other client (> 1.00x: {ours} "
                      "is better):", ratios]
    signing = render_signing(table, clients)
    if signing:
        parts += ["Signed over unsigned, in requests per second (1.00x: signing is free):",
                  signing]
    if "W4" in args.workloads:
        parts += [f"W4: {args.w4_hosts:,} hosts x 1 GET answered after 20 ms, client's soft "
                  f"RLIMIT_NOFILE {args.w4_nofile:,}, each library's default limits "
                  f"(answers out of {args.w4_hosts:,}):",
                  render(table, clients, w4)]
    text = "\n\n".join(part for part in parts if part)
    for workload, by_client in raw.items():
        for client, runs in by_client.items():
            seen = sorted({d for r in runs for d in r.get("deprecations", [])})
            if seen:
                print(f"warning: {workload} {client} raised {'; '.join(seen)}", file=sys.stderr)
    print("\n" + text)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(raw, handle, indent=1)
    if args.write:
        write_table(args.write, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
