"""The one place secrets are masked.

Whatever napixclient shows a person (the ``napix`` command's output, its
error messages, its log lines) passes through these functions first, so that
a key, a token or a signature never reaches a terminal, a log file or a
bug report. Each one takes text and returns it with the secret parts
replaced by :data:`MASK`; none of them raises on ordinary text.

* :func:`redact_secrets` masks known secret values (a key, a token), also in
  the percent-encoded forms a server may echo them in (a token
  ``root:9664ab...`` comes back as ``root%3A9664ab...`` in a URL);
* :func:`redact_signatures` masks every HMAC-SHA256 signature (64
  hexadecimal digits, PROTOCOL.md section 1), whose key is unknown to the
  caller: for log lines, where a masked checksum costs less than a leaked
  signature.

This module imports nothing from napixclient: it is at the bottom of the
layers (DESIGN.md, "Shape of the code"), usable from every other one.
"""

from __future__ import annotations

import re
from typing import Iterable, List
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "redact_secrets", "redact_signatures"]

#: What a masked secret reads as.
MASK = "***"

# Exactly 64 hexadecimal digits, not part of a longer run of them.
_SIGNATURE = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{64}(?![0-9A-Fa-f])")
_ESCAPE = re.compile(r"%[0-9A-F]{2}")


def _forms(secret: str) -> List[str]:
    """``secret`` and its percent-encoded forms: every character but
    unreserved ones escaped (``quote(safe="")``), ``/`` kept
    (``quote``'s default), and spaces as ``+`` (``quote_plus``, form
    encoding); each with its escapes in upper and lower case (RFC 3986,
    section 2.1, makes them equivalent)."""
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}
    forms |= {_ESCAPE.sub(lambda escape: escape.group(0).lower(), form) for form in forms}
    return list(forms)


def redact_secrets(text: str, secrets: Iterable[str]) -> str:
    """Return ``text`` with every occurrence of each secret value, and of its
    percent-encoded forms, replaced by :data:`MASK`.

    The encoded forms are those :func:`urllib.parse.quote` (with
    ``safe=""`` and with its default ``safe="/"``) and
    :func:`urllib.parse.quote_plus` give, with upper- or lower-case escapes:
    a token ``root:9664ab`` is masked as written and as ``root%3A9664ab``.
    Longer values are replaced first, so that a secret holding another one
    is masked whole. Empty secrets are ignored.

    :param text: the text to show (``str``).
    :param secrets: the secret values (an iterable of ``str``).
    :returns: the masked text (``str``); ``text`` itself when no secret is
        in it.
    :raises TypeError: if ``text`` or a secret is not a ``str``.

    >>> from napixclient.redact import redact_secrets
    >>> redact_secrets("GET /x?token=root%3A9664ab", ["root:9664ab"])
    'GET /x?token=***'
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    forms = set()
    for secret in secrets:
        if not isinstance(secret, str):
            raise TypeError(f"a secret must be a str, got {type(secret).__name__}")
        if secret:
            forms.update(_forms(secret))
    if not forms:
        return text
    # One pass over the text; at each position the longest form matches
    # first, since alternatives are tried in order.
    pattern = "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
    return re.sub(pattern, MASK, text)


def redact_signatures(text: str) -> str:
    """Return ``text`` with every run of exactly 64 hexadecimal digits (an
    HMAC-SHA256 signature, PROTOCOL.md section 1) replaced by :data:`MASK`.

    A longer run of hexadecimal digits is left alone: it is not a
    signature. Meant for log lines, where a SHA-256 checksum that happens to
    be shown is masked too.

    :param text: the text to show (``str``).
    :returns: the masked text (``str``).
    :raises TypeError: if ``text`` is not a ``str``.

    >>> from napixclient.redact import redact_signatures
    >>> redact_signatures("Authorization: login=ops:" + "ab" * 32)
    'Authorization: login=ops:***'
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _SIGNATURE.sub(MASK, text)
