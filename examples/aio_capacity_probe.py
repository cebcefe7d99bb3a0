"""Ask every hypervisor for its capacity from asyncio code; take the first
with room, within a deadline, whatever the slow and the dead do:
examples/capacity_probe.py, with napixclient.aio.

    python examples/aio_capacity_probe.py            # ten local test hypervisors
    NAPIX_LOGIN=... NAPIX_KEY=... python examples/aio_capacity_probe.py HOST [HOST ...]
"""

import asyncio
import os
import socket
import sys
import time

from napixclient import Response
from napixclient.aio import AsyncClientPool
from napixclient.authenticators import LoginAuthenticator


async def first_with_room(auth, hosts, slots=1, within=10.0):
    """Return ``(host, body)`` of the first hypervisor with ``slots`` free
    slots to answer within ``within`` seconds, or ``(None, None)``."""
    async with AsyncClientPool(auth, timeout=within) as pool:
        for host in hosts:
            pool.request(host, "GET", "/capacity/capacity")
        async for result in pool.wait_unordered(timeout=within):
            if (isinstance(result, Response) and isinstance(result.body, dict)
                    and result.body.get("free_slots", 0) >= slots):
                print(f"  {pool.pending} slower requests are left pending; "
                      "leaving the pool cancels them")
                return result.request.host, result.body
            print(f"  {result.request.host}: not suitable "
                  f"({result.body if isinstance(result, Response) else result})")
        return None, None


def local_hypervisors(users):
    """Eight hypervisors of varied capacity and latency on 127.0.0.1, one
    that never answers, and the address of one that is down. Each server
    runs in a thread of its own, since an event loop never runs the gevent
    hub a test server would otherwise serve from."""
    from napixclient.testing import NapixTestServer

    servers = []
    for free_slots, latency in [(0, 0.05), (1, 0.1), (0, 0.15), (4, 0.3),
                                (6, 0.5), (2, 0.7), (8, 3.0), (5, 4.0)]:
        server = NapixTestServer(users=users).start(thread=True)
        server.route("/capacity/capacity", body={"free_slots": free_slots}, latency=latency)
        servers.append(server)
    hanging = NapixTestServer(users=users).start(thread=True)
    hanging.route("/capacity/capacity", hang=True)
    servers.append(hanging)
    with socket.socket() as sock:                   # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    return servers, [server.host for server in servers] + [dead]


async def main(argv):
    if argv:
        auth = LoginAuthenticator(os.environ["NAPIX_LOGIN"], os.environ["NAPIX_KEY"])
        servers, hosts, within = [], argv, 10.0
    else:
        auth = LoginAuthenticator("root", "toor")
        servers, hosts = local_hypervisors({"root": "toor"})
        within = 1.0
    started = time.monotonic()
    try:
        print(f"asking {len(hosts)} hypervisors for 3 free slots, within {within:g} s:")
        host, body = await first_with_room(auth, hosts, slots=3, within=within)
    finally:
        for server in servers:
            server.stop()
    if host is None:
        print(f"nobody had room within {within:g} s")
    else:
        print(f"chose {host} ({body['free_slots']} free slots) "
              f"after {time.monotonic() - started:.2f} s")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
