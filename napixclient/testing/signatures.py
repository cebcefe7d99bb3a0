"""What a Napix server checks of a request's identity, as
:class:`~napixclient.testing.NapixTestServer` checks it: a signed
``Authorization`` header (PROTOCOL.md, section 1) or a token parameter
(section 2).

Each check returns ``None`` when the request may go on, else ``(status,
text)``: 403 with a text that never holds a signature, a token or a key.
"""

from __future__ import annotations

import hmac
import time
from typing import Dict, Iterable, List, Mapping, Optional, Set, Tuple
from urllib.parse import parse_qs, parse_qsl

from napixclient.authenticators import sign

__all__ = [
    "SIGNED_FIELDS",
    "check_signature",
    "check_token",
    "hmac_token",
    "parse_authorization",
    "query_values",
    "single_field",
]

#: The fields every signed ``Authorization`` message holds exactly once.
SIGNED_FIELDS = ("login", "host", "path", "method")

#: What a check returns: ``None`` to let the request go on, else
#: ``(status, text)``.
Refusal = Optional[Tuple[int, str]]


def parse_authorization(header: str) -> Optional[Dict[str, List[str]]]:
    """The fields of an ``Authorization`` header's message (what stands
    before its last ``:``), each name with its values.

    :param header: the header's value (``str``).
    :returns: ``Dict[str, List[str]]``, or ``None`` when there is no ``:``.
    """
    message, sep, _ = header.rpartition(":")
    if not sep:
        return None
    return parse_qs(message, keep_blank_values=True)


def single_field(fields: Optional[Mapping[str, List[str]]], name: str) -> Optional[str]:
    """The one value of ``name`` in ``fields`` (:func:`parse_authorization`'s).

    :returns: ``str``, or ``None`` when the field is absent or repeated (a
        repeated field is ambiguous, so refused).
    """
    values = (fields or {}).get(name)
    if values is None or len(values) != 1:
        return None
    return values[0]


def query_values(query: str, name: str) -> List[str]:
    """Every value of the parameter ``name`` in the query string ``query``
    (``str``, without ``?``), decoded, in order (``List[str]``)."""
    return [value for key, value in parse_qsl(query, keep_blank_values=True) if key == name]


def check_signature(authorization: str, fields: Optional[Mapping[str, List[str]]],
                    method: str, raw_target: str, host: Optional[str],
                    users: Mapping[str, str], *, max_clock_skew: Optional[float] = None,
                    seen_nonces: Optional[Set[str]] = None) -> Refusal:
    """Verify a signed ``Authorization`` header (PROTOCOL.md, section 1).

    :param authorization: the header's value, ``<message>:<signature>``.
    :param fields: its message's fields (:func:`parse_authorization`).
    :param method: the request's method (``str``), as sent.
    :param raw_target: the request target as on the request line (``str``,
        latin-1 decoded), which the signed ``path`` must be.
    :param host: the request's ``Host`` header, which the signed ``host``
        must be, or ``None``.
    :param users: login to secret key (``Mapping[str, str]``).
    :param max_clock_skew: seconds (``float``) the signed ``timestamp`` may
        be away from this machine's clock; ``None`` for no check.
    :param seen_nonces: the nonces of the requests accepted so far, to
        refuse a replayed one (an accepted request's nonce is added); or
        ``None`` not to check nonces.
    :returns: ``None`` when the signature holds, else ``(403, text)``.
    """
    message, sep, signature = authorization.rpartition(":")
    if not sep or fields is None:
        return 403, "malformed Authorization header: expected <message>:<signature>"
    values: Dict[str, str] = {}
    for name in SIGNED_FIELDS:
        value = single_field(fields, name)
        if value is None:
            return 403, f"Authorization message needs exactly one {name!r} field"
        values[name] = value
    if values["method"] != method:
        return 403, "signed method does not match the request method"
    # Compared as bytes: the request line is bytes, the signed path text.
    if values["path"].encode("utf-8") != raw_target.encode("latin-1", "replace"):
        return 403, "signed path does not match the request target"
    if values["host"] != host:
        return 403, "signed host does not match the Host header"
    key = users.get(values["login"])
    if key is None:
        return 403, f"unknown login {values['login']!r}"
    if not hmac.compare_digest(sign(key, message), signature):
        return 403, "signature mismatch"
    if max_clock_skew is not None:
        stamp = single_field(fields, "timestamp")
        try:
            skew = abs(time.time() - int(stamp or ""))
        except ValueError:
            return 403, "Authorization message needs an integer 'timestamp' field"
        if skew > max_clock_skew:
            return 403, f"timestamp is {skew:.0f} s away from the server's clock"
    if seen_nonces is not None:
        nonce = single_field(fields, "nonce")
        if not nonce:
            return 403, "Authorization message needs a 'nonce' field"
        if nonce in seen_nonces:
            return 403, "nonce already used"
        # Only accepted requests burn their nonce, so a forged request
        # cannot spend the nonce of a genuine one still on its way.
        seen_nonces.add(nonce)
    return None


def check_token(values: List[str], users: Mapping[str, str], tokens: Iterable[str],
                parameter: str) -> Refusal:
    """Verify a token parameter (PROTOCOL.md, section 2): one of ``tokens``
    as is, or ``login:hex(HMAC-SHA256(key, login))`` for one of ``users``.

    :param values: the parameter's values in the request (``List[str]``);
        exactly one is accepted.
    :param users: login to secret key (``Mapping[str, str]``).
    :param tokens: the opaque tokens accepted (``str`` each).
    :param parameter: the parameter's name, for the message (``str``).
    :returns: ``None`` when the token is good, else ``(403, text)``.
    """
    bad = 403, f"invalid {parameter!r} parameter"
    if len(values) != 1 or not values[0]:
        return bad
    value = values[0]
    # Every opaque token is compared, so timing does not tell which
    # prefix matched.
    opaque = [hmac.compare_digest(value, accepted) for accepted in tokens]
    if any(opaque):
        return None
    login, sep, signature = value.rpartition(":")
    key = users.get(login) if sep else None
    if key is not None and hmac.compare_digest(sign(key, login), signature):
        return None
    return bad


def hmac_token(login: str, key: str) -> str:
    """Return the token a Napix server accepts for ``login``:
    ``login:hex(HMAC-SHA256(key, login))`` (PROTOCOL.md, section 2).

    :param login: the user's login (``str``).
    :param key: the user's secret key (``str``).
    :returns: the token (``str``); keep it out of logs, it is a credential.
    """
    return f"{login}:{sign(key, login)}"
