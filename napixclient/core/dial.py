"""Reaching an origin, decided: the steps of a connection, the names kept,
and what each step's failure is called.

A driver reaches an :class:`~napixclient.core.origin.Origin` by carrying out
:func:`steps` in order, with its own sockets (gevent's, asyncio's):

* :class:`Connect`: TCP to the origin, or to its proxy;
* :class:`Handshake`: TLS with the proxy (an ``https://`` proxy), or with
  the origin (``https``), possibly inside the proxy's TLS;
* :class:`Tunnel`: ``CONNECT`` (RFC 9110, section 9.3.6) through the proxy
  to an ``https`` origin, its answer read by the core's parser
  (:func:`tunnel_result` judges it).

What goes wrong in a step becomes one of :mod:`napixclient.failures` here,
with the same words whatever the driver: :func:`refused`,
:func:`connect_timed_out`, :func:`tls_failed`, :func:`handshake_timed_out`,
:func:`tunnel_broken`. :class:`NameCache` keeps resolved names for
:data:`DNS_TTL` seconds.
"""

from __future__ import annotations

import ssl
from collections import OrderedDict
from typing import Any, List, NamedTuple, Optional, Tuple, Union

from napixclient.core.origin import Origin
from napixclient.core.parser import Reading
from napixclient.core.proxies import Proxy, connect_request
from napixclient.core.tls import tls_reason
from napixclient.failures import (
    ConnectFailed,
    ConnectTimedOut,
    Failure,
    MalformedAnswer,
    NameNotResolved,
    ProxyFailed,
    ProxyUnreachable,
    TLSFailed,
    status_text,
)

__all__ = ["DNS_TTL", "Connect", "Handshake", "NameCache", "Step", "Tunnel",
           "connect_timed_out", "handshake_timed_out", "refused", "steps", "tls_failed",
           "ssl_detail", "tunnel_broken", "tunnel_result", "unresolved"]

#: How long a resolved name is reused, in seconds.
DNS_TTL = 10.0

#: An address as ``getaddrinfo`` gives it: ``(family, sockaddr)``.
Address = Tuple[int, Any]


class Connect(NamedTuple):
    """TCP to ``host:port``: the origin's, or the proxy's (``proxy`` is then
    the proxy, for the failure's words)."""

    host: str
    port: int
    proxy: Optional[Proxy] = None


class Handshake(NamedTuple):
    """TLS over what is connected: with ``server_hostname``, verified as
    ``verify`` says, presenting ``cert``; ``proxy`` when the handshake is
    with the proxy; ``nested`` when it happens inside the proxy's TLS."""

    server_hostname: str
    verify: Any
    cert: Any
    proxy: Optional[Proxy] = None
    nested: bool = False


class Tunnel(NamedTuple):
    """``CONNECT`` through ``proxy`` to ``origin``: send :attr:`request`,
    read the answer's head (method ``"CONNECT"``), judge it with
    :func:`tunnel_result`."""

    origin: Origin
    proxy: Proxy

    @property
    def request(self) -> bytes:
        """The ``CONNECT`` request's bytes."""
        return connect_request(self.origin.host, self.origin.port, self.proxy)


Step = Union[Connect, Handshake, Tunnel]


def steps(origin: Origin) -> List[Step]:
    """How to reach ``origin``, in order (see the module)."""
    proxy = origin.proxy
    if proxy is None:
        if origin.scheme != "https":
            return [Connect(origin.host, origin.port)]
        return [Connect(origin.host, origin.port),
                Handshake(origin.host, origin.verify, origin.cert)]
    plan: List[Step] = [Connect(proxy.host, proxy.port, proxy)]
    if proxy.scheme == "https":
        plan.append(Handshake(proxy.host, origin.verify, None, proxy))
    if origin.scheme == "https":
        plan.append(Tunnel(origin, proxy))
        plan.append(Handshake(origin.host, origin.verify, origin.cert,
                              nested=proxy.scheme == "https"))
    return plan


def unresolved(step: Connect) -> Failure:
    """The name of ``step`` did not resolve."""
    if step.proxy is not None:
        return ProxyUnreachable(f"could not connect to the proxy {step.proxy}: "
                                "the host name did not resolve", step.proxy)
    return NameNotResolved("the host name did not resolve")


