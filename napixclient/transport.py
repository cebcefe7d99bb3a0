"""A cooperative transport: urllib3 connections over gevent sockets.

The library never monkey-patches. Instead its connections open
:mod:`gevent.socket` sockets and wrap them with a :mod:`gevent.ssl` context,
so requests yield to the gevent hub while they wait, whether or not the
program patched the standard library, and importing napixclient changes
nothing for the rest of the program.

:class:`~napixclient.Client` opens these connections itself and keeps them
alive (:mod:`napixclient.connections`);
:class:`~napixclient.adapter.CooperativeAdapter` plugs them into a plain
:class:`requests.Session`.
"""

from __future__ import annotations

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
)
from urllib3.util.timeout import _DEFAULT_TIMEOUT

__all__ = [
    "CooperativeHTTPConnection",
    "CooperativeHTTPSConnection",
    "SecretParameterFilter",
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
    "HubSleepRetry",
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
