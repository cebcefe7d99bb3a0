"""What the ``napix`` command line says: hosts, paths, headers, ``--data``,
proxies and client certificates, each checked, a
:class:`~napixclient.probing.UsageError` naming what is wrong. The
credentials are chosen by :func:`napixclient.probing.resolve_credentials`,
which the fleet's workers share."""

from __future__ import annotations

import argparse
import base64
import json
import math
import re
import sys
from dataclasses import dataclass, field
from typing import (
    Any,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Tuple,
)
from urllib.parse import unquote, urlsplit

from napixclient.core.hosts import check_path, parse_host
from napixclient.probing import UsageError
from napixclient.redact import redact_url_credentials

#: Said after a 401 when the command had no credentials to send.
NO_CREDENTIALS_HINT = (
    "napix: no credentials were sent: set NAPIX_LOGIN and NAPIX_KEY (or NAPIX_TOKEN) "
    "in the environment, or give --login and --key (or --token)")


@dataclass(frozen=True)
class Connection:
    """How the command reaches hosts: the proxy and client certificate
    options, as keyword arguments for :class:`~napixclient.Client` and
    :class:`~napixclient.ClientPool`.

    :ivar options: ``proxies``, ``trust_env`` and ``cert`` when given
        (``dict``).
    :ivar source: a credential-free description for ``-v``, such as
        ``"proxy http://***@127.0.0.1:3128 from --proxy"``.
    :ivar secrets: the proxy passwords (and their ``Basic`` form), for
        redaction only.
    """

    options: Dict[str, Any] = field(default_factory=dict)
    source: str = "proxies from the environment"
    secrets: Tuple[str, ...] = field(default=(), repr=False)

    def __repr__(self) -> str:
        return f"Connection({self.source!r})"


#: The variables the environment's proxies come from, as requests reads them.
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def resolve_connection(proxy: Optional[str], no_proxy: bool, cert: Optional[str],
                       cert_key: Optional[str], environ: Mapping[str, str]) -> Connection:
    """The ``--proxy``, ``--no-proxy``, ``--cert`` and ``--cert-key`` options.

    Without ``--proxy`` or ``--no-proxy``, the environment's proxies apply
    (``http_proxy``, ``https_proxy``, ``all_proxy``, ``no_proxy``, lower or
    upper case), as requests and curl read them. ``--proxy URL`` sends
    every request through ``URL``, http and https hosts alike, whatever the
    environment says; ``--no-proxy`` connects directly, ignoring it.

    :param proxy: ``--proxy`` (``str``) or ``None``.
    :param no_proxy: ``--no-proxy`` (``bool``).
    :param cert: ``--cert``: a PEM file holding the client certificate, and
        its key unless ``cert_key`` is given; or ``None``.
    :param cert_key: ``--cert-key``: the key's PEM file, or ``None``.
    :param environ: the environment (``os.environ``), for the passwords of
        its proxies, which are masked in whatever the command prints.
    :returns: :class:`Connection`.
    :raises UsageError: for ``--proxy`` with ``--no-proxy``, or
        ``--cert-key`` without ``--cert``.
    """
    if proxy is not None and no_proxy:
        raise UsageError("use either --proxy or --no-proxy, not both")
    if cert_key is not None and cert is None:
        raise UsageError("--cert-key needs --cert (the certificate it is the key of)")
    options: Dict[str, Any] = {}
    if proxy is not None:
        options["proxies"] = {"http": proxy, "https": proxy}
        source = f"proxy {redact_url_credentials(proxy)} from --proxy"
        urls = [proxy]
    elif no_proxy:
        options["trust_env"] = False
        source = "no proxy (--no-proxy)"
        urls = []
    else:
        urls = [value for name, value in environ.items()
                if name.lower() in PROXY_VARIABLES[:3] and value]
        source = ("proxies from the environment" if urls
                  else "no proxy (none in the environment)")
    if cert is not None:
        options["cert"] = cert if cert_key is None else (cert, cert_key)
    return Connection(options, source, _proxy_secrets(urls))


def _proxy_secrets(urls: Iterable[str]) -> Tuple[str, ...]:
    """The passwords in proxy URLs, decoded and as ``Proxy-Authorization``
    carries them, so that nothing the command prints shows them."""
    secrets: List[str] = []
    for url in urls:
        try:
            parts = urlsplit(url if "://" in url else "http://" + url)
            user, password = parts.username, parts.password
        except ValueError:
            continue
        if password:
            plain = f"{unquote(user or '')}:{unquote(password)}"
            secrets += [unquote(password), password]
            for encoding in ("utf-8", "latin-1"):
                try:
                    secrets.append(base64.b64encode(plain.encode(encoding)).decode("ascii"))
                except UnicodeEncodeError:
                    pass
    return tuple(secrets)


def seconds(text: str) -> float:
    """An argparse type: ``text`` as a number of seconds (``float``).

    :raises argparse.ArgumentTypeError: unless it is a finite number > 0.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be a finite number > 0")
    return value


def positive_int(text: str) -> int:
    """An argparse type: ``text`` as an ``int``.

    :raises argparse.ArgumentTypeError: unless it is an integer >= 1.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 1")
    return value


