"""What a request produced: :class:`Response`, and the :class:`RequestRecord`
that names the request without its secrets."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

__all__ = ["Headers", "RequestRecord", "Response", "decode_body"]

_JSON_SUFFIX = "+json"


class RequestRecord(NamedTuple):
    """A small, secret-free record of one request.

    :ivar method: the HTTP method, upper case (``"GET"``).
    :ivar host: the destination as ``name`` or ``name:port`` (``"127.0.0.1:8002"``).
    :ivar url: the absolute URL, with credentials redacted: a query parameter
        added by the authenticator reads ``***`` (``"http://h/x?token=***"``).
    :ivar path: the request target of ``url``: path plus ``?query``, redacted
        the same way.
    """

    method: str
    host: str
    url: str
    path: str

    @property
    def call(self) -> str:
        """``"METHOD URL"``, the form of ``remote_call`` in the Napix protocol."""
        return f"{self.method} {self.url}"


def media_type(content_type: Optional[str]) -> tuple[str, Optional[str]]:
    """Split a ``Content-Type`` header into its lower-case media type and its
    ``charset`` parameter (RFC 9110, section 8.3).

    :param content_type: the header value, or ``None``.
    :returns: ``(media_type, charset or None)``; ``("", None)`` when absent.
    """
    if not content_type:
        return "", None
    known = _MEDIA_TYPES.get(content_type)
    if known is not None:
        return known
    kind, _, params = content_type.partition(";")
    charset = None
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"') or None
    split = kind.strip().lower(), charset
    if len(content_type) <= 128:
        if len(_MEDIA_TYPES) >= 256:
            _MEDIA_TYPES.clear()
        _MEDIA_TYPES[content_type] = split
    return split


# The splits of the Content-Type values met last (a server sends the same
# few again and again): at most 256 values of at most 128 characters.
_MEDIA_TYPES: Dict[str, Tuple[str, Optional[str]]] = {}


def _text(content: bytes, charset: Optional[str]) -> str:
    """``content`` decoded with ``charset``, or as UTF-8 with undecodable
    bytes replaced (U+FFFD) when there is no charset or it cannot be
    trusted with this body (:func:`_declared`). A non-empty ``content``
    never gives an empty text."""
    text = _declared(content, charset) if charset else None
    return content.decode("utf-8", errors="replace") if text is None else text


def _declared(content: bytes, charset: str) -> Optional[str]:
    """``content`` decoded with its declared ``charset``, or ``None`` when
    that cannot be trusted: an unknown charset, a codec that is not a text
    encoding (``"base64"``) or refuses ``errors="replace"`` (``"idna"``), a
    non-empty body that decodes to nothing, or undecodable bytes that the
    codec drops instead of replacing (Python 3.13's ``"punycode"`` returns
    ``''`` or a shortened text where 3.12 raised). The server then lied
    about its charset, and UTF-8 is the best guess left."""
    try:
        text = content.decode(charset)
    except UnicodeDecodeError:
        try:
            text = content.decode(charset, errors="replace")
        except Exception:
            return None
        # Strict decoding failed, so a codec that replaces faithfully shows
        # at least one U+FFFD; without one it dropped what it could not read.
        if "\ufffd" not in text:
            return None
    except Exception:
        return None
    return text if text or not content else None


#: Above this recursion limit, JSON is decoded with the limit lowered to it:
#: the C decoder recurses once per nesting level on the C stack, guarded only
#: by the recursion limit, so a program that raised the limit could crash on
#: a body nested tens of thousands of levels deep instead of getting a
#: RecursionError.
SAFE_RECURSION_LIMIT = 5000


_JSON = json.JSONDecoder()
# The decoder's scanner (C where the _json module is): what raw_decode calls,
# without raw_decode's own frame. It clears its memo after each value.
_SCAN: Callable[[str, int], Tuple[Any, int]] = _JSON.scan_once  # type: ignore[attr-defined]
_JSON_SPACE = " \t\n\r"  # what JSON allows around a value (RFC 8259, section 2)


def _loads(text: str) -> Any:
    """``json.loads(text)`` with the recursion limit at most
    :data:`SAFE_RECURSION_LIMIT`.

    The usual document (a value with nothing around it) is read by the
    decoder's scanner alone, skipping the two regular expressions
    :func:`json.loads` runs for white space around it (a third of what it
    costs on a small document); any other goes through :func:`json.loads`.

    :raises ValueError: for text that is not JSON.
    :raises RecursionError: for JSON nested deeper than the limit allows.
    """
    limit = sys.getrecursionlimit()
    if limit <= SAFE_RECURSION_LIMIT:
        return _decode(text)
    # Raises RecursionError when the stack is already deeper than this.
    sys.setrecursionlimit(SAFE_RECURSION_LIMIT)
    try:
        return _decode(text)
    finally:
        sys.setrecursionlimit(limit)


def _decode(text: str) -> Any:
    if text[:1] in _JSON_SPACE or text[-1:] in _JSON_SPACE:
        return json.loads(text)  # white space around the value, or empty text
    try:
        value, end = _SCAN(text, 0)  # as _JSON.raw_decode(text), a frame less
    except StopIteration as stop:
        raise json.JSONDecodeError("Expecting value", text, stop.value) from None
    if end != len(text):
        raise ValueError(f"extra data after the JSON value, at character {end}")
    return value


def decode_body(content: bytes, content_type: Optional[str]) -> Any:
    """Decode a response body by its media type; never raises, and takes
    time linear in the size of ``content``.

    * empty -> ``None``;
    * ``application/json`` or any ``*/*+json`` -> the decoded Python object;
      a body that is not valid JSON (truncated, a number of more digits than
      Python converts, nested deeper than the decoder allows: about a
      thousand levels with the default recursion limit) comes back as ``str``
      instead; a UTF-8 byte order mark is skipped;
    * ``text/*`` -> ``str`` (the declared charset, UTF-8 by default or when
      the charset is unknown, with undecodable bytes replaced by U+FFFD);
      a non-empty body never gives an empty or silently shortened text:
      when the declared charset fails, yields nothing, or drops bytes it
      cannot read instead of replacing them, the body is read as UTF-8;
    * anything else -> ``bytes``, unchanged.

    :param content: the raw body (``bytes``).
    :param content_type: the ``Content-Type`` header, or ``None``.
    """
    if not content:
        return None
    try:
        kind, charset = media_type(content_type if isinstance(content_type, str) else None)
        if kind == "application/json" or kind.endswith(_JSON_SUFFIX):
            # _text(content, charset), without its frame when no charset is declared
            text = (_text(content, charset) if charset
                    else content.decode("utf-8", "replace"))
            # RFC 8259 section 8.1 lets a parser ignore a byte order mark.
            unmarked = text[1:] if text.startswith("\ufeff") else text
            try:
                return _loads(unmarked)
            except (ValueError, RecursionError):
                # A body of a byte order mark alone is not emptied.
                return unmarked or text
        if kind.startswith("text/"):
            return _text(content, charset)
    except Exception:
        # Never reached with bytes in; a body must not make reading it fail.
        return content
    return content


_UNSET: Any = object()

#: A header field as it came on the wire: ``(name, value)``.
Field = Tuple[str, str]

# Up to this many fields, looking one up scans them rather than building the
# index (see Headers._values).
_SCAN_FIELDS = 32


class Headers(Mapping[str, str]):
    """The header fields of an answer: a read-only, case-insensitive mapping
    that keeps every field (RFC 9110, section 5).

    ``headers[name]`` is the field's value, or its values joined with
    ``", "`` when the field was repeated (RFC 9110, section 5.3, says the two
    mean the same for list-valued fields); :meth:`get_all` gives each value
    apart, in order, which is what ``Set-Cookie`` needs (RFC 6265 section 3
    forbids joining it). Iteration gives each name once, spelled as it first
    came, in the order the names first came. Comparing with another mapping
    ignores the case of names.

    Nothing is indexed until it must be: looking up a field scans the list
    of fields (up to 32 of them), and the case-insensitive index is built
    the first time something needs every name (iteration, ``len``,
    comparison), so an answer whose headers nobody reads, or whose
    ``Content-Type`` alone is read, costs little more than its list of
    fields.

    :param fields: ``(name, value)`` pairs in the order they came
        (``Iterable[tuple[str, str]]``), or a mapping (one value per name).
    """

    __slots__ = ("_fields", "_index")

    def __init__(self, fields: Union[Iterable[Field], Mapping[str, str]] = ()) -> None:
        if type(fields) is list:  # what the parsers pass
            self._fields: List[Field] = list(fields)
        elif isinstance(fields, Headers):
            self._fields = list(fields._fields)
        elif isinstance(fields, Mapping):
            self._fields = [(str(name), str(value)) for name, value in fields.items()]
        else:
            self._fields = list(fields)
        self._index: Optional[Dict[str, Tuple[str, List[str]]]] = None

    def _lookup(self) -> Dict[str, Tuple[str, List[str]]]:
        index = self._index
        if index is None:
            index = {}
            for name, value in self._fields:
                key = name.lower()
                entry = index.get(key)
                if entry is None:
                    index[key] = (name, [value])
                else:
                    entry[1].append(value)
            self._index = index
        return index

    def _values(self, name: str) -> Optional[List[str]]:
        """The values of the field ``name`` (any case), in order, or ``None``.

        Until something needs the index (iteration, ``len``, comparison), and
        for up to 32 fields, the fields are scanned instead: an ASCII name
        of another length than ``name`` is skipped without being
        lower-cased, so that reading one field (the body's
        ``Content-Type``) costs a fraction of building the index."""
        if self._index is not None or len(self._fields) > _SCAN_FIELDS:
            entry = self._lookup().get(name.lower())
            return None if entry is None else entry[1]
        key = name.lower()
        size = len(key)
        values = None
        for field, value in self._fields:
            # Lower-casing keeps the length of ASCII names only.
            if (len(field) == size or not field.isascii()) and field.lower() == key:
                if values is None:
                    values = [value]
                else:
                    values.append(value)
        return values

    def __getitem__(self, name: str) -> str:
        values = self._values(name) if isinstance(name, str) else None
        if values is None:
            raise KeyError(name)
        return values[0] if len(values) == 1 else ", ".join(values)

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        """``headers[name]``, or ``default`` when there is no such field."""
        values = self._values(name) if isinstance(name, str) else None
        if values is None:
            return default
        return values[0] if len(values) == 1 else ", ".join(values)

    def get_all(self, name: str) -> List[str]:
        """Every value of the field ``name`` (any case), in the order they
        came; ``[]`` when there is none.

        :param name: the field name (``str``).
        :returns: a new ``list`` of ``str``.
        """
        values = self._values(name) if isinstance(name, str) else None
        return [] if values is None else list(values)

    @property
    def fields(self) -> List[Field]:
        """Every field as it came, ``(name, value)`` pairs in order (a new
        ``list``)."""
        return list(self._fields)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._values(name) is not None

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._lookup().values())

    def __len__(self) -> int:
        return len(self._lookup())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        try:
            theirs = {str(name).lower(): value for name, value in other.items()}
        except AttributeError:
            return NotImplemented
        return {name.lower(): self[name] for name in self} == theirs

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> "Headers":
        """A copy (``Headers``)."""
        return Headers(self)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


class Response:
    """The answer to one request.

    :ivar status: the status code (``int``).
    :ivar reason: the reason phrase (``str``, may be empty).
    :ivar headers: the response headers, :class:`Headers`: case-insensitive,
        repeated fields joined with ``", "``, each apart with
        ``headers.get_all(name)``.
    :ivar content: the body (``bytes``), its content codings (``gzip``,
        ``deflate``...: ``Content-Encoding``) undone by the client; the
        headers stay as they came.
    :ivar elapsed: seconds (``float``) from sending the request to the end of
        the body.
    :ivar request: the :class:`RequestRecord` of the request (no secrets).

    ``body`` is decoded on first access, by :func:`decode_body`.
    """

    __slots__ = ("status", "reason", "headers", "content", "elapsed", "request", "_body")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Union[Headers, Mapping[str, str], Iterable[Field]],
        content: bytes,
        elapsed: float,
        request: RequestRecord,
    ) -> None:
        self.status = status
        self.reason = reason
        # One the connection layer built is kept; anything else is copied.
        self.headers: Headers = headers if type(headers) is Headers else Headers(headers)
        self.content = content
        self.elapsed = elapsed
        self.request = request
        self._body: Any = _UNSET

    @property
    def body(self) -> Any:
        """The decoded body: JSON -> Python objects, ``text/*`` -> ``str``,
        anything else -> ``bytes``, empty -> ``None``."""
        if self._body is _UNSET:
            self._body = decode_body(self.content, self.headers.get("Content-Type"))
        return self._body

    @property
    def ok(self) -> bool:
        """``True`` when ``status`` is below 400."""
        return self.status < 400

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.request.call}>"
