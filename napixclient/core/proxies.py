"""Which proxy a request goes through: parsed, checked and chosen as requests
chooses it, without I/O.

* :func:`parse_proxy` reads a proxy URL (``http://[user:password@]host[:port]``
  or ``https://...``) into a :class:`Proxy`, whose credentials become the
  ``Proxy-Authorization`` it sends and are shown nowhere;
* :func:`check_proxies` checks a ``proxies=`` mapping at once;
* :func:`choose_proxy` picks the proxy of an origin from ``proxies=`` and the
  environment (``http_proxy``, ``https_proxy``, ``all_proxy``,
  ``no_proxy``), as requests does;
* :func:`connect_request` writes the ``CONNECT`` request that opens a tunnel
  (RFC 9110, section 9.3.6); its answer is read by
  :class:`~napixclient.core.parser.ResponseParser` like any other.
"""

from __future__ import annotations

import base64
import os
import urllib.request
from collections.abc import Mapping
from typing import Any, Dict, List, NamedTuple, Optional
from urllib.parse import unquote, urlsplit

import requests.utils

from napixclient.redact import redact_url_credentials

__all__ = ["Proxy", "check_proxies", "choose_proxy", "connect_request", "parse_proxy"]

DEFAULT_PORTS = {"http": 80, "https": 443}


def bracketed(host: str) -> str:
    """``host`` as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


class Proxy(NamedTuple):
    """A forward proxy: ``scheme`` (``"http"``, or ``"https"`` for a proxy
    reached over TLS), ``host`` (IPv6 without brackets), ``port`` (``int``),
    and ``authorization``, the ``Proxy-Authorization`` field value sent to
    it (``"Basic ..."``, from credentials in its URL) or ``None``.

    ``str()`` and ``repr()`` never show the credentials:
    ``str(proxy)`` is ``"http://127.0.0.1:3128"``. Made by
    :func:`parse_proxy`.
    """

    scheme: str
    host: str
    port: int
    authorization: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.scheme}://{bracketed(self.host)}:{self.port}"

    def __repr__(self) -> str:
        credentials = ", with credentials" if self.authorization else ""
        return f"Proxy({str(self)!r}{credentials})"


def _basic(user: str, password: str) -> str:
    """A ``Basic`` credentials value (RFC 7617): ``user:password`` in
    base64, encoded as Latin-1 when it can be (as requests does), else as
    UTF-8 (the charset RFC 7617 section 2.1 names)."""
    raw = f"{user}:{password}"
    try:
        data = raw.encode("latin-1")
    except UnicodeEncodeError:
        data = raw.encode("utf-8")
    return "Basic " + base64.b64encode(data).decode("ascii")


def parse_proxy(url: str, what: str = "proxy") -> Proxy:
    """Parse a proxy URL as requests takes it: ``http://[user:password@]host[:port]``
    or ``https://...``; without a scheme, ``http://`` is meant (as requests
    reads ``HTTP_PROXY=proxy.example:3128``). The port defaults to 80 for
    ``http`` and 443 for ``https``. Credentials are percent-decoded and sent
    as ``Proxy-Authorization: Basic ...`` (RFC 7617, RFC 9110 section 11.7.2).

    :param url: the proxy's URL (``str``).
    :param what: how error messages name it (``"proxies['http']"``).
    :returns: a :class:`Proxy`.
    :raises ValueError: for another scheme (SOCKS included), no host, a bad
        port, a path, query or fragment, or control characters; the message
        shows the URL with its credentials masked.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"{what} must be a proxy URL such as 'http://127.0.0.1:3128', "
                         f"got {redact_url_credentials(repr(url))}")
    text = url.strip()
    if "://" in text:
        shown = redact_url_credentials(text)
    else:
        text = "http://" + text
        shown = redact_url_credentials(text)[len("http://"):]
    if any(c in text for c in "\t\r\n\x00 "):
        # Not shown: the masking of credentials stops at white space.
        raise ValueError(f"{what} contains white space or a control character")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(f"{what} {shown!r} is not a valid proxy URL (bad host or port)") \
            from None
    scheme = parts.scheme.lower()
    if scheme.startswith("socks"):
        raise ValueError(f"{what} {shown!r}: SOCKS proxies are not supported; give an "
                         "http:// or https:// proxy")
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"{what} {shown!r}: the scheme must be http or https")
    if not parts.hostname:
        raise ValueError(f"{what} {shown!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{what} {shown!r}: a proxy URL has no path, query or fragment")
    if port == 0:
        raise ValueError(f"{what} {shown!r}: port 0 is not a valid port")
    authorization = None
    if parts.username is not None or parts.password is not None:
        authorization = _basic(unquote(parts.username or ""), unquote(parts.password or ""))
    return Proxy(scheme, parts.hostname, port or DEFAULT_PORTS[scheme], authorization)


def check_proxies(proxies: Any) -> Dict[str, Optional[str]]:
    """Check a ``proxies`` argument at once, as requests takes it: a mapping
    from ``"http"``, ``"https"``, ``"all"``, ``"scheme://host"`` or
    ``"all://host"`` to a proxy URL, or to ``None`` for no proxy; and
    ``"no_proxy"``, a comma-separated list of hosts that do not take the
    environment's proxies (as ``NO_PROXY`` says).

    :param proxies: the mapping, or ``None`` for none.
    :returns: a copy (``dict``).
    :raises ValueError: for a key or value that is not a ``str`` (or
        ``None``), or a proxy URL :func:`parse_proxy` refuses.
    """
    if proxies is None:
        return {}
    if not isinstance(proxies, Mapping):
        raise ValueError("proxies must be a mapping such as "
                         "{'http': 'http://127.0.0.1:3128', 'https': 'http://127.0.0.1:3128'}, "
                         f"got {type(proxies).__name__}")
    checked: Dict[str, Optional[str]] = {}
    for key, value in proxies.items():
        if not isinstance(key, str):
            raise ValueError(f"proxies: keys are schemes such as 'http', got {key!r}")
        if value is not None and not isinstance(value, str):
            raise ValueError(f"proxies[{key!r}] must be a proxy URL (str) or None, "
                             f"got {type(value).__name__}")
        if value is not None and key != "no_proxy":
            parse_proxy(value, f"proxies[{key!r}]")
        checked[key] = value
    return checked