def refused(step: Connect, reason: str) -> Failure:
    """No address of ``step`` could be connected to (``reason``: the last
    one's, as :func:`~napixclient.failures.os_reason` words it)."""
    if step.proxy is not None:
        return ProxyUnreachable(f"could not connect to the proxy {step.proxy}: {reason}",
                                step.proxy)
    return ConnectFailed(f"could not connect: {reason}")


def connect_timed_out(step: Connect) -> Failure:
    """Connecting took longer than the connect timeout."""
    if step.proxy is not None:
        return ConnectTimedOut(f"timed out while connecting to the proxy {step.proxy}")
    return ConnectTimedOut("timed out while connecting")


def ssl_detail(error: BaseException) -> str:
    """What a TLS failure says, for a person: why a certificate was refused,
    OpenSSL's reason, or the text of another :class:`OSError`."""
    if isinstance(error, ssl.SSLCertVerificationError):
        detail = ", ".join(str(part) for part in (error.reason, error.verify_message)
                           if part)
        return detail or "the certificate was refused"
    if isinstance(error, ssl.SSLError):
        return tls_reason(error) if error.reason else "the handshake failed"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return type(error).__name__


def tls_failed(step: Handshake, error: BaseException) -> Failure:
    """The handshake of ``step`` failed with ``error`` (an
    :class:`ssl.SSLError`, or another :class:`OSError`)."""
    detail = ssl_detail(error)
    if step.proxy is not None:
        return ProxyFailed(f"TLS with the proxy {step.proxy} failed: {detail}", step.proxy)
    return TLSFailed(f"TLS failed: {detail}")


def handshake_timed_out(step: Handshake) -> Failure:
    """The handshake of ``step`` took longer than the connect timeout."""
    where = f" with the proxy {step.proxy}" if step.proxy is not None else ""
    return ConnectTimedOut(f"timed out while connecting (TLS handshake{where})")


def tunnel_broken(step: Tunnel, error: BaseException) -> Failure:
    """Asking for a tunnel failed: ``error`` is a timeout, the parser's
    failure, or the connection's :class:`OSError`."""
    proxy = step.proxy
    if isinstance(error, (TimeoutError, ConnectTimedOut)):
        return ConnectTimedOut(f"timed out while waiting for the proxy {proxy} to answer "
                               "CONNECT")
    if isinstance(error, MalformedAnswer):
        detail = error.message.split(": ", 1)[-1]
        return ProxyFailed(f"the proxy {proxy} did not answer CONNECT in HTTP ({detail})",
                           proxy)
    return ProxyFailed(f"the proxy {proxy} closed the connection when asked to CONNECT",
                       proxy)


def tunnel_result(step: Tunnel, reading: Reading) -> Optional[Failure]:
    """Whether the proxy's answer (its head read) opened the tunnel:
    ``None`` for a ``2xx`` with nothing after it, else the failure."""
    proxy = step.proxy
    assert reading.head is not None
    status = reading.head.status
    if not 200 <= status < 300:
        return ProxyFailed(f"the proxy {proxy} answered {status_text(status)} to CONNECT",
                           proxy, status=status)
    if reading.end is not None and reading.end.rest:
        return ProxyFailed(f"the proxy {proxy} sent bytes after its answer to CONNECT",
                           proxy)
    return None


class NameCache:
    """Resolved names, kept for :data:`DNS_TTL` seconds; the oldest are
    dropped first, so a pool that meets a million names a day keeps only
    those of the last seconds."""

    def __init__(self, ttl: float = DNS_TTL) -> None:
        self.ttl = ttl
        self._names: "OrderedDict[Tuple[str, int], Tuple[float, List[Address]]]" = \
            OrderedDict()

    def get(self, host: str, port: int, now: float) -> Optional[List[Address]]:
        """The addresses of ``host:port`` resolved less than ``ttl`` seconds
        before ``now`` (:func:`time.monotonic`), or ``None``."""
        names = self._names
        while names:
            expiry, _ = next(iter(names.values()))
            if expiry > now:
                break
            names.popitem(last=False)
        cached = names.get((host, port))
        return None if cached is None else cached[1]

    def put(self, host: str, port: int, infos: List[Any], now: float) -> List[Address]:
        """Keep what ``getaddrinfo`` gave for ``host:port``; return its
        addresses.

        :raises NameNotResolved: when it gave none.
        """
        addresses = [(info[0], info[4]) for info in infos]
        if not addresses:
            raise NameNotResolved("the host name did not resolve")
        self._names[(host, port)] = (now + self.ttl, addresses)
        return addresses

