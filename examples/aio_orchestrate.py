"""Ask two Napix backends at once from asyncio code, and fail cleanly when
one of them fails: examples/orchestrate.py, with napixclient.aio.

An IP from an allocator and a volume from a filer are requested together, so
the whole takes as long as the slower backend, not the sum. If one fails, what
the other allocated is given back before the error is raised.

    python examples/aio_orchestrate.py              # against local test servers
    NAPIX_LOGIN=... NAPIX_KEY=... python examples/aio_orchestrate.py IP_ALLOCATOR FILER [SIZE]
"""

import asyncio
import os
import sys
import time

from napixclient import HTTPError
from napixclient.aio import AsyncClientPool
from napixclient.authenticators import LoginAuthenticator


async def create_vm_storage(auth, ip_allocator, filer, size):
    """Return ``(ip, volume)``; raise the first HTTPError after undoing the
    other backend's allocation."""
    async with AsyncClientPool(auth, timeout=10) as pool:
        pool.request(ip_allocator, "POST", "/vm-ip/", {"size": 1})
        pool.request(filer, "POST", "/volumes/", {"size": size})
        ip, volume = await pool.wait()              # both ran at once
        if isinstance(volume, HTTPError) and not isinstance(ip, HTTPError):
            print(f"  giving back {ip.body['ip']}")
            pool.request(ip_allocator, "DELETE", f"/vm-ip/{ip.body['ip']}")
        if isinstance(ip, HTTPError) and not isinstance(volume, HTTPError):
            print(f"  giving back {volume.body['volume']}")
            pool.request(filer, "DELETE", f"/volumes/{volume.body['volume']}")
        await pool.wait()         # the undo, if any (its own failure is not ours to raise)
    for result in (ip, volume):
        if isinstance(result, HTTPError):
            raise result
    return ip.body["ip"], volume.body["volume"]


def local_backends(users):
    """An IP allocator and a filer on 127.0.0.1, each served from a thread of
    its own (an event loop never runs the gevent hub a test server would
    otherwise serve from); the filer has no room for sizes in T."""
    from napixclient.testing import NapixTestServer

    allocator = NapixTestServer(users=users).start(thread=True)
    allocator.route("/vm-ip/", "POST", status=201, body={"ip": "10.0.0.7"}, latency=0.2)
    allocator.route("/vm-ip/10.0.0.7", "DELETE", status=204)
    filer = NapixTestServer(users=users).start(thread=True)

    def create_volume(request):
        if request.json["size"].endswith("T"):
            return 507, {"error_class": "InsufficientStorage",
                         "error_text": f"no room for {request.json['size']}"}
        return 201, {"volume": "vol-42"}

    filer.route("/volumes/", "POST", handler=create_volume, latency=0.2)
    return allocator, filer


async def main(argv):
    if len(argv) in (2, 3):
        auth = LoginAuthenticator(os.environ["NAPIX_LOGIN"], os.environ["NAPIX_KEY"])
        sizes, servers = [argv[2] if len(argv) == 3 else "10G"], []
        ip_allocator, filer = argv[:2]
    elif not argv:
        auth = LoginAuthenticator("root", "toor")
        servers = local_backends({"root": "toor"})
        ip_allocator, filer = (server.host for server in servers)
        sizes = ["10G", "10T"]                      # the second one fails
    else:
        sys.exit(__doc__)
    try:
        for size in sizes:
            started = time.monotonic()
            try:
                ip, volume = await create_vm_storage(auth, ip_allocator, filer, size)
            except HTTPError as error:
                print(f"{size}: failed cleanly in {time.monotonic() - started:.2f} s:")
                print(error.format_chain())
            else:
                print(f"{size}: ip {ip}, volume {volume} "
                      f"in {time.monotonic() - started:.2f} s")
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
