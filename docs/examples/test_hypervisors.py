"""Tests a napixclient user would write, shown in docs/testing.rst.

The code under test, ``pick_hypervisor``, would live in your own package; it
is here so that the file runs on its own: ``python -m pytest docs/examples``.
The fixtures come from napixclient's pytest plugin.
"""

from napixclient import ClientPool
from napixclient.authenticators import LoginAuthenticator

AUTH = LoginAuthenticator("root", "toor")


def pick_hypervisor(hosts, auth, slots, deadline=10.0):
    """Return the first host that answers with at least ``slots`` free
    slots within ``deadline`` seconds, or None."""
    with ClientPool(auth, timeout=deadline) as pool:
        for host in hosts:
            pool.request(host, "GET", "/capacity/capacity")
        for result in pool.wait_unordered(timeout=deadline):
            if result.status == 200 and result.body["free_slots"] >= slots:
                return result.request.host
    return None


def test_picks_the_first_hypervisor_with_room(napix_server_factory):
    full = napix_server_factory()
    full.route("/capacity/capacity", body={"free_slots": 0})
    roomy = napix_server_factory()
    roomy.route("/capacity/capacity", body={"free_slots": 4})

    assert pick_hypervisor([full.host, roomy.host], AUTH, slots=2) == roomy.host


def test_skips_dead_and_refusing_hypervisors(napix_server_factory):
    dead = napix_server_factory()
    dead.route("/capacity/capacity", drop=True)
    broken = napix_server_factory()
    broken.route("/capacity/capacity", status=500, body={"error_class": "IOError"})
    roomy = napix_server_factory()
    roomy.route("/capacity/capacity", body={"free_slots": 4}, latency=0.1)

    hosts = [dead.host, broken.host, roomy.host]
    assert pick_hypervisor(hosts, AUTH, slots=2) == roomy.host


def test_gives_up_at_the_deadline(napix_server_factory):
    hanging = napix_server_factory()
    hanging.route("/capacity/capacity", hang=True)

    assert pick_hypervisor([hanging.host], AUTH, slots=1, deadline=0.3) is None
    assert len(hanging.requests) == 1


def test_requests_are_signed_by_our_login(napix_server):
    napix_server.route("/capacity/capacity", body={"free_slots": 1})

    pick_hypervisor([napix_server.host], AUTH, slots=1)

    assert [r.login for r in napix_server.requests] == ["root"]
    assert napix_server.requests[0].headers["Authorization"].startswith("login=root&")
