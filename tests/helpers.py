"""Small helpers shared by the tests."""

import json
import socket
import subprocess
import sys
from pathlib import Path

AUTH = {"login": "root", "key": "toor"}


def closed_port():
    """A TCP port on 127.0.0.1 with nothing listening: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


MANYHOSTS = Path(__file__).resolve().parent / "manyhosts.py"


class ManyHosts:
    """tests/manyhosts.py in a subprocess (its sockets count against its own
    limit on open files, not the client's): COUNT hosts on 127.0.0.1."""

    def __init__(self, count, delay=0.0):
        self.process = subprocess.Popen(
            [sys.executable, str(MANYHOSTS), str(count), "--delay", str(delay),
             "--max-seconds", "200"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        assert line, "manyhosts.py did not start"
        self.hosts = [f"127.0.0.1:{port}" for port in json.loads(line)["ports"]]

    def figures(self):
        """Stop the servers; their figures (requests, max_open, open)."""
        self.process.stdin.close()
        line = self.process.stdout.readline()
        self.process.wait(timeout=30)
        return json.loads(line)

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process.stdout.close()
