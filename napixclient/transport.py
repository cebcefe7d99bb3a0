"""A cooperative transport: urllib3 connections over gevent sockets.

The library never monkey-patches. Instead its connections open
:mod:`gevent.socket` sockets and wrap them with a :mod:`gevent.ssl` context,
so requests yield to the gevent hub while they wait, whether or not the
program patched the standard library, and importing napixclient changes
nothing for the rest of the program.

:class:`CooperativeAdapter` plugs this into a plain :class:`requests.Session`;
:func:`connection_pool` gives the urllib3 pool that :class:`~napixclient.Client`
drives directly.

urllib3's pools are thread queues. They are used here only with
``block=False``, which never waits: the per-host cap is a gevent semaphore
held by the caller, so a greenlet waiting for its turn yields to the hub
instead of blocking the whole thread.
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import Any, Optional, Union

import gevent.socket
import gevent.ssl
import requests.adapters
import requests.utils
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.timeout import _DEFAULT_TIMEOUT

__all__ = [
    "CooperativeAdapter",
    "CooperativeHTTPConnection",
    "CooperativeHTTPConnectionPool",
    "CooperativeHTTPSConnection",
    "CooperativeHTTPSConnectionPool",
    "connection_pool",
    "ssl_context",
]

#: ``verify``: ``True`` (the CA bundle requests uses), ``False`` (no
#: verification), or the path of a CA bundle file or directory.
Verify = Union[bool, str, "os.PathLike[str]"]


class _GeventSocketMixin:
    """Opens the connection's socket with :mod:`gevent.socket`."""

    host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any
    _dns_host: str

    def _new_conn(self) -> socket.socket:
        timeout = self.timeout
        try:
            if timeout is _DEFAULT_TIMEOUT:
                sock = gevent.socket.create_connection(
                    (self._dns_host, self.port), source_address=self.source_address
                )
            else:
                sock = gevent.socket.create_connection(
                    (self._dns_host, self.port), timeout, source_address=self.source_address
                )
        except socket.gaierror as error:
            raise NameResolutionError(self.host, self, error) from error  # type: ignore[arg-type]
        except socket.timeout as error:
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={timeout})"
            ) from error
        except OSError as error:
            raise NewConnectionError(
                self, f"Failed to establish a new connection: {error}"  # type: ignore[arg-type]
            ) from error
        try:
            for option in self.socket_options or ():
                sock.setsockopt(*option)
        except OSError:
            sock.close()
            raise
        return sock


class CooperativeHTTPConnection(_GeventSocketMixin, HTTPConnection):
    """A urllib3 HTTP connection over a gevent socket."""


class CooperativeHTTPSConnection(_GeventSocketMixin, HTTPSConnection):
    """A urllib3 HTTPS connection over a gevent socket; TLS comes from the
    gevent SSL context its pool passes (see :func:`ssl_context`)."""


class CooperativeHTTPConnectionPool(HTTPConnectionPool):
    """A urllib3 pool of :class:`CooperativeHTTPConnection`."""

    ConnectionCls = CooperativeHTTPConnection


class CooperativeHTTPSConnectionPool(HTTPSConnectionPool):
    """A urllib3 pool of :class:`CooperativeHTTPSConnection`."""

    ConnectionCls = CooperativeHTTPSConnection


def ssl_context(verify: Verify = True) -> ssl.SSLContext:
    """Return a :class:`gevent.ssl.SSLContext` for client connections.

    :param verify: ``True`` verifies the server's certificate and host name
        against the CA bundle requests uses (certifi); a path (``str`` or
        path-like) verifies against that CA bundle file or directory;
        ``False`` verifies nothing (tests only).
    :raises FileNotFoundError: if ``verify`` names a path that does not exist.
    :raises ssl.SSLError: if the CA bundle cannot be read.
    """
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if verify is True:
        bundle: str = requests.utils.DEFAULT_CA_BUNDLE_PATH
    else:
        bundle = os.fspath(verify)
    if os.path.isdir(bundle):
        context.load_verify_locations(capath=bundle)
    elif os.path.exists(bundle):
        context.load_verify_locations(cafile=bundle)
    else:
        raise FileNotFoundError(f"verify: no CA bundle at {bundle!r}")
    return context


def _tls_pool_kwargs(verify: Verify) -> dict[str, Any]:
    return {
        "ssl_context": ssl_context(verify),
        "cert_reqs": "CERT_NONE" if verify is False else "CERT_REQUIRED",
    }


def connection_pool(
    scheme: str,
    host: str,
    port: Optional[int],
    *,
    maxsize: int,
    verify: Verify = True,
    headers: Optional[dict[str, str]] = None,
) -> HTTPConnectionPool:
    """Return a cooperative urllib3 pool for one destination.

    The pool keeps up to ``maxsize`` keep-alive connections and never blocks
    (``block=False``): the caller caps concurrency with a gevent semaphore.

    :param scheme: ``"http"`` or ``"https"``.
    :param host: the host name or IP address (no brackets for IPv6).
    :param port: the TCP port, or ``None`` for the scheme's default.
    :param maxsize: the most connections kept open (``int`` >= 1).
    :param verify: see :func:`ssl_context`; ignored for ``http``.
    :param headers: headers sent with every request, or ``None``.
    :raises ValueError: for another scheme.
    """
    if scheme == "http":
        return CooperativeHTTPConnectionPool(
            host, port, maxsize=maxsize, block=False, headers=headers
        )
    if scheme == "https":
        return CooperativeHTTPSConnectionPool(
            host, port, maxsize=maxsize, block=False, headers=headers,
            **_tls_pool_kwargs(verify),
        )
    raise ValueError(f"scheme must be 'http' or 'https', not {scheme!r}")


class CooperativeAdapter(requests.adapters.HTTPAdapter):
    """A :class:`requests.adapters.HTTPAdapter` whose connections use gevent
    sockets, for programs that use a :class:`requests.Session` directly::

        session = requests.Session()
        adapter = CooperativeAdapter(pool_maxsize=4)
        session.mount("http://", adapter)
        session.mount("https://", adapter)

    Its pools never block (``pool_block`` is refused): cap concurrency with a
    gevent semaphore. A ``verify`` path is loaded into the gevent SSL context
    of each pool.

    :param kwargs: those of :class:`requests.adapters.HTTPAdapter`
        (``pool_connections``, ``pool_maxsize``, ``max_retries``).
    :raises ValueError: if ``pool_block=True`` is passed, since a blocking
        thread queue would deadlock a program that never monkey-patched.
    """

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("pool_block"):
            raise ValueError(
                "CooperativeAdapter: pool_block=True would wait on a thread queue; "
                "cap concurrency with a gevent semaphore instead"
            )
        super().__init__(**kwargs)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        """Create the pool manager with cooperative pools (see
        :meth:`requests.adapters.HTTPAdapter.init_poolmanager`)."""
        super().init_poolmanager(connections, maxsize, block=False, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": CooperativeHTTPConnectionPool,
            "https": CooperativeHTTPSConnectionPool,
        }

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Set the pool's TLS verification as requests does, through a gevent
        SSL context already loaded with the CA bundle (see :func:`ssl_context`);
        one context is kept per ``verify`` value."""
        super().cert_verify(conn, url, verify, cert)
        if isinstance(conn, HTTPSConnectionPool) and url.lower().startswith("https"):
            contexts = self.__dict__.setdefault("_ssl_contexts", {})
            if verify not in contexts:
                contexts[verify] = ssl_context(verify)
            conn.conn_kw["ssl_context"] = contexts[verify]
            conn.ca_certs = None
            conn.ca_cert_dir = None

