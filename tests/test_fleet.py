"""napixclient.fleet: probes spread over Celery workers.

The tests that need the fleet run a real redis-server (Debian's package:
``apt-get install -y redis-server``) on a free port of 127.0.0.1, two worker
processes (``-P gevent``: one started as ``python -m celery -A
napixclient.fleet worker``, one through :func:`napixclient.cli.worker.worker_main`)
and a backend process listening on 2,000 ports of 127.0.0.1. They are
skipped, saying why, only when redis-server or the fleet extra is missing.

Run as a script, this file is that backend (``serve N``) or a
NapixTestServer that checks signatures (``napix``); the tests start it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

import pytest

from napixclient import Client, fleet
from napixclient.cli import worker
from napixclient.fleet import FleetError, WorkerInfo
from napixclient.fleet.celeryapp import redis_transport

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)
HOSTS = 2000
#: The workers' key: it must never be in a task message or a row.
WORKER_KEY = "fleet-worker-key-5f0c7a"
#: What the calling process has in its own environment: never sent either.
CALLER_KEY = "fleet-caller-key-91be2d"
CALLER_TOKEN = "fleet-caller-token-3a77e1"
#: Seconds before a lost worker's shard goes to another: short, for the tests.
VISIBILITY = 3.0

# These tests run under gevent.monkey.patch_all() too (python tests/patched.py):
# the caller's side of the fleet and run_shard, in a process that patched, as
# a gevent program and Celery's gevent pool are. The workers patch always.
pytestmark = pytest.mark.patched


# -- the backends, run as child processes ---------------------------------


def serve_ports(count: int) -> None:
    """Listen on ``count`` ports of 127.0.0.1; answer ``GET /t/TAG/MS`` after
    MS milliseconds with ``{"port": P, "tag": TAG}`` and count it under TAG
    when it arrives; ``GET /hits/TAG`` answers that count. Prints the ports
    as one JSON line, stops when standard input closes."""
    import asyncio

    hits: Counter = Counter()

    class Answer(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.port = transport.get_extra_info("sockname")[1]
            self.buffer = b""

        def data_received(self, data):
            self.buffer += data
            while b"\r\n\r\n" in self.buffer:
                head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
                target = head.split(b" ", 2)[1].decode("ascii", "replace")
                parts = target.split("?", 1)[0].strip("/").split("/")
                if parts[0] == "hits" and len(parts) == 2:
                    self.answer(200, {"hits": hits[parts[1]]})
                elif parts[0] == "t" and len(parts) == 3 and parts[2].isdigit():
                    hits[parts[1]] += 1
                    loop.call_later(int(parts[2]) / 1000.0, self.answer, 200,
                                    {"port": self.port, "tag": parts[1]})
                else:
                    self.answer(404, {"error": "no such path"})

        def answer(self, status, document):
            if self.transport.is_closing():
                return
            body = json.dumps(document).encode()
            self.transport.write(
                b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (status, len(body), body))

    async def main():
        servers = [await loop.create_server(Answer, "127.0.0.1", 0, backlog=512)
                   for _ in range(count)]
        print(json.dumps([s.sockets[0].getsockname()[1] for s in servers]), flush=True)
        closed = asyncio.Event()
        loop.add_reader(0, lambda: None if os.read(0, 4096) else closed.set())
        await closed.wait()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())


def serve_napix() -> None:
    """A NapixTestServer that knows the workers' key: ``/whoami`` answers
    the login of a well-signed request; ``/echo-key`` answers the key itself,
    as a careless far side might. Prints its port; stops at end of stdin."""
    import gevent.socket

    from napixclient.testing import NapixTestServer

    server = NapixTestServer(users={"root": WORKER_KEY}).start()
    server.route("/whoami", handler=lambda request: {"login": "root", "ok": True})
    server.route("/echo-key", body={"said": f"my key is {WORKER_KEY}"})
    print(json.dumps([server.port]), flush=True)
    while True:
        gevent.socket.wait_read(0)
        if not os.read(0, 4096):
            break
    server.stop()


class Child:
    """A child process of this file (``serve`` or ``napix`` mode) whose ports
    come on its first line; stopped by closing its standard input."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, *args], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=CHECKOUT), text=True)
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(f"the backend {args} did not start")
        self.ports = json.loads(line)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def hits(backend: Child, tag: str) -> int:
    with Client(f"127.0.0.1:{backend.ports[0]}", timeout=5) as client:
        return client.get(f"/hits/{tag}").body["hits"]


