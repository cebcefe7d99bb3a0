"""An answer sent before the upload ended is read, not lost (issue 10, item 6):
a server may answer 413 (or 401...) after the request's head and close without
reading the body; sending then fails with a broken pipe or a reset, and the
answer is already there to read, as urllib3 reads it."""

import importlib.util
import socket
import subprocess
import sys
import textwrap
import time

import gevent
import gevent.socket
import pytest

from napixclient import Client, ConnectionError, HTTPError
from napixclient.core.parser import available_parsers

BODY = b"x" * (20 * 1024 * 1024)


class EarlyAnswer:
    """A raw server on 127.0.0.1 that reads a request's head, answers 413 with
    ``Connection: close`` and closes without reading the body."""

    def __init__(self):
        self.listener = gevent.socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.greenlet = gevent.spawn(self._serve)

    def _serve(self):
        while True:
            sock, _ = self.listener.accept()
            self.accepted += 1
            gevent.spawn(self._answer, sock)

    def _answer(self, sock):
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                data = sock.recv(4096)
                if not data:
                    return
                head += data
            sock.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: 14\r\nConnection: close\r\n\r\nbody too large")
        finally:
            sock.close()

    def stop(self):
        self.greenlet.kill()
        self.listener.close()


@pytest.fixture
def early_answer():
    server = EarlyAnswer()
    yield server
    server.stop()


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_an_answer_sent_before_the_upload_ended_is_read(early_answer, method):
    with Client(f"127.0.0.1:{early_answer.port}", timeout=10, retries=2) as client:
        for _ in range(3):
            with pytest.raises(HTTPError) as caught:
                client.request(method, "/upload", BODY)
            assert not isinstance(caught.value, ConnectionError), str(caught.value)
            assert caught.value.status == 413
            assert caught.value.response.body == "body too large"
    # Each attempt went out once: an answer is never a reason to send again.
    assert early_answer.accepted == 3


GUNICORN_APP = textwrap.dedent("""
    def app(environ, start_response):
        # Refuses large uploads without reading them, as a WSGI app may.
        if int(environ.get("CONTENT_LENGTH") or 0) > 1024 * 1024:
            start_response("413 Payload Too Large", [("Content-Type", "text/plain"),
                                                     ("Content-Length", "14")])
            return [b"body too large"]
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
""")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def gunicorn_sync(tmp_path):
    """gunicorn with its sync worker, on 127.0.0.1."""
    if importlib.util.find_spec("gunicorn") is None:
        pytest.skip("gunicorn is not installed for this Python (the test extra installs it)")
    (tmp_path / "early_app.py").write_text(GUNICORN_APP)
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
         "--worker-class", "sync", "--chdir", str(tmp_path), "early_app:app"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        process.kill()
        pytest.fail("gunicorn did not start")
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


def test_gunicorn_refusing_a_large_upload_gives_its_413(gunicorn_sync):
    with Client(gunicorn_sync, timeout=10) as client:
        for _ in range(3):
            with pytest.raises(HTTPError) as caught:
                client.post("/upload", BODY)
            assert caught.value.status == 413, str(caught.value)
        assert client.post("/small", b"x").body == "ok"


@pytest.mark.parametrize("parser", available_parsers())
def test_an_early_413_from_a_server_that_neither_reads_nor_closes_is_read_every_time(
        hostile_server, parser):
    """tests/hostileserver.py's /early-413 behaves as uWSGI: it answers 413
    after the head and then holds the connection, neither reading nor
    closing it, so the upload stalls once the sockets' buffers are full."""
    with Client(hostile_server.host, timeout=10, parser=parser) as client:
        for run in range(4):
            started = time.monotonic()
            with pytest.raises(HTTPError) as caught:
                client.post("/early-413", BODY)
            spent = time.monotonic() - started
            assert type(caught.value) is HTTPError, f"run {run}: {caught.value}"
            assert caught.value.status == 413
            assert spent < 5, f"run {run}: the 413 came after {spent:.1f} s"
