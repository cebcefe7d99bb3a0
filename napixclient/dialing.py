"""Reaching an origin: names resolved, TCP connected, TLS negotiated, directly
or through a proxy.

The connection manager (:mod:`napixclient.connections`) calls
:meth:`Dialer.dial` whenever it needs a new socket. Everything here yields
to the gevent hub while it waits (gevent's socket, its resolver and its SSL
module), whether or not the program monkey-patched, and translates what goes
wrong into :mod:`napixclient.failures` where it happens:
:class:`~napixclient.failures.NameNotResolved`,
:class:`~napixclient.failures.ConnectFailed`,
:class:`~napixclient.failures.ConnectTimedOut`,
:class:`~napixclient.failures.TLSFailed`,
:class:`~napixclient.failures.ProxyFailed` and
:class:`~napixclient.failures.ProxyUnreachable`.

* Names are resolved through gevent's resolver (by default a thread pool, so
  a slow DNS server never blocks the hub), once per :class:`Dialer` for
  :data:`DNS_TTL` seconds; lookups of one name at the same time share one
  query. IP addresses are never sent to the resolver.
* TLS: one :class:`ssl.SSLContext` per TLS configuration (``verify`` and
  the client certificate ``cert``), built on first use and shared by every
  connection of the dialer (building one costs tens of milliseconds and
  most of a megabyte).
* Proxies (:class:`Proxy`, chosen per origin by :func:`choose_proxy` as
  requests chooses them): an ``http`` origin is reached through the proxy's
  own connection (the connection manager writes the request target in
  absolute form, RFC 9112 section 3.2.2); an ``https`` origin through a
  ``CONNECT`` tunnel (RFC 9110, section 9.3.6), inside which TLS is
  negotiated with the origin and the *origin's* certificate verified. An
  ``https://`` proxy is itself reached over TLS, its certificate verified
  against the same ``verify``; a tunnel through it is TLS inside TLS
  (urllib3's :class:`~urllib3.util.ssltransport.SSLTransport`).
"""

from __future__ import annotations

import base64
import http
import http.client
import os
import socket
import ssl
import time
import urllib.request
from collections.abc import Mapping
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union
from urllib.parse import unquote, urlsplit

import gevent
import gevent.event
import gevent.socket
import gevent.ssl
import requests.utils
from urllib3.util.ssltransport import SSLTransport

from napixclient.failures import (
    ConnectFailed,
    ConnectTimedOut,
    NameNotResolved,
    ProxyFailed,
    ProxyUnreachable,
    TLSFailed,
)
from napixclient.redact import redact_url_credentials

__all__ = [
    "DNS_TTL",
    "Cert",
    "CertFiles",
    "Dialer",
    "Origin",
    "Proxy",
    "Verify",
    "check_cert",
    "check_proxies",
    "check_verify",
    "choose_proxy",
    "ip_family",
    "parse_proxy",
    "ssl_context",
    "status_text",
    "tls_reason",
]

#: ``verify``: ``True`` (the CA bundle requests uses), ``False`` (no
#: verification), or the path of a CA bundle file or directory.
Verify = Union[bool, str, "os.PathLike[str]"]

#: ``cert``, a client certificate as requests takes it: the path of one PEM
#: file holding the certificate (and its chain) and the private key, or a
#: ``(certificate path, key path)`` pair.
Cert = Union[str, "os.PathLike[str]", Tuple[Union[str, "os.PathLike[str]"],
                                            Union[str, "os.PathLike[str]"]]]

#: A checked ``cert``: ``(certificate path, key path or None)``.
CertFiles = Tuple[str, Optional[str]]

#: How long a resolved name is reused, in seconds.
DNS_TTL = 10.0

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _bracketed(host: str) -> str:
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
        return f"{self.scheme}://{_bracketed(self.host)}:{self.port}"

    def __repr__(self) -> str:
        credentials = ", with credentials" if self.authorization else ""
        return f"Proxy({str(self)!r}{credentials})"