# -- redis and the workers -------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen, grace: float = 5.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class Fleet:
    """A redis-server and two workers, ``w1`` (``python -m celery``) and
    ``w2`` (``napixclient.cli.worker.worker_main``), each ``-c 2``."""

    def __init__(self, logs) -> None:
        self.logs = logs
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=open(logs / "redis.log", "w"), stderr=subprocess.STDOUT)
        self.workers: dict = {}
        import redis

        self.client = redis.Redis(port=self.port, socket_timeout=5)
        end = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > end or self.redis.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        self.app = fleet.make_app(self.url)

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NAPIX_")}
        env.update(PYTHONPATH=CHECKOUT, NAPIX_BROKER=self.url, NAPIX_LOGIN="root",
                   NAPIX_KEY=WORKER_KEY, NAPIX_FLEET_VISIBILITY_TIMEOUT=str(VISIBILITY))
        return env

    def start(self, name: str) -> None:
        if name == "w1":
            argv = [sys.executable, "-m", "celery", "-A", "napixclient.fleet", "worker",
                    "-P", "gevent", "-c", "2", "-Q", fleet.QUEUE, "-n", "w1@%h",
                    "--loglevel", "INFO"]
        else:
            argv = [sys.executable, "-c",
                    "import sys; from napixclient.cli.worker import worker_main; "
                    "sys.exit(worker_main(sys.argv[1:]))",
                    "-c", "2", "-n", f"{name}@%h", "--loglevel", "INFO"]
        log = open(self.logs / f"{name}.log", "a")
        self.workers[name] = subprocess.Popen(argv, env=self.env(), stdout=log,
                                              stderr=subprocess.STDOUT, cwd=CHECKOUT)

    def ensure(self, names=("w1", "w2")) -> None:
        """Start the workers not running; wait until each answers a ping."""
        for name in names:
            process = self.workers.get(name)
            if process is None or process.poll() is not None:
                self.start(name)
        end = time.monotonic() + 60
        while True:
            answered = {name.split("@")[0] for reply in self.app.control.ping(timeout=0.5)
                        for name in reply}
            if set(names) <= answered:
                return
            dead = [n for n in names if self.workers[n].poll() is not None]
            if dead or time.monotonic() > end:
                raise RuntimeError(f"workers {sorted(set(names) - answered)} did not come "
                                   f"up; see {self.logs}")

    def stop(self) -> None:
        for process in self.workers.values():
            stop_process(process)
        stop_process(self.redis)
        self.client.close()


@contextlib.contextmanager
def workers_not_consuming(running: Fleet):
    """Stop the workers taking shards, so that the shards sent meanwhile wait
    in Redis, where a test can read or change them; then let them consume
    again.

    A worker's BRPOP sent before it stopped consuming is still pending in
    Redis for up to the transport's ``brpop_timeout``: a shard pushed then
    goes to that worker, which hands it back later (no consumer for it).
    Waiting that long first leaves every shard in the queue."""
    control = running.app.control
    control.cancel_consumer(fleet.QUEUE, reply=True, timeout=2, limit=2)
    try:
        time.sleep(redis_transport().brpop_timeout + 0.5)
        yield
    finally:
        control.add_consumer(fleet.QUEUE, reply=True, timeout=2, limit=2)


