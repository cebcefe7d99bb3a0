"""Where requests go, and how: the :class:`Origin` every connection is kept for."""

from __future__ import annotations

import socket
from typing import Any, NamedTuple, Optional

from napixclient.core.proxies import DEFAULT_PORTS, Proxy, bracketed
from napixclient.core.tls import CertFiles

__all__ = ["Origin", "ip_family"]


class Origin(NamedTuple):
    """Where requests go, and how: ``scheme`` (``"http"`` or ``"https"``),
    ``host`` (a name or an IP address, IPv6 without brackets), ``port``
    (``int``), ``verify`` (the TLS verification, for https and for an https
    proxy), ``cert`` (the client certificate,
    :data:`~napixclient.core.tls.CertFiles` or ``None``) and ``proxy`` (the
    :class:`~napixclient.core.proxies.Proxy` requests go through, or ``None``
    for a direct connection).

    The connection manager keys its caps and its idle connections by the
    whole tuple, so a connection made through a proxy, or with a client
    certificate, never serves a request meant to go otherwise.
    ``str(origin)`` is ``"scheme://host:port"``, the destination alone (no
    proxy, no credentials).
    """

    scheme: str
    host: str
    port: int
    verify: Any = True
    cert: Optional[CertFiles] = None
    proxy: Optional[Proxy] = None

    def __str__(self) -> str:
        return f"{self.scheme}://{bracketed(self.host)}:{self.port}"

    @property
    def forwarded(self) -> bool:
        """Whether requests go to a proxy that forwards them (an ``http``
        origin through a proxy): their request line then carries the
        absolute form of the target (RFC 9112, section 3.2.2)."""
        return self.proxy is not None and self.scheme == "http"

    @property
    def authority(self) -> str:
        """``host[:port]`` as a URL spells it, the default port left out."""
        name = bracketed(self.host)
        return name if self.port == DEFAULT_PORTS.get(self.scheme) else f"{name}:{self.port}"


def ip_family(host: str) -> Optional[int]:
    """``AF_INET`` or ``AF_INET6`` when ``host`` is an IP address, else ``None``."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return family
    return None


