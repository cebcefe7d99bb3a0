"""A real forward proxy on loopback for tests: tinyproxy, run from a test.

Use the ``forward_proxy`` fixture (bring it into a test module with
``forward_proxy = proxyserver.forward_proxy``), or the context manager
:func:`running_tinyproxy` with a folder of your own::

    def test_through_a_proxy(forward_proxy, napix_server):
        proxies = {"http": forward_proxy.url, "https": forward_proxy.url}
        ...
        assert "GET http://127.0.0.1:" in forward_proxy.log()

The proxy listens on 127.0.0.1 only, on a free port, accepts clients from
127.0.0.1 only, forwards plain HTTP (adding a ``Via`` field naming
:data:`VIA_NAME`) and tunnels ``CONNECT`` to any port. Its configuration,
log and pid file live in the given folder. Tests that use it are skipped,
saying why, when tinyproxy is not installed (``apt-get install tinyproxy``;
``.ci/run`` installs it).

:func:`tls_front` puts a TLS listener in front of it, which makes it an
HTTPS proxy (a proxy reached over TLS).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, Optional

import gevent
import gevent.pool
import gevent.server
import gevent.socket
import pytest

#: The name tinyproxy writes in the ``Via`` field of what it forwards.
VIA_NAME = "napixclient-test-proxy"

#: Seconds to wait for tinyproxy to accept connections after it starts.
START_TIMEOUT = 10.0

_CONFIG = """\
Port {port}
Listen 127.0.0.1
Timeout 30
MaxClients 64
Allow 127.0.0.1
ViaProxyName "{via}"
LogFile "{log}"
LogLevel Info
PidFile "{pid}"
"""


def tinyproxy_path() -> Optional[str]:
    """The tinyproxy program, or ``None`` when it is not installed (Debian
    puts it in /usr/bin, some systems in /usr/sbin, outside a user's PATH)."""
    found = shutil.which("tinyproxy")
    if found:
        return found
    for folder in ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"):
        candidate = os.path.join(folder, "tinyproxy")
        if os.access(candidate, os.X_OK):
            return candidate
    return None


class ForwardProxy:
    """A running forward proxy: where it listens and what it logged.

    :param port: the TCP port on 127.0.0.1 it listens on (``int``).
    :param log_path: its log file (``pathlib.Path``).
    """

    def __init__(self, port: int, log_path: Path) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.log_path = log_path

    @property
    def url(self) -> str:
        """The proxy's URL for ``proxies=`` (``str``), ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        """Everything the proxy logged so far (``str``): a line per
        connection, and one per request, ``Request (file descriptor N): GET
        http://127.0.0.1:PORT/path HTTP/1.1`` when forwarded, ``Request
        (file descriptor N): CONNECT 127.0.0.1:PORT HTTP/1.0`` for a tunnel."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def __repr__(self) -> str:
        return f"ForwardProxy({self.url})"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _start(program: str, folder: Path) -> tuple[subprocess.Popen, ForwardProxy]:
    """Start tinyproxy on a free port; a few tries, since another program may
    take the port between the probe and tinyproxy's bind."""
    failures = []
    for attempt in range(3):
        port = _free_port()
        config = folder / "tinyproxy.conf"
        log = folder / "tinyproxy.log"
        config.write_text(_CONFIG.format(port=port, via=VIA_NAME, log=log,
                                         pid=folder / "tinyproxy.pid"))
        # -d: stay in the foreground, so terminate() ends it.
        process = subprocess.Popen([program, "-d", "-c", str(config)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            if _accepts(port):
                return process, ForwardProxy(port, log)
            time.sleep(0.05)
        _stop(process)
        output = process.stdout.read().decode(errors="replace") if process.stdout else ""
        failures.append(f"try {attempt + 1} on port {port}: exit {process.returncode}: "
                        f"{output.strip()[-500:]}")
    raise RuntimeError("tinyproxy did not start:\n" + "\n".join(failures))


@contextlib.contextmanager
def running_tinyproxy(folder: Path) -> Iterator[ForwardProxy]:
    """Run tinyproxy on 127.0.0.1 until the block ends.

    :param folder: an existing folder (``pathlib.Path``) for its
        configuration, log and pid file.
    :returns: the :class:`ForwardProxy`.
    :raises RuntimeError: if tinyproxy is installed but does not start
        (three tries, with its output).
    :raises FileNotFoundError: if tinyproxy is not installed.
    """
    program = tinyproxy_path()
    if program is None:
        raise FileNotFoundError("tinyproxy is not installed (apt-get install tinyproxy)")
    process, proxy = _start(program, Path(folder))
    try:
        yield proxy
    finally:
        _stop(process)
        if process.stdout:
            process.stdout.close()


@pytest.fixture
def forward_proxy(tmp_path: Path) -> Iterator[ForwardProxy]:
    """A :class:`ForwardProxy` (tinyproxy) on 127.0.0.1 for one test; the
    test is skipped when tinyproxy is not installed."""
    if tinyproxy_path() is None:
        pytest.skip("tinyproxy is not installed: apt-get install tinyproxy "
                    "(.ci/run installs it)")
    folder = tmp_path / "tinyproxy"
    folder.mkdir()
    with running_tinyproxy(folder) as proxy:
        yield proxy


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def tls_front(proxy: ForwardProxy, server_context) -> Iterator[str]:
    """Serve TLS on a free port of 127.0.0.1 and relay the decrypted bytes
    to ``proxy``: together an HTTPS proxy, in the gevent hub of the calling
    process.

    :param proxy: the :class:`ForwardProxy` behind it.
    :param server_context: a server-side :class:`gevent.ssl.SSLContext`
        holding the listener's certificate (trustme's ``configure_cert``).
    :returns: the HTTPS proxy's URL, ``https://127.0.0.1:PORT``.
    """
    relays = gevent.pool.Group()

    def relay(client: socket.socket, address: object) -> None:
        upstream = gevent.socket.create_connection((proxy.host, proxy.port), timeout=30)
        try:
            back = relays.spawn(_pipe, upstream, client)
            _pipe(client, upstream)
            back.join(timeout=30)
        finally:
            upstream.close()

    server = gevent.server.StreamServer(("127.0.0.1", 0), relay, ssl_context=server_context)
    server.start()
    try:
        yield f"https://127.0.0.1:{server.server_port}"
    finally:
        server.stop(timeout=1)
        relays.kill(timeout=1)
