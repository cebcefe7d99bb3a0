"""Small helpers shared by the tests."""

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

AUTH = {"login": "root", "key": "toor"}


# Sockets bound and never listening, kept for the life of the test process:
# a port released at once could be taken by any server started meanwhile (of
# this process or of another on the machine), and then answer.
_HELD = []


def closed_port():
    """A TCP port on 127.0.0.1 where a connection is refused: a socket is
    bound to it and never listens, for as long as the tests run, so that no
    other server can take it meanwhile."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _HELD.append(sock)
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


@contextlib.contextmanager
def descriptors_above_1023():
    """Open files until the next socket's descriptor is above 1,023 (the
    soft limit raised for it, the test skipped where the hard one is lower)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the hard limit of open files is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    fillers = []
    try:
        while not fillers or fillers[-1] < 1050:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
