"""CooperativeAdapter: a plain :class:`requests.Session` over gevent sockets.

:class:`~napixclient.Client` does not use requests' sessions; this module is
for programs that do, and want their requests to yield to the gevent hub
without monkey-patching the standard library. Mount the adapter on a
session and every connection it opens, direct or through a proxy, is a
gevent socket (:class:`CooperativeHTTPConnection`)
with TLS from a gevent SSL context (:func:`~napixclient.core.tls.ssl_context`)::

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

import socket
from typing import Any, Dict, Type

import gevent
import gevent.socket
import gevent.ssl
import requests.adapters
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.poolmanager import ProxyManager
from urllib3.util.retry import Retry
from urllib3.util.timeout import _DEFAULT_TIMEOUT

from napixclient.core.origin import ip_family
from napixclient.core.tls import TLSContexts
from napixclient.redact import register_secret_parameters

__all__ = [
    "CooperativeAdapter",
    "CooperativeHTTPConnectionPool",
    "CooperativeHTTPSConnectionPool",
    "HubSleepRetry",
    "hub_sleeping",
]


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
            family = ip_family(self._dns_host)
            if family is not None:
                sock = _connect_literal(family, self._dns_host, self.port, timeout,
                                        self.source_address)
            elif timeout is _DEFAULT_TIMEOUT:
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


def _connect_literal(family: int, host: str, port: int, timeout: Any,
                     source_address: Any) -> socket.socket:
    """Connect to an IP address without asking the resolver: gevent's
    default resolver runs every getaddrinfo, numeric ones included, in its
    thread pool, which costs a thread hand-off per connection (about 30 us
    of CPU and more of waiting; thousands of them in a fleet probe)."""
    sock = gevent.socket.socket(family, socket.SOCK_STREAM)
    try:
        if timeout is not _DEFAULT_TIMEOUT:
            sock.settimeout(timeout)
        if source_address:
            sock.bind(source_address)
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class CooperativeHTTPConnection(_GeventSocketMixin, HTTPConnection):
    """A urllib3 HTTP connection over a gevent socket."""


class CooperativeHTTPSConnection(_GeventSocketMixin, HTTPSConnection):
    """A urllib3 HTTPS connection over a gevent socket; TLS comes from the
    gevent SSL context its pool passes (see :func:`napixclient.core.tls.ssl_context`)."""


class CooperativeHTTPConnectionPool(HTTPConnectionPool):
    """A urllib3 pool of :class:`CooperativeHTTPConnection`."""

    ConnectionCls = CooperativeHTTPConnection


class CooperativeHTTPSConnectionPool(HTTPSConnectionPool):
    """A urllib3 pool of :class:`CooperativeHTTPSConnection`."""

    ConnectionCls = CooperativeHTTPSConnection


#: The pool class for each scheme, for urllib3's ``pool_classes_by_scheme``:
#: the scheme of the origin, or of the proxy when requests are forwarded.
_POOL_CLASSES: Dict[str, Type[HTTPConnectionPool]] = {
    "http": CooperativeHTTPConnectionPool,
    "https": CooperativeHTTPSConnectionPool,
}


class HubSleepRetry(Retry):
    """urllib3's :class:`~urllib3.util.retry.Retry` whose waits (backoff,
    ``Retry-After``) are :func:`gevent.sleep`: urllib3's :func:`time.sleep`
    would stop every greenlet of a program that did not monkey-patch."""

    def sleep_for_retry(self, response: Any = None) -> bool:
        """Wait what ``Retry-After`` asks (seconds), yielding to the hub;
        ``True`` when it asked for a wait."""
        retry_after = self.get_retry_after(response)
        if retry_after:
            gevent.sleep(retry_after)
            return True
        return False

    def _sleep_backoff(self) -> None:
        backoff = self.get_backoff_time()
        if backoff > 0:
            gevent.sleep(backoff)


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

    Proxies (``proxies=``, or the environment's ``HTTP_PROXY`` and
    ``HTTPS_PROXY`` when the session trusts it) are cooperative too, as
    requests uses them: an ``http://`` origin is forwarded by the proxy, an
    ``https://`` origin is reached through a ``CONNECT`` tunnel (RFC 9110,
    section 9.3.6) and its certificate checked against ``verify``. An
    ``https://`` proxy is itself reached over TLS, its certificate checked
    against ``verify`` as well (for ``http://`` origins too, where requests'
    own adapter does not check it). Credentials in a proxy URL
    (``http://user:password@proxy:3128``) go to the proxy in
    ``Proxy-Authorization``; a proxy that cannot be reached raises requests'
    :class:`~requests.exceptions.ProxyError`, whose message does not show them.

    :param kwargs: those of :class:`requests.adapters.HTTPAdapter`
        (``pool_connections``, ``pool_maxsize``, ``max_retries``). A plain
        urllib3 ``Retry`` given as ``max_retries`` becomes a
        :class:`HubSleepRetry`, so its backoff yields to the hub.
    :raises ValueError: if ``pool_block=True`` is passed, since a blocking
        thread queue would deadlock a program that never monkey-patched;
        and, when a request is sent, if it is to go through a SOCKS proxy
        (``socks4://``, ``socks5://``...): PySocks opens blocking sockets
        that would stop the hub.
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

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> ProxyManager:
        """Return the urllib3 :class:`~urllib3.poolmanager.ProxyManager` for
        ``proxy``, made once per proxy URL, whose pools are cooperative (see
        :meth:`requests.adapters.HTTPAdapter.proxy_manager_for`).

        :param proxy: the proxy's URL (``str``), with its scheme.
        :param proxy_kwargs: passed to urllib3's ``ProxyManager``.
        :raises ValueError: for a SOCKS proxy (its scheme starts with
            ``socks``). The message names the scheme only, never the URL,
            which may hold credentials.
        """
        if proxy not in self.proxy_manager:
            scheme = proxy.partition("://")[0].lower()
            if scheme.startswith("socks"):
                raise ValueError(
                    f"CooperativeAdapter: a SOCKS proxy ({scheme}://) is not supported: "
                    "PySocks opens blocking sockets that would stop the gevent hub; "
                    "use an http:// or https:// proxy"
                )
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = dict(_POOL_CLASSES)
        return manager

    def _ssl_context(self, verify: Any) -> Any:
        """The gevent SSL context for ``verify``, built once."""
        contexts = self.__dict__.setdefault("_ssl_contexts", TLSContexts(gevent.ssl.SSLContext))
        return contexts.get(verify)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Set the pool's TLS verification as requests does, through gevent
        SSL contexts already loaded with the CA bundle (see
        :func:`~napixclient.core.tls.ssl_context`): for the origin of an
        ``https://`` URL, and for an ``https://`` proxy on the way.

        :raises OSError: if ``verify`` names a CA bundle that does not exist
            (requests' own check).
        """
        super().cert_verify(conn, url, verify, cert)
        if not isinstance(conn, HTTPSConnectionPool):
            return
        tunnelled = url.lower().startswith("https")
        if tunnelled:
            # TLS to the origin (through a CONNECT tunnel when proxied).
            conn.conn_kw["ssl_context"] = self._ssl_context(verify)
            conn.ca_certs = None
            conn.ca_cert_dir = None
        proxy = getattr(conn, "proxy", None)
        if proxy is None or proxy.scheme != "https":
            return
        if tunnelled:
            # urllib3 reaches the proxy with the context of its proxy
            # configuration, and checks it against the pool's cert_reqs.
            config = conn.conn_kw.get("proxy_config")
            if config is not None:
                conn.conn_kw["proxy_config"] = config._replace(
                    ssl_context=self._ssl_context(verify))
        else:
            # A forwarded request: this pool's connections go to the proxy,
            # whose certificate is checked as an origin's would be.
            conn.conn_kw["ssl_context"] = self._ssl_context(verify)
            conn.cert_reqs = "CERT_NONE" if verify is False else "CERT_REQUIRED"
            conn.ca_certs = None
            conn.ca_cert_dir = None
