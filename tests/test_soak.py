"""A soak: many requests through one ClientPool over several hosts, with open
file descriptors and resident memory measured at the start and at the end.

CI runs a short form (10,000 requests by default). Run the full one by hand::

    NAPIX_SOAK_REQUESTS=100000 python -m pytest -m soak -s tests/test_soak.py

``NAPIX_SOAK_SECONDS`` bounds the run (a guard against a hang, not a speed
target: by default 60 s plus 10 ms a request); the test stops and fails when
it is spent.
"""

import gc
import os
import time
from collections import Counter

import gevent
import pytest

from napixclient import ClientPool, ConnectionError, HTTPError, Response
from napixclient.authenticators import LoginAuthenticator

REQUESTS = int(os.environ.get("NAPIX_SOAK_REQUESTS", "10000"))
BUDGET = float(os.environ.get("NAPIX_SOAK_SECONDS", str(60 + REQUESTS * 0.01)))
HOSTS = 4
SIMULTANEOUS = 4
BATCH = 1000
KEY = "soak-key"


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def rss_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def settle():
    """Let closing connections close on both sides, and collect garbage."""
    gevent.sleep(0.2)
    gc.collect()


def kind(index):
    """What request ``index`` asks for: mostly answers, some 404s, some
    connections dropped by the server (each drop costs a new connection)."""
    if index % 100 == 99:
        return "drop"
    if index % 10 == 9:
        return "missing"
    return "ok"


def submit(pool, servers, first, count):
    for index in range(first, first + count):
        server = servers[index % len(servers)]
        pool.request(server.host, "GET", f"/{kind(index)}?i={index}")


@pytest.mark.soak
def test_soak_keeps_fds_and_memory_flat(napix_server_factory):
    assert REQUESTS >= 2 * BATCH, "NAPIX_SOAK_REQUESTS must be at least 2000"
    servers = []
    for _ in range(HOSTS):
        # Nonces are not remembered: the set would grow with every request.
        server = napix_server_factory(users={"root": KEY}, reject_replayed_nonces=False)
        server.route("/ok", body={"ok": True})
        server.route("/missing", status=404, body="`missing` not found")
        server.route("/drop", drop=True)
        servers.append(server)
    settle()
    fds_without_pool = open_fds()
    started = time.monotonic()
    counts = Counter()
    sent = 0
    with ClientPool(LoginAuthenticator("root", KEY), simultaneous=SIMULTANEOUS,
                    timeout=10) as pool:

        def run_batch():
            nonlocal sent
            submit(pool, servers, sent, BATCH)
            sent += BATCH
            results = pool.wait(timeout=120)
            for index, result in enumerate(results, start=sent - BATCH):
                expected = kind(index)
                if isinstance(result, Response):
                    assert expected == "ok" and result.body == {"ok": True}
                    counts["ok"] += 1
                elif type(result) is ConnectionError:
                    assert expected == "drop", result
                    counts["drop"] += 1
                else:
                    assert type(result) is HTTPError and result.status == 404, result
                    assert expected == "missing"
                    counts["missing"] += 1
            for server in servers:
                server.requests.clear()

        run_batch()  # warm up: connections open, caches filled
        settle()
        fds_start, rss_start = open_fds(), rss_bytes()
        while sent < REQUESTS:
            if time.monotonic() - started > BUDGET:
                pytest.fail(f"soak: {sent} of {REQUESTS} requests sent after "
                            f"{BUDGET:.0f} s (NAPIX_SOAK_SECONDS); stopped")
            run_batch()
        settle()
        fds_end, rss_end = open_fds(), rss_bytes()
    settle()
    fds_closed = open_fds()
    elapsed = time.monotonic() - started
    received = sum(counts.values())
    print(f"\nsoak: {sent} requests sent, {received} results received "
          f"({dict(counts)}) over {HOSTS} hosts in {elapsed:.1f} s; "
          f"open fds {fds_start} -> {fds_end} ({fds_without_pool} without the pool, "
          f"{fds_closed} after close); RSS {rss_start / 2**20:.1f} -> "
          f"{rss_end / 2**20:.1f} MiB")

    assert sent == received == REQUESTS
    assert counts["drop"] == REQUESTS // 100
    assert counts["missing"] == REQUESTS // 10 - REQUESTS // 100
    # Open: at most HOSTS * SIMULTANEOUS kept-alive connections, each two
    # fds here (client and server end), whatever the number of requests.
    assert fds_end <= fds_start + 2 * HOSTS * SIMULTANEOUS
    assert fds_end <= fds_without_pool + 2 * HOSTS * SIMULTANEOUS
    # Closed: every socket the pool ever opened is gone.
    assert fds_closed == fds_without_pool
    # Flat memory: a leak of even 100 bytes a request would exceed this
    # over 100,000 requests; allocator noise stays well below it.
    assert rss_end - rss_start < max(8 * 2**20, rss_start * 0.05)
