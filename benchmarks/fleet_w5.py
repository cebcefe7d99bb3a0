"""W5 fleet: 20,000 hosts x 1 GET answered after 20 ms; one local ``napix
probe`` against the same probe over 1, 2 and 4 fleet workers. Run by hand,
never in CI.

    apt-get install -y redis-server && pip install 'celery[redis]' redis
    python benchmarks/fleet_w5.py                       # a few minutes on 2 cores
    python benchmarks/fleet_w5.py --hosts 2000 --workers 1,2     # a quick look

Everything listens on loopback and is started and stopped here: a
redis-server on 127.0.0.1; delay backends (several processes answering
``GET /delay/<ms>`` after ``<ms>`` ms, like benchmarks/backends.py), one
port per host, on 1,000 ports of each of 127.0.1.1, 127.0.1.2... (20,000
listening ports would not fit in the ephemeral range of 127.0.0.1 beside
the client's own); and for each fleet size that many workers (``celery -A
napixclient.fleet worker -P gevent -c 4``). Nobody signs (the backends check
nothing), as in the other workloads.

For each configuration it reports the makespan of the command (``napix probe
--json``, with ``--broker`` for the fleet: from start to exit, Python's start
included) and rows per second; then, from the Python API in this process, the
inputs of the model in BENCHMARKS.md (section W5): the time to connect, ask the
workers and send the shards, the shard size, the caller's and the workers'
CPU time per row, and the round trip of one one-host shard.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from backends import raise_fd_limit  # noqa: E402

from napixclient import fleet  # noqa: E402

#: The longest one command may run (seconds) before it is killed.
DEADLINE_S = 300.0
TICKS = os.sysconf("SC_CLK_TCK")


#: Ports per loopback address of the backends, from BASE_PORT up.
PORTS_PER_ADDRESS = 1000
BASE_PORT = 21000
_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
         b"Content-Length: %d\r\n\r\n")


def serve(addresses: List[str], ports: int) -> None:
    """Child process: listen on ``ports`` ports of each address and answer
    ``GET /delay/<ms>`` after ``<ms>`` ms with a small JSON document;
    print "ready" once listening, stop when standard input closes."""
    import asyncio

    raise_fd_limit()

    class Delay(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.buffer = b""
            transport.get_extra_info("socket").setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while b"\r\n\r\n" in self.buffer:
                head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
                target = head.split(b" ", 2)[1]
                try:
                    delay_ms = int(target.rsplit(b"/", 1)[1])
                except ValueError:
                    delay_ms = 0
                loop.call_later(delay_ms / 1000.0, self.answer, delay_ms)

        def answer(self, delay_ms: int) -> None:
            if not self.transport.is_closing():
                body = b'{"status": "ok", "delay_ms": %d}' % delay_ms
                self.transport.write(_HEAD % len(body) + body)

    async def main() -> None:
        servers = [await loop.create_server(Delay, address, BASE_PORT + offset, backlog=1024)
                   for address in addresses for offset in range(ports)]
        print("ready", flush=True)
        closed = asyncio.Event()
        loop.add_reader(0, lambda: None if os.read(0, 4096) else closed.set())
        await closed.wait()
        for server in servers:
            server.close()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())


def start_backends(hosts: int, processes: int, env: Dict[str, str]
                   ) -> "tuple[List[subprocess.Popen], List[str]]":
    """``hosts`` ports over 127.0.1.1, 127.0.1.2... split among ``processes``
    children; returns the children and the hosts."""
    addresses = [f"127.0.1.{n}" for n in range(1, -(-hosts // PORTS_PER_ADDRESS) + 1)]
    children = []
    share = -(-len(addresses) // processes)
    for number in range(processes):
        mine = addresses[number * share:(number + 1) * share]
        if mine:
            children.append(subprocess.Popen(
                [sys.executable, __file__, "--serve", ",".join(mine),
                 str(PORTS_PER_ADDRESS)], env=env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, text=True))
    for child in children:
        if child.stdout.readline().strip() != "ready":
            for other in children:
                stop(other)
            raise RuntimeError("a backend did not start (ports taken?)")
    names = [f"{address}:{BASE_PORT + offset}" for address in addresses
             for offset in range(PORTS_PER_ADDRESS)]
    return children, names[:hosts]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process, from /proc."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        if process.stdin is not None:
            process.stdin.close()  # the backends stop at end of input
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)


def command(args: List[str], env: Dict[str, str], out_path: str,
            profile_dir: Optional[str] = None) -> Dict[str, Any]:
    """Run ``napix ARGS`` with --json, stdout to a file; makespan and outcomes.
    With ``profile_dir``, under cProfile, its statistics written there as
    ``<out_path's name>.prof`` (read them with ``python -m pstats``)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    profile: List[str] = []
    if profile_dir is not None:
        name = os.path.splitext(os.path.basename(out_path))[0]
        profile = ["-m", "cProfile", "-o", os.path.join(profile_dir, f"{name}.prof")]
    with open(out_path, "w") as out:
        done = subprocess.run([sys.executable, *profile, "-m", "napixclient", *args], env=env,
                              stdout=out, stderr=subprocess.PIPE, text=True,
                              timeout=DEADLINE_S)
    makespan = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    outcomes: Counter = Counter()
    errors: Counter = Counter()
    with open(out_path) as handle:
        for line in handle:
            row = json.loads(line)
            outcomes[row["outcome"]] += 1
            if row["error"]:
                errors[f"{row['error']}: {row['summary'][:60]}"] += 1
    rows = sum(outcomes.values())
    return {"makespan_s": makespan, "rows": rows, "rows_per_s": rows / makespan,
            "outcomes": dict(outcomes), "errors": dict(errors.most_common(3)),
            "exit": done.returncode, "summary": done.stderr.strip().splitlines()[-1:],
            "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)}


def api_run(hosts: List[str], path: str, broker: str, workers: List[subprocess.Popen]
            ) -> Dict[str, Any]:
    """The same probe from the Python API, timed in its phases."""
    worker_cpu = sum(cpu_seconds(w.pid) for w in workers)
    me = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    probe = fleet.probe(hosts, path, broker=broker, timeout=30.0)
    sent = time.monotonic()
    first = None
    outcomes: Counter = Counter()
    for row in probe:
        if first is None:
            first = time.monotonic()
        outcomes[row.outcome] += 1
    last = time.monotonic()
    mine = resource.getrusage(resource.RUSAGE_SELF)
    rows = sum(outcomes.values())
    return {
        "makespan_s": last - started, "setup_s": sent - started,
        "first_row_s": (first or last) - started, "rows": rows,
        "rows_per_s": rows / (last - started), "outcomes": dict(outcomes),
        "shards": probe.shards, "shard_size": probe.shard_size,
        "resent": probe.resent,
        "caller_cpu_us_per_row": 1e6 * ((mine.ru_utime + mine.ru_stime)
                                        - (me.ru_utime + me.ru_stime)) / rows,
        "worker_cpu_us_per_row": 1e6 * (sum(cpu_seconds(w.pid) for w in workers)
                                        - worker_cpu) / rows,
    }


def shard_round_trip(host: str, broker: str, count: int = 20) -> float:
    """Median seconds from sending a one-host shard to its result (the task
    itself: a GET of /delay/0 on loopback), ``count`` in a row."""
    app = fleet.make_app(broker)
    times = []
    for _ in range(count):
        started = time.monotonic()
        app.send_task(fleet.TASK_NAME, args=([host], "/delay/0", {"timeout": 5.0}),
                      queue=fleet.QUEUE).get(timeout=30)
        times.append(time.monotonic() - started)
    return statistics.median(times)


def start_workers(count: int, concurrency: int, env: Dict[str, str], logs: str
                  ) -> List[subprocess.Popen]:
    workers = []
    for number in range(1, count + 1):
        log = open(os.path.join(logs, f"worker{number}.log"), "w")
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "napixclient.fleet", "worker",
             "-P", "gevent", "-c", str(concurrency), "-Q", fleet.QUEUE,
             "-n", f"w{number}@%h", "--loglevel", "WARNING"],
            env=env, stdout=log, stderr=subprocess.STDOUT))
    app = fleet.make_app(env["NAPIX_BROKER"])
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if len({n for reply in app.control.ping(timeout=0.5) for n in reply}) >= count:
            return workers
        if any(w.poll() is not None for w in workers):
            break
    for worker in workers:
        stop(worker)
    raise RuntimeError(f"{count} workers did not come up; see {logs}")


