"""napixclient in one minute, against local Napix test servers.

Starts a few NapixTestServers on 127.0.0.1 (an IP allocator, a filer, five
hypervisors), then: one signed request with a Client; two backends at once
with a ClientPool; a capacity probe that takes the first hypervisor with room.

    python examples/quickstart.py
"""

import time

from napixclient import Client, ClientPool, HTTPError
from napixclient.authenticators import LoginAuthenticator
from napixclient.testing import NapixTestServer

USERS = {"root": "toor"}


def start_backends():
    ip_allocator = NapixTestServer(users=USERS).start()
    ip_allocator.route("/", body=["/vm-ip"])
    ip_allocator.route("/vm-ip/", "POST", status=201, body={"ip": "10.0.0.7"},
                       latency=0.2)
    filer = NapixTestServer(users=USERS).start()
    filer.route("/volumes/", "POST", status=201, body={"volume": "vol-42"}, latency=0.2)
    hypervisors = []
    for free_slots, latency in [(0, 0.05), (0, 0.1), (3, 0.15), (8, 0.3), (5, 5.0)]:
        server = NapixTestServer(users=USERS).start()
        server.route("/capacity/capacity", body={"free_slots": free_slots}, latency=latency)
        hypervisors.append(server)
    return ip_allocator, filer, hypervisors


def main():
    ip_allocator, filer, hypervisors = start_backends()
    auth = LoginAuthenticator("root", "toor")

    print("1. One host, one signed request")
    with Client(ip_allocator.host, auth, timeout=10) as client:
        print("   GET / ->", client.get("/").body)

    print("2. Two backends at once")
    started = time.monotonic()
    with ClientPool(auth, timeout=10) as pool:
        pool.request(ip_allocator.host, "POST", "/vm-ip/", {"size": 1})
        pool.request(filer.host, "POST", "/volumes/", {"size": "10G"})
        ip, volume = pool.wait()
    for result in (ip, volume):
        if isinstance(result, HTTPError):
            raise result
    print(f"   ip {ip.body['ip']}, volume {volume.body['volume']} "
          f"in {time.monotonic() - started:.2f} s (each took 0.2 s)")

    print("3. First hypervisor with room, within 1 s")
    with ClientPool(auth, timeout=10) as pool:
        for server in hypervisors:
            pool.request(server.host, "GET", "/capacity/capacity")
        for result in pool.wait_unordered(timeout=1):
            if result.status == 200 and result.body["free_slots"] > 0:
                print(f"   chose {result.request.host} "
                      f"({result.body['free_slots']} free slots)")
                break
        else:
            print("   no hypervisor had room in time")
        print(f"   {pool.pending} slower answers left pending, cancelled on exit")

    for server in (ip_allocator, filer, *hypervisors):
        server.stop()


if __name__ == "__main__":
    main()
