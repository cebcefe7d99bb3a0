"""CooperativeAdapter: a plain :class:`requests.Session` over gevent sockets.

:class:`~napixclient.Client` does not use requests' sessions; this module is
for programs that do, and want their requests to yield to the gevent hub
without monkey-patching the standard library. Mount the adapter on a
session and every connection it opens is a
gevent socket (:class:`~napixclient.transport.CooperativeHTTPConnection`)
with TLS from a gevent SSL context (:func:`~napixclient.transport.ssl_context`)::

    session = requests.Session()
    adapter = CooperativeAdapter(pool_maxsize=4)
    session.mount("http://", adapter)
    session.mount("https://", adapter)

urllib3's pools are thread queues. The adapter uses them only with
``block=False``, which never waits: cap concurrency with a gevent
semaphore held by the caller, so a greenlet waiting for its turn yields to
the hub instead of blocking the whole thread.
"""

from __future__ import annotations

from typing import Any, Dict, Type

import requests.adapters
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from napixclient.transport import (
    CooperativeHTTPConnection,
    CooperativeHTTPSConnection,
    HubSleepRetry,
    register_secret_parameters,
    ssl_context,
)

__all__ = [
    "CooperativeAdapter",
    "CooperativeHTTPConnectionPool",
    "CooperativeHTTPSConnectionPool",
    "HubSleepRetry",
    "hub_sleeping",
]


class CooperativeHTTPConnectionPool(HTTPConnectionPool):
    """A urllib3 pool of :class:`~napixclient.transport.CooperativeHTTPConnection`."""

    ConnectionCls = CooperativeHTTPConnection


class CooperativeHTTPSConnectionPool(HTTPSConnectionPool):
    """A urllib3 pool of :class:`~napixclient.transport.CooperativeHTTPSConnection`."""

    ConnectionCls = CooperativeHTTPSConnection


#: The pool class for each scheme, for urllib3's ``pool_classes_by_scheme``:
_POOL_CLASSES: Dict[str, Type[HTTPConnectionPool]] = {
    "http": CooperativeHTTPConnectionPool,
    "https": CooperativeHTTPSConnectionPool,
}


def hub_sleeping(retry: Retry) -> Retry:
    """Return ``retry`` as a :class:`HubSleepRetry` with the same settings
    and counters, when it is a plain :class:`~urllib3.util.retry.Retry`.

    A subclass is returned unchanged: its own behaviour is the caller's
    choice, and it should sleep with :func:`gevent.sleep` itself.

    :param retry: a urllib3 ``Retry``.
    """
    if type(retry) is not Retry:
        return retry
    converted = HubSleepRetry.__new__(HubSleepRetry)
    converted.__dict__.update(retry.__dict__)
    return converted


class CooperativeAdapter(requests.adapters.HTTPAdapter):
    """A :class:`requests.adapters.HTTPAdapter` whose connections use gevent
    sockets, for programs that use a :class:`requests.Session` directly
    (see the module's example).

    Its pools never block (``pool_block`` is refused): cap concurrency with a
    gevent semaphore. A ``verify`` path is loaded into the gevent SSL context
    of each pool; one context is built per ``verify`` value.

    :param kwargs: those of :class:`requests.adapters.HTTPAdapter`
        (``pool_connections``, ``pool_maxsize``, ``max_retries``). A plain
        urllib3 ``Retry`` given as ``max_retries`` becomes a
        :class:`HubSleepRetry`, so its backoff yields to the hub.
    :raises ValueError: if ``pool_block=True`` is passed, since a blocking
        thread queue would deadlock a program that never monkey-patched.
    """

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("pool_block"):
            raise ValueError(
                "CooperativeAdapter: pool_block=True would wait on a thread queue; "
                "cap concurrency with a gevent semaphore instead"
            )
        register_secret_parameters(())
        super().__init__(**kwargs)
        self.max_retries = hub_sleeping(self.max_retries)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        """Create the pool manager with cooperative pools (see
        :meth:`requests.adapters.HTTPAdapter.init_poolmanager`)."""
        super().init_poolmanager(connections, maxsize, block=False, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOL_CLASSES)

    def _ssl_context(self, verify: Any) -> Any:
        """The gevent SSL context for ``verify``, built once."""
        contexts = self.__dict__.setdefault("_ssl_contexts", {})
        if verify not in contexts:
            contexts[verify] = ssl_context(verify)
        return contexts[verify]

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Set the pool's TLS verification as requests does, through a gevent
        SSL context already loaded with the CA bundle (see
        :func:`~napixclient.transport.ssl_context`)."""
        super().cert_verify(conn, url, verify, cert)
        if isinstance(conn, HTTPSConnectionPool) and url.lower().startswith("https"):
            conn.conn_kw["ssl_context"] = self._ssl_context(verify)
            conn.ca_certs = None
            conn.ca_cert_dir = None
