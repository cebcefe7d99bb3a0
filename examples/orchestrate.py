"""Ask two Napix backends at once, and fail cleanly when one of them fails.

An IP from an allocator and a volume from a filer are requested together, so
the whole takes as long as the slower backend, not the sum. If one fails, what
the other allocated is given back before the error is raised.

    python examples/orchestrate.py                  # against local test servers
    NAPIX_LOGIN=... NAPIX_KEY=... python examples/orchestrate.py IP_ALLOCATOR FILER [SIZE]
"""

import os
import sys
import time

from napixclient import ClientPool, HTTPError
from napixclient.authenticators import LoginAuthenticator
from napixclient.testing import NapixTestServer


def create_vm_storage(auth, ip_allocator, filer, size):
    """Return ``(ip, volume)``; raise the first HTTPError after undoing the
    other backend's allocation."""
    with ClientPool(auth, timeout=10) as pool:
        pool.request(ip_allocator, "POST", "/vm-ip/", {"size": 1})
        pool.request(filer, "POST", "/volumes/", {"size": size})
        ip, volume = pool.wait()                    # both ran at once
        if isinstance(volume, HTTPError) and not isinstance(ip, HTTPError):
            print(f"  giving back {ip.body['ip']}")
            pool.request(ip_allocator, "DELETE", f"/vm-ip/{ip.body['ip']}")
        if isinstance(ip, HTTPError) and not isinstance(volume, HTTPError):
            print(f"  giving back {volume.body['volume']}")
            pool.request(filer, "DELETE", f"/volumes/{volume.body['volume']}")
        pool.wait()               # the undo, if any (its own failure is not ours to raise)
    for result in (ip, volume):
        if isinstance(result, HTTPError):
            raise result
    return ip.body["ip"], volume.body["volume"]


def local_backends(users):
    """An IP allocator and a filer on 127.0.0.1; the filer has no room for
    sizes in T."""
    allocator = NapixTestServer(users=users).start()
    allocator.route("/vm-ip/", "POST", status=201, body={"ip": "10.0.0.7"}, latency=0.2)
    allocator.route("/vm-ip/10.0.0.7", "DELETE", status=204)
    filer = NapixTestServer(users=users).start()

    def create_volume(request):
        if request.json["size"].endswith("T"):
            return 507, {"error_class": "InsufficientStorage",
                         "error_text": f"no room for {request.json['size']}"}
        return 201, {"volume": "vol-42"}

    filer.route("/volumes/", "POST", handler=create_volume, latency=0.2)
    return allocator, filer


def main(argv):
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
                ip, volume = create_vm_storage(auth, ip_allocator, filer, size)
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
    main(sys.argv[1:])
