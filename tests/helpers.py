"""Small helpers shared by the tests."""

import socket

AUTH = {"login": "root", "key": "toor"}


def closed_port():
    """A TCP port on 127.0.0.1 with nothing listening: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
