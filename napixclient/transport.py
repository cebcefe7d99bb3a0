"""A cooperative transport: urllib3 connections over gevent sockets.

The library never monkey-patches. Instead its connections open
:mod:`gevent.socket` sockets and wrap them with a :mod:`gevent.ssl` context,
so requests yield to the gevent hub while they wait, whether or not the
program patched the standard library, and importing napixclient changes
nothing for the rest of the program.

:class:`~napixclient.Client` opens these connections itself and keeps them
alive (:mod:`napixclient.connections`);
:class:`~napixclient.adapter.CooperativeAdapter` plugs them into a plain
:class:`requests.Session`. :class:`CooperativeRetry` is the retry policy of
the Client.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import ssl
import threading
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, FrozenSet, Optional, Union
from urllib.parse import quote_plus

import gevent
import gevent.socket
import gevent.ssl
import requests.utils
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
)
from urllib3.util.retry import RequestHistory, Retry
from urllib3.util.timeout import _DEFAULT_TIMEOUT

__all__ = [
    "IDEMPOTENT_METHODS",
    "CooperativeHTTPConnection",
    "CooperativeHTTPSConnection",
    "CooperativeRetry",
    "SecretParameterFilter",
    "StaleConnectionError",
    "is_stale",
    "redact_secret_parameters",
    "register_secret_parameters",
    "ssl_context",
    "tls_connection_kwargs",
]

#: ``verify``: ``True`` (the CA bundle requests uses), ``False`` (no
#: verification), or the path of a CA bundle file or directory.
Verify = Union[bool, str, "os.PathLike[str]"]


#: Methods that RFC 9110 (section 9.2.2) makes idempotent: sending one twice
#: has the effect of sending it once, so only these are ever retried.
IDEMPOTENT_METHODS: FrozenSet[str] = frozenset(
    ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"])


class StaleConnectionError(ConnectionResetError):
    """A kept-alive connection broke before the first byte of the answer.

    The server closed a connection it had already answered on (its
    keep-alive timeout raced our next request), so it most likely never
    processed the request (:class:`~napixclient.connections.HostConnections`
    tells it apart): :class:`CooperativeRetry` retries it once, on a
    fresh connection, when the method is idempotent.
    """

    def __init__(self) -> None:
        super().__init__(errno.ECONNRESET,
                         "the server closed the kept-alive connection before answering")


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


def _broken_before_answer(error: Exception) -> bool:
    """Whether urllib3's ``error`` is a connection reset or closed before the
    first byte of the answer (urllib3 wraps it as ``ProtocolError("Connection
    aborted.", cause)`` while it waits for the status line)."""
    return (isinstance(error, ProtocolError) and len(error.args) > 1
            and isinstance(error.args[1], (ConnectionResetError, ConnectionAbortedError,
                                           BrokenPipeError)))


def is_stale(error: BaseException) -> bool:
    """Whether urllib3's ``error`` wraps a :class:`StaleConnectionError`."""
    return (isinstance(error, ProtocolError) and len(error.args) > 1
            and isinstance(error.args[1], StaleConnectionError))


class HubSleepRetry(Retry):
    # Documented as napixclient.adapter.HubSleepRetry, the adapter's retry
    # for a plain Retry; it stays here while CooperativeRetry derives from it.
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


class CooperativeRetry(HubSleepRetry):
    """urllib3's :class:`~urllib3.util.retry.Retry`, restricted to failures
    where the server cannot have acted on the request, and sleeping with
    :func:`gevent.sleep` (urllib3 calls :func:`time.sleep`, which would stop
    the whole hub of a program that did not monkey-patch).

    What is retried, for idempotent methods only (:data:`IDEMPOTENT_METHODS`):

    * a kept-alive connection found closed before the first byte of the
      answer (:class:`StaleConnectionError`): once, on a fresh connection,
      whatever ``total`` says;
    * a connection refused or unreachable, or reset before the first byte of
      the answer: ``total`` times.

    Never retried: POST and PATCH (the server may have acted), timeouts
    (retrying one doubles the wait), TLS failures, malformed answers and
    statuses. Those errors propagate as urllib3 raised them; when the retries
    run out urllib3 raises :class:`~urllib3.exceptions.MaxRetryError`, whose
    ``reason`` is the last error (its text holds the URL, query included).

    Build it with :meth:`policy`. Instances are immutable, as urllib3's are,
    so one can serve every request of a pool.

    :param stale: how many stale kept-alive connections may be retried (``int``).
    :param kwargs: those of :class:`~urllib3.util.retry.Retry`.
    """

    def __init__(self, *args: Any, stale: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stale = stale

    @classmethod
    def policy(cls, retries: int = 0, backoff: float = 0.0) -> "CooperativeRetry":
        """Return the retry policy of a :class:`~napixclient.Client`.

        :param retries: how many times a connection failure is retried
            (``int`` >= 0), besides the single retry of a stale connection.
        :param backoff: urllib3's ``backoff_factor`` in seconds (``float`` >= 0):
            there is no wait before the first retry, then
            ``backoff * 2 ** (n - 1)`` seconds before the n-th.
        """
        return cls(total=retries, connect=None, read=None, redirect=0, status=0, other=0,
                   allowed_methods=IDEMPOTENT_METHODS, status_forcelist=None,
                   backoff_factor=backoff, raise_on_redirect=False, raise_on_status=False,
                   respect_retry_after_header=False)

    def new(self, **kwargs: Any) -> "CooperativeRetry":
        """A copy with some counters changed (see
        :meth:`urllib3.util.retry.Retry.new`); keeps ``stale``."""
        kwargs.setdefault("stale", self.stale)
        return super().new(**kwargs)  # type: ignore[return-value]

    def increment(self, method: Optional[str] = None, url: Optional[str] = None,
                  response: Any = None, error: Optional[Exception] = None,
                  _pool: Any = None, _stacktrace: Any = None) -> "CooperativeRetry":
        """Count one failure and return the policy for the next attempt (see
        :meth:`urllib3.util.retry.Retry.increment`).

        :raises Exception: ``error`` itself, when it is not to be retried.
        :raises urllib3.exceptions.MaxRetryError: when the retries ran out.
        """
        if error is None:
            # Redirects and statuses are never retried (redirect=0, status=0).
            return super().increment(method, url, response, error, _pool, _stacktrace)
        if method is None or method.upper() not in IDEMPOTENT_METHODS:
            raise error.with_traceback(_stacktrace)
        if is_stale(error) and self.stale > 0:
            history = self.history + (RequestHistory(method, url, error, None, None),)
            return self.new(stale=self.stale - 1, history=history)
        if isinstance(error, NewConnectionError) or _broken_before_answer(error):
            # NewConnectionError (refused, unreachable, no such name) is a
            # ConnectTimeoutError in urllib3; a true connect timeout is not
            # retried.
            return super().increment(method, url, response, error, _pool, _stacktrace)
        raise error.with_traceback(_stacktrace)

    def sleep_for_retry(self, response: Any = None) -> bool:
        """Never honour ``Retry-After`` (statuses are not retried)."""
        return False


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


# -- moved to napixclient.adapter ------------------------------------------------

_MOVED_TO_ADAPTER = frozenset([
    "CooperativeAdapter",
    "CooperativeHTTPConnectionPool",
    "CooperativeHTTPSConnectionPool",
    "hub_sleeping",
])


if not TYPE_CHECKING:  # for type checkers, the old names are gone

    def __getattr__(name: str) -> Any:
        """The adapter's names, from their old place, with a DeprecationWarning."""
        if name in _MOVED_TO_ADAPTER:
            warnings.warn(
                f"napixclient.transport.{name} moved to napixclient.adapter.{name}",
                DeprecationWarning, stacklevel=2)
            from napixclient import adapter

            return getattr(adapter, name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
