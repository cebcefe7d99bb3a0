"""Shared fixtures. The napix_server fixtures come from the plugin, listed here
so the suite also runs from a checkout that is not installed."""

import select
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["napixclient.testing.plugin"]


def pytest_addoption(parser):
    parser.addoption(
        "--napix-parser", dest="napix_parser", default=None,
        help="run every Client with this response parser (napixclient.core.client.DEFAULT_PARSER), "
             "llhttp or h11; the whole suite must pass on each")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "patched: these tests also run in a process that called "
        "gevent.monkey.patch_all() first (python tests/patched.py)")
    name = config.getoption("napix_parser")
    if name:
        import napixclient.core.client
        from napixclient.core.parser import check_parser

        try:
            name = check_parser(name)
        except ValueError as error:  # unknown, or its extra is not installed
            raise pytest.UsageError(f"--napix-parser: {error}") from None
        napixclient.core.client.DEFAULT_PARSER = name


def pytest_report_header(config):
    """Say whether this run is under gevent.monkey.patch_all() (tests/patched.py)."""
    from gevent import monkey

    patched = sorted(name for name in monkey.saved if not name.startswith("_gevent"))
    return f"gevent.monkey: {', '.join(patched) if patched else 'nothing'} patched"


#: The variables requests and napixclient read proxies from.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def _no_proxy_from_the_machine(monkeypatch):
    """Tests talk to 127.0.0.1 directly: a proxy set on the machine running
    them must not carry their traffic (tests of proxies set their own)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


# -- the hostile server (tests/hostileserver.py), in a process of its own -------------

HOSTILE_SERVER = Path(__file__).resolve().parent / "hostileserver.py"


class HostileServer:
    """tests/hostileserver.py running in a subprocess: where it listens.

    :ivar port: its TCP port on 127.0.0.1 (``int``).
    :ivar host: ``"127.0.0.1:PORT"``, for :class:`napixclient.Client`.
    :ivar url: ``"http://127.0.0.1:PORT"``, for ``proxies=``.
    """

    def __init__(self, process: subprocess.Popen, port: int) -> None:
        self.process = process
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self.url = f"http://{self.host}"

    def __repr__(self) -> str:
        return f"HostileServer({self.url})"


@pytest.fixture
def hostile_server():
    """tests/hostileserver.py started for one test (its modes are in its
    docstring), killed after it; it also exits by itself when this process
    ends (its stdin closes) and after 300 s."""
    process = subprocess.Popen([sys.executable, str(HOSTILE_SERVER), "--lifetime", "300"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 15)
        line = process.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            raise RuntimeError(f"tests/hostileserver.py did not start: {line!r}")
        yield HostileServer(process, int(line))
    finally:
        process.kill()
        process.wait(timeout=10)
        for stream in (process.stdin, process.stdout):
            stream.close()


# -- a throwaway certificate authority (trustme), for TLS servers on 127.0.0.1 -------

@pytest.fixture(scope="module")
def ca():
    """A certificate authority made for the test module (``trustme.CA``)."""
    import trustme

    return trustme.CA()


@pytest.fixture
def ca_bundle(ca, tmp_path):
    """The path (``str``) of a PEM bundle holding ``ca``'s certificate, for ``verify=``."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def many_hosts():
    """``start(count, delay=0.0)``: a :class:`tests.helpers.ManyHosts` of
    ``count`` hosts, killed at the end of the test."""
    from tests.helpers import ManyHosts

    started = []

    def start(count, delay=0.0):
        hosts = ManyHosts(count, delay)
        started.append(hosts)
        return hosts

    yield start
    for hosts in started:
        hosts.kill()
