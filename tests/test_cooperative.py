"""Concurrency without monkey-patching, in a fresh process."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent("""
    import json, socket, ssl, threading, time
    before = (socket.socket, socket.create_connection, ssl.SSLContext, threading.Lock, time.sleep)

    import gevent.monkey
    import napixclient
    from napixclient import Client, ClientPool
    from napixclient.testing import NapixTestServer

    after = (socket.socket, socket.create_connection, ssl.SSLContext, threading.Lock, time.sleep)
    auth = {"login": "root", "key": "toor"}
    servers = [NapixTestServer(users={"root": "toor"}).start() for _ in range(10)]
    for server in servers:
        server.route("/slow", body={"ok": True}, latency=0.3)

    started = time.monotonic()
    with Client(servers[0].host, auth) as client:
        for _ in range(3):
            client.get("/slow")
    single = (time.monotonic() - started) / 3

    started = time.monotonic()
    with ClientPool(auth, simultaneous=2) as pool:
        for i in range(20):
            pool.request(servers[i % 10].host, "GET", "/slow")
        statuses = [r.status for r in pool.wait(timeout=30)]
    makespan = time.monotonic() - started
    for server in servers:
        server.stop()
    print(json.dumps({
        "unchanged": before == after,
        "patched": [m for m in ("socket", "ssl", "threading", "time", "select")
                    if gevent.monkey.is_module_patched(m)],
        "statuses": statuses, "single": single, "makespan": makespan,
    }))
""")


def test_an_unpatched_process_runs_requests_concurrently_and_stays_unpatched():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["unchanged"] is True
    assert report["patched"] == []
    assert report["statuses"] == [200] * 20
    serial = 20 * report["single"]
    # 10 hosts x 2 connections run all 20 at once: about one latency, 20 times
    # less than serial. A fourfold margin keeps a busy machine from failing it.
    assert report["makespan"] < serial / 4, report
