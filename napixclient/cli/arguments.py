"""What the ``napix`` command line says: credentials, hosts, headers,
``--data``, and the :class:`UsageError` for what is wrong with it."""

from __future__ import annotations

import argparse
import ipaddress
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

from napixclient.authenticators import LoginAuthenticator, TokenIdentifier
from napixclient.client import parse_host

ENV_LOGIN = "NAPIX_LOGIN"

ENV_KEY = "NAPIX_KEY"

ENV_TOKEN = "NAPIX_TOKEN"

#: Said after a 401 when the command had no credentials to send.
NO_CREDENTIALS_HINT = (
    "napix: no credentials were sent: set NAPIX_LOGIN and NAPIX_KEY (or NAPIX_TOKEN) "
    "in the environment, or give --login and --key (or --token)")


class UsageError(ValueError):
    """The command line is wrong: a malformed ``--data``, host, header,
    hosts file or expression. The command exits with :data:`EXIT_USAGE`."""


@dataclass(frozen=True)
class Credentials:
    """What the command authenticates with, and where it came from.

    :ivar authenticator: a :class:`~napixclient.authenticators.LoginAuthenticator`,
        a :class:`~napixclient.authenticators.TokenIdentifier`, or ``None``
        to send requests unauthenticated.
    :ivar source: a secret-free description for ``-v``, such as
        ``"login and key from NAPIX_LOGIN, NAPIX_KEY"``.
    :ivar secrets: the secret values (key, token), for redaction only.
    """

    authenticator: Any
    source: str
    secrets: Tuple[str, ...] = field(default=(), repr=False)

    def __repr__(self) -> str:
        return f"Credentials({self.source!r})"


def resolve_credentials(login: Optional[str], key: Optional[str], token: Optional[str],
                        environ: Mapping[str, str]) -> Credentials:
    """Choose the credentials from the flags, else from the environment.

    Flags win over the environment: ``--token`` means the token protocol;
    ``--login`` or ``--key`` means the signed protocol, the missing half
    taken from ``NAPIX_LOGIN``/``NAPIX_KEY``. Without flags, ``NAPIX_LOGIN``
    and ``NAPIX_KEY`` (the signed protocol, PROTOCOL.md section 1) win over
    ``NAPIX_TOKEN`` (section 2). Empty values count as absent.

    :param login, key, token: the flags' values (``str``) or ``None``.
    :param environ: the environment (``os.environ``).
    :returns: :class:`Credentials`.
    :raises UsageError: for ``--token`` together with ``--login``/``--key``,
        or a login without a key (or the reverse). The message names the
        flags and variables, never their values.
    """
    env_login = environ.get(ENV_LOGIN) or None
    env_key = environ.get(ENV_KEY) or None
    env_token = environ.get(ENV_TOKEN) or None
    login, key, token = login or None, key or None, token or None
    if token and (login or key):
        raise UsageError("use either --login/--key or --token, not both")
    if token:
        return Credentials(TokenIdentifier(token), "token from --token", (token,))
    if login or key:
        where = "--login/--key"
        login, key = login or env_login, key or env_key
        if not login or not key:
            missing = "--login (or NAPIX_LOGIN)" if not login else "--key (or NAPIX_KEY)"
            raise UsageError(f"{where} given without {missing}")
        return Credentials(LoginAuthenticator(login, key), f"login and key from {where}",
                           (key,))
    if env_login or env_key:
        if not env_login or not env_key:
            missing = ENV_LOGIN if not env_login else ENV_KEY
            present = ENV_KEY if not env_login else ENV_LOGIN
            raise UsageError(f"{present} is set but {missing} is not")
        return Credentials(LoginAuthenticator(env_login, env_key),
                           f"login and key from {ENV_LOGIN}, {ENV_KEY}", (env_key,))
    if env_token:
        return Credentials(TokenIdentifier(env_token), f"token from {ENV_TOKEN}",
                           (env_token,))
    return Credentials(None, "none (no --login/--key, --token or NAPIX_* variables)")


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
    :class:`~napixclient.Client` takes it.

    A bare IPv6 address (``::1``, ``fe80::1``) is put in brackets (``[::1]``,
    the default port): in a URL, a colon after the address starts the port,
    so an IPv6 address with a port is written ``[::1]:8002``. An address
    whose last group could be read as a port (``::1:8002``) is refused as
    ambiguous rather than guessed.

    :param text: ``name``, ``name:port``, ``[v6]:port``, a bare IPv6
        address, or ``http(s)://name[:port][/prefix]``.
    :returns: the host (``str``), ``text`` itself unless it was a bare IPv6
        address.
    :raises UsageError: naming the problem, for a malformed host.
    """
    host = text.strip()
    if "://" not in host and not host.startswith("[") and host.count(":") >= 2:
        address, _, last = host.rpartition(":")
        if last.isdigit() and _is_ipv6(address):
            raise UsageError(f"host {text!r} is ambiguous: write [{address}]:{last} for port "
                             f"{last}, or [{host}] for that address")
        if not _is_ipv6(host):
            raise UsageError(f"host {text!r} is malformed: write an IPv6 address alone "
                             "(::1) or in brackets with a port ([::1]:8002)")
        host = f"[{host}]"
    try:
        parse_host(host)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return host


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


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