class Origin(NamedTuple):
    """Where requests go, and how: ``scheme`` (``"http"`` or ``"https"``),
    ``host`` (a name or an IP address, IPv6 without brackets), ``port``
    (``int``), ``verify`` (the TLS verification, for https and for an https
    proxy), ``cert`` (the client certificate, :data:`CertFiles` or ``None``)
    and ``proxy`` (the :class:`Proxy` requests go through, or ``None`` for a
    direct connection).

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
        return f"{self.scheme}://{_bracketed(self.host)}:{self.port}"

    @property
    def forwarded(self) -> bool:
        """Whether requests go to a proxy that forwards them (an ``http``
        origin through a proxy): their request line then carries the
        absolute form of the target (RFC 9112, section 3.2.2)."""
        return self.proxy is not None and self.scheme == "http"

    @property
    def authority(self) -> str:
        """``host[:port]`` as a URL spells it, the default port left out."""
        name = _bracketed(self.host)
        return name if self.port == _DEFAULT_PORTS.get(self.scheme) else f"{name}:{self.port}"


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
    if scheme not in _DEFAULT_PORTS:
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
    return Proxy(scheme, parts.hostname, port or _DEFAULT_PORTS[scheme], authorization)


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


def check_cert(cert: Any) -> Optional[CertFiles]:
    """Check a ``cert`` argument at once, as requests takes it.

    :param cert: ``None``; the path (``str`` or path-like) of one PEM file
        holding the client certificate (and its chain) and its unencrypted
        private key; or a ``(certificate path, key path)`` pair.
    :returns: ``(certificate path, key path or None)``, or ``None``.
    :raises ValueError: for another type, or a text that is PEM itself
        rather than a path (the message never shows it).
    :raises FileNotFoundError: naming ``cert`` and the path, for a file that
        does not exist.
    """
    if cert is None:
        return None
    if isinstance(cert, (str, os.PathLike)):
        return _cert_path(cert, "cert"), None
    if isinstance(cert, (tuple, list)) and len(cert) == 2 and all(
            isinstance(part, (str, os.PathLike)) for part in cert):
        return _cert_path(cert[0], "cert[0] (the certificate)"), \
            _cert_path(cert[1], "cert[1] (the private key)")
    raise ValueError("cert must be the path of a PEM file holding the client certificate "
                     "and its key, or a (certificate path, key path) pair, got "
                     f"{type(cert).__name__}")


def _cert_path(value: Any, what: str) -> str:
    path = os.fspath(value)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if "-----BEGIN" in path or "\n" in path or len(path) > 4096:
        # PEM text where a path was meant: the key may be in it, never shown.
        raise ValueError(f"{what} must be the path of a PEM file, not the PEM text itself")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: no file at {path!r}")
    return path


def _encrypted_key() -> str:
    # Called by OpenSSL only for an encrypted key: without this callback it
    # would prompt on the terminal, and wait there.
    raise ValueError("cert: the private key is encrypted; give an unencrypted key "
                     "(requests takes no key password either)")


def ssl_context(verify: Verify = True, cert: Optional[CertFiles] = None) -> ssl.SSLContext:
    """Return a :class:`gevent.ssl.SSLContext` for client connections
    (TLS 1.2 at least, host names checked when verifying).

    :param verify: ``True`` verifies the server's certificate and host name
        against the CA bundle requests uses (certifi); a path (``str`` or
        path-like) verifies against that CA bundle file or directory;
        ``False`` verifies nothing (tests only).
    :param cert: the client certificate presented to servers that ask for
        one (mutual TLS): ``(certificate path, key path or None)`` as
        :func:`check_cert` returns it, or ``None``.
    :raises FileNotFoundError: if ``verify`` names a path that does not exist.
    :raises ValueError: if the client certificate or its key cannot be
        loaded (not PEM, a key that does not match, an encrypted key), naming
        ``cert`` and never the key's content.
    :raises ssl.SSLError: if the CA bundle cannot be read.
    """
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        try:
            context.load_cert_chain(cert[0], cert[1], password=_encrypted_key)
        except ssl.SSLError as error:
            if error.reason == "KEY_VALUES_MISMATCH":
                detail = "the key does not match the certificate"
            else:
                detail = f"{error.reason or 'PEM lib'}, are they PEM?"
                if cert[1] is None:
                    detail += " If the key is in another file, give cert=(certificate, key)"
            raise ValueError(f"cert: the client certificate and its key could not be "
                             f"loaded: {detail}") from None
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


class _TunnelledTLS(SSLTransport):
    """TLS with the origin inside TLS with an https proxy: urllib3's
    :class:`~urllib3.util.ssltransport.SSLTransport` over the proxy's TLS
    socket (the standard library cannot wrap an SSL socket again), with
    ``pending()``, which the parsers and the idle check ask for: whether
    bytes already read wait to be decrypted or taken."""

    def pending(self) -> int:
        """Bytes decrypted, or received and not yet decrypted, not yet read."""
        outer = getattr(self.socket, "pending", None)
        return int(self.sslobj.pending() or self.incoming.pending
                   or (outer() if outer is not None else 0))


class _UnbufferedReader:
    """Hands :class:`http.client.HTTPResponse` an unbuffered file of the
    socket, so that reading the answer to ``CONNECT`` takes nothing beyond
    its head: what follows on the socket is the tunnel's."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def makefile(self, mode: str) -> Any:
        return self._sock.makefile("rb", buffering=0)


