"""The pytest plugin: fixtures that start
:class:`~napixclient.testing.NapixTestServer` instances and stop them after
the test.

Installing napixclient registers this module through the ``pytest11`` entry
point; from a checkout that is not installed, list it in a
``conftest.py``: ``pytest_plugins = ["napixclient.testing.plugin"]``.

Where a server runs:

* ``napix_server`` and ``napix_server_factory`` serve from the gevent hub of
  the test's thread for a plain ``def`` test (gevent code), and from a
  thread of their own for an ``async def`` test, whose event loop never
  runs that hub;
* ``threaded_napix_server`` and ``threaded_napix_server_factory`` always
  serve from a thread of their own: for a plain ``def`` test that runs an
  event loop itself (``asyncio.run(...)``) or calls the server with blocking
  code (:mod:`requests`), and for fixtures of your own that are ``async``.

Every fixture here is a plain (not ``async``) fixture: it works the same
whichever plugin runs your ``async def`` tests (anyio's, which
napixclient's own tests use, or pytest-asyncio), and under uvloop.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterator, List

import pytest

from napixclient.testing.server import NapixTestServer

__all__ = [
    "napix_server",
    "napix_server_factory",
    "threaded_napix_server",
    "threaded_napix_server_factory",
]


def _is_async(request: pytest.FixtureRequest) -> bool:
    """Whether the test asking for a fixture is an ``async def`` function."""
    function = getattr(request, "function", None)
    return inspect.iscoroutinefunction(function)


def _factory(thread: bool) -> Iterator[Callable[..., NapixTestServer]]:
    """A factory of started servers (in a thread of their own when
    ``thread``), every one stopped when the generator ends."""
    servers: List[NapixTestServer] = []

    def make(**kwargs: Any) -> NapixTestServer:
        server = NapixTestServer(**kwargs).start(thread=thread)
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def napix_server(request: pytest.FixtureRequest) -> Iterator[NapixTestServer]:
    """A started ``NapixTestServer(users={"root": "toor"})``, stopped
    after the test: in the gevent hub of the test's thread for a ``def``
    test, in a thread of its own for an ``async def`` test."""
    server = NapixTestServer(users={"root": "toor"}).start(thread=_is_async(request))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def napix_server_factory(request: pytest.FixtureRequest
                         ) -> Iterator[Callable[..., NapixTestServer]]:
    """A callable taking :class:`~napixclient.testing.NapixTestServer`'s keyword arguments and
    returning a started server; every server it made is stopped after
    the test. Its servers run in the gevent hub of the test's thread for a
    ``def`` test, each in a thread of its own for an ``async def`` test.

    :raises TypeError, ValueError: from :class:`~napixclient.testing.NapixTestServer` for bad
        arguments.
    """
    yield from _factory(thread=_is_async(request))


@pytest.fixture
def threaded_napix_server() -> Iterator[NapixTestServer]:
    """A ``NapixTestServer(users={"root": "toor"})`` started in a thread
    of its own (``start(thread=True)``) whatever the test is, stopped after
    the test."""
    server = NapixTestServer(users={"root": "toor"}).start(thread=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def threaded_napix_server_factory() -> Iterator[Callable[..., NapixTestServer]]:
    """As ``napix_server_factory``, but every server it makes runs in a
    thread of its own (``start(thread=True)``) whatever the test is.

    :raises TypeError, ValueError: from :class:`~napixclient.testing.NapixTestServer` for bad
        arguments.
    """
    yield from _factory(thread=True)