def machine() -> str:
    model = "?"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    from importlib.metadata import version

    redis_server = subprocess.run(["redis-server", "--version"], capture_output=True,
                                  text=True).stdout.split()[2]
    return (f"nproc {os.cpu_count()}, CPU {model}, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, "
            f"gevent {version('gevent')}, celery {version('celery')}, "
            f"kombu {version('kombu')}, redis-py {version('redis')}, "
            f"redis-server {redis_server.replace('v=', '')}")


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=20000)
    parser.add_argument("--delay-ms", type=int, default=20)
    parser.add_argument("--backends", type=int, default=4,
                        help="backend processes sharing the ports (default: 4)")
    parser.add_argument("--workers", default="1,2,4", help="fleet sizes (default: 1,2,4)")
    parser.add_argument("--concurrency", type=int, default=fleet.DEFAULT_CONCURRENCY)
    parser.add_argument("--json", help="write the results there too")
    parser.add_argument("--profile-command", metavar="DIR",
                        help="run each napix command under cProfile, its statistics in DIR "
                             "(the figures then include the profiler's cost)")
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        parser.error("redis-server is not installed: apt-get install -y redis-server")
    raise_fd_limit()
    profile_dir = None
    if args.profile_command:
        os.makedirs(args.profile_command, exist_ok=True)
        profile_dir = os.path.abspath(args.profile_command)
    sizes = [int(n) for n in args.workers.split(",")]
    path = f"/delay/{args.delay_ms}"
    work = tempfile.mkdtemp(prefix="napix-w5-")
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAPIX_")}
    env.update(PYTHONPATH=ROOT, NAPIX_BROKER=broker)
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    backends: List[subprocess.Popen] = []
    results: Dict[str, Any] = {"hosts": args.hosts, "delay_ms": args.delay_ms,
                               "backends": args.backends, "concurrency": args.concurrency,
                               "machine": machine(), "command": " ".join(
                                   ["python", "benchmarks/fleet_w5.py", *argv]),
                               "runs": {}}
    started = time.monotonic()
    try:
        backends, hosts = start_backends(args.hosts, args.backends, env)
        hosts_file = os.path.join(work, "hosts.txt")
        with open(hosts_file, "w") as handle:
            handle.write("\n".join(hosts) + "\n")
        probe_args = ["probe", "--json", "--timeout", "30", "--hosts-file", hosts_file, path]

        print(f"local: napix probe of {len(hosts)} hosts", flush=True)
        results["runs"]["local"] = command(probe_args, env, os.path.join(work, "local.json"),
                                           profile_dir)
        print(json.dumps(results["runs"]["local"]), flush=True)
        for size in sizes:
            workers = start_workers(size, args.concurrency, env, work)
            try:
                if size == sizes[0]:
                    results["shard_round_trip_s"] = shard_round_trip(hosts[0], broker)
                name = f"fleet x{size}"
                print(f"{name}: napix probe --broker", flush=True)
                run = command(["probe", "--broker", broker, *probe_args[1:]], env,
                              os.path.join(work, f"fleet{size}.json"), profile_dir)
                run["api"] = api_run(hosts, path, broker, workers)
                results["runs"][name] = run
                print(json.dumps(run), flush=True)
            finally:
                for worker in workers:
                    stop(worker)
    finally:
        for backend in backends:
            stop(backend)
        stop(redis)
        results["total_s"] = time.monotonic() - started
    print(table(results))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def table(results: Dict[str, Any]) -> str:
    lines = [f"Command: `{results['command']}`  ",
             f"Machine: {results['machine']}  ",
             f"{results['hosts']:,} hosts x 1 GET answered after {results['delay_ms']} ms, "
             f"{results['backends']} backend processes, workers -c "
             f"{results['concurrency']}; {results['total_s']:.0f} s in all.", "",
             "| run | makespan s | rows/s | ok | failed | timed out | shards x size "
             "| setup s | first row s | caller CPU us/row | workers CPU us/row |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, run in results["runs"].items():
        api = run.get("api", {})
        outcomes = run["outcomes"]
        lines.append(
            f"| {name} | {run['makespan_s']:.2f} | {run['rows_per_s']:,.0f} | "
            f"{outcomes.get('ok', 0):,} | {outcomes.get('failed', 0):,} | "
            f"{outcomes.get('timed out', 0):,} | "
            + (f"{api['shards']} x {api['shard_size']} | {api['setup_s']:.2f} | "
               f"{api['first_row_s']:.2f} | {api['caller_cpu_us_per_row']:.0f} | "
               f"{api['worker_cpu_us_per_row']:.0f} |" if api else
               f"- | - | - | {1e6 * run['cpu_s'] / max(1, run['rows']):.0f} | - |"))
    if "shard_round_trip_s" in results:
        lines += ["", f"One one-host shard, sent and answered: "
                      f"{results['shard_round_trip_s'] * 1000:.1f} ms (median of 20)."]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2].split(","), int(sys.argv[3]))
    else:
        sys.exit(main(sys.argv[1:]))
