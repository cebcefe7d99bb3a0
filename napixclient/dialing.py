"""Reaching an origin: names resolved, TCP connected, TLS negotiated.

The connection manager (:mod:`napixclient.connections`) calls
:meth:`Dialer.dial` whenever it needs a new socket. Everything here yields
to the gevent hub while it waits (gevent's socket, its resolver and its SSL
module), whether or not the program monkey-patched, and translates what goes
wrong into :mod:`napixclient.failures` where it happens:
:class:`~napixclient.failures.NameNotResolved`,
:class:`~napixclient.failures.ConnectFailed`,
:class:`~napixclient.failures.ConnectTimedOut`,
:class:`~napixclient.failures.TLSFailed`.

* Names are resolved through gevent's resolver (by default a thread pool, so
  a slow DNS server never blocks the hub), once per :class:`Dialer` for
  :data:`DNS_TTL` seconds; lookups of one name at the same time share one
  query. IP addresses are never sent to the resolver.
* TLS: one :class:`ssl.SSLContext` per TLS configuration, built on first use
  and shared by every connection of the dialer (building one costs tens of
  milliseconds and most of a megabyte).
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

import gevent
import gevent.event
import gevent.socket
import gevent.ssl
import requests.utils

from napixclient.failures import ConnectFailed, ConnectTimedOut, NameNotResolved, TLSFailed

__all__ = ["DNS_TTL", "Dialer", "Origin", "Verify", "check_verify", "ip_family", "ssl_context"]

#: ``verify``: ``True`` (the CA bundle requests uses), ``False`` (no
#: verification), or the path of a CA bundle file or directory.
Verify = Union[bool, str, "os.PathLike[str]"]

#: How long a resolved name is reused, in seconds.
DNS_TTL = 10.0


class Origin(NamedTuple):
    """Where requests go: ``scheme`` (``"http"`` or ``"https"``), ``host``
    (a name or an IP address, IPv6 without brackets), ``port`` (``int``),
    and ``verify`` (the TLS verification, for https)."""

    scheme: str
    host: str
    port: int
    verify: Any = True

    def __str__(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{name}:{self.port}"


def ssl_context(verify: Verify = True) -> ssl.SSLContext:
    """Return a :class:`gevent.ssl.SSLContext` for client connections
    (TLS 1.2 at least, host names checked when verifying).

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


def check_verify(verify: Any) -> Verify:
    """Check a ``verify`` argument at once.

    :raises ValueError: when it is neither a ``bool`` nor a path.
    :raises FileNotFoundError: when it names a path that does not exist.
    """
    if isinstance(verify, bool):
        return verify
    if isinstance(verify, (str, os.PathLike)):
        if not os.path.exists(os.fspath(verify)):
            raise FileNotFoundError(f"verify: no CA bundle at {os.fspath(verify)!r}")
        return verify
    raise ValueError(f"verify must be True, False or the path of a CA bundle, got {verify!r}")


