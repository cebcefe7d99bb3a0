"""The Napix error document, read and written (PROTOCOL.md, section 3).

A Napix server that fails answers with a JSON document that may nest the
document of another server it called: :func:`read_chain` reads the nested
documents hop by hop into a :class:`Chain` of :class:`Hop` records, and
:func:`write_document` writes the document a server relaying a failed call
answers with (what :class:`~napixclient.wsgi.ExceptionsCatcher` sends).

This module is made of values only: it holds no I/O and imports nothing of
napixclient above :mod:`napixclient.response`.
:attr:`HTTPError.chain <napixclient.HTTPError.chain>` is the usual way in.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from http import HTTPStatus
from typing import (
    Any,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Set,
    Tuple,
)

from napixclient.redact import redact_document, redact_secret_parameters

__all__ = [
    "DOCUMENT_KEYS",
    "MAX_FIELDS",
    "MAX_HOPS",
    "MAX_TEXT",
    "NO_FIELD",
    "Chain",
    "Hop",
    "printable",
    "read_chain",
    "split_status_text",
    "status_of",
    "text_of",
    "write_document",
]

#: The most hops :func:`read_chain` reads; a longer chain is cut there.
MAX_HOPS = 32
#: The most characters kept of one hop's call, class or text.
MAX_TEXT = 2000
#: The most fields a validation document may have to be read as one
#: (:func:`read_chain`); a larger object is not read as a validation document.
MAX_FIELDS = 64
#: The keys of a Napix error document; an object holding any of them is not
#: a validation document.
DOCUMENT_KEYS = frozenset({
    "error_class", "error_text", "request", "remote_call", "remote_error",
    "remote_status", "traceback", "filename", "line", "trace_id", "span_id",
})
#: The key napixd gives a validation message tied to no field.
NO_FIELD = "_napix_"
#: The most bytes of a ``bytes`` value decoded for a text.
_MAX_BYTES = 4 * MAX_TEXT
#: How far a value of the wrong type is rendered: levels, items per level,
#: characters of a str, bytes of a bytes.
_SHOW_LEVELS = 3
_SHOW_ITEMS = 8
_SHOW_CHARS = 200
_SHOW_BYTES = 64

# A W3C Trace Context trace id (32) and span id (16): lower-case hex, not
# all zeros (https://www.w3.org/TR/trace-context/, section 3.2.2.3 and 4).
_TRACE_ID = re.compile(r"(?!0{32})[0-9a-f]{32}", re.ASCII)
_SPAN_ID = re.compile(r"(?!0{16})[0-9a-f]{16}", re.ASCII)

# "404 Not Found: `10` not found", as HTTPError.from_response writes
# remote_error for a text body. ASCII digits only: \d would take any digit.
_STATUS_PREFIX = re.compile(r"([1-5][0-9][0-9])(?: [^:\n]{0,80})?: ", re.ASCII)
# "404 Not Found" alone, as napixd relays a failed call's status line: read
# as a status only when the reason is that status's own phrase (_REASONS).
_STATUS_LINE = re.compile(r"([1-5][0-9][0-9]) ([A-Za-z][A-Za-z' -]{0,60})", re.ASCII)


def _reasons() -> Dict[int, FrozenSet[str]]:
    """The reason phrases of each status, lower case: Python's (RFC 9110)
    and the names RFC 7231 and RFC 2616 gave the few that changed since,
    whatever the Python version."""
    reasons: Dict[int, Set[str]] = {}
    for known in HTTPStatus:
        reasons.setdefault(known.value, set()).add(known.phrase.lower())
    for status, phrase in [
        (413, "content too large"), (413, "payload too large"),
        (413, "request entity too large"), (414, "uri too long"),
        (414, "request-uri too long"), (416, "range not satisfiable"),
        (416, "requested range not satisfiable"), (422, "unprocessable content"),
        (422, "unprocessable entity"),
    ]:
        reasons.setdefault(status, set()).add(phrase)
    return {status: frozenset(phrases) for status, phrases in reasons.items()}


_REASONS = _reasons()
# What would break a line in a log or drive a terminal: C0 and C1 controls,
# DEL, Unicode line and paragraph separators, and lone surrogates (which
# cannot even be printed to a UTF-8 stream). Format characters (Unicode
# category Cf: bidi overrides and isolates, zero-width characters...) are
# escaped too, by _escape_format: a U+202E reverses what a reader sees.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    """``\\n``, ``\\x1b``, ``\\u202e``, ``\\U000e0001``: how ``char`` is shown."""
    code = ord(char)
    if char in _ESCAPES:
        return _ESCAPES[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _escape(match: "re.Match[str]") -> str:
    return _escaped(match.group())


def _escape_format(text: str) -> str:
    """``text`` with its format characters (Unicode category ``Cf``)
    escaped. Each distinct character is looked up once, so the cost is one
    pass over the text plus one look-up per distinct non-ASCII character."""
    if text.isascii():
        return text
    table = {ord(char): _escaped(char) for char in set(text)
             if char > "\x7f" and unicodedata.category(char) == "Cf"}
    return text.translate(table) if table else text


def printable(text: str, keep_newlines: bool = False) -> str:
    """``text`` (a ``str``) with control characters, format characters
    (``Cf``: bidi controls such as U+202E, zero-width characters) and lone
    surrogates escaped (``\\n``, ``\\x1b``, ``\\u202e``, ``\\ud800``), safe
    to show on a terminal; newlines are kept when ``keep_newlines`` is true.
    Raises :class:`TypeError` when ``text`` is not a ``str``."""
    if keep_newlines:
        return "\n".join(_escape_format(_UNPRINTABLE.sub(_escape, line))
                         for line in text.split("\n"))
    return _escape_format(_UNPRINTABLE.sub(_escape, text))


def _clip_str(text: str, start: int = 0) -> str:
    """``text[start:]`` cut to :data:`MAX_TEXT` characters, saying how many
    were left out; copies at most that many characters."""
    rest = len(text) - start - MAX_TEXT
    if rest > 0:
        return f"{text[start:start + MAX_TEXT]}... ({rest} more characters)"
    return text[start:] if start else text


def _show(value: Any, level: int = 0) -> str:
    """A short rendering of a value that should have been a text: bounded in
    depth (:data:`_SHOW_LEVELS`) and breadth (:data:`_SHOW_ITEMS`), so its
    cost does not depend on the value's size. Recursion is at most
    :data:`_SHOW_LEVELS` deep."""
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        # repr() of an int of thousands of digits raises ValueError (3.11+)
        # and takes quadratic time before.
        return repr(value) if value.bit_length() <= 64 else f"<int of {value.bit_length()} bits>"
    if isinstance(value, str):
        return repr(value[:_SHOW_CHARS]) + ("..." if len(value) > _SHOW_CHARS else "")
    if isinstance(value, (bytes, bytearray)):
        return repr(bytes(value[:_SHOW_BYTES])) + ("..." if len(value) > _SHOW_BYTES else "")
    if isinstance(value, (list, tuple, dict)):
        brackets = "{}" if isinstance(value, dict) else "()" if isinstance(value, tuple) else "[]"
        opening, closing = brackets[0], brackets[1]
        if level >= _SHOW_LEVELS:
            return f"{opening}...{closing}" if value else f"{opening}{closing}"
        if isinstance(value, dict):
            items: Iterable[str] = (
                f"{_show(key, level + 1)}: {_show(item, level + 1)}"
                for key, item in itertools.islice(value.items(), _SHOW_ITEMS)
            )
        else:
            items = (_show(item, level + 1) for item in itertools.islice(value, _SHOW_ITEMS))
        more = ", ..." if len(value) > _SHOW_ITEMS else ""
        return f"{opening}{', '.join(items)}{more}{closing}"
    return f"<{type(value).__name__}>"


def text_of(value: Any) -> Optional[str]:
    """The text of ``value`` (any object: a field that should be a string,
    as a document from the far side holds it), kept to at most
    :data:`MAX_TEXT` characters, the values of secret query parameters
    masked (:func:`~napixclient.redact.redact_secret_parameters`: a server
    may echo the request target, token included); ``None`` for ``None``.
    Never raises."""
    try:
        if value is None:
            return None
        if isinstance(value, str):
            return redact_secret_parameters(_clip_str(str.__str__(value)))
        if isinstance(value, (bytes, bytearray)):
            text = bytes(value[:_MAX_BYTES]).decode("utf-8", errors="replace")
            clipped = _clip_str(text)
            if len(value) > _MAX_BYTES:
                clipped += f" ({len(value) - _MAX_BYTES} more bytes)"
            return redact_secret_parameters(clipped)
        return redact_secret_parameters(_clip_str(_show(value)))
    except Exception:
        return f"<unreadable {type(value).__name__}>"


def status_of(value: Any) -> Optional[int]:
    """``value`` when it is an HTTP status (an ``int``, not a ``bool``,
    from 100 to 599), else ``None``. Never raises."""
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    return None


def _id_of(value: Any, pattern: "re.Pattern[str]") -> Optional[str]:
    """``value`` when it is a valid trace or span id (``pattern``), else
    ``None``: a hostile document cannot put anything else in a hop."""
    if isinstance(value, str) and pattern.fullmatch(value):
        return str.__str__(value)
    return None


def _field_messages(document: Dict[Any, Any]) -> Optional[str]:
    """The text of a validation document, or ``None`` when ``document`` is
    not one (see :func:`read_chain`): ``"size: Bad type; id is world"``,
    cut to :data:`MAX_TEXT` characters. Its work is bounded by
    :data:`MAX_FIELDS` and :data:`MAX_TEXT`, whatever the document's size."""
    if not 0 < len(document) <= MAX_FIELDS or not DOCUMENT_KEYS.isdisjoint(document):
        return None
    parts: List[str] = []
    full = 0  # the length of the whole text, before any cut
    for field, message in document.items():
        if type(field) is not str or type(message) is not str:
            return None
        prefix = "" if field in ("", NO_FIELD) else f"{field}: "
        full += (2 if parts else 0) + len(prefix) + len(message)
        parts.append(prefix + message[:MAX_TEXT])
    text = "; ".join(parts)
    if full > MAX_TEXT:
        return f"{text[:MAX_TEXT]}... ({full - MAX_TEXT} more characters)"
    return text


