"""A real nginx on 127.0.0.1, for tests about what goes on the wire.

:class:`NginxServer` writes a configuration into a temporary folder, serves
the static files it is given from there, and runs nginx in the foreground
(``daemon off; master_process off``) as a child process: nothing outside
the folder is written, nothing is left behind. Tests that need it import
:func:`nginx_fixture` and take the ``nginx`` fixture, which skips when nginx
is not installed (the Debian package ``nginx``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

__all__ = ["FILES", "NginxServer", "find_nginx", "nginx_fixture"]

#: How long nginx may take to start listening (s).
START_LIMIT = 10.0

_CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
error_log stderr warn;
pid {root}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    default_type text/plain;
{directives}
    server {{
        listen 127.0.0.1:{port};
        root {root}/html;
    }}
}}
"""


def find_nginx() -> Optional[str]:
    """The nginx executable (``PATH``, then ``/usr/sbin``), or ``None``."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NginxServer:
    """nginx serving ``files`` from a temporary folder on 127.0.0.1.

    :param folder: an empty folder it may use (``pathlib.Path``).
    :param files: path under the document root -> content (``bytes``).
    :param directives: more directives for the ``http`` block (``str``),
        such as ``"gzip on;"``.
    :raises FileNotFoundError: when nginx is not installed.
    """

    def __init__(self, folder: Path, files: Dict[str, bytes], directives: str = "") -> None:
        executable = find_nginx()
        if executable is None:
            raise FileNotFoundError("nginx is not installed")
        self.executable = executable
        self.root = folder
        for sub in ("html", "tmp"):
            (folder / sub).mkdir(parents=True)
        for name, content in files.items():
            path = folder / "html" / name.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        self.port = _free_port()
        self.directives = directives
        self._process: Optional[subprocess.Popen[bytes]] = None

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``, for :class:`~napixclient.Client`."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> "NginxServer":
        """Run nginx and wait (at most :data:`START_LIMIT` s) until it listens.

        :raises RuntimeError: with nginx's own words when it did not start.
        """
        config = self.root / "nginx.conf"
        config.write_text(_CONFIG.format(root=self.root, port=self.port,
                                         directives=self.directives))
        self._process = subprocess.Popen(
            [self.executable, "-p", str(self.root), "-c", str(config), "-e", "stderr"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_LIMIT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                assert self._process.stderr is not None
                raise RuntimeError("nginx did not start: "
                                   + self._process.stderr.read().decode(errors="replace"))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen on port {self.port} "
                           f"within {START_LIMIT:g} s")

    def stop(self) -> None:
        """Stop nginx (TERM, then KILL after 5 s)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stderr is not None:
            process.stderr.close()

    def __enter__(self) -> "NginxServer":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


#: The files the ``nginx`` fixture serves.
FILES = {
    "/index.html": b"index\n",
    "/100%.txt": b"one hundred per cent\n",
    "/a b.txt": b"a space\n",
}


@pytest.fixture(name="nginx")
def nginx_fixture(tmp_path):
    """A started :class:`NginxServer` serving :data:`FILES`; skipped when nginx
    is not installed."""
    if find_nginx() is None:
        pytest.skip("nginx is not installed (the Debian package nginx)")
    with NginxServer(tmp_path / "nginx", FILES) as server:
        yield server