@pytest.fixture(scope="module")
def fleet_module(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    pytest.importorskip("celery", reason="the fleet extra is not installed")
    pytest.importorskip("redis", reason="the fleet extra is not installed")
    running = Fleet(tmp_path_factory.mktemp("fleet"))
    try:
        running.ensure()
        yield running
    finally:
        running.stop()


@pytest.fixture
def live_fleet(fleet_module):
    fleet_module.ensure()
    return fleet_module


@pytest.fixture(scope="module")
def backend(fleet_module):
    child = Child("serve", str(HOSTS))
    try:
        yield child
    finally:
        child.stop()


@pytest.fixture
def no_caller_credentials(monkeypatch):
    for name in ("NAPIX_LOGIN", "NAPIX_KEY", "NAPIX_TOKEN", "NAPIX_BROKER"):
        monkeypatch.delenv(name, raising=False)


def hosts_of(backend: Child):
    return [f"127.0.0.1:{port}" for port in backend.ports]


# -- without a broker ------------------------------------------------------


def test_the_fleet_imports_nothing_of_the_napix_command():
    # The command imports the fleet (for --broker and napix worker), lazily;
    # never the reverse.
    code = ("import sys, napixclient.fleet; "
            "print(sorted(m for m in sys.modules if m.split('.')[:2] == ['napixclient', 'cli']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=CHECKOUT), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_shard_size_spreads_over_the_slots_within_the_smallest_file_limit():
    two = [WorkerInfo("a", 2, 20000, 60.0), WorkerInfo("b", 2, 20000, 60.0)]
    # 4 slots, two shards each: 2,000 hosts in shards of 250.
    assert fleet.shard_size_for(2000, two) == 250
    # Few hosts: never below MIN_SHARD, never above the host count.
    assert fleet.shard_size_for(60, two) == fleet.MIN_SHARD
    assert fleet.shard_size_for(7, two) == 7
    # A worker with 1,024 descriptors and -c 4 holds 4 shards of (1024 - 64) / 4.
    small = [WorkerInfo("a", 2, 20000, 60.0), WorkerInfo("b", 4, 1024, 60.0)]
    assert fleet.shard_size_for(100000, small) == (1024 - fleet.FD_HEADROOM) // 4
    with pytest.raises(ValueError, match="at least one worker"):
        fleet.shard_size_for(10, [])


@pytest.mark.parametrize("kwargs, message", [
    (dict(hosts=[], path="/"), "no host"),
    (dict(hosts="127.0.0.1:1", path="/"), "not one string"),
    (dict(hosts=["127.0.0.1:1", "bad host:x"], path="/"), "bad host"),
    (dict(hosts=["127.0.0.1:1"], path="x"), "path"),
    (dict(hosts=["127.0.0.1:1"], path="/", shard_size=0), "shard_size"),
    (dict(hosts=["127.0.0.1:1"], path="/", timeout=-1), "timeout"),
    (dict(hosts=["127.0.0.1:1"], path="/", simultaneous=0), "simultaneous"),
    (dict(hosts=["127.0.0.1:1"], path="/", first_where="status == 200"), "first_where"),
    (dict(hosts=["127.0.0.1:1"], path="/", broker="127.0.0.1:6379"), "URL"),
])
def test_probe_refuses_bad_arguments_before_reaching_the_broker(kwargs, message):
    kwargs.setdefault("broker", f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    with pytest.raises(ValueError, match=message):
        fleet.probe(**kwargs)
    assert time.monotonic() - started < 1.0


def test_broker_name_masks_the_credentials_only():
    assert fleet.broker_name("redis://:pw@127.0.0.1:6379/0") == "redis://***@127.0.0.1:6379/0"
    assert fleet.broker_name("amqp://u:pw@127.0.0.1//") == "amqp://***@127.0.0.1//"
    assert fleet.broker_name("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    # A password with an unencoded "/" ends the authority early: masked anyway.
    assert fleet.broker_name("redis://:p/w@127.0.0.1:6379/0") == "redis://***@127.0.0.1:6379/0"


def test_without_celery_the_fleet_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "celery", None)
    with pytest.raises(FleetError, match=r"pip install 'celery\[redis\]' redis"):
        fleet.make_app("redis://127.0.0.1:1/0")


def test_run_shard_signs_with_the_environment_and_masks_its_secrets(napix_server_factory):
    server = napix_server_factory(users={"root": WORKER_KEY})
    server.route("/capacity", body={"free": 3})
    server.route("/echo-key", body=f"key={WORKER_KEY}")
    server.route("/slow", latency=5.0)
    env = {"NAPIX_LOGIN": "root", "NAPIX_KEY": WORKER_KEY}
    rows = fleet.run_shard([server.host, "127.0.0.1:1"], "/capacity", start=10,
                           timeout=2.0, body=True, environ=env)
    by_host = {row["host"]: row for row in rows}
    assert by_host[server.host]["status"] == 200 and by_host[server.host]["index"] == 10
    assert by_host[server.host]["body"] == {"free": 3}
    assert by_host["127.0.0.1:1"]["label"] == "ConnectionError"
    assert by_host["127.0.0.1:1"]["index"] == 11
    [echo] = fleet.run_shard([server.host], "/echo-key", environ=env, body=True)
    assert WORKER_KEY not in json.dumps(echo) and echo["summary"] == "key=***"
    # A wrong key is a 403: the row comes from the server's check, not ours.
    [wrong] = fleet.run_shard([server.host], "/capacity",
                              environ={"NAPIX_LOGIN": "root", "NAPIX_KEY": "nope"})
    assert wrong["status"] == 403 and wrong["outcome"] == "failed"
    # A request past the shard's deadline is a row too, "timed out".
    [slow] = fleet.run_shard([server.host], "/slow", timeout=0.3, environ=env)
    assert slow["outcome"] == "timed out" and slow["label"] == "Timeout"


def test_a_short_key_is_masked_in_what_the_far_side_said_never_in_the_row_s_own_words(
        napix_server_factory):
    # With NAPIX_KEY=k the outcome "ok" came back as "o***".
    server = napix_server_factory(users={"root": "k"})
    server.route("/capacity", body={"kind": "kvm", "free": 3})
    env = {"NAPIX_LOGIN": "root", "NAPIX_KEY": "k"}
    [data] = fleet.run_shard([server.host], "/capacity", body=True, environ=env)
    assert set(data) == {"host", "status", "error", "latency_ms", "queued_ms", "outcome",
                         "body", "summary", "chain", "index", "label", "answered"}
    assert data["outcome"] == "ok" and data["label"] == "200" and data["status"] == 200
    # What the server said is masked (a short key is everywhere in words).
    assert data["body"] == {"***ind": "***vm", "free": 3}
    assert "k" not in data["summary"]
    row = fleet.FleetRow.from_wire(data, "w@h")
    assert json.loads(row.json_line())["outcome"] == "ok"


def bad_broker_urls():
    port = free_port()
    return [
        ("bogus", "the broker must be a URL such as redis://127.0.0.1:6379/0"),
        (f"http://127.0.0.1:{port}/0", "'http' is not a scheme of a broker"),
        ("redis://127.0.0.1:notaport/0", "the port must be a number from 1 to 65535"),
        # A password with an unencoded "/": kombu read "pw" as the port.
        (f"redis://:pw/sekret@127.0.0.1:{port}/0",
         "percent-encode the '/', '?' and '#' of its password"),
    ]


@pytest.mark.parametrize("url, message", bad_broker_urls())
def test_napix_probe_with_a_bad_broker_url_is_bad_usage_on_one_line(url, message):
    done = napix("probe", "--broker", url, "127.0.0.1:1", "/", timeout=30)
    assert done.returncode == 2, done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("napix probe: error: --broker: ") and message in last
    assert "Traceback" not in done.stderr and "sekret" not in done.stderr


@pytest.mark.parametrize("url, message", bad_broker_urls())
def test_napix_worker_with_a_bad_broker_url_says_so_in_one_line_and_exits_2(url, message):
    pytest.importorskip("celery", reason="the fleet extra is not installed")
    done = napix("worker", "--broker", url, timeout=30)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("napix worker: ") and message in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "sekret" not in done.stderr


def test_worker_main_refuses_a_login_without_a_key(monkeypatch, capsys):
    monkeypatch.setenv("NAPIX_LOGIN", "root")
    monkeypatch.delenv("NAPIX_KEY", raising=False)
    assert worker.worker_main(["--broker", "redis://127.0.0.1:1/0"]) == 2
    assert "NAPIX_LOGIN is set but NAPIX_KEY is not" in capsys.readouterr().err


def test_napix_worker_whose_broker_is_down_exits_within_seconds():
    pytest.importorskip("celery", reason="the fleet extra is not installed")
    port = free_port()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "napixclient", "worker", "--broker",
         f"redis://:sekret@127.0.0.1:{port}/0", "-n", "dead@%h"],
        env=dict(os.environ, PYTHONPATH=CHECKOUT, NAPIX_LOGIN="root", NAPIX_KEY=WORKER_KEY),
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert time.monotonic() - started < 15
    # One line of ours, not Celery's "broker_connection_retry_on_startup".
    assert done.stderr.startswith(
        f"napix worker: cannot reach the broker redis://***@127.0.0.1:{port}/0 within 3 s: ")
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "sekret" not in done.stderr and WORKER_KEY not in done.stderr


def test_worker_command_runs_celery_with_the_gevent_pool():
    import argparse

    parser = argparse.ArgumentParser()
    worker.add_worker_arguments(parser)
    args = parser.parse_args(["--broker", "redis://:pw@127.0.0.1:7/1", "-c", "8",
                              "--visibility-timeout", "30", "-n", "a@%h"])
    argv, env = worker.worker_command(args, environ={})
    assert argv[1:] == ["-m", "celery", "-A", "napixclient.fleet", "worker", "-P", "gevent",
                        "-c", "8", "-Q", fleet.QUEUE, "--loglevel", "WARNING", "-n", "a@%h"]
    assert env["NAPIX_BROKER"] == "redis://:pw@127.0.0.1:7/1"
    assert env["NAPIX_FLEET_VISIBILITY_TIMEOUT"] == "30.0"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == CHECKOUT


# -- with redis-server and two workers -------------------------------------


def test_a_broker_on_a_dead_port_fails_within_seconds_naming_it_without_password(
        no_caller_credentials):
    pytest.importorskip("celery", reason="the fleet extra is not installed")
    port = free_port()
    started = time.monotonic()
    with pytest.raises(FleetError) as caught:
        fleet.probe(["127.0.0.1:1"], "/", broker=f"redis://:sekret@127.0.0.1:{port}/0")
    assert time.monotonic() - started < 5.0
    message = str(caught.value)
    assert f"cannot reach the broker redis://***@127.0.0.1:{port}/0" in message
    assert "sekret" not in message and "refused" in message.lower()


def test_a_broker_that_never_answers_fails_within_the_connect_timeout(no_caller_credentials):
    pytest.importorskip("celery", reason="the fleet extra is not installed")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts in the kernel, never answers
        started = time.monotonic()
        with pytest.raises(FleetError, match="cannot reach the broker"):
            fleet.probe(["127.0.0.1:1"], "/",
                        broker=f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        assert time.monotonic() - started < fleet.CONNECT_TIMEOUT + 2.0


def test_a_broker_without_workers_is_a_clear_error(live_fleet, no_caller_credentials):
    # The same redis, another database: no worker listens there.
    url = live_fleet.url.rsplit("/", 1)[0] + "/7"
    with pytest.raises(FleetError, match=r"no fleet worker answered on .*/7 within"):
        fleet.probe(["127.0.0.1:1"], "/", broker=url, discovery_timeout=0.3)


def test_a_probe_of_2000_hosts_gives_the_rows_of_a_local_probe(
        live_fleet, backend, tmp_path, no_caller_credentials):
    hosts = hosts_of(backend)
    hosts_file = tmp_path / "fleet.txt"
    hosts_file.write_text("\n".join(hosts) + "\n")
    local = subprocess.run(
        [sys.executable, "-m", "napixclient", "probe", "--json", "--hosts-file",
         str(hosts_file), "/t/same/0"],
        env=dict(os.environ, PYTHONPATH=CHECKOUT), capture_output=True, text=True,
        timeout=120)
    assert local.returncode == 0, local.stderr
    local_rows = {row["host"]: row for row in map(json.loads, local.stdout.splitlines())}

    started = time.monotonic()
    probe = fleet.probe(hosts, "/t/same/0", broker=live_fleet.url, body=True)
    rows = list(probe)
    elapsed = time.monotonic() - started

    assert len(rows) == HOSTS and sorted(row.index for row in rows) == list(range(HOSTS))
    assert len(local_rows) == HOSTS
    fleet_rows = {row.host: row.as_json() for row in rows}
    assert set(fleet_rows) == set(local_rows)
    for host, row in fleet_rows.items():
        assert row.keys() == local_rows[host].keys()
        for key in ("status", "error", "outcome", "body", "summary", "chain", "match"):
            assert row[key] == local_rows[host][key], (host, key)
    assert all(row.status == 200 for row in rows)
    # Spread over both workers, in shards sized from their report.
    assert {row.worker.split("@")[0] for row in rows} == {"w1", "w2"}
    assert probe.shard_size == 250 and probe.shards == 8 and probe.left == 0
    assert elapsed < 30


def napix(*args, env=None, timeout=120):
    """Run the napix command; return the CompletedProcess (text)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NAPIX_")}
    environ.update(env or {}, PYTHONPATH=CHECKOUT)
    return subprocess.run([sys.executable, "-m", "napixclient", *args], env=environ,
                          capture_output=True, text=True, timeout=timeout)


def test_napix_probe_with_broker_prints_what_a_local_probe_prints(
        live_fleet, backend, tmp_path):
    hosts_file = tmp_path / "fleet.txt"
    hosts_file.write_text("\n".join(hosts_of(backend)[:300]) + "\n")
    local = napix("probe", "--json", "--hosts-file", str(hosts_file), "/t/cli/0")
    remote = napix("probe", "--json", "--broker", live_fleet.url, "--hosts-file",
                   str(hosts_file), "/t/cli/0")
    assert local.returncode == remote.returncode == 0, remote.stderr

    def rows(done):
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        for line in lines:
            del line["latency_ms"]
        return sorted(lines, key=lambda line: line["host"])

    assert rows(remote) == rows(local) and len(rows(local)) == 300
    assert remote.stderr.startswith("300 hosts: 300 ok, 0 failed, 0 timed out in ")


def test_napix_probe_with_broker_makes_no_local_client(live_fleet, backend, tmp_path,
                                                       monkeypatch, capsys,
                                                       no_caller_credentials):
    """With --broker the workers probe: the caller makes no ClientPool and
    no Client per host (making one per host was most of its CPU per row)."""
    import napixclient.cli.command as command

    def refuse(*args, **kwargs):
        raise AssertionError("a ClientPool was made for a fleet probe")

    monkeypatch.setattr(command, "ClientPool", refuse)
    hosts_file = tmp_path / "fleet.txt"
    hosts_file.write_text("\n".join(hosts_of(backend)[:50]) + "\n")
    code = command.main(["probe", "--json", "--broker", live_fleet.url,
                         "--hosts-file", str(hosts_file), "/t/cli/0"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert len(out.splitlines()) == 50
    assert err.startswith("50 hosts: 50 ok, 0 failed, 0 timed out in ")


def test_napix_probe_verbose_with_broker_says_the_workers_sign_and_where_shards_went(
        live_fleet, backend, tmp_path):
    # -v said "auth: none (no --login/--key, --token or NAPIX_* variables)"
    # and named this process's proxies: neither is used with --broker.
    hosts_file = tmp_path / "fleet.txt"
    hosts_file.write_text("\n".join(hosts_of(backend)[:60]) + "\n")
    done = napix("probe", "-v", "--json", "--broker", live_fleet.url, "--hosts-file",
                 str(hosts_file), "/t/verbose/0", env={"NAPIX_TOKEN": CALLER_TOKEN})
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[:2] == [
        "napix: napixclient.cli: auth: each worker's own (NAPIX_LOGIN and NAPIX_KEY, or "
        "NAPIX_TOKEN, of its environment)",
        "napix: napixclient.cli: probing 60 hosts for GET /t/verbose/0 on the fleet's "
        "workers (their proxies)"]
    assert lines[2].startswith("napix: napixclient.cli: 3 shards of 25 sent to w1@"), lines
    assert "(-c 2)" in lines[2] and "rows awaited for " in lines[2]
    assert lines[3].startswith("60 hosts: 60 ok,")


def test_napix_probe_with_broker_and_first_where_exits_0_at_the_match(
        live_fleet, backend, tmp_path):
    hosts = hosts_of(backend)[:300]
    hosts_file = tmp_path / "fleet.txt"
    hosts_file.write_text("\n".join(hosts) + "\n")
    done = napix("probe", "--broker", live_fleet.url, "--hosts-file", str(hosts_file),
                 "--first-where", f"body['port'] == {backend.ports[40]}", "/t/cliw/0")
    assert done.returncode == 0, done.stderr
    assert f"first match: {hosts[40]} (" in done.stdout


def test_napix_probe_with_an_unreachable_broker_exits_1_with_one_line():
    pytest.importorskip("celery", reason="the fleet extra is not installed")
    port = free_port()
    done = napix("probe", "--broker", f"redis://:sekret@127.0.0.1:{port}/0",
                 "127.0.0.1:1", "/", timeout=30)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(f"napix: cannot reach the broker redis://***@127.0.0.1:{port}")
    assert "Traceback" not in done.stderr and "sekret" not in done.stderr


def test_napix_worker_names_its_credentials_and_broker_as_they_are(live_fleet):
    """Without credentials it says the environment has none (it has no
    --login, --key or --token); its banner shows no ':**@' for a broker
    without a password."""
    url = live_fleet.url.rsplit("/", 1)[0] + "/5"  # a database no probe uses
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NAPIX_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "napixclient", "worker", "--broker", url, "-n", "bare@%h"],
        env=dict(environ, PYTHONPATH=CHECKOUT), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "[queues]" in line:
                break
    finally:
        stop_process(process)
    shown = "".join(lines)
    assert ("napix worker: broker " + url + "; signing with none (no NAPIX_LOGIN and "
            "NAPIX_KEY, or NAPIX_TOKEN, in the environment)") in shown, shown
    assert "--login" not in shown and "--token" not in shown
    assert f"transport:   {url}" in shown and ":**@" not in shown, shown


def test_napix_probe_with_broker_refuses_credential_flags():
    done = napix("probe", "--broker", "redis://127.0.0.1:1/0", "--token", "t0k",
                 "127.0.0.1:1", "/")
    assert done.returncode == 2
    assert "--login, --key and --token are not sent" in done.stderr
    assert "t0k" not in done.stderr


@pytest.mark.parametrize("flags", [["--proxy", "http://u:pw@127.0.0.1:3128"],
                                   ["--no-proxy"], ["--cert", "/nonexistent.pem"]])
def test_napix_probe_with_broker_refuses_connection_flags(flags):
    """The workers reach the hosts with their own environment's proxies and
    certificate: a flag that would not be sent is a usage error, at once."""
    done = napix("probe", "--broker", "redis://127.0.0.1:1/0", *flags, "127.0.0.1:1", "/")
    assert done.returncode == 2
    assert "--proxy, --no-proxy, --cert and --cert-key are not sent" in done.stderr
    assert "pw" not in done.stderr


def test_first_where_stops_at_the_match_and_revokes_the_shards_not_started(
        live_fleet, backend, no_caller_credentials):
    hosts = hosts_of(backend)
    wanted = hosts[60]  # in the second shard of 50

    probe = fleet.probe(hosts, "/t/first/200", broker=live_fleet.url, shard_size=50,
                        first_where=lambda values: values["host"] == wanted, deadline=30)
    rows = list(probe)

    assert len(rows) == HOSTS and len({row.index for row in rows}) == HOSTS
    [match] = [row for row in rows if row.match]
    assert match.host == wanted and match is probe.matched
    after = rows[rows.index(match) + 1:]
    assert after and all(row.outcome == "cancelled" and row.status_label() == "Cancelled"
                         for row in after)
    assert probe.left == len(after)
    # 40 shards on 4 slots: most had not started; they never will.
    assert probe.revoked >= 30
    time.sleep(1.5)  # let the shards that were running end
    assert hits(backend, "first") <= 15 * 50


def test_no_credential_travels_in_task_messages(live_fleet, backend, monkeypatch):
    # The caller's own credentials are in its environment too: not sent either.
    monkeypatch.setenv("NAPIX_LOGIN", "root")
    monkeypatch.setenv("NAPIX_KEY", CALLER_KEY)
    monkeypatch.setenv("NAPIX_TOKEN", CALLER_TOKEN)
    hosts = hosts_of(backend)[:100]
    # The shards wait in Redis to be read.
    with workers_not_consuming(live_fleet):
        probe = fleet.probe(hosts, "/t/creds/0", broker=live_fleet.url, shard_size=10)
        queued = live_fleet.client.lrange(fleet.QUEUE, 0, -1)
    assert len(queued) == 10
    bodies = [base64.b64decode(json.loads(raw)["body"]) for raw in queued]
    everything = b"".join(queued + bodies)
    assert b"/t/creds/0" in everything and hosts[0].encode() in everything
    for secret in (WORKER_KEY, CALLER_KEY, CALLER_TOKEN):
        assert secret.encode() not in everything
    rows = list(probe)
    assert len(rows) == 100 and all(row.status == 200 for row in rows)


def test_a_probe_interrupted_while_sending_revokes_the_shards_it_sent(
        live_fleet, backend, no_caller_credentials, monkeypatch):
    # Ctrl-C while napix probe --broker sent its shards left those sent to
    # run on the workers, for nobody.
    app = fleet.celeryapp.app_for(live_fleet.url)
    send_task = app.send_task
    sent = []

    def interrupted_at_the_third(*args, **kwargs):
        if len(sent) == 2:
            raise KeyboardInterrupt
        sent.append(send_task(*args, **kwargs))
        return sent[-1]

    monkeypatch.setattr(app, "send_task", interrupted_at_the_third)
    with workers_not_consuming(live_fleet):
        with pytest.raises(KeyboardInterrupt):
            fleet.probe(hosts_of(backend)[:50], "/t/interrupted/0", broker=live_fleet.url,
                        shard_size=10)
        assert live_fleet.client.llen(fleet.QUEUE) == 2
    # The workers take the two shards and drop them, revoked.
    end = time.monotonic() + 10
    while live_fleet.client.llen(fleet.QUEUE) and time.monotonic() < end:
        time.sleep(0.2)
    time.sleep(2.0)
    assert hits(backend, "interrupted") == 0


def test_workers_sign_with_their_own_credentials_and_mask_them_in_rows(
        live_fleet, no_caller_credentials):
    napix = Child("napix")
    try:
        host = f"127.0.0.1:{napix.ports[0]}"
        [row] = fleet.probe([host], "/whoami", broker=live_fleet.url)
        assert row.status == 200 and row.worker is not None  # the worker's key signed it
        [echo] = fleet.probe([host], "/echo-key", broker=live_fleet.url, body=True)
    finally:
        napix.stop()
    assert echo.status == 200 and WORKER_KEY not in json.dumps(echo.as_json())
    assert echo.body == {"said": "my key is ***"}


@pytest.mark.parametrize("fate", ["lost", "revoked"])
def test_a_shard_lost_or_revoked_is_sent_again_once_overdue(
        live_fleet, backend, no_caller_credentials, fate):
    hosts = hosts_of(backend)[:50]
    control = live_fleet.app.control
    with workers_not_consuming(live_fleet):
        probe = fleet.probe(hosts, f"/t/{fate}/0", broker=live_fleet.url, shard_size=10,
                            timeout=1.0)
        redis = live_fleet.client
        if fate == "lost":
            # What a worker killed between BRPOP and its bookkeeping does:
            # the message is gone from the queue and recorded nowhere.
            assert redis.lrem(fleet.QUEUE, 1, redis.lindex(fleet.QUEUE, 0)) == 1
        else:
            # Revoked by someone else: its only copy is discarded.
            control.revoke(json.loads(redis.lindex(fleet.QUEUE, 0))["headers"]["id"])
    started = time.monotonic()
    rows = list(probe)
    assert sorted(row.index for row in rows) == list(range(50))
    assert all(row.status == 200 for row in rows)
    assert probe.resent == 1
    # Sent again once the queue had been empty for 2 * (1 + 3) + 2 s.
    assert 10.0 <= time.monotonic() - started < 30.0


def test_a_worker_killed_mid_shard_loses_no_host_and_duplicates_none(
        live_fleet, backend, no_caller_credentials):
    hosts = hosts_of(backend)
    victim = live_fleet.workers["w1"]
    rows = []
    killed_at = None
    # timeout=2: a shard taken from Redis by w1 and not yet recorded when it
    # dies is sent again after 2 * (2 + 3) + 2 = 12 s of empty queue.
    probe = fleet.probe(hosts, "/t/kill/500", broker=live_fleet.url, shard_size=100,
                        timeout=2.0)
    for row in probe:
        rows.append(row)
        if killed_at is None and row.worker.startswith("w1@"):
            # w1 has taken its next shard at once (20 shards, 4 slots) and
            # is waiting for its answers: kill it in the middle.
            time.sleep(0.2)
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            killed_at = len(rows)
    assert killed_at is not None and killed_at < HOSTS
    assert len(rows) == HOSTS
    assert sorted(row.index for row in rows) == list(range(HOSTS))
    assert all(row.status == 200 for row in rows)
    # The killed shard was sent again: its hosts were asked twice, shown once.
    assert hits(backend, "kill") > HOSTS


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve_ports(int(sys.argv[2]))
    elif sys.argv[1] == "napix":
        serve_napix()