def split_status_text(text: str) -> Tuple[Optional[int], str]:
    """Split a ``remote_error`` text into its status and the far side's text.

    napixclient writes the error of a text answer as ``"<status> <reason>:
    <text>"`` (:meth:`HTTPError.from_response
    <napixclient.HTTPError.from_response>`), so a server relaying it
    passes that on: ``"404 Not Found: `10` not found"`` -> ``(404, "`10` not
    found")``. napixd relays a bare status line: ``"404 Not Found"`` ->
    ``(404, "Not Found")``, read so only when the reason is the standard
    phrase of that status (RFC 9110, or its older name in RFC 7231 or RFC
    2616; any case). A text in neither form comes back whole, with ``None``.

    :param text: the ``remote_error`` text (``str``).
    :returns: ``(status or None, text)``, the text clipped to
        :data:`MAX_TEXT` characters.
    """
    match = _STATUS_PREFIX.match(text[:100])
    if match:
        return int(match.group(1)), _clip_str(text, match.end())
    line = _STATUS_LINE.fullmatch(text) if len(text) <= 64 else None
    if line and line.group(2).lower() in _REASONS.get(int(line.group(1)), ()):
        return int(line.group(1)), line.group(2)
    return None, _clip_str(text)


class _HopFields(NamedTuple):
    # The four fields a Hop is a tuple of; see Hop.
    call: Optional[str]
    status: Optional[int]
    error_class: Optional[str]
    error_text: Optional[str]


