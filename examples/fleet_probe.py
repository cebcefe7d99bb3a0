"""Probe hypervisors over a fleet of Celery workers, from Python.

    python examples/fleet_probe.py                   # everything local: see below
    NAPIX_BROKER=redis://HOST:6379/0 python examples/fleet_probe.py HOST [HOST ...]

With no hosts it starts, on 127.0.0.1 only, a redis-server (Debian's
``redis-server`` package), two workers (``celery -A napixclient.fleet worker
-P gevent``) that sign with their own NAPIX_LOGIN/NAPIX_KEY, and 40 test
hypervisors in a child process; it stops them all at the end. With hosts, it
uses the broker in NAPIX_BROKER and the workers already running there.
It needs the fleet extra: pip install 'celery[redis]' redis.
"""

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time

from napixclient import fleet


def probe_fleet(hosts, broker=None):
    """Print every host's row as its shard finishes, then find one host with
    at least 3 free slots and stop there."""
    started = time.monotonic()
    with fleet.probe(hosts, "/capacity/capacity", broker=broker, timeout=5) as probe:
        print(f"{len(hosts)} hosts in {probe.shards} shards of {probe.shard_size} over "
              f"{len(probe.workers)} workers")
        for row in probe:
            print(f"  {row.host:21} {row.status_label():>15} {row.summary():30} "
                  f"from {row.worker or '-'}")
    print(f"all rows in {time.monotonic() - started:.2f} s\n")

    def roomy(values):
        body = values["body"]
        return values["status"] == 200 and isinstance(body, dict) and \
            body.get("free_slots", 0) >= 3

    probe = fleet.probe(hosts, "/capacity/capacity", broker=broker, timeout=5,
                        first_where=roomy, shard_size=5)
    rows = list(probe)
    if probe.matched is None:
        print("nobody has 3 free slots")
    else:
        print(f"first with 3 free slots: {probe.matched.host} "
              f"({probe.matched.body['free_slots']}); {probe.left} hosts cancelled, "
              f"{probe.revoked} shards revoked, {len(rows)} rows in all")


# -- everything local ------------------------------------------------------


def serve_hypervisors(count):
    """Child process: ``count`` hypervisors answering their capacity after a
    short while; prints their ports, stops when stdin closes."""
    import gevent.socket

    from napixclient.testing import NapixTestServer

    servers = []
    for _ in range(count):
        server = NapixTestServer(users={"root": "toor"}).start()
        server.route("/capacity/capacity", latency=random.uniform(0.05, 0.5),
                     body={"free_slots": random.choice([0, 0, 0, 1, 2, 4])})
        servers.append(server)
    print(json.dumps([server.port for server in servers]), flush=True)
    gevent.socket.wait_read(0)
    for server in servers:
        server.stop()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_locally():
    if shutil.which("redis-server") is None:
        sys.exit("this example starts redis-server: apt-get install -y redis-server")
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # The workers' environment holds their credentials; this process has none.
    env = dict(os.environ, PYTHONPATH=root, NAPIX_BROKER=broker,
               NAPIX_LOGIN="root", NAPIX_KEY="toor")
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children = [subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no"], **quiet)]
    try:
        for name in ("w1", "w2"):
            children.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "napixclient.fleet", "worker",
                 "-P", "gevent", "-c", "2", "-Q", fleet.QUEUE, "-n", f"{name}@%h"],
                env=env, **quiet))
        hypervisors = subprocess.Popen([sys.executable, __file__, "--serve", "40"],
                                       env=env, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)
        children.append(hypervisors)
        hosts = [f"127.0.0.1:{p}" for p in json.loads(hypervisors.stdout.readline())]
        for _ in range(30):  # the workers take a few seconds to start
            try:
                fleet.probe(hosts[:1], "/", broker=broker).close()
                break
            except fleet.FleetError as error:
                print(f"waiting: {error}")
                time.sleep(1)
        probe_fleet(hosts, broker)
    finally:
        for child in reversed(children):
            child.terminate()
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve_hypervisors(int(sys.argv[2]))
    elif sys.argv[1:]:
        probe_fleet(sys.argv[1:])
    else:
        run_locally()