class Dialer:
    """Opens sockets to origins, directly or through proxies, sharing name
    look-ups and TLS contexts.

    Not thread-safe: one hub (one thread) uses it, as gevent programs do.
    """

    def __init__(self) -> None:
        self._names: Dict[Tuple[str, int], Tuple[float, List[Address]]] = {}
        self._lookups: Dict[Tuple[str, int], gevent.event.AsyncResult] = {}
        self._contexts: Dict[Any, ssl.SSLContext] = {}

    def context(self, verify: Verify, cert: Optional[CertFiles] = None) -> ssl.SSLContext:
        """The shared :class:`ssl.SSLContext` for ``verify`` and ``cert``
        (see :func:`ssl_context`), built on first use.

        :raises FileNotFoundError: if ``verify`` names a missing CA bundle.
        :raises ValueError: if ``cert`` cannot be loaded.
        """
        key = (verify if isinstance(verify, bool) else os.fspath(verify), cert)
        context = self._contexts.get(key)
        if context is None:
            context = self._contexts[key] = ssl_context(verify, cert)
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
        """Open a socket to ``origin``: TCP, then TLS for https; through
        ``origin.proxy`` when there is one (TLS to an https proxy, then for
        an https origin a ``CONNECT`` tunnel and TLS with the origin inside
        it, verifying the origin's certificate and name).

        :param timeout: seconds for the TCP connect, and again for each TLS
            handshake and for the proxy's answer to ``CONNECT``.
        :returns: ``(socket, peer address)``; the socket is a gevent socket
            (or gevent SSL socket, or TLS inside TLS) with ``TCP_NODELAY``
            set; the peer is the proxy when there is one.
        :raises NameNotResolved: the name did not resolve.
        :raises ConnectFailed: every address refused or was unreachable.
        :raises ConnectTimedOut: connecting, a TLS handshake or the proxy's
            answer to ``CONNECT`` took longer than ``timeout``.
        :raises TLSFailed: the handshake with the origin failed or its
            certificate was refused.
        :raises ProxyUnreachable: the proxy's name did not resolve, or it
            refused the connection.
        :raises ProxyFailed: TLS with an https proxy failed, or the proxy
            answered ``CONNECT`` with anything but 2xx, or not in HTTP.
        """
        proxy = origin.proxy
        if proxy is None:
            sock, address = self._connect(origin.host, origin.port, timeout)
            if origin.scheme != "https":
                return sock, address
            context = self.context(origin.verify, origin.cert)
            return self._tls(sock, context, origin.host, timeout), address
        try:
            sock, address = self._connect(proxy.host, proxy.port, timeout)
        except (ConnectFailed, NameNotResolved) as failure:
            raise ProxyUnreachable(f"could not connect to the proxy {proxy}: "
                                   f"{failure.message.split(': ', 1)[-1]}", proxy) from failure
        except ConnectTimedOut as failure:
            raise ConnectTimedOut(f"timed out while connecting to the proxy {proxy}") \
                from failure
        try:
            if proxy.scheme == "https":
                sock = self._tls(sock, self.context(origin.verify), proxy.host, timeout,
                                 proxy=proxy)
            if origin.scheme == "https":
                self._tunnel(sock, origin, proxy, timeout)
                context = self.context(origin.verify, origin.cert)
                sock = self._tls(sock, context, origin.host, timeout,
                                 nested=proxy.scheme == "https")
        except BaseException:
            sock.close()
            raise
        return sock, address

    def _tls(self, sock: Any, context: ssl.SSLContext, server_hostname: str, timeout: float,
             *, proxy: Optional[Proxy] = None, nested: bool = False) -> Any:
        """TLS over ``sock`` (closed on failure), verifying ``server_hostname``.

        :param proxy: the proxy when the handshake is with it (failures are
            then :class:`ProxyFailed`).
        :param nested: ``sock`` is itself TLS (an https proxy's).
        """
        def failed(detail: str) -> Exception:
            if proxy is not None:
                return ProxyFailed(f"TLS with the proxy {proxy} failed: {detail}", proxy)
            return TLSFailed(f"TLS failed: {detail}")

        try:
            sock.settimeout(timeout)
            if nested:
                return _TunnelledTLS(sock, context, server_hostname=server_hostname)
            tls = context.wrap_socket(sock, server_hostname=server_hostname,
                                      do_handshake_on_connect=False)
            tls.settimeout(timeout)
            tls.do_handshake()
            return tls
        except ssl.SSLCertVerificationError as error:
            sock.close()
            detail = ", ".join(str(part) for part in (error.reason, error.verify_message)
                               if part)
            raise failed(detail or "the certificate was refused") from error
        except ssl.SSLError as error:
            sock.close()
            raise failed(tls_reason(error) if error.reason else "the handshake failed") \
                from error
        except socket.timeout as error:
            sock.close()
            where = f" with the proxy {proxy}" if proxy is not None else ""
            raise ConnectTimedOut(f"timed out while connecting (TLS handshake{where})") \
                from error
        except OSError as error:
            sock.close()
            raise failed(_reason(error)) from error
        except BaseException:
            sock.close()
            raise

    def _tunnel(self, sock: Any, origin: Origin, proxy: Proxy, timeout: float) -> None:
        """Ask ``proxy`` for a tunnel to ``origin`` (RFC 9110, section 9.3.6)
        and read its answer's head, and nothing more.

        :raises ProxyFailed: for an answer other than 2xx, or none in HTTP.
        :raises ConnectTimedOut: when the answer takes longer than ``timeout``.
        """
        authority = f"{_bracketed(origin.host)}:{origin.port}"
        head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        if proxy.authorization is not None:
            head += f"Proxy-Authorization: {proxy.authorization}\r\n"
        try:
            sock.settimeout(timeout)
            sock.sendall((head + "\r\n").encode("ascii"))
            answer = http.client.HTTPResponse(_UnbufferedReader(sock),  # type: ignore[arg-type]
                                              method="CONNECT")
            try:
                answer.begin()
            finally:
                answer.close()  # the file only: the socket stays open
        except socket.timeout as error:
            raise ConnectTimedOut(f"timed out while waiting for the proxy {proxy} to answer "
                                  "CONNECT") from error
        except (http.client.HTTPException, OSError) as error:
            detail = ("closed the connection" if isinstance(
                error, (http.client.RemoteDisconnected, ConnectionError))
                      else "did not answer in HTTP")
            raise ProxyFailed(f"the proxy {proxy} {detail} when asked to CONNECT", proxy) \
                from error
        status = answer.status
        if not 200 <= status < 300:
            raise ProxyFailed(f"the proxy {proxy} answered {status_text(status)} to CONNECT",
                              proxy, status=status)

    def _connect(self, host: str, port: int, timeout: float) -> Tuple[Any, Tuple[Any, ...]]:
        addresses = self.resolve(host, port)
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


# TLS alerts that say what the server thought of the client's certificate.
_CLIENT_CERTIFICATE_ALERTS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server asks for a client certificate (cert=)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the server refused the client certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "the server does not trust the client certificate's issuer",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the server says a certificate has expired",
}


def tls_reason(error: ssl.SSLError) -> str:
    """What a TLS error says, for a person: OpenSSL's reason
    (``"CERTIFICATE_VERIFY_FAILED"``), and what an alert about the client
    certificate means (``"TLSV13_ALERT_CERTIFICATE_REQUIRED: the server
    asks for a client certificate (cert=)"``).

    :param error: the :class:`ssl.SSLError`.
    """
    reason = error.reason or type(error).__name__
    meaning = _CLIENT_CERTIFICATE_ALERTS.get(reason)
    return f"{reason}: {meaning}" if meaning else reason


def status_text(status: int) -> str:
    """``"407 Proxy Authentication Required"``: a status and the phrase RFC
    9110 gives it (never the far side's own reason phrase), or the status
    alone when it has none.

    :param status: an HTTP status (``int``).
    """
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)