class Hop(_HopFields):
    """One server on the way from a call to the root cause of its failure: a
    named tuple of four fields, ``(call, status, error_class, error_text)``,
    with two more attributes beside them, ``trace_id`` and ``span_id``.

    :ivar call: ``"METHOD URL"`` of the call made at this hop, or ``None``
        where the document does not say.
    :ivar status: the status that call got (``int``), or ``None`` when unknown
        or when no answer came.
    :ivar error_class: the class of the error at this hop (``"HTTPError"``,
        ``"ValueError"``...), or ``None``.
    :ivar error_text: what the hop said, or ``None``.
    :ivar trace_id: the OpenTelemetry trace id the server answering this
        hop's call wrote in its document (``trace_id``: 32 lower-case hex
        digits, W3C Trace Context), or ``None``: look the hop up in your
        tracing backend with it (see :doc:`/tracing`).
    :ivar span_id: the span id written with it (16 lower-case hex digits),
        or ``None``.

    ``Hop(call, status, error_class, error_text, trace_id=None,
    span_id=None)`` builds one. The trace ids are attributes, not items of
    the tuple, so code written when a hop had four fields keeps working: it
    unpacks into four names (``call, status, cls, text = hop``), has
    ``len(hop) == 4``, and compares equal to the tuple of its four fields
    (``hop == ("GET http://b/y", 404, None, "`10` not found")``); two hops
    that differ only in their trace ids compare equal. ``_replace`` and
    pickling keep the trace ids; ``_asdict()`` has the four fields. Every
    text field is at most :data:`MAX_TEXT` characters (plus a note of how
    many were left out), and holds what the far side sent, control
    characters included: ``str(hop)`` escapes them.
    """

    # Class-wide defaults: a hop built without trace ids stores none.
    trace_id: Optional[str] = None
    span_id: Optional[str] = None

    def __new__(cls, call: Optional[str], status: Optional[int],
                error_class: Optional[str], error_text: Optional[str],
                trace_id: Optional[str] = None, span_id: Optional[str] = None) -> "Hop":
        hop = super().__new__(cls, call, status, error_class, error_text)
        if trace_id is not None:
            hop.trace_id = trace_id
        if span_id is not None:
            hop.span_id = span_id
        return hop

    def _replace(self, **changes: Any) -> "Hop":
        """A copy of the hop with ``changes`` (any of the four fields,
        ``trace_id``, ``span_id``), like a named tuple's ``_replace``.

        :raises ValueError: for a name that is not one of those.
        """
        trace_id = changes.pop("trace_id", self.trace_id)
        span_id = changes.pop("span_id", self.span_id)
        fields = super()._replace(**changes)
        return type(self)(*fields, trace_id, span_id)

    def __reduce__(self) -> Any:
        # Four arguments when there is no trace id, so that the pickle of such
        # a hop loads in every version of napixclient.
        ids = () if self.trace_id is None and self.span_id is None \
            else (self.trace_id, self.span_id)
        return (type(self), (*self, *ids))

    def __repr__(self) -> str:
        shown = super().__repr__()
        if self.trace_id is None and self.span_id is None:
            return shown
        return f"{shown[:-1]}, trace_id={self.trace_id!r}, span_id={self.span_id!r})"

    def __str__(self) -> str:
        """``"GET http://b/y -> 404 (NotFound)"``, on one line."""
        parts = []
        if self.call:
            parts.append(printable(self.call))
        if self.status is not None or self.error_class:
            if self.status is None:
                parts.append(printable(str(self.error_class)))
            elif self.error_class:
                parts.append(f"{self.status} ({printable(self.error_class)})")
            else:
                parts.append(str(self.status))
        return " -> ".join(parts) if parts else "?"


