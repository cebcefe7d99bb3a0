"""Async tests a napixclient.aio user would write, shown in docs/asyncio.rst
and docs/testing.rst.

The code under test, ``pick_hypervisor``, would live in your own package; it
is here so that the file runs on its own: ``python -m pytest docs/examples``.
The fixtures come from napixclient's pytest plugin: in an ``async def``
test, each server serves from a thread of its own. The tests run under
anyio's pytest plugin (``@pytest.mark.anyio``); pytest-asyncio's
``@pytest.mark.asyncio`` works the same with these fixtures.
"""

import pytest

from napixclient.aio import AsyncClientPool
from napixclient.authenticators import LoginAuthenticator

AUTH = LoginAuthenticator("root", "toor")

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    """napixclient.aio runs on asyncio (anyio would try trio too)."""
    return "asyncio"


async def pick_hypervisor(hosts, auth, slots, deadline=10.0):
    """Return the first host that answers with at least ``slots`` free
    slots within ``deadline`` seconds, or None."""
    async with AsyncClientPool(auth, timeout=deadline) as pool:
        for host in hosts:
            pool.request(host, "GET", "/capacity/capacity")
        async for result in pool.wait_unordered(timeout=deadline):
            if result.status == 200 and result.body["free_slots"] >= slots:
                return result.request.host
    return None


async def test_picks_the_first_hypervisor_with_room(napix_server_factory):
    full = napix_server_factory()
    full.route("/capacity/capacity", body={"free_slots": 0})
    roomy = napix_server_factory()
    roomy.route("/capacity/capacity", body={"free_slots": 4})

    assert await pick_hypervisor([full.host, roomy.host], AUTH, slots=2) == roomy.host


async def test_skips_dead_and_refusing_hypervisors(napix_server_factory):
    dead = napix_server_factory()
    dead.route("/capacity/capacity", drop=True)
    broken = napix_server_factory()
    broken.route("/capacity/capacity", status=500, body={"error_class": "IOError"})
    roomy = napix_server_factory()
    roomy.route("/capacity/capacity", body={"free_slots": 4}, latency=0.1)

    hosts = [dead.host, broken.host, roomy.host]
    assert await pick_hypervisor(hosts, AUTH, slots=2) == roomy.host


async def test_gives_up_at_the_deadline(napix_server):
    napix_server.route("/capacity/capacity", hang=True)

    assert await pick_hypervisor([napix_server.host], AUTH, slots=1, deadline=0.3) is None
    assert len(napix_server.requests) == 1
