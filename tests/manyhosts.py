"""Many HTTP hosts in one process: one listening socket per host on 127.0.0.1.

Run as a script (tests and benchmarks start it as a subprocess, so that its
sockets do not count against the client's open-files limit)::

    python tests/manyhosts.py COUNT [--delay SECONDS]

It raises its own soft ``RLIMIT_NOFILE`` to the hard limit, listens on COUNT
ephemeral ports, prints one JSON line ``{"ports": [...]}`` and answers every
request on every port with ``200 {"port": N}`` (HTTP/1.1, kept alive) after
``--delay`` seconds. When its standard input closes it prints one JSON line
of figures (``requests``, ``max_open``: the most connections open at once
over all ports, ``open``: those open at the end) and exits. It never runs
longer than ``--max-seconds`` (default 300).
"""

import argparse
import json
import resource
import sys

import gevent
import gevent.socket
from gevent.server import StreamServer


class Figures:
    def __init__(self):
        self.requests = 0
        self.open = 0
        self.max_open = 0


def serve(count, delay):
    figures = Figures()

    def handle(sock, address):
        figures.open += 1
        figures.max_open = max(figures.max_open, figures.open)
        port = sock.getsockname()[1]
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                figures.requests += 1
                if delay:
                    gevent.sleep(delay)
                body = json.dumps({"port": port}).encode()
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            return
        finally:
            figures.open -= 1
            sock.close()

    servers = []
    for _ in range(count):
        server = StreamServer(("127.0.0.1", 0), handle, backlog=1024)
        server.start()
        servers.append(server)
    return servers, figures


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("count", type=int)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    servers, figures = serve(args.count, args.delay)
    print(json.dumps({"ports": [s.server_port for s in servers]}), flush=True)

    def wait_for_eof():
        gevent.socket.wait_read(sys.stdin.fileno())
        sys.stdin.read()

    waiter = gevent.spawn(wait_for_eof)
    waiter.join(timeout=args.max_seconds)
    print(json.dumps({"requests": figures.requests, "max_open": figures.max_open,
                      "open": figures.open}), flush=True)
    for server in servers:
        server.close()


if __name__ == "__main__":
    main()