class Chain(List[Hop]):
    """The hops of a failed call, hop 0 first (a ``list`` of :class:`Hop`).

    :ivar truncated: ``True`` when the documents went on past
        :data:`MAX_HOPS` hops and the rest was not read; the last hop is
        then not the root cause.
    """

    truncated: bool = False


def read_chain(call: Optional[str], status: Optional[int], remote_error: Any) -> Chain:
    """Read the hops of a failed call, from the call itself to the root cause
    (PROTOCOL.md, "Reading the chain").

    Hop 0 is ``call`` with ``status``. While the error document is a ``dict``
    with a ``str`` ``remote_call`` and a ``remote_error``, the next hop is
    that call, and the reading goes on with the nested ``remote_error``: a
    document again, or a text, whose ``"<status> <reason>: "`` prefix (or
    which is a bare status line, ``"404 Not Found"``) gives the hop's status
    (:func:`split_status_text`). A ``remote_call`` is taken as written, with
    or without a scheme (napixd writes ``"GET 127.0.0.1:8002/x"``); a hop
    whose document gives no status has ``None``. A document's optional
    ``remote_status`` (a napixclient extension) gives the status too. The
    last hop carries the root cause: its ``error_class`` and ``error_text``,
    or its text. A hop read from a document with a valid ``trace_id`` (and
    ``span_id``), as :class:`~napixclient.wsgi.ExceptionsCatcher` writes
    with OpenTelemetry, carries them; an invalid one is ignored.

    A *validation document*, napixd's answer to a request it refused (400,
    ``{"size": "Bad type: ..."}``), is read as the text of its hop. It is a
    ``dict`` of 1 to :data:`MAX_FIELDS` fields, every key and every value a
    ``str``, none of the keys in :data:`DOCUMENT_KEYS`. Its text is each
    field as ``"<key>: <message>"`` (the message alone for the key
    :data:`NO_FIELD`, ``"_napix_"``, or an empty key), joined with ``"; "``
    in the document's order: ``{"_napix_": "id is world"}`` reads as
    ``id is world``. Any other ``dict`` is read as an error document, as
    described above.

    A document of the wrong shape ends the chain where it stops making
    sense: an ``error_class`` that is not a ``str`` is dropped, an
    ``error_text`` or a ``remote_error`` of another type is shown in a short
    rendering, extra keys (``traceback``, ``filename``, ``line``,
    ``request``) are ignored. Reading is iterative and bounded: at most
    :data:`MAX_HOPS` hops (then :attr:`Chain.truncated` is set), at most
    :data:`MAX_TEXT` characters a field, and work independent of the size
    of the document. It never raises.

    :param call: ``"METHOD URL"`` of the call made here, or ``None``.
    :param status: the status it got, or ``None``.
    :param remote_error: the decoded error document (``dict``), a text
        (``str``, taken whole: its status is ``status``), ``bytes``, or
        ``None``.
    :returns: a non-empty :class:`Chain`.
    """
    hops = Chain()
    try:
        _read(hops, call, status, remote_error)
    except Exception:
        # Not reachable with data decoded from JSON; a reader of errors must
        # not itself fail, whatever was put in remote_error.
        if not hops:
            hops.append(Hop(text_of(call), status_of(status), None, None))
    return hops


