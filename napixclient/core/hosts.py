"""Host strings and request paths: the one parser of what names a destination.

:class:`~napixclient.Client`, :class:`~napixclient.ClientPool`, the
``napix`` command and the fleet all read a host with :func:`parse_host`
and a request path with :func:`check_path`, so that one spelling is
accepted or refused everywhere, with the same words.

A host is ``name``, ``name:port``, an IPv6 address alone (``::1``) or in
brackets with a port (``[::1]:8002``), or a base URL
``http(s)://name[:port][/prefix]``. A bare name means plain ``http``, what
Napix servers speak by default.

This module imports nothing but the standard library.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Optional, Tuple
from urllib.parse import urlsplit

__all__ = ["base_url", "check_path", "host_header", "parse_host"]

# Matched with fullmatch: "$" would let a trailing "\n" through.
_HOST_NAME = re.compile(r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?)+")


def parse_host(host: str) -> Tuple[str, str, Optional[int], str]:
    """Parse a host string.

    An IPv6 address written alone (``::1``, ``fe80::1``) is that address on
    the scheme's default port: in a URL a colon after the address starts
    the port, so an address with a port is written ``[::1]:8002``. An
    address whose last group could be a port (``::1:8002``) is refused as
    ambiguous rather than guessed.

    :param host: ``name``, ``name:port``, an IPv6 address, ``[v6]:port``, or
        a base URL ``http(s)://name[:port][/prefix]`` (``str``).
    :returns: ``(scheme, name, port, prefix)``: ``scheme`` is ``"http"`` or
        ``"https"``; ``name`` a host name or an address, IPv6 without
        brackets; ``port`` an ``int``, or ``None`` when none is written;
        ``prefix`` the path prefix without a trailing ``/`` (``""`` for
        none).
    :raises ValueError: naming the problem, for a host that is not a
        non-empty ``str``, or holds a control character, another scheme
        than http or https, credentials, a query or fragment, a port that is
        not a number from 1 to 65535, an invalid name, or an ambiguous
        IPv6 address.
    """
    if not isinstance(host, str) or not host.strip():
        raise ValueError(f"host must be a non-empty str such as 'server.napix.nx:8002', "
                         f"got {host!r}")
    text = host.strip()
    if any(c in text for c in "\t\r\n\x00"):
        # urlsplit would silently drop them, so "a\nb" would become "ab".
        raise ValueError(f"host {host!r} contains a control character")
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "http", text
    netloc, slash, path = rest.partition("/")
    if not netloc.startswith("[") and "@" not in netloc and netloc.count(":") >= 2:
        netloc = f"[{_bare_ipv6(host, netloc)}]"
    try:
        parts = urlsplit(f"{scheme}://{netloc}{slash}{path}")
    except ValueError as error:
        raise ValueError(f"host {host!r} is malformed: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"host {host!r}: the scheme must be http or https")
    if "@" in parts.netloc:
        raise ValueError(f"host {host!r}: credentials belong in the authenticator, "
                         "not in the host")
    if parts.query or parts.fragment:
        raise ValueError(f"host {host!r}: a host has no query string or fragment")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"host {host!r}: the port must be a number from 1 to 65535")
    name = parts.hostname or ""
    bracketed = parts.netloc.startswith("[")
    if not name or (not bracketed and not _HOST_NAME.fullmatch(name)):
        raise ValueError(f"host {host!r}: {name!r} is not a valid host name")
    if any(c in parts.path for c in " \r\n\t"):
        raise ValueError(f"host {host!r}: the path prefix has white space")
    return parts.scheme, name, port, parts.path.rstrip("/")


def _bare_ipv6(host: str, netloc: str) -> str:
    """``netloc``, two colons or more and no brackets, when it is an IPv6
    address alone; else the :class:`ValueError` saying how to write it."""
    address, _, last = netloc.rpartition(":")
    if last.isdigit() and _is_ipv6(address):
        raise ValueError(f"host {host!r} is ambiguous: write [{address}]:{last} for port "
                         f"{last}, or [{netloc}] for that address")
    if not _is_ipv6(netloc):
        raise ValueError(f"host {host!r} is malformed: write an IPv6 address alone "
                         "(::1) or in brackets with a port ([::1]:8002)")
    return netloc


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def host_header(scheme: str, name: str, port: Optional[int]) -> str:
    """``name`` or ``name:port`` as the ``Host`` header says it (RFC 9110,
    section 7.2): an IPv6 address in brackets, the scheme's default port
    left out.

    :param scheme: ``"http"`` or ``"https"``.
    :param name: a host name or an address, IPv6 without brackets, as
        :func:`parse_host` returns it.
    :param port: the port (``int``), or ``None`` for the default one.
    :returns: ``str``, such as ``"server.napix.nx:8002"`` or ``"[::1]"``.
    """
    netloc_name = f"[{name}]" if ":" in name else name
    default_port = 443 if scheme == "https" else 80
    return netloc_name if port in (None, default_port) else f"{netloc_name}:{port}"


def base_url(host: str) -> str:
    """The base URL of a destination: ``scheme://host[/prefix]``, the default
    port left out and no trailing ``/``, so that two spellings of one
    destination (``"h"``, ``"http://h:80/"``) give one URL.

    :param host: as :func:`parse_host` accepts it.
    :returns: ``str``, such as ``"http://[::1]:8002/napix"``.
    :raises ValueError: for a malformed host (see :func:`parse_host`).
    """
    scheme, name, port, prefix = parse_host(host)
    return f"{scheme}://{host_header(scheme, name, port)}{prefix}"


def check_path(url: str) -> str:
    """Check a request path: a ``str`` starting with ``/``, with or without
    a query (``/capacity``, ``/vm-ip/?size=1``).

    :param url: the path (``str``).
    :returns: ``url`` itself.
    :raises ValueError: for anything else, saying what to write instead:
        ``url 'capacity' must be a path starting with '/', such as
        '/capacity'``.
    """
    if not isinstance(url, str):
        raise ValueError(f"url must be a str path such as '/capacity', "
                         f"got {type(url).__name__}")
    if not url.startswith("/"):
        if "://" in url:
            try:
                example = urlsplit(url).path or "/"
            except ValueError:
                example = "/"
        else:
            example = "/" + url
        raise ValueError(f"url {url!r} must be a path starting with '/', "
                         f"such as {example!r}")
    return url
