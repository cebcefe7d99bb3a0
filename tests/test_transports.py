"""Both transports (response readers) against a real server; the whole suite
also runs on each: ``python -m pytest --napix-transport geventhttpclient``."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import napixclient.connections
from napixclient import Client, ClientPool, Response
from napixclient.connections import READERS, available_transports, reader
from tests.helpers import AUTH

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("transport", available_transports())
def test_each_transport_signs_reads_bodies_and_keeps_connections_alive(napix_server,
                                                                      transport):
    napix_server.route("/", body={"managers": ["vm-ip"]})
    napix_server.route("/text", body="plain text")
    with Client(napix_server.host, AUTH, transport=transport) as client:
        assert client.get("/").body == {"managers": ["vm-ip"]}
        assert client.get("/text").body == "plain text"
        assert client.head("/").content == b""
        assert client._connections._read is reader(transport)
    assert napix_server.max_open_connections == 1
    assert len(napix_server.requests) == 3


def test_a_pool_passes_the_transport_to_its_clients(napix_server):
    napix_server.route("/", body=[])
    transport = available_transports()[-1]
    with ClientPool(AUTH, transport=transport) as pool:
        pool.request(napix_server.host, "GET", "/")
        (result,) = pool.wait(timeout=5)
        assert isinstance(result, Response)
        assert pool.client(napix_server.host)._connections._read is reader(transport)


@pytest.mark.parametrize("transport", ["urllib3", "", 3])
def test_an_unknown_transport_is_refused_at_once(transport):
    with pytest.raises(ValueError, match="transport"):
        Client("127.0.0.1:1", transport=transport)
    with pytest.raises(ValueError, match="transport"):
        ClientPool(transport=transport)


def test_the_fast_transport_without_its_extra_says_how_to_get_it(monkeypatch):
    def missing():
        raise ImportError("No module named 'geventhttpclient'")

    monkeypatch.setattr(napixclient.connections, "READERS",
                        {"http.client": READERS["http.client"]})
    monkeypatch.setitem(napixclient.connections._OPTIONAL, "geventhttpclient",
                        (missing, "fast"))
    with pytest.raises(ValueError, match=r"napixclient\[fast\]"):
        Client("127.0.0.1:1", transport="geventhttpclient")
    assert available_transports() == ["http.client"]


def test_importing_napixclient_does_not_import_geventhttpclient():
    code = ("import sys, napixclient, napixclient.pool; "
            "print([m for m in sys.modules if m.startswith('geventhttpclient')])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
