"""Host strings: the one parser of what ``Client``, ``ClientPool``, the
``napix`` command and the fleet take as a host."""

from __future__ import annotations

import re
from typing import Optional, Tuple
from urllib.parse import urlsplit

__all__ = ["base_url", "host_header", "parse_host"]

# Matched with fullmatch: "$" would let a trailing "\n" through.
_HOST_NAME = re.compile(r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?)+")


def parse_host(host: str) -> Tuple[str, str, Optional[int], str]:
    """Parse a ``host`` argument as :class:`Client` accepts it.

    :param host: ``name``, ``name:port``, ``[v6]:port``, or a base URL
        ``http(s)://name[:port][/prefix]``. A bare name means plain ``http``,
        what Napix servers speak by default.
    :returns: ``(scheme, name, port or None, prefix)``; the prefix has no
        trailing ``/`` (``""`` for none).
    :raises ValueError: naming the problem when the host is malformed (empty,
        another scheme, credentials, a query, a bad port or name).
    """
    if not isinstance(host, str) or not host.strip():
        raise ValueError(f"host must be a non-empty str such as 'server.napix.nx:8002', "
                         f"got {host!r}")
    text = host.strip()
    if any(c in text for c in "\t\r\n\x00"):
        # urlsplit would silently drop them, so "a\nb" would become "ab".
        raise ValueError(f"host {host!r} contains a control character")
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as error:
        raise ValueError(f"host {host!r} is malformed: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"host {host!r}: the scheme must be http or https")
    if "@" in parts.netloc:
        raise ValueError(f"host {host!r}: credentials belong in the authenticator, "
                         "not in the host")
    if parts.query or parts.fragment:
        raise ValueError(f"host {host!r}: a host has no query string or fragment")
    name = parts.hostname or ""
    bracketed = parts.netloc.startswith("[")
    if not name or (not bracketed and not _HOST_NAME.fullmatch(name)):
        raise ValueError(f"host {host!r}: {name!r} is not a valid host name")
    if any(c in parts.path for c in " \r\n\t"):
        raise ValueError(f"host {host!r}: the path prefix has white space")
    if port == 0:
        raise ValueError(f"host {host!r}: port 0 is not a valid port")
    return parts.scheme, name, port, parts.path.rstrip("/")


def host_header(scheme: str, name: str, port: Optional[int]) -> str:
    """``name`` or ``name:port`` as the ``Host`` header says it: IPv6 in
    brackets, the scheme's default port left out (RFC 9110, section 7.2)."""
    netloc_name = f"[{name}]" if ":" in name else name
    default_port = 443 if scheme == "https" else 80
    return netloc_name if port in (None, default_port) else f"{netloc_name}:{port}"


def base_url(host: str) -> str:
    """The base URL a :class:`Client` for ``host`` has: ``scheme://host[/prefix]``,
    with the default port left out and no trailing ``/``, so that two
    spellings of one destination (``"h"``, ``"http://h:80/"``) give one URL.

    :param host: as :func:`parse_host` accepts it.
    :raises ValueError: for a malformed host (see :func:`parse_host`).
    """
    scheme, name, port, prefix = parse_host(host)
    return f"{scheme}://{host_header(scheme, name, port)}{prefix}"
