"""A hostile HTTP/1.1 server in a process of its own, for tests.

Run it as ``python tests/hostileserver.py [--lifetime SECONDS]``: it listens
on ``127.0.0.1``, on a port the system picks, and prints that port and a
newline on stdout. It uses plain blocking sockets and one thread per
connection (the standard library only, no gevent), so it keeps sending when
the process under test freezes its own gevent hub: that is what the floods
are for. It exits when its stdin reaches its end (the test process closed
it, or died) or after ``--lifetime`` seconds (300 by default), whichever
comes first; the ``hostile_server`` fixture of ``tests/conftest.py`` also
kills it after each test.

Each connection reads one request's head (its body is never read) and is
answered by the mode its path names; a query string tunes the mode:

``/flood-interim``
    ``HTTP/1.1 100 Continue\\r\\n\\r\\n``, again and again, as fast as the
    socket takes it.
``/flood-trailers``
    ``HTTP/1.1 200 OK``, ``Transfer-Encoding: chunked``, a 2-byte chunk
    ``ok``, the last chunk ``0``, then trailer fields ``X-T: <60 bytes>``
    one after the other.
``/flood-head``
    ``HTTP/1.1 200 OK`` then header fields, one after the other.
``/flood-body``
    ``HTTP/1.1 200 OK`` with ``Content-Length`` of 1 TB (2**40 bytes), then
    body bytes (``x``). With ``chunked=1``: ``Transfer-Encoding: chunked``
    and chunks of one byte each (``1\\r\\nx\\r\\n``), which costs a client far
    more work per byte it keeps.
``/early-413``
    reads the request's head only, answers ``413 Content Too Large`` with a
    short body and ``Connection: close``, then neither reads nor closes for
    ``hold`` seconds (30 by default), as uWSGI does with an upload it
    refuses.
``/ok``
    ``200 OK``, a small JSON body, ``Connection: close`` (any other path
    answers ``404``).
``CONNECT 127.0.0.1:<port>``
    (a proxy asked for a tunnel) ``HTTP/1.1 200 OK`` then header fields,
    one after the other, never ending its head.
``CONNECT 127.0.0.2:<port>``
    ``HTTP/1.1 100 Continue\\r\\n\\r\\n``, again and again.

    Either stops after 6 seconds or 2 MB (``CONNECT_SECONDS``,
    ``CONNECT_BYTES``), then the connection closes.

Every flood is bounded: it stops after ``seconds`` (default and most: 20)
or ``mb`` megabytes (default and most: 2,048), whichever comes first; then
it does what ``then`` says: ``close`` (the default) closes the connection;
``hold`` keeps it open and silent until the 20 seconds have passed, then
closes; ``end`` finishes the message where it can (the last trailer's
empty line, the head's empty line with ``Content-Length: 0``, a final
``200`` after the interim answers; for a body, ``hold``) and holds.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from typing import Dict, Optional, Tuple
from urllib.parse import parse_qsl, urlsplit

#: The longest a connection is served, flood and hold included (seconds).
MAX_SECONDS = 20.0
#: The most bytes one flood sends.
MAX_BYTES = 2 * 1024 ** 3
#: How long a flood answering ``CONNECT`` lasts (seconds), and how many
#: bytes it sends at most: a client may read such an answer a byte at a
#: time, and still has what the sockets' buffers hold to read afterwards.
CONNECT_SECONDS = 6.0
CONNECT_BYTES = 2 * 1024 ** 2
#: The most connections served at once; more wait in the listen queue.
MAX_CONNECTIONS = 64
#: The longest request head read, and how long reading it may take.
MAX_HEAD = 65536
HEAD_SECONDS = 10.0

# What each flood repeats, a megabyte or so at a time.
_INTERIM = b"HTTP/1.1 100 Continue\r\n\r\n"
_FIELD = b"X-T: " + b"t" * 60 + b"\r\n"
_BODY_BYTE = b"x"
_ONE_BYTE_CHUNK = b"1\r\nx\r\n"
_BLOCK = 1024 * 1024

_HEADS = {
    "/flood-interim": b"",
    "/flood-trailers": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"2\r\nok\r\n0\r\n"),
    "/flood-head": b"HTTP/1.1 200 OK\r\n",
}
_ENDINGS = {
    "/flood-interim": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "/flood-trailers": b"\r\n",
    "/flood-head": b"Content-Length: 0\r\n\r\n",
}
_REPEATED = {
    "/flood-interim": _INTERIM,
    "/flood-trailers": _FIELD,
    "/flood-head": _FIELD,
}

_slots = threading.BoundedSemaphore(MAX_CONNECTIONS)


def _read_head(sock: socket.socket) -> Optional[bytes]:
    """The request's head (up to its empty line), or ``None`` when the
    client went away, sent too much, or took too long."""
    data = b""
    deadline = time.monotonic() + HEAD_SECONDS
    while b"\r\n\r\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or len(data) > MAX_HEAD:
            return None
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data.split(b"\r\n\r\n", 1)[0]


def _options(query: str) -> Tuple[float, int, str, Dict[str, str]]:
    """``seconds``, ``mb`` (as bytes) and ``then`` of a query, within the bounds."""
    values = dict(parse_qsl(query))
    seconds = min(MAX_SECONDS, max(0.0, float(values.get("seconds", MAX_SECONDS))))
    size = min(MAX_BYTES, max(0, int(float(values.get("mb", MAX_BYTES // 2 ** 20)) * 2 ** 20)))
    then = values.get("then", "close")
    return seconds, size, then, values


def _flood(sock: socket.socket, unit: bytes, seconds: float, size: int) -> bool:
    """Send ``unit`` again and again, a block of them at a time, for
    ``seconds`` or ``size`` bytes (whole units only); return whether the
    client is still there."""
    block = unit * max(1, _BLOCK // len(unit))
    size -= size % len(unit)
    deadline = time.monotonic() + seconds
    sent = 0
    sock.settimeout(0.5)
    while sent < size and time.monotonic() < deadline:
        piece = block if size - sent >= len(block) else block[:size - sent]
        try:
            sock.sendall(piece)
        except socket.timeout:
            continue  # the client does not read now: try again until the deadline
        except OSError:
            return False
        sent += len(piece)
    return True


def _hold(sock: socket.socket, until: float) -> None:
    """Keep the connection open and silent until ``until`` (monotonic)."""
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.5))


def _serve(sock: socket.socket) -> None:
    started = time.monotonic()
    try:
        head = _read_head(sock)
        if head is None:
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        if len(parts) != 3:
            return
        method, target = parts[0], parts[1]
        if method == "CONNECT":
            _connect(sock, target, started)
            return
        url = urlsplit(target)
        seconds, size, then, values = _options(url.query)
        path = url.path
        if path in _REPEATED:
            sock.sendall(_HEADS[path])
            if _flood(sock, _REPEATED[path], seconds, size):
                _after(sock, then, _ENDINGS[path], started)
        elif path == "/flood-body":
            if values.get("chunked"):
                sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                unit = _ONE_BYTE_CHUNK
            else:
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             b"Content-Length: %d\r\n\r\n" % 2 ** 40)
                unit = _BODY_BYTE
            if _flood(sock, unit, seconds, size):
                _after(sock, "hold" if then == "end" else then, b"", started)
        elif path == "/early-413":
            body = b"the body is too large"
            sock.sendall(b"HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (len(body), body))
            hold = min(MAX_SECONDS * 1.5, float(values.get("hold", 30)))
            _hold(sock, time.monotonic() + hold)
        elif path == "/ok":
            body = b'{"ok": true}'
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (len(body), body))
        else:
            sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
    except OSError:
        pass
    finally:
        sock.close()
        _slots.release()


def _after(sock: socket.socket, then: str, ending: bytes, started: float) -> None:
    """What a flood does once its budget is spent (see the module)."""
    if then == "close":
        return
    if then == "end" and ending:
        sock.sendall(ending)
    _hold(sock, started + MAX_SECONDS)


def _connect(sock: socket.socket, authority: str, started: float) -> None:
    """A proxy's answer to ``CONNECT``: by the target's host, a head that
    never ends, or interim answers without end."""
    host = authority.rpartition(":")[0]
    if host == "127.0.0.2":
        unit = _INTERIM
    else:
        sock.sendall(b"HTTP/1.1 200 OK\r\n")
        unit = _FIELD
    if _flood(sock, unit, CONNECT_SECONDS, CONNECT_BYTES):
        _after(sock, "close", b"", started)


def _end_with_stdin() -> None:
    """Exit as soon as stdin ends: the test process closed it, or died."""
    try:
        while sys.stdin.buffer.read(1024):
            pass
    except (OSError, ValueError):
        pass
    os._exit(0)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lifetime", type=float, default=300.0,
                        help="seconds after which the server exits (default 300)")
    args = parser.parse_args(argv)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.settimeout(0.5)
    sys.stdout.write(f"{listener.getsockname()[1]}\n")
    sys.stdout.flush()
    threading.Thread(target=_end_with_stdin, daemon=True).start()
    ends = time.monotonic() + max(1.0, min(args.lifetime, 3600.0))
    while time.monotonic() < ends:
        if not _slots.acquire(timeout=0.5):
            continue
        try:
            sock, _ = listener.accept()
        except OSError:  # no connection within the half second, or a failed one
            _slots.release()
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_serve, args=(sock,), daemon=True).start()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
