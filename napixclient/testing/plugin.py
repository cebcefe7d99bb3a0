"""The pytest plugin: fixtures that start
:class:`~napixclient.testing.NapixTestServer` instances and stop them after
the test.

Installing napixclient registers this module through the ``pytest11`` entry
point; from a checkout that is not installed, list it in a
``conftest.py``: ``pytest_plugins = ["napixclient.testing.plugin"]``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, List

import pytest

from napixclient.testing.server import NapixTestServer

__all__ = ["napix_server", "napix_server_factory"]


@pytest.fixture
def napix_server() -> Iterator[NapixTestServer]:
    """A started ``NapixTestServer(users={"root": "toor"})``, stopped
    after the test."""
    server = NapixTestServer(users={"root": "toor"}).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def napix_server_factory() -> Iterator[Callable[..., NapixTestServer]]:
    """A callable taking :class:`~napixclient.testing.NapixTestServer`'s keyword arguments and
    returning a started server; every server it made is stopped after
    the test.

    :raises TypeError, ValueError: from :class:`~napixclient.testing.NapixTestServer` for bad
        arguments.
    """
    servers: List[NapixTestServer] = []

    def make(**kwargs: Any) -> NapixTestServer:
        server = NapixTestServer(**kwargs).start()
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()
