"""A cooperative transport: urllib3 connections over gevent sockets.

The library never monkey-patches. Instead its connections open
:mod:`gevent.socket` sockets and wrap them with a :mod:`gevent.ssl` context,
so requests yield to the gevent hub while they wait, whether or not the
program patched the standard library, and importing napixclient changes
nothing for the rest of the program.

:class:`~napixclient.Client` opens these connections itself and keeps them
alive (:mod:`napixclient.connections`); :class:`CooperativeAdapter` plugs
them into a plain :class:`requests.Session`.

urllib3's pools are thread queues. The adapter uses them only with
``block=False``, which never waits: the per-host cap is a gevent semaphore
held by the caller, so a greenlet waiting for its turn yields to the hub
instead of blocking the whole thread.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import ssl
import threading
from collections.abc import Iterable
from typing import Any, FrozenSet, Optional, Union
from urllib.parse import quote_plus

import gevent
import gevent.socket
import gevent.ssl
import requests.adapters
import requests.utils
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    NameResolutionError,
    NewConnectionError,
)
from urllib3.util.retry import Retry
from urllib3.util.timeout import _DEFAULT_TIMEOUT

__all__ = [
    "CooperativeAdapter",
    "CooperativeHTTPConnection",
    "CooperativeHTTPConnectionPool",
    "CooperativeHTTPSConnection",
    "CooperativeHTTPSConnectionPool",
    "HubSleepRetry",
    "SecretParameterFilter",
    "hub_sleeping",
    "redact_secret_parameters",
    "register_secret_parameters",
    "ssl_context",
    "tls_connection_kwargs",
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
            family = _literal_family(self._dns_host)
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


def _literal_family(host: str) -> Optional[int]:
    """``AF_INET`` or ``AF_INET6`` when ``host`` is an IP address, else ``None``."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return family
    return None


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
    gevent SSL context its pool passes (see :func:`ssl_context`)."""


class CooperativeHTTPConnectionPool(HTTPConnectionPool):
    """A urllib3 pool of :class:`CooperativeHTTPConnection`."""

    ConnectionCls = CooperativeHTTPConnection


class CooperativeHTTPSConnectionPool(HTTPSConnectionPool):
    """A urllib3 pool of :class:`CooperativeHTTPSConnection`."""

    ConnectionCls = CooperativeHTTPSConnection


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


# -- secrets in urllib3's log records ------------------------------------------
#
# urllib3 logs the request target with its query string: the connection pool
# at DEBUG for every answer, and when it retries; Retry at DEBUG; the
# connection when headers do not parse. A token sent as a query parameter
# (TokenIdentifier) would be written to any log handler set to DEBUG. A
# logger's filter is consulted only for the records logged on that very
# logger (not those propagating from children), so one filter is attached to
# each urllib3 logger that can print a URL. It rewrites only the values of
# secret query parameters, to "***", leaving the rest of the line for
# debugging. Nothing is patched: logging.Logger.addFilter is the documented
# hook, and filters may change the records they pass.
#
# The filter also replaces each record's format arguments by the formatted
# text: urllib3 passes the exception of a failed attempt as an argument, and
# a handler that keeps records (pytest's capture, a memory handler, an error
# tracker's breadcrumbs) would otherwise keep its traceback, and with it the
# connection and buffers of every retried request.

#: The urllib3 loggers that print URLs, or could.
URLLIB3_LOGGERS = (
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
)

_secret_lock = threading.Lock()
# "token" is the Napix protocol's default parameter (PROTOCOL.md, section 2).
_secret_names: FrozenSet[str] = frozenset(["token"])
_secret_pattern: Optional[re.Pattern[str]] = None


def _compile(names: Iterable[str]) -> re.Pattern[str]:
    spelled = {quote_plus(name) for name in names} | set(names)
    alternatives = "|".join(re.escape(name) for name in sorted(spelled, key=len, reverse=True))
    # A name counts after "?", "&" or ";" only, so "mytoken=" is left alone;
    # a value ends where a URL-encoded value must (quotes and spaces are
    # percent-encoded in it).
    return re.compile(rf"([?&;](?:{alternatives})=)[^&;#\s'\"<>]*")


def register_secret_parameters(names: Iterable[str]) -> None:
    """Declare query parameters whose values never appear in urllib3's log
    records, and attach :class:`SecretParameterFilter` to urllib3's loggers.

    :class:`~napixclient.Client` registers an authenticator's
    ``secret_parameters`` and every parameter an authenticator adds to a
    URL. Names are only added, never removed; ``token`` is always there.
    Registering known names costs a set comparison.

    :param names: parameter names (``str``), as they appear decoded.
    """
    global _secret_names, _secret_pattern
    wanted = frozenset(names)
    if _secret_pattern is not None and wanted <= _secret_names:
        return
    with _secret_lock:
        merged = _secret_names | wanted
        _secret_pattern = _compile(merged)
        _secret_names = merged
        for name in URLLIB3_LOGGERS:
            logging.getLogger(name).addFilter(_SECRET_FILTER)  # a no-op when present


def redact_secret_parameters(text: str) -> str:
    """Return ``text`` with the value of every registered secret query
    parameter replaced by ``***`` (see :func:`register_secret_parameters`)."""
    pattern = _secret_pattern or _compile(_secret_names)
    return pattern.sub(r"\1***", text)


class SecretParameterFilter(logging.Filter):
    """A :class:`logging.Filter` that lets every record through, with the
    values of secret query parameters replaced by ``***`` in its message and
    its formatted traceback.

    Each record is rewritten as its formatted (and redacted) message, with
    no ``args``, so it keeps no reference to the objects urllib3 logged (an
    exception and its traceback). Formatting here rather than in the handler
    costs nothing more; and nothing at all unless urllib3 logging is enabled
    at the record's level.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; always return ``True``."""
        if record.args:
            try:
                message = record.getMessage()
            except Exception:  # a malformed record: logging itself reports it
                return True
            record.args = None
        else:
            message = str(record.msg)
        record.msg = redact_secret_parameters(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_secret_parameters(
                logging.Formatter().formatException(record.exc_info))
        return True


_SECRET_FILTER = SecretParameterFilter()


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


def tls_connection_kwargs(verify: Verify) -> dict[str, Any]:
    """The keyword arguments that make a urllib3 HTTPS connection verify TLS
    as ``verify`` says, through a gevent SSL context (see :func:`ssl_context`).

    :param verify: ``True``, ``False`` or the path of a CA bundle.
    :returns: ``{"ssl_context": ..., "cert_reqs": ...}``.
    :raises FileNotFoundError: if ``verify`` names a CA bundle that does not exist.
    """
    return {
        "ssl_context": ssl_context(verify),
        "cert_reqs": "CERT_NONE" if verify is False else "CERT_REQUIRED",
    }


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