def ip_family(host: str) -> Optional[int]:
    """``AF_INET`` or ``AF_INET6`` when ``host`` is an IP address, else ``None``."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return family
    return None


Address = Tuple[int, Any]  # (family, sockaddr)


def _reason(error: OSError) -> str:
    return error.strerror.lower() if error.strerror else type(error).__name__


class Dialer:
    """Opens sockets to origins, sharing name look-ups and TLS contexts.

    Not thread-safe: one hub (one thread) uses it, as gevent programs do.
    """

    def __init__(self) -> None:
        self._names: Dict[Tuple[str, int], Tuple[float, List[Address]]] = {}
        self._lookups: Dict[Tuple[str, int], gevent.event.AsyncResult] = {}
        self._contexts: Dict[Any, ssl.SSLContext] = {}

    def context(self, verify: Verify) -> ssl.SSLContext:
        """The shared :class:`ssl.SSLContext` for ``verify``, built on first use.

        :raises FileNotFoundError: if ``verify`` names a missing CA bundle.
        """
        key = verify if isinstance(verify, bool) else os.fspath(verify)
        context = self._contexts.get(key)
        if context is None:
            context = self._contexts[key] = ssl_context(verify)
        return context

    @property
    def contexts(self) -> int:
        """How many TLS contexts were built (``int``)."""
        return len(self._contexts)

    def resolve(self, host: str, port: int) -> List[Address]:
        """The addresses of ``host`` (cached for :data:`DNS_TTL` seconds).

        :raises NameNotResolved: when the name does not resolve.
        """
        family = ip_family(host)
        if family is not None:
            return [(family, (host, port))]
        key = (host, port)
        cached = self._names.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        pending = self._lookups.get(key)
        if pending is not None:
            return pending.get()  # type: ignore[no-any-return]
        pending = self._lookups[key] = gevent.event.AsyncResult()
        try:
            try:
                infos = gevent.socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError) as error:
                raise NameNotResolved("the host name did not resolve") from error
            addresses = [(info[0], info[4]) for info in infos]
            if not addresses:
                raise NameNotResolved("the host name did not resolve")
            self._names[key] = (time.monotonic() + DNS_TTL, addresses)
            pending.set(addresses)
            return addresses
        except BaseException as error:
            pending.set_exception(error)
            raise
        finally:
            del self._lookups[key]

    def dial(self, origin: Origin, timeout: float) -> Tuple[Any, Tuple[Any, ...]]:
        """Open a socket to ``origin``: TCP, then TLS for https.

        :param timeout: seconds for the TCP connect, and again for the TLS
            handshake.
        :returns: ``(socket, peer address)``; the socket is a gevent socket
            (or gevent SSL socket) with ``TCP_NODELAY`` set.
        :raises NameNotResolved: the name did not resolve.
        :raises ConnectFailed: every address refused or was unreachable.
        :raises ConnectTimedOut: connecting or the TLS handshake took longer
            than ``timeout``.
        :raises TLSFailed: the handshake failed or the certificate was refused.
        """
        sock, address = self._connect(origin, timeout)
        if origin.scheme != "https":
            return sock, address
        try:
            context = self.context(origin.verify)
            tls = context.wrap_socket(sock, server_hostname=origin.host,
                                      do_handshake_on_connect=False)
            tls.settimeout(timeout)
            tls.do_handshake()
        except ssl.SSLCertVerificationError as error:
            sock.close()
            detail = ", ".join(str(part) for part in (error.reason, error.verify_message)
                               if part)
            raise TLSFailed(f"TLS failed: {detail or 'the certificate was refused'}") from error
        except ssl.SSLError as error:
            sock.close()
            raise TLSFailed(f"TLS failed: {error.reason or 'the handshake failed'}") from error
        except socket.timeout as error:
            sock.close()
            raise ConnectTimedOut("timed out while connecting (TLS handshake)") from error
        except OSError as error:
            sock.close()
            raise TLSFailed(f"TLS failed: {_reason(error)}") from error
        except BaseException:
            sock.close()
            raise
        return tls, address

    def _connect(self, origin: Origin, timeout: float) -> Tuple[Any, Tuple[Any, ...]]:
        addresses = self.resolve(origin.host, origin.port)
        last: Optional[OSError] = None
        for family, address in addresses:
            try:
                sock = gevent.socket.socket(family, socket.SOCK_STREAM)
            except OSError as error:  # no file descriptor left, for one
                raise ConnectFailed(f"could not connect: {_reason(error)}") from error
            try:
                sock.settimeout(timeout)
                sock.connect(address)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except socket.timeout as error:
                sock.close()
                raise ConnectTimedOut("timed out while connecting") from error
            except OSError as error:
                sock.close()
                last = error
                continue
            except BaseException:
                sock.close()
                raise
            return sock, address
        assert last is not None
        raise ConnectFailed(f"could not connect: {_reason(last)}") from last
