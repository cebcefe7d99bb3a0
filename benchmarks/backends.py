"""Loopback backends for the benchmarks, started and stopped by run.py.

* :class:`Nginx`: nginx from the system's packages with its own config in a
  temporary directory, one ``server`` block (one port) per "host", answering
  a small JSON document: from memory on ``/json`` (a bare head: Server,
  Date, Content-Type, Content-Length, Connection), and as a static file on
  ``/file.json`` (:data:`FILE_PATH`: the head a real server sends, with
  Last-Modified, ETag and Accept-Ranges too). Used by W1, W1F and the
  CPU-per-request run.
* :class:`DelayServer`: a child process running :func:`serve_delay`, an
  asyncio server (protocol callbacks, no streams, ``TCP_NODELAY``) that
  answers ``GET /delay/<ms>`` after ``<ms>`` milliseconds, on many ports at
  once. Used by W2 and W3, where the server's own overhead must stay small
  next to the delay.

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

LOOPBACK = "127.0.0.1"
#: The body nginx answers on ``/json`` (small, like a Napix status document).
JSON_BODY = '{"status": "ok", "hosts": 20, "free": [1, 2, 3]}'
#: The same document served by nginx as a static file: its answer carries
#: the fields nginx sends for a file (Last-Modified, ETag, Accept-Ranges).
FILE_PATH = "/file.json"


def raise_fd_limit() -> int:
    """Raise this process's soft limit of open files to the hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 65536
    if soft == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_ports(count: int) -> List[int]:
    """``count`` distinct ports that were free on 127.0.0.1 a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_for_port(port: int, deadline_s: float = 10.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            socket.create_connection((LOOPBACK, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {LOOPBACK}:{port} after {deadline_s} s")


class Nginx:
    """nginx as a child process, one port per host.

    :param hosts: how many ports (``int``).
    :param workers: nginx worker processes.
    :raises RuntimeError: when nginx is not installed or does not come up.
    """

    def __init__(self, hosts: int, workers: int = 1) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(binary):
            raise RuntimeError("nginx is not installed: apt-get install -y nginx")
        self.binary = binary
        self.ports = free_ports(hosts)
        self.workers = workers
        self.dir = tempfile.mkdtemp(prefix="napix-bench-nginx-")
        self.process: Optional[subprocess.Popen[bytes]] = None

    def config(self) -> str:
        body = JSON_BODY.replace("'", "\\'")
        servers = "\n".join(
            f"""    server {{
        listen {LOOPBACK}:{port} backlog=4096;
        location /json {{ default_type application/json; return 200 '{body}'; }}
        location = {FILE_PATH} {{ root {self.dir}/www; }}
        location / {{ return 404; }}
    }}""" for port in self.ports)
        user = "user root;\n" if os.geteuid() == 0 else ""
        return f"""{user}worker_processes {self.workers};
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
daemon off;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    types {{ application/json json; }}
    default_type application/octet-stream;
    open_file_cache max=64 inactive=60s;
    open_file_cache_valid 60s;
    client_body_temp_path {self.dir}/body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
{servers}
}}
"""

    def start(self) -> "Nginx":
        path = os.path.join(self.dir, "nginx.conf")
        os.makedirs(os.path.join(self.dir, "www"), exist_ok=True)
        with open(os.path.join(self.dir, "www", FILE_PATH.lstrip("/")), "w") as handle:
            handle.write(JSON_BODY)
        with open(path, "w") as handle:
            handle.write(self.config())
        self.process = subprocess.Popen(
            [self.binary, "-p", self.dir, "-c", path, "-e", f"{self.dir}/error.log"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            for port in self.ports:
                wait_for_port(port)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class DelayServer:
    """:func:`serve_delay` in a child process, listening on ``hosts`` ports.

    :param hosts: how many ports (``int``).
    """

    def __init__(self, hosts: int) -> None:
        self.hosts = hosts
        self.ports: List[int] = []
        self.process: Optional[subprocess.Popen[str]] = None

    def start(self) -> "DelayServer":
        here = os.path.dirname(os.path.abspath(__file__))
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(here, "backends.py"), str(self.hosts)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("the delay server did not start")
        self.ports = json.loads(line)["ports"]
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()  # the server stops at end of stdin
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


_RESPONSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n")


def serve_delay(hosts: int) -> None:
    """Listen on ``hosts`` ports of 127.0.0.1 and answer ``GET /delay/<ms>``
    after ``<ms>`` milliseconds with a small JSON document, keep-alive.

    Prints ``{"ports": [...]}`` on one line once listening; stops when its
    standard input closes (so it never outlives run.py).
    """
    import asyncio

    raise_fd_limit()

    class Delay(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buffer = b""
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while True:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
                # The clients send GETs without a body; the path is /delay/<ms>.
                target = head.split(b" ", 2)[1]
                try:
                    delay_ms = int(target.rsplit(b"/", 1)[1].split(b"?", 1)[0])
                except ValueError:
                    delay_ms = 0
                close = b"connection: close" in head.lower()
                loop.call_later(delay_ms / 1000.0, self.answer, delay_ms, close)

        def answer(self, delay_ms: int, close: bool) -> None:
            if self.transport.is_closing():
                return
            body = b'{"status": "ok", "delay_ms": %d}' % delay_ms
            self.transport.write(_RESPONSE_HEAD % len(body) + body)  # type: ignore[attr-defined]
            if close:
                self.transport.close()

    async def main() -> None:
        servers = [await loop.create_server(Delay, LOOPBACK, 0, backlog=1024)
                   for _ in range(hosts)]
        ports = [s.sockets[0].getsockname()[1] for s in servers]
        sys.stdout.write(json.dumps({"ports": ports}) + "\n")
        sys.stdout.flush()
        stdin_closed = asyncio.Event()
        loop.add_reader(sys.stdin.fileno(), lambda: (
            stdin_closed.set() if not os.read(sys.stdin.fileno(), 4096) else None))
        await stdin_closed.wait()
        for server in servers:
            server.close()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())


if __name__ == "__main__":
    serve_delay(int(sys.argv[1]))
