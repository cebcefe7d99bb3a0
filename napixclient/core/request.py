"""Writing a request: checks, target quoting, body encoding, request bytes.

Everything a request is before it goes on the wire, without I/O: the gevent
and the asyncio drivers send what :func:`request_bytes` writes.

* :func:`check_method`, :func:`check_headers`, :func:`check_fields` refuse
  what would split or garble a request;
* :func:`check_framing` refuses a caller's ``Content-Length`` that does not
  match the body, and any ``Transfer-Encoding``: napixclient frames every
  body itself (so a request can never smuggle a second one);
* :func:`quote_target` percent-encodes a request target as requests does;
  :func:`encode_body` gives a body's bytes and the ``Content-Type`` they imply;
* :func:`merge_fields`, :func:`field_block` and :func:`request_bytes` write
  the request as RFC 9112 frames it; :func:`absolute_form` rewrites it for a
  proxy that forwards it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Set, Tuple

from requests.utils import requote_uri

from napixclient.response import Field

__all__ = [
    "absolute_form",
    "check_fields",
    "check_framing",
    "check_headers",
    "check_method",
    "encode_body",
    "field_block",
    "merge_fields",
    "quote_target",
    "request_bytes",
]

# -- building a request ---------------------------------------------------------

# Matched with fullmatch: "$" would let a trailing "\n" through.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
_FORBIDDEN_IN_FIELD_VALUE = re.compile(r"[\r\n\x00]")
# A target made only of these is left as is by requote_uri (no "%" to check).
_PLAIN_TARGET = re.compile(r"[A-Za-z0-9_.\-~!$&'()*+,/:;=?@\[\]]*")
# Never in a target, even percent-encoded by us: CR, LF and NUL would split or
# cut the request line; "#" starts a fragment, which is never sent (RFC 9112,
# section 3.2), so the caller meant something else.
_FORBIDDEN_IN_TARGET = re.compile(r"[\r\n\x00#]")
# Targets found plain lately (no query, at most 256 of at most 256 characters).
_PLAIN_PATHS: Set[str] = set()
# A "%" that does not start a %XX escape (RFC 3986, section 2.1).
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Methods whose requests carry "Content-Length: 0" when they have no body
# (RFC 9110, section 8.6: a user agent should send it for them).
_METHODS_EXPECTING_BODY = frozenset(["POST", "PUT", "PATCH"])

def _latin_1(value: str) -> bool:
    """Whether ``value`` can be written as Latin-1, as field values are."""
    if value.isascii():
        return True
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


# The methods most requests use, checked already (their upper case).
_COMMON_METHODS = {name: name for name in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE",
                                           "OPTIONS")}


def check_method(method: Any) -> str:
    """Return ``method`` upper case.

    :param method: an HTTP method (``str``), an RFC 9110 token.
    :raises ValueError: when it is not such a token.
    """
    if type(method) is str:
        common = _COMMON_METHODS.get(method)
        if common is not None:
            return common
    if not isinstance(method, str) or not _TOKEN.fullmatch(method):
        raise ValueError(f"method must be an HTTP token such as 'GET', got {method!r}")
    return method.upper()


def check_headers(headers: Any) -> Dict[str, str]:
    """Check header fields given by a caller.

    :param headers: ``Mapping[str, str]`` (``bytes`` values are read as
        Latin-1), or ``None``.
    :returns: a new ``dict`` of the fields.
    :raises ValueError: naming the field, for a name that is not an RFC 9110
        token, a value holding CR, LF or NUL (which would split the request),
        or a character outside Latin-1 (which no field can carry).
    """
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise ValueError(f"headers must be a mapping of str to str, "
                         f"got {type(headers).__name__}")
    checked = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(f"header name {name!r} is not a valid token "
                             "(no spaces, CR, LF or separators)")
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if not isinstance(value, str):
            raise ValueError(f"header {name!r}: the value must be a str, "
                             f"got {type(value).__name__}")
        if _FORBIDDEN_IN_FIELD_VALUE.search(value):
            raise ValueError(f"header {name!r}: the value contains CR, LF or NUL")
        if not _latin_1(value):
            raise ValueError(f"header {name!r}: the value has characters outside Latin-1, "
                             "which HTTP fields cannot carry (RFC 9110, section 5.5); "
                             "percent-encode them, or send bytes")
        checked[name] = value
    return checked


def check_fields(headers: Mapping[str, Any]) -> List[Field]:
    """The fields an authenticator left on a request, checked as
    :func:`check_headers` checks a caller's.

    :param headers: the request's header mapping after the authenticator ran.
    :returns: ``(name, value)`` pairs.
    :raises ValueError: for a bad name or a value with CR, LF or NUL, never
        quoting the value (it may be a secret).
    """
    fields = []
    for name, value in headers.items():
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        elif not isinstance(value, str):
            value = str(value)
        if (not isinstance(name, str) or not _TOKEN.fullmatch(name)
                or _FORBIDDEN_IN_FIELD_VALUE.search(value) or not _latin_1(value)):
            raise ValueError(f"the authenticator set header {name!r} to a value that is "
                             "not a valid field (CR, LF or NUL, a character outside "
                             "Latin-1, or a bad name)")
        fields.append((name, value))
    return fields


def merge_fields(*layers: Mapping[str, str]) -> Dict[str, str]:
    """One field per name, a later layer's value replacing an earlier one's
    whatever the case of its name (defaults, then the client's, then the
    request's).

    :param layers: mappings of field name to value, lowest precedence first.
    :returns: a new ``dict``, each name spelled as its winning layer spells it.
    """
    merged: Dict[str, Tuple[str, str]] = {}
    for layer in layers:
        for name, value in layer.items():
            merged[name.lower()] = (name, value)
    return dict(merged.values())


def quote_target(path: str) -> str:
    """Percent-encode what a request target may not hold as is, as requests
    does (:func:`requests.utils.requote_uri`): a space is sent as ``%20``,
    non-ASCII characters as the ``%XX`` of their UTF-8 bytes, other control
    characters (a tab...) as their ``%XX``; existing ``%XX`` escapes are kept
    (those of unreserved characters decoded: ``%7E`` is sent as ``~``), and a
    ``%`` that starts no ``%XX`` escape is sent as ``%25`` (``/100%.txt`` is
    sent as ``/100%25.txt``, which a server reads back as ``/100%.txt``).
    Where requests would encode every ``%`` of a target holding one such lone
    ``%`` (``%41`` becoming ``%2541``), only the lone one is encoded here.

    :param path: a path with an optional ``?query`` (``str``).
    :returns: the target to send (``str``, ASCII).
    :raises ValueError: for CR, LF or NUL, which would split or cut the
        request line (percent-encode them when they are data), and for a
        ``#``: a fragment is never sent (RFC 9112, section 3.2); write
        ``%23`` when it belongs to the path or the query.
    """
    if path in _PLAIN_PATHS:
        return path
    if _PLAIN_TARGET.fullmatch(path):
        if len(path) <= 256 and "?" not in path:
            # A path without a query holds no credential; the same few are
            # asked for again and again.
            if len(_PLAIN_PATHS) >= 256:
                _PLAIN_PATHS.clear()
            _PLAIN_PATHS.add(path)
        return path
    bad = _FORBIDDEN_IN_TARGET.search(path)
    if bad is not None:
        if bad.group() == "#":
            raise ValueError("a fragment ('#...') is never sent to a server; "
                             "write '#' as %23 when it belongs to the path or query")
        raise ValueError("CR, LF and NUL are not allowed in a request target; "
                         "percent-encode them (%0D, %0A, %00) when they are data")
    return requote_uri(_LONE_PERCENT.sub("%25", path))


def encode_body(body: Any) -> Tuple[Optional[bytes], Optional[str]]:
    """The bytes of a request body, and the ``Content-Type`` it implies.

    :param body: ``dict`` or ``list`` -> compact JSON, UTF-8, with
        ``application/json``; ``str`` -> UTF-8; ``bytes``-like -> as is;
        ``None`` -> no body.
    :returns: ``(bytes or None, content type or None)``.
    :raises ValueError: for another type, and for a ``dict`` or ``list``
        that is not JSON (RFC 8259): one holding a value JSON has no form for
        (a ``set``, ``bytes``, any other object), a key that is not a
        ``str``, number, ``bool`` or ``None``, ``NaN`` or an infinity (which
        :func:`json.dumps` would write as non-standard ``NaN``/``Infinity``
        unless told not to), or a reference cycle. The message names the
        problem, as :func:`json.dumps` words it.
    """
    if body is None:
        return None, None
    if isinstance(body, (dict, list)):
        try:
            text = json.dumps(body, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False)
        except (TypeError, ValueError) as error:
            # json raises TypeError for a type it cannot write: say it as the
            # ValueError every other bad argument gives.
            raise ValueError(f"body cannot be sent as JSON: {error}") from None
        return text.encode("utf-8"), "application/json"
    if isinstance(body, str):
        return body.encode("utf-8"), None
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body), None
    raise ValueError(f"body must be a dict, list, str, bytes or None, "
                     f"got {type(body).__name__}")


def field_block(fields: Any) -> str:
    """``Name: value\\r\\n`` for each ``(name, value)`` pair or mapping item.

    :param fields: pairs, or a mapping.
    """
    items = fields.items() if isinstance(fields, Mapping) else fields
    return "".join(f"{name}: {value}\r\n" for name, value in items)


def request_bytes(method: str, target: str, fields: str, body: Optional[bytes]) -> bytes:
    """The request as it goes on the wire (RFC 9112, sections 3 and 6): the
    request line, the fields, the ``Content-Length`` of the body (``0`` for
    a POST, PUT or PATCH without one, as RFC 9110 section 8.6 advises; none
    for other methods without one), the blank line and the body.

    :param method: upper case.
    :param target: the request target, already percent-encoded.
    :param fields: the field lines (see :func:`field_block`), without
        ``Content-Length`` or ``Transfer-Encoding`` (see :func:`check_framing`).
    :param body: the body, or ``None``.
    """
    if body is not None:
        length = f"Content-Length: {len(body)}\r\n"
    elif method in _METHODS_EXPECTING_BODY:
        length = "Content-Length: 0\r\n"
    else:
        length = ""
    head = f"{method} {target} HTTP/1.1\r\n{fields}{length}\r\n".encode("latin-1")
    return head + body if body else head


def check_framing(fields: Mapping[str, str], body: Optional[bytes],
                  who: str = "headers") -> Dict[str, str]:
    """Refuse framing fields that disagree with the body; return the fields
    without them, for :func:`request_bytes` writes the framing itself.

    napixclient frames every body with ``Content-Length`` (RFC 9112, section
    6.2). A caller's ``Content-Length`` that says another length, or a
    ``Transfer-Encoding`` (napixclient never sends a chunked body), would make
    the server read the body differently, and read a second request out of
    it (request smuggling): h11 refuses the same; requests recomputes it.

    :param fields: the request's fields (a mapping of ``str``).
    :param body: the body (``bytes``) or ``None``.
    :param who: how messages name where the fields came from.
    :returns: a new ``dict``, without ``Content-Length`` and
        ``Transfer-Encoding``.
    :raises ValueError: for a ``Content-Length`` other than the body's length
        (``0`` for no body), given twice, or a ``Transfer-Encoding``.
    """
    kept: Dict[str, str] = {}
    length = 0 if body is None else len(body)
    lengths = 0
    for name, value in fields.items():
        lower = name.lower()
        if lower == "content-length":
            lengths += 1
            text = value.strip() if isinstance(value, str) else ""
            if lengths > 1 or not (text.isascii() and text.isdigit()) or int(text) != length:
                raise ValueError(f"{who}: Content-Length does not match the body ({length} "
                                 "bytes); napixclient writes it, leave it out")
        elif lower == "transfer-encoding":
            raise ValueError(f"{who}: Transfer-Encoding is not sent by napixclient, which "
                             "frames every body with Content-Length; leave it out")
        else:
            kept[name] = value
    return kept


def absolute_form(data: bytes, scheme: str, authority: str,
                  proxy_authorization: Optional[str] = None) -> bytes:
    """``data`` with its request target in absolute form, and the
    ``Proxy-Authorization`` field after the request line when given: the
    request as a proxy that forwards it reads it (RFC 9112, section 3.2.2).
    The rest is sent as it is: ``Host`` and a signature stay the origin's,
    over the origin-form path.

    :param data: the request's bytes, its target in origin form.
    :param scheme: the origin's scheme (``"http"``).
    :param authority: the origin's ``host[:port]``.
    :param proxy_authorization: the field's value, or ``None``.
    """
    space = data.index(b" ") + 1
    end = data.index(b"\r\n") + 2
    line = data[:space] + f"{scheme}://{authority}".encode("ascii") + data[space:end]
    if proxy_authorization is not None:
        line += f"Proxy-Authorization: {proxy_authorization}\r\n".encode("ascii")
    return line + data[end:]