def _environment_variable(key: str) -> str:
    """The variable ``getproxies()`` read a proxy from, for messages."""
    lower = f"{key}_proxy"
    return lower if os.environ.get(lower) else lower.upper()


# The variables that decide the environment's proxies (REQUEST_METHOD: under
# CGI, HTTP_PROXY may come from a request's Proxy header, and is ignored).
_ENVIRONMENT = tuple(name for base in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
                     for name in (base, base.upper())) + ("REQUEST_METHOD",)
_environment_cache: List[Any] = [None, {}]  # [the variables' values, their proxies]


def _environment_proxies() -> Dict[str, str]:
    """:func:`urllib.request.getproxies_environment` (what requests'
    ``get_environ_proxies`` returns), read again only when one of the
    variables that decide it changed: reading it scans the whole
    environment, and a pool makes a client per host."""
    values = tuple(os.environ.get(name) for name in _ENVIRONMENT)
    if values != _environment_cache[0]:
        found = {} if not any(values[:-1]) else urllib.request.getproxies_environment()
        _environment_cache[:] = [values, found]
    return _environment_cache[1]  # type: ignore[no-any-return]


def _bypassed(url: str, no_proxy: Optional[str]) -> bool:
    """Whether ``no_proxy`` exempts ``url``'s host from the environment's
    proxies, as :func:`requests.utils.should_bypass_proxies` decides: an
    IPv4 address in a CIDR range of the list (requests' own rule), or a
    name, a domain suffix, a ``host:port`` or ``*`` as
    :func:`urllib.request.proxy_bypass_environment` matches them (given the
    list, it does not scan the environment again)."""
    if not no_proxy:
        return False
    parts = urlsplit(url)
    hostname = parts.hostname
    if hostname is None:
        return True
    if requests.utils.is_ipv4_address(hostname) and any(
            requests.utils.is_valid_cidr(entry)
            and requests.utils.address_in_network(hostname, entry)
            for entry in no_proxy.replace(" ", "").split(",")):
        return True
    host = f"{hostname}:{parts.port}" if parts.port else hostname
    # What urllib.request.proxy_bypass is on Unix but macOS, and the part of
    # it that reads the environment everywhere; typeshed does not list it.
    return bool(urllib.request.proxy_bypass_environment(  # type: ignore[attr-defined]
        host, {"no": no_proxy}))


def choose_proxy(url: str, proxies: Any = None, trust_env: bool = True) -> Optional[Proxy]:
    """The proxy requests to ``url`` go through, chosen as requests chooses it.

    ``proxies`` comes first; when ``trust_env`` is true, the environment's
    proxies (``http_proxy``, ``https_proxy``, ``all_proxy``, in lower or
    upper case, the lower winning) fill in what it does not say, unless the
    host is in ``no_proxy``/``NO_PROXY`` (or ``proxies["no_proxy"]``):
    names, domain suffixes, ``host:port``, IP addresses and CIDR ranges,
    ``*`` for all. Then the most precise key wins: ``"scheme://host"``,
    ``"scheme"``, ``"all://host"``, ``"all"``. This is what requests'
    ``get_environ_proxies`` and :func:`requests.utils.select_proxy` decide
    (the tests compare the two), so the same environment routes a request
    the same way in requests and here; the environment is read with the
    standard library's functions that requests calls, once for as long as
    its proxy variables stay the same.

    :param url: the origin, ``scheme://host[:port]``.
    :param proxies: as :func:`check_proxies` takes it.
    :param trust_env: whether to read the environment (``bool``).
    :returns: the :class:`Proxy`, or ``None`` for a direct connection.
    :raises ValueError: for bad ``proxies``, or a malformed proxy URL in the
        environment (the message names the variable, never the credentials).
    """
    explicit = check_proxies(proxies)
    chosen: Dict[str, Optional[str]] = dict(explicit)
    if trust_env:
        environ = _environment_proxies()
        no_proxy = explicit.get("no_proxy")
        if environ and not _bypassed(url, environ.get("no") if no_proxy is None else no_proxy):
            for key, value in environ.items():
                chosen.setdefault(key, value)
    if not chosen:
        return None  # what select_proxy gives for no proxies, without parsing the URL
    selected = requests.utils.select_proxy(url, chosen)  # type: ignore[arg-type]
    if not selected:
        return None
    key = next(key for key, value in chosen.items() if value == selected)
    what = (f"proxies[{key!r}]" if key in explicit
            else f"the proxy in {_environment_variable(key)}")
    return parse_proxy(selected, what)



def connect_request(host: str, port: int, proxy: Proxy) -> bytes:
    """The ``CONNECT`` request that asks ``proxy`` for a tunnel to
    ``host:port`` (RFC 9110, section 9.3.6), with the proxy's credentials
    when it has some.

    :param host: the origin's name or address (IPv6 without brackets).
    :param port: the origin's port.
    :param proxy: the :class:`Proxy`.
    """
    authority = f"{bracketed(host)}:{port}"
    head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
    if proxy.authorization is not None:
        head += f"Proxy-Authorization: {proxy.authorization}\r\n"
    return (head + "\r\n").encode("ascii")