def _read(hops: Chain, call: Any, status: Any, document: Any) -> None:
    status = status_of(status)
    while True:
        if not isinstance(document, dict):
            hops.append(Hop(text_of(call), status, None, text_of(document)))
            return
        fields = _field_messages(document)
        if fields is not None:
            hops.append(Hop(text_of(call), status, None, fields))
            return
        error_class = document.get("error_class")
        hops.append(Hop(
            text_of(call),
            status,
            text_of(error_class) if isinstance(error_class, str) else None,
            text_of(document.get("error_text")),
            _id_of(document.get("trace_id"), _TRACE_ID),
            _id_of(document.get("span_id"), _SPAN_ID),
        ))
        next_call = document.get("remote_call")
        if not isinstance(next_call, str) or "remote_error" not in document:
            return
        if len(hops) >= MAX_HOPS:
            hops.truncated = True
            return
        status = status_of(document.get("remote_status"))
        call, document = next_call, document["remote_error"]
        if isinstance(document, str):
            text_status, text = split_status_text(document)
            hops.append(Hop(text_of(call), text_status if status is None else status,
                            None, text))
            return


def write_document(
    error_class: str,
    error_text: str,
    request: Optional[Mapping[str, str]] = None,
    *,
    remote_call: Any = None,
    remote_error: Any = None,
    remote_status: Optional[int] = None,
    trace_id: Optional[str] = None,
    span_id: Optional[str] = None,
) -> Dict[str, Any]:
    """The Napix error document of a server whose handler failed
    (PROTOCOL.md, section 3, and "Writing the chain").

    :param error_class: the name of the exception's class (``str``).
    :param error_text: what the exception says (``str``), already cut to
        the length the server wants; the values of secret query parameters
        (:func:`~napixclient.redact.redact_secret_parameters`) are masked
        in it.
    :param request: ``{"method": ..., "path": ...}`` of the request that
        failed, or ``None`` to leave ``request`` out. Never put the query
        string or headers there: they may carry credentials.
    :param remote_call: ``"METHOD URL"`` of the failed call to another
        server that made this one fail, credentials already redacted
        (:attr:`HTTPError.remote_call <napixclient.HTTPError.remote_call>`),
        or ``None`` when the failure was not a failed call. It is cut to
        :data:`MAX_TEXT` characters (a value that is not a ``str`` is
        written in a short rendering), secret query parameters masked.
    :param remote_error: what the other server said, as received (its
        decoded document, or its text), the values of secret query
        parameters masked in a copy
        (:func:`~napixclient.redact.redact_document`); written only with
        ``remote_call``.
    :param remote_status: the status the call got (``int``, 100 to 599),
        or ``None`` when no answer came; written, with ``remote_call``, as
        ``remote_status``, a napixclient extension that other readers
        ignore. Any other value is left out.
    :param trace_id: the OpenTelemetry trace id of the request that failed
        here (32 lower-case hex digits, W3C Trace Context), or ``None``;
        written as ``trace_id``, a napixclient extension that other readers
        ignore. Any other value is left out.
    :param span_id: the id of the span current when it failed (16
        lower-case hex digits), or ``None``; written as ``span_id`` with a
        valid ``trace_id`` only.
    :returns: a new ``dict``: ``error_class``, ``error_text``, then
        ``request``, ``remote_call``, ``remote_error``,
        ``remote_status``, ``trace_id`` and ``span_id`` when given.
        :func:`read_chain` reads it back.
    """
    document: Dict[str, Any] = {"error_class": error_class,
                                "error_text": redact_secret_parameters(error_text)}
    if request is not None:
        document["request"] = dict(request)
    if remote_call is not None:
        document["remote_call"] = text_of(remote_call)
        document["remote_error"] = redact_document(remote_error)
        status = status_of(remote_status)
        if status is not None:
            document["remote_status"] = status
    trace = _id_of(trace_id, _TRACE_ID)
    if trace is not None:
        document["trace_id"] = trace
        span = _id_of(span_id, _SPAN_ID)
        if span is not None:
            document["span_id"] = span
    return document
