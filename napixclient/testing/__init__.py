"""Real Napix test servers on loopback, and a pytest plugin that starts them.

:class:`NapixTestServer` is a gevent WSGI server bound to ``127.0.0.1`` on an
ephemeral port. It runs in the gevent hub of the calling process, so it serves
while your gevent code (a :class:`~napixclient.Client`, a
:class:`~napixclient.ClientPool`) calls it, with no monkey-patching. It checks
signatures and tokens the way a Napix server does (PROTOCOL.md), answers the
routes you declare, and can add latency, hang or drop the connection per
route. It records every request and counts concurrent requests and TCP
connections, so a test can check what a client really did::

    from napixclient import Client
    from napixclient.testing import NapixTestServer

    with NapixTestServer(users={"root": "toor"}) as srv:
        srv.route("/vm-ip/", "POST", handler=lambda req: (201, req.json))
        srv.route("/slow", latency=0.5)
        srv.route("/dead", drop=True)
        with Client(srv.host, {"login": "root", "key": "toor"}) as client:
            assert client.post("/vm-ip/", {"size": 1}).body == {"size": 1}
        assert srv.requests[0].login == "root"
        assert srv.max_open_connections == 1

With pytest, :mod:`napixclient.testing.plugin` is a plugin (registered
through the ``pytest11`` entry point when napixclient is installed, or with
``pytest_plugins = ["napixclient.testing.plugin"]`` in a ``conftest.py``).
It gives four fixtures:

* ``napix_server``: a started ``NapixTestServer(users={"root": "toor"})``,
  stopped after the test;
* ``napix_server_factory``: a callable taking :class:`NapixTestServer`'s
  keyword arguments and returning a started server; every server it made is
  stopped after the test;
* ``threaded_napix_server`` and ``threaded_napix_server_factory``: the
  same, each server in a thread of its own whatever the test is.

::

    def test_capacity(napix_server):
        napix_server.route("/capacity", body={"slots": 3})
        ...

From asyncio code, or from blocking code (plain :mod:`requests`), the
calling thread's gevent hub does not run while it waits, so a server there
would never answer: start the server in a thread of its own, with a hub of
its own, with ``start(thread=True)`` or ``async with NapixTestServer() as
server:``. The fixtures do it for ``async def`` tests by themselves::

    async def test_capacity(napix_server):          # any async test plugin
        napix_server.route("/capacity", body={"slots": 3})
        async with AsyncClient(napix_server.host, auth) as client:
            assert (await client.get("/capacity")).body == {"slots": 3}

The package's modules, one job each: :mod:`~napixclient.testing.server`
(the server), :mod:`~napixclient.testing.recording` (what it keeps of each
request), :mod:`~napixclient.testing.routes` (what a route answers),
:mod:`~napixclient.testing.signatures` (the identity checks),
:mod:`~napixclient.testing.logs` (its log, secrets hidden),
:mod:`~napixclient.testing.threads` (a thread with a hub of its own) and
:mod:`~napixclient.testing.plugin` (the fixtures); the names a test uses are
importable from :mod:`napixclient.testing` itself.
"""

from typing import Any, List

from napixclient.testing.logs import MAX_LOG_LINE
from napixclient.testing.recording import MAX_BODY, RecordedRequest
from napixclient.testing.server import (
    HANG_LIMIT,
    RAW_TARGET_KEY,
    RECORD_KEY,
    STOP_TIMEOUT,
    NapixTestServer,
)
from napixclient.testing.signatures import hmac_token
from napixclient.testing.threads import HubThread

__all__ = [
    "HANG_LIMIT",
    "MAX_BODY",
    "MAX_LOG_LINE",
    "RAW_TARGET_KEY",
    "RECORD_KEY",
    "STOP_TIMEOUT",
    "HubThread",
    "NapixTestServer",
    "RecordedRequest",
    "hmac_token",
    "napix_server",
    "napix_server_factory",
    "threaded_napix_server",
    "threaded_napix_server_factory",
]

#: The fixtures, from :mod:`napixclient.testing.plugin`, imported when asked
#: for: importing this package does not import pytest (``napix demo`` uses
#: the server). An installation made before the plugin had its own module
#: registers this package as the plugin: its fixtures are found here too.
_FIXTURES = ("napix_server", "napix_server_factory", "threaded_napix_server",
             "threaded_napix_server_factory")


def __getattr__(name: str) -> Any:
    if name in _FIXTURES:
        from napixclient.testing import plugin

        return getattr(plugin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted({*globals(), *_FIXTURES})
