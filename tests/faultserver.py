"""A raw-socket HTTP/1.1 server on 127.0.0.1 that misbehaves on purpose.

:class:`FaultServer` is a gevent :class:`~gevent.server.StreamServer`, so it
serves from the hub of the test process while the client under test (which is
cooperative) calls it. It speaks just enough HTTP/1.1 to read a request (line,
headers, a ``Content-Length`` body) and answers according to the request's
path. Every fault is bounded in bytes and in time, and :meth:`FaultServer.stop`
kills whatever is still running, so no test can hang on it.

Paths (query parameters in brackets):

``/ok``
    200, JSON ``{"path": <request target>, "method": ..., "connection": <n>}``,
    kept alive. Every other path that is not a fault answers the same.
``/close-after``
    the same answer, then the server closes the connection (FIN), as a server
    does when its keep-alive timeout expires between two requests.
``/race``
    answered on a connection's first request; a later request on the same
    connection is read and the connection closed without a byte of answer
    (the keep-alive race: the server closed just as the request arrived).
``/flaky`` [``fail=N``, ``key=K``]
    the first N requests with the same ``key`` (default: the path) are read
    and the connection reset (RST) without an answer; later ones are answered.
``/reset``
    headers and half of a 2,000-byte body, then a reset (RST).
``/short``
    ``Content-Length: 100`` and 10 bytes, then the connection closes.
``/bad-chunked``
    ``Transfer-Encoding: chunked`` with a chunk size that is not hexadecimal.
``/not-http``
    an SSH banner instead of an HTTP status line, then close.
``/trickle-headers`` [``interval=0.05``, ``count=200``]
    the status line, then one byte of headers every ``interval`` seconds,
    ``count`` bytes at most, then close.
``/stall-headers`` [``seconds=5``]
    reads the request, waits, then closes without an answer.
``/stall-body`` [``seconds=5``]
    headers and 100 of 1,000 bytes, waits, then closes.
``/slow-body`` [``size=2000``, ``delay=0.2``, ``head-delay=0``]
    waits ``head-delay`` seconds, sends headers and the first half of a
    ``size``-byte body (``b"x"``), sets :attr:`FaultServer.mid_body`, waits
    ``delay``, then sends the rest.
``/big`` [``size=N``, ``chunked=1``]
    a body of N bytes (``b"y"``), with ``Content-Length`` or chunked.

Any path in :attr:`FaultServer.canned` (query string left out) is answered
with its canned parts instead: ``bytes`` are sent as they are, a ``float``
is a wait in seconds between two sends; the connection then stays open for
the next request, as a keep-alive server's would.
"""

from __future__ import annotations

import json
import socket
import struct
from collections import Counter
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union
from urllib.parse import parse_qsl, urlsplit

import gevent
import gevent.socket
from gevent.event import Event
from gevent.pool import Pool
from gevent.server import StreamServer

__all__ = ["FaultServer", "Seen"]

#: The longest any fault holds a connection (s), whatever its parameters say.
HOLD_LIMIT = 10.0
_MAX_HEADER_LINES = 100


class Seen(NamedTuple):
    """One request as the fault server read it."""

    connection: int  # 1 for the server's first connection, and so on
    method: str
    target: str
    head: bytes = b""  # the request line and the fields, as they came

    @property
    def fields(self) -> List[Tuple[str, str]]:
        """The request's fields, ``(name, value)`` pairs in order."""
        lines = self.head.decode("latin-1").split("\r\n")[1:]
        return [(name, value.strip()) for name, _, value in
                (line.partition(":") for line in lines if line)]


class _Closed(Exception):
    """The client went away while the request was being read."""


