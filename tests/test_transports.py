"""Both transports (response readers) against a real server; the whole suite
also runs on each: ``python -m pytest --napix-transport geventhttpclient``."""

import pytest

import napixclient.connections
from napixclient import Client, ClientPool, Response
from napixclient.connections import READERS
from tests.helpers import AUTH


@pytest.mark.parametrize("transport", sorted(READERS))
def test_each_transport_signs_reads_bodies_and_keeps_connections_alive(napix_server,
                                                                      transport):
    napix_server.route("/", body={"managers": ["vm-ip"]})
    napix_server.route("/text", body="plain text")
    with Client(napix_server.host, AUTH, transport=transport) as client:
        assert client.get("/").body == {"managers": ["vm-ip"]}
        assert client.get("/text").body == "plain text"
        assert client.head("/").content == b""
        assert client._connections._read is READERS[transport]
    assert napix_server.max_open_connections == 1
    assert len(napix_server.requests) == 3


def test_a_pool_passes_the_transport_to_its_clients(napix_server):
    napix_server.route("/", body=[])
    transport = sorted(READERS)[-1]
    with ClientPool(AUTH, transport=transport) as pool:
        pool.request(napix_server.host, "GET", "/")
        (result,) = pool.wait(timeout=5)
        assert isinstance(result, Response)
        assert pool.client(napix_server.host)._connections._read is READERS[transport]


@pytest.mark.parametrize("transport", ["urllib3", "", 3])
def test_an_unknown_transport_is_refused_at_once(transport):
    with pytest.raises(ValueError, match="transport"):
        Client("127.0.0.1:1", transport=transport)
    with pytest.raises(ValueError, match="transport"):
        ClientPool(transport=transport)


def test_the_fast_transport_without_its_extra_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(napixclient.connections, "READERS",
                        {"http.client": READERS["http.client"]})
    with pytest.raises(ValueError, match=r"napixclient\[fast\]"):
        Client("127.0.0.1:1", transport="geventhttpclient")