def parse_header(text: str) -> Tuple[str, str]:
    """``"Name: value"`` -> ``("Name", "value")``.

    :param text: one ``--header`` value (``str``).
    :returns: ``(name, value)``, both stripped of surrounding spaces.
    :raises UsageError: when there is no ``:`` or the name is empty.
    """
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise UsageError(f"--header {text!r} must look like NAME:VALUE")
    return name.strip(), value.strip()


def parse_data(text: str) -> bytes:
    """Check that ``--data`` is a JSON document and return its bytes as typed.

    :param text: the ``--data`` value (``str``).
    :returns: ``text`` encoded as UTF-8 (``bytes``), unchanged otherwise.
    :raises UsageError: naming where the JSON is malformed, or for
        ``NaN``, ``Infinity`` and ``-Infinity``, which Python's json module
        reads but JSON does not have (RFC 8259, section 6).
    """
    try:
        json.loads(text, parse_constant=_refuse_constant)
    except ValueError as error:
        raise UsageError(f"--data is not valid JSON: {error}") from None
    return text.encode("utf-8")


def merge_headers(fields: Iterable[Tuple[str, str]]) -> Dict[str, str]:
    """``--header`` fields as one mapping: the values of fields repeated under
    one name (in any case) are joined with ``", "`` in the order given, which
    RFC 9110 (section 5.3) makes the same as sending them apart."""
    headers: Dict[str, str] = {}
    names: Dict[str, str] = {}  # lower-case name -> the name as first given
    for name, value in fields:
        first = names.setdefault(name.lower(), name)
        headers[first] = f"{headers[first]}, {value}" if first in headers else value
    return headers


def _refuse_constant(name: str) -> Any:
    """Python's json reads ``NaN``, ``Infinity`` and ``-Infinity``; JSON
    (RFC 8259, section 6) has no such numbers, and a server may refuse them."""
    raise ValueError(f"{name} is not a JSON number (RFC 8259 has no NaN or Infinity)")


def read_hosts_file(path: str) -> List[str]:
    """Read a hosts file: one host per line; ``#`` starts a comment; blank
    lines are ignored.

    :param path: the file's path (``-`` reads standard input).
    :returns: the hosts in file order (``List[str]``).
    :raises UsageError: when the file cannot be read, or a line holds more
        than one word or a malformed host (naming the file and line).
    """
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--hosts-file {path}: {error}") from None
    hosts = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if len(entry.split()) != 1:
            raise UsageError(f"{path}:{number}: one host per line, got {entry!r}")
        try:
            hosts.append(host_argument(entry))
        except ValueError as error:
            raise UsageError(f"{path}:{number}: {error}") from None
    return hosts


def host_argument(text: str) -> str:
    """Check a host given on the command line; return it as
    :class:`~napixclient.Client` takes it and as the command shows it.

    The host is read by :func:`napixclient.core.hosts.parse_host`, as the
    library reads it: a bare IPv6 address (``::1``) is that address on its
    default port, shown in brackets (``[::1]``); an address whose last group
    could be read as a port (``::1:8002``) is refused as ambiguous.

    :param text: ``name``, ``name:port``, ``[v6]:port``, a bare IPv6
        address, or ``http(s)://name[:port][/prefix]``.
    :returns: the host (``str``), ``text`` itself unless it was a bare IPv6
        address.
    :raises UsageError: with :func:`~napixclient.core.hosts.parse_host`'s
        words, for a malformed host.
    """
    host = text.strip()
    try:
        name = parse_host(host)[1]
    except ValueError as error:
        raise UsageError(str(error)) from None
    if ":" in name and "://" not in host and not host.startswith("["):
        return f"[{host}]"
    return host


def path_argument(text: str) -> str:
    """Check a request PATH given on the command line.

    :param text: the path (``str``), such as ``/capacity``.
    :returns: ``text``.
    :raises UsageError: with :func:`~napixclient.core.hosts.check_path`'s
        words, for a path that does not start with ``/``.
    """
    try:
        return check_path(text)
    except ValueError as error:
        raise UsageError(str(error)) from None


def host_sort_key(host: str) -> Tuple[Any, ...]:
    """The order of ``--sort host``: names in natural order (``hv-2`` before
    ``hv-10``, ``127.0.0.9`` before ``127.0.0.10``), then ports as numbers
    (the scheme's default when none is given), then scheme and prefix.

    :param host: a host as :func:`host_argument` returns it.
    :returns: a key for :func:`sorted` (a ``tuple``).
    :raises ValueError: for a malformed host.
    """
    scheme, name, port, prefix = parse_host(host)
    default = 443 if scheme == "https" else 80
    return _natural(name.lower()), port or default, scheme, _natural(prefix)


def _natural(text: str) -> Tuple[Tuple[int, int, str], ...]:
    """``text`` as runs of digits (compared as numbers) and of the rest."""
    return tuple((0, int(run), "") if run.isdigit() else (1, 0, run)
                 for run in re.split(r"(\d+)", text) if run)