class FaultServer:
    """A misbehaving HTTP/1.1 server on ``127.0.0.1`` (see the module's text).

    :ivar requests: every request read, a list of :class:`Seen`.
    :ivar connections: how many connections were accepted (``int``).
    :ivar open_connections: how many are open now (``int``).
    :ivar mid_body: an :class:`~gevent.event.Event` set when ``/slow-body``
        has sent the first half of its body.
    :ivar canned: path -> the answer to send for it, a list of ``bytes``
        and waits in seconds (``float``); set it before the request.
    """

    def __init__(self) -> None:
        self.requests: List[Seen] = []
        self.canned: Dict[str, List[Union[bytes, float]]] = {}
        self.connections = 0
        self.open_connections = 0
        self.mid_body = Event()
        self._hits: Counter[str] = Counter()
        self._pool = Pool()
        self._server: Optional[StreamServer] = None

    # -- lifetime -----------------------------------------------------------

    def start(self) -> "FaultServer":
        """Listen on an ephemeral port of 127.0.0.1; return ``self``."""
        self._server = StreamServer(("127.0.0.1", 0), self._handle, spawn=self._pool)
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop listening and kill every connection handler."""
        if self._server is not None:
            self._server.stop(timeout=0)
        self._pool.kill(block=True, timeout=2)

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port listened on."""
        assert self._server is not None, "start() first"
        return int(self._server.server_port)

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``, for :class:`~napixclient.Client`."""
        return f"127.0.0.1:{self.port}"

    def paths(self) -> List[str]:
        """The targets of the requests read, in order."""
        return [seen.target for seen in self.requests]

    # -- serving ------------------------------------------------------------

    def _handle(self, sock: socket.socket, address: Any) -> None:
        self.connections += 1
        self.open_connections += 1
        connection = self.connections
        # As real servers do: a part sent apart is not held back by Nagle's
        # algorithm waiting for the client's delayed ACK (40 ms a write).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = sock.makefile("rb")
        try:
            served = 0
            while True:
                try:
                    method, target, head = self._read_request(reader)
                except _Closed:
                    return
                self.requests.append(Seen(connection, method, target, head))
                keep_open = self._answer(sock, connection, served, method, target)
                served += 1
                if not keep_open:
                    return
        except OSError:
            return  # the client went away mid-answer
        finally:
            self.open_connections -= 1
            reader.close()
            sock.close()

    @staticmethod
    def _read_request(reader: Any) -> Tuple[str, str, bytes]:
        line = reader.readline(65537)
        if not line or not line.strip():
            raise _Closed()
        parts = line.decode("latin-1").split()
        if len(parts) != 3:
            raise _Closed()
        head = [line]
        length = 0
        for _ in range(_MAX_HEADER_LINES):
            header = reader.readline(65537)
            if not header:
                raise _Closed()
            if header in (b"\r\n", b"\n"):
                break
            head.append(header)
            name, _, value = header.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length:
            reader.read(length)
        return parts[0], parts[1], b"".join(head)

    def _answer(self, sock: socket.socket, connection: int, served: int,
                method: str, target: str) -> bool:
        """Answer one request; return whether the connection stays open."""
        path = urlsplit(target).path
        query: Dict[str, str] = dict(parse_qsl(urlsplit(target).query))
        if path in self.canned:
            for part in self.canned[path]:
                if isinstance(part, bytes):
                    sock.sendall(part)
                else:
                    gevent.sleep(min(part, HOLD_LIMIT))
            return True
        fault: Optional[Callable[..., bool]] = getattr(
            self, "_fault_" + path.strip("/").replace("-", "_"), None)
        if fault is None:
            self._send_ok(sock, connection, method, target)
            return True
        return fault(sock, connection, served, method, target, query)

    def _send_ok(self, sock: socket.socket, connection: int, method: str, target: str,
                 close: bool = False) -> None:
        body = json.dumps({"path": target, "method": method,
                           "connection": connection}).encode()
        head = ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n"
                f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n")
        sock.sendall(head.encode() + (b"" if method == "HEAD" else body))

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        """Close with a TCP reset (RST) rather than a FIN."""
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    @staticmethod
    def _peer_closes_within(sock: socket.socket, seconds: float) -> bool:
        """Wait up to ``seconds``; return whether the client closed meanwhile
        (so :attr:`open_connections` tells when a client let go)."""
        try:
            gevent.socket.wait_read(sock.fileno(), timeout=seconds)
        except socket.timeout:
            return False
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    @staticmethod
    def _seconds(query: Dict[str, str], name: str, default: float) -> float:
        return min(float(query.get(name, default)), HOLD_LIMIT)

    # -- faults: each returns whether the connection stays open -------------

    def _fault_close_after(self, sock: socket.socket, connection: int, served: int,
                           method: str, target: str, query: Dict[str, str]) -> bool:
        # No "Connection: close": the client believes it may reuse it.
        self._send_ok(sock, connection, method, target)
        return False

    def _fault_race(self, sock: socket.socket, connection: int, served: int,
                    method: str, target: str, query: Dict[str, str]) -> bool:
        if served == 0:
            self._send_ok(sock, connection, method, target)
            return True
        return False

    def _fault_flaky(self, sock: socket.socket, connection: int, served: int,
                     method: str, target: str, query: Dict[str, str]) -> bool:
        key = query.get("key", "/flaky")
        self._hits[key] += 1
        if self._hits[key] <= int(query.get("fail", "1")):
            self._reset(sock)
            return False
        self._send_ok(sock, connection, method, target)
        return True

    def _fault_reset(self, sock: socket.socket, connection: int, served: int,
                     method: str, target: str, query: Dict[str, str]) -> bool:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: 2000\r\n\r\n" + b"x" * 1000)
        gevent.sleep(0.05)  # let the client read the headers and start on the body
        self._reset(sock)
        return False

    def _fault_short(self, sock: socket.socket, connection: int, served: int,
                     method: str, target: str, query: Dict[str, str]) -> bool:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: 100\r\n\r\n" + b"x" * 10)
        return False

    def _fault_bad_chunked(self, sock: socket.socket, connection: int, served: int,
                           method: str, target: str, query: Dict[str, str]) -> bool:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\nzz-not-hex\r\nworld\r\n0\r\n\r\n")
        return False

    def _fault_not_http(self, sock: socket.socket, connection: int, served: int,
                        method: str, target: str, query: Dict[str, str]) -> bool:
        sock.sendall(b"SSH-2.0-OpenSSH_9.6p1 Debian-3\r\n")
        return False

    def _fault_trickle_headers(self, sock: socket.socket, connection: int, served: int,
                               method: str, target: str, query: Dict[str, str]) -> bool:
        interval = self._seconds(query, "interval", 0.05)
        count = min(int(query.get("count", "200")), int(HOLD_LIMIT / max(interval, 0.01)))
        sock.sendall(b"HTTP/1.1 200 OK\r\n")
        header = b"X-Trickle: " + b"a" * count
        for byte in header[:count]:
            sock.sendall(bytes([byte]))
            gevent.sleep(interval)
        return False

    def _fault_stall_headers(self, sock: socket.socket, connection: int, served: int,
                             method: str, target: str, query: Dict[str, str]) -> bool:
        gevent.sleep(self._seconds(query, "seconds", 5))
        return False

    def _fault_stall_body(self, sock: socket.socket, connection: int, served: int,
                          method: str, target: str, query: Dict[str, str]) -> bool:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: 1000\r\n\r\n" + b"x" * 100)
        gevent.sleep(self._seconds(query, "seconds", 5))
        return False

    def _fault_slow_body(self, sock: socket.socket, connection: int, served: int,
                         method: str, target: str, query: Dict[str, str]) -> bool:
        size = int(query.get("size", "2000"))
        gevent.sleep(self._seconds(query, "head-delay", 0))
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     + f"Content-Length: {size}\r\n\r\n".encode() + b"x" * (size // 2))
        self.mid_body.set()
        if self._peer_closes_within(sock, self._seconds(query, "delay", 0.2)):
            return False
        sock.sendall(b"x" * (size - size // 2))
        return True

    def _fault_big(self, sock: socket.socket, connection: int, served: int,
                   method: str, target: str, query: Dict[str, str]) -> bool:
        size = int(query.get("size", "0"))
        piece = b"y" * 65536
        if query.get("chunked"):
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            left = size
            while left > 0:
                chunk = piece[:left]
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                left -= len(chunk)
            sock.sendall(b"0\r\n\r\n")
        else:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         + f"Content-Length: {size}\r\n\r\n".encode())
            left = size
            while left > 0:
                sock.sendall(piece[:left])
                left -= min(left, len(piece))
        return True
