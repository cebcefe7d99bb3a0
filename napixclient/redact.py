"""The one place secrets are masked.

Whatever napixclient shows a person (the ``napix`` command's output, its
error messages, its log lines) passes through these functions first, so that
a key, a token or a signature never reaches a terminal, a log file or a
bug report. Each one takes text and returns it with the secret parts
replaced by :data:`MASK`; none of them raises on ordinary text.

* :func:`redact_secrets` masks known secret values (a key, a token), also in
  the percent-encoded forms a server may echo them in (a token
  ``root:9664ab...`` comes back as ``root%3A9664ab...`` in a URL);
* :func:`redact_parameters` masks the values of named query parameters in
  a URL or a request target;
* :func:`register_secret_parameters` declares query parameters (a token's)
  whose values :func:`redact_secret_parameters` and the
  :class:`SecretParameterFilter` on urllib3's loggers mask wherever they
  appear;
* :func:`redact_document` masks them in every string of decoded JSON
  data (a far side's error document, which may echo the request target);
* :func:`redact_url_credentials` masks the credentials of every URL in a
  text (``http://user:password@proxy:3128`` reads
  ``http://***@proxy:3128``): a proxy's, above all;
* :func:`redact_signatures` masks every HMAC-SHA256 signature (64
  hexadecimal digits, PROTOCOL.md section 1), whose key is unknown to the
  caller: for log lines, where a masked checksum costs less than a leaked
  signature.

This module imports nothing from napixclient: it is at the bottom of the
layers (DESIGN.md, "Shape of the code"), usable from every other one.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, FrozenSet, Iterable, List, Optional
from urllib.parse import quote, quote_plus

__all__ = [
    "MASK",
    "URLLIB3_LOGGERS",
    "SecretParameterFilter",
    "redact_document",
    "redact_parameters",
    "redact_secret_parameters",
    "redact_secrets",
    "redact_signatures",
    "redact_url_credentials",
    "register_secret_parameters",
]

#: What a masked secret reads as.
MASK = "***"

# Exactly 64 hexadecimal digits, not part of a longer run of them.
_SIGNATURE = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{64}(?![0-9A-Fa-f])")
_ESCAPE = re.compile(r"%[0-9A-F]{2}")
# Where a URL's text ends, for the masking of its credentials: white space
# only. A password may hold "@", "#", "/", "?", quotes... (raw, in a
# malformed URL): stopping at any of them would show what follows.
_URL_END = re.compile(r"\s")


def _forms(secret: str) -> List[str]:
    """``secret`` and its percent-encoded forms: every character but
    unreserved ones escaped (``quote(safe="")``), ``/`` kept
    (``quote``'s default), and spaces as ``+`` (``quote_plus``, form
    encoding); each with its escapes in upper and lower case (RFC 3986,
    section 2.1, makes them equivalent)."""
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}
    forms |= {_ESCAPE.sub(lambda escape: escape.group(0).lower(), form) for form in forms}
    return list(forms)


def redact_secrets(text: str, secrets: Iterable[str], *, whole_words: bool = False) -> str:
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
    :param whole_words: mask a value only where it is not part of a longer
        word: where it begins with a letter, digit or ``_``, not right after
        another one, and where it ends with one, not right before another
        (``bool``, keyword only). For text whose own words matter, such as
        log lines: a key ``k`` is masked in ``key=k``, not in ``ok``.
    :returns: the masked text (``str``); ``text`` itself when no secret is
        in it.
    :raises TypeError: if ``text`` or a secret is not a ``str``.

    >>> from napixclient.redact import redact_secrets
    >>> redact_secrets("GET /x?token=root%3A9664ab", ["root:9664ab"])
    'GET /x?token=***'
    >>> redact_secrets("key=k: ok", ["k"], whole_words=True)
    'key=***: ok'
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
    ordered = sorted(forms, key=len, reverse=True)
    if whole_words:
        pattern = "|".join(_whole_word(form) for form in ordered)
    else:
        pattern = "|".join(re.escape(form) for form in ordered)
    return re.sub(pattern, MASK, text)


def _whole_word(form: str) -> str:
    """A pattern matching ``form`` where it is not part of a longer word."""
    before = r"(?<!\w)" if re.match(r"\w", form[0]) else ""
    after = r"(?!\w)" if re.match(r"\w", form[-1]) else ""
    return f"{before}{re.escape(form)}{after}"


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


def redact_url_credentials(text: str) -> str:
    """Return ``text`` with the user information (``user:password@``) of
    every URL in it replaced by ``***@``: ``http://***@proxy:3128``.

    Whatever stands between a ``://`` and the last ``@`` before the next
    white space is masked. A password may hold a raw ``@``, ``#``, ``/``,
    ``?`` or quote (a malformed URL, which is when it gets shown in an error
    message): it is masked whole, and so is anything up to the last ``@`` of
    the same word (an address in a URL's path or query), which costs some
    text but never shows a secret. The work is linear in the text's length.

    :param text: the text to show (``str``): a URL, a message, a log line.
    :returns: the masked text (``str``).
    :raises TypeError: if ``text`` is not a ``str``.

    >>> from napixclient.redact import redact_url_credentials
    >>> redact_url_credentials("proxy http://ops:s3cr@t#1/x?@127.0.0.1:3128 refused")
    'proxy http://***@127.0.0.1:3128 refused'
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if "@" not in text or "://" not in text:
        return text
    pieces: List[str] = []
    done = 0  # text[:done] is in pieces
    start = text.find("://")
    while start >= 0:
        userinfo = start + 3
        found = _URL_END.search(text, userinfo)
        end = found.start() if found else len(text)
        at = text.rfind("@", userinfo, end)
        if at >= 0:
            pieces += [text[done:userinfo], MASK]
            done = at
        # Another "://" before the end of this word is masked already, or
        # holds no credentials (no "@" after it).
        start = text.find("://", end)
    pieces.append(text[done:])
    return "".join(pieces)


def redact_parameters(text: str, names: Iterable[str]) -> str:
    """Return ``text`` (a URL, a request target, or a log line holding one)
    with the values of the query parameters ``names`` replaced by
    :data:`MASK`; a name matches written plainly or form-encoded, after
    ``?``, ``&`` or ``;`` only (``mytoken=`` is not ``token=``).

    :param text: ``"/path?a=1&token=x"``, ``"GET http://h/p?token=x HTTP/1.1"``...
    :param names: parameter names (``str``), decoded.
    :returns: the masked text (``str``).

    >>> from napixclient.redact import redact_parameters
    >>> redact_parameters("/x?a=1&token=root%3Aab", ["token"])
    '/x?a=1&token=***'
    """
    wanted = [name for name in names if name]
    if not wanted or "=" not in text:
        return text
    return _compile(wanted).sub(rf"\1{MASK}", text)


# -- secrets in urllib3's log records ------------------------------------------
#
# urllib3 logs the request target with its query string: the connection pool
# at DEBUG for every answer, and when it retries; Retry at DEBUG; the
# connection when headers do not parse. A token sent as a query parameter
# (TokenIdentifier) would be written to any log handler set to DEBUG. A
# logger's filter is consulted only for the records logged on that very
# logger (not those propagating from children), so one filter is attached to
# each urllib3 logger that can print a URL. It rewrites only the values of
# secret query parameters, to "***", leaving the rest of the line for
# debugging. Nothing is patched: logging.Logger.addFilter is the documented
# hook, and filters may change the records they pass.
#
# The filter also replaces each record's format arguments by the formatted
# text: urllib3 passes the exception of a failed attempt as an argument, and
# a handler that keeps records (pytest's capture, a memory handler, an error
# tracker's breadcrumbs) would otherwise keep its traceback, and with it the
# connection and buffers of every retried request.

#: The urllib3 loggers that print URLs, or could.
URLLIB3_LOGGERS = (
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
)

_secret_lock = threading.Lock()
# "token" is the Napix protocol's default parameter (PROTOCOL.md, section 2).
_secret_names: FrozenSet[str] = frozenset(["token"])
_secret_pattern: Optional[re.Pattern[str]] = None


def _compile(names: Iterable[str]) -> re.Pattern[str]:
    spelled = {quote_plus(name) for name in names} | set(names)
    alternatives = "|".join(re.escape(name) for name in sorted(spelled, key=len, reverse=True))
    # A name counts after "?", "&" or ";" only, so "mytoken=" is left alone;
    # a value ends where a URL-encoded value must (quotes, spaces and the
    # backquotes napixd puts around a path it echoes are percent-encoded in
    # it).
    return re.compile(rf"([?&;](?:{alternatives})=)[^&;#\s'\"<>`]*")


def register_secret_parameters(names: Iterable[str]) -> None:
    """Declare query parameters whose values never appear in urllib3's log
    records, and attach :class:`SecretParameterFilter` to urllib3's loggers.

    :class:`~napixclient.Client` registers an authenticator's
    ``secret_parameters`` and every parameter an authenticator adds to a
    URL. Names are only added, never removed; ``token`` is always there.
    Registering known names costs a set comparison.

    :param names: parameter names (``str``), as they appear decoded.
    """
    global _secret_names, _secret_pattern
    wanted = frozenset(names)
    if _secret_pattern is not None and wanted <= _secret_names:
        return
    with _secret_lock:
        merged = _secret_names | wanted
        _secret_pattern = _compile(merged)
        _secret_names = merged
        for name in URLLIB3_LOGGERS:
            logging.getLogger(name).addFilter(_SECRET_FILTER)  # a no-op when present


# The pattern of the names known before any registration ("token").
_DEFAULT_PATTERN = _compile(_secret_names)


def redact_secret_parameters(text: str) -> str:
    """Return ``text`` with the value of every registered secret query
    parameter replaced by ``***`` (see :func:`register_secret_parameters`)."""
    pattern = _secret_pattern or _DEFAULT_PATTERN
    return pattern.sub(r"\1***", text)


def redact_document(value: Any) -> Any:
    """Return ``value`` (decoded JSON data: an error document, a text) with
    the value of every registered secret query parameter replaced by
    ``***`` in each of its strings, keys included (see
    :func:`redact_secret_parameters`): a server that echoes the request
    target in its error (``"`/x?token=root%3A9664ab` not found"``) shows
    no token.

    ``dict``, ``list`` and ``tuple`` are copied (a ``tuple`` as a
    ``list``), whatever their depth, without recursion; a container that
    holds no secret is still copied. Other values (numbers, ``None``...)
    are returned as they are. Never raises for decoded JSON data.

    :param value: a ``str``, or JSON data (``dict``, ``list``...).
    :returns: the masked copy, or ``value`` itself when it is neither a
        ``str`` nor a container.

    >>> from napixclient.redact import redact_document
    >>> redact_document({"error_text": "`/x?token=root%3Aab` not found", "line": 3})
    {'error_text': '`/x?token=***` not found', 'line': 3}
    """
    pattern = _secret_pattern or _DEFAULT_PATTERN

    def masked(item: Any) -> Any:
        return pattern.sub(r"\1***", item) if type(item) is str and "=" in item else item

    if not isinstance(value, (dict, list, tuple)):
        return masked(value)
    root: Any = {} if isinstance(value, dict) else []
    # (a container to copy, the empty copy to fill); each is visited once.
    todo = [(value, root)]
    while todo:
        source, copy = todo.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, item in items:
            if isinstance(item, (dict, list, tuple)):
                child: Any = {} if isinstance(item, dict) else []
                todo.append((item, child))
                item = child
            else:
                item = masked(item)
            if isinstance(copy, dict):
                copy[masked(key)] = item
            else:
                copy.append(item)
    return root


class SecretParameterFilter(logging.Filter):
    """A :class:`logging.Filter` that lets every record through, with the
    values of secret query parameters replaced by ``***`` in its message and
    its formatted traceback.

    Each record is rewritten as its formatted (and redacted) message, with
    no ``args``, so it keeps no reference to the objects urllib3 logged (an
    exception and its traceback). Formatting here rather than in the handler
    costs nothing more; and nothing at all unless urllib3 logging is enabled
    at the record's level.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; always return ``True``."""
        if record.args:
            try:
                message = record.getMessage()
            except Exception:  # a malformed record: logging itself reports it
                return True
            record.args = None
        else:
            message = str(record.msg)
        record.msg = redact_secret_parameters(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_secret_parameters(
                logging.Formatter().formatException(record.exc_info))
        return True


_SECRET_FILTER = SecretParameterFilter()
