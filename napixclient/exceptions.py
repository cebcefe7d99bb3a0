"""The exception tree, and how a chain of Napix error documents is read.

Every failure of a request is an :class:`HTTPError`: an answer with a status
of 400 or more, or a transport failure (:class:`ConnectionError`,
:class:`Timeout`) where no answer came. It carries what was sent where
(``remote_call``) and what the far side said (``remote_error``); when the far
side was itself a Napix server relaying a failed call, the error documents
nest, and :attr:`HTTPError.chain` reads them hop by hop (PROTOCOL.md,
"Reading the chain").
"""

from __future__ import annotations

import itertools
import re
from typing import TYPE_CHECKING, Any, Iterable, List, NamedTuple, Optional, Tuple

from napixclient.response import RequestRecord

if TYPE_CHECKING:
    from napixclient.response import Response

__all__ = [
    "BodyTooLarge",
    "Chain",
    "ConnectionError",
    "HTTPError",
    "Hop",
    "Timeout",
    "read_chain",
    "split_status_text",
]

#: The most hops :func:`read_chain` reads; a longer chain is cut there.
MAX_HOPS = 32
#: The most characters kept of one hop's call, class or text.
MAX_TEXT = 2000
#: The most bytes of a ``bytes`` value decoded for a text.
_MAX_BYTES = 4 * MAX_TEXT
#: How far a value of the wrong type is rendered: levels, items per level,
#: characters of a str, bytes of a bytes.
_SHOW_LEVELS = 3
_SHOW_ITEMS = 8
_SHOW_CHARS = 200
_SHOW_BYTES = 64

# "404 Not Found: `10` not found", as HTTPError.from_response writes
# remote_error for a text body. ASCII digits only: \d would take any digit.
_STATUS_PREFIX = re.compile(r"([1-5][0-9][0-9])(?: [^:\n]{0,80})?: ", re.ASCII)
# What would break a line in a log or drive a terminal: C0 and C1 controls,
# DEL, Unicode line and paragraph separators, and lone surrogates (which
# cannot even be printed to a UTF-8 stream).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: "re.Match[str]") -> str:
    char = match.group()
    code = ord(char)
    return _ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def _printable(text: str, keep_newlines: bool = False) -> str:
    """``text`` with control characters and lone surrogates escaped
    (``\\n``, ``\\x1b``, ``\\ud800``); newlines kept when asked."""
    if keep_newlines:
        return "\n".join(_UNPRINTABLE.sub(_escape, line) for line in text.split("\n"))
    return _UNPRINTABLE.sub(_escape, text)


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


def _text_of(value: Any) -> Optional[str]:
    """The text of a field that should be a string, kept to at most
    :data:`MAX_TEXT` characters; ``None`` for ``None``. Never raises."""
    try:
        if value is None:
            return None
        if isinstance(value, str):
            return _clip_str(str.__str__(value))
        if isinstance(value, (bytes, bytearray)):
            text = bytes(value[:_MAX_BYTES]).decode("utf-8", errors="replace")
            clipped = _clip_str(text)
            if len(value) > _MAX_BYTES:
                clipped += f" ({len(value) - _MAX_BYTES} more bytes)"
            return clipped
        return _clip_str(_show(value))
    except Exception:
        return f"<unreadable {type(value).__name__}>"


def _status_of(value: Any) -> Optional[int]:
    """An HTTP status (``int``, 100 to 599) or ``None``."""
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    return None


def split_status_text(text: str) -> Tuple[Optional[int], str]:
    """Split a ``remote_error`` text into its status and the far side's text.

    napixclient writes the error of a text answer as ``"<status> <reason>:
    <text>"`` (:meth:`HTTPError.from_response`), so a server relaying it
    passes that on: ``"404 Not Found: `10` not found"`` -> ``(404, "`10` not
    found")``. A text not in that form comes back whole, with ``None``.

    :param text: the ``remote_error`` text (``str``).
    :returns: ``(status or None, text)``, the text clipped to
        :data:`MAX_TEXT` characters.
    """
    match = _STATUS_PREFIX.match(text[:100])
    if match:
        return int(match.group(1)), _clip_str(text, match.end())
    return None, _clip_str(text)


class Hop(NamedTuple):
    """One server on the way from a call to the root cause of its failure.

    :ivar call: ``"METHOD URL"`` of the call made at this hop, or ``None``
        where the document does not say.
    :ivar status: the status that call got (``int``), or ``None`` when unknown
        or when no answer came.
    :ivar error_class: the class of the error at this hop (``"HTTPError"``,
        ``"ValueError"``...), or ``None``.
    :ivar error_text: what the hop said, or ``None``.

    Every text field is at most :data:`MAX_TEXT` characters (plus a note of
    how many were left out), and holds what the far side sent, control
    characters included: ``str(hop)`` escapes them.
    """

    call: Optional[str]
    status: Optional[int]
    error_class: Optional[str]
    error_text: Optional[str]

    def __str__(self) -> str:
        """``"GET http://b/y -> 404 (NotFound)"``, on one line."""
        parts = []
        if self.call:
            parts.append(_printable(self.call))
        if self.status is not None or self.error_class:
            if self.status is None:
                parts.append(_printable(str(self.error_class)))
            elif self.error_class:
                parts.append(f"{self.status} ({_printable(self.error_class)})")
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
    document again, or a text, whose ``"<status> <reason>: "`` prefix gives
    the hop's status (:func:`split_status_text`). A document's optional
    ``remote_status`` (a napixclient extension) gives the status too. The
    last hop carries the root cause: its ``error_class`` and ``error_text``,
    or its text.

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
            hops.append(Hop(_text_of(call), _status_of(status), None, None))
    return hops


def _read(hops: Chain, call: Any, status: Any, document: Any) -> None:
    status = _status_of(status)
    while True:
        if not isinstance(document, dict):
            hops.append(Hop(_text_of(call), status, None, _text_of(document)))
            return
        error_class = document.get("error_class")
        hops.append(Hop(
            _text_of(call),
            status,
            _text_of(error_class) if isinstance(error_class, str) else None,
            _text_of(document.get("error_text")),
        ))
        next_call = document.get("remote_call")
        if not isinstance(next_call, str) or "remote_error" not in document:
            return
        if len(hops) >= MAX_HOPS:
            hops.truncated = True
            return
        status = _status_of(document.get("remote_status"))
        call, document = next_call, document["remote_error"]
        if isinstance(document, str):
            text_status, text = split_status_text(document)
            hops.append(Hop(_text_of(call), text_status if status is None else status,
                            None, text))
            return


class HTTPError(Exception):
    """A request failed: the far side answered with a status of 400 or more,
    or (in the subclasses) no answer came.

    :ivar status: the status (``int``), or ``None`` when no HTTP answer came.
    :ivar request: the :class:`~napixclient.RequestRecord` of the request.
    :ivar response: the :class:`~napixclient.Response`, or ``None``.
    :ivar remote_call: ``"METHOD URL"`` of the request, credentials redacted.
    :ivar remote_error: what the far side said: its decoded JSON error
        document (``dict``), or a text such as ``"404 Not Found: `10` not
        found"``; for a transport failure, a description of it.

    ``str(err)`` reads the :attr:`chain` hop by hop on one line. Like a
    :class:`~napixclient.Response`, it has ``status`` and ``request``, so pool
    code can treat results alike (``if result.status != 200: continue``).

    The client raises these; code of your own seldom builds one, except to
    stand for a failed call in a test:

    :param request: the :class:`~napixclient.RequestRecord` of the failed
        request; ``remote_call`` is made from it.
    :param status: the answer's status (``int``), or ``None`` when no answer
        came.
    :param response: the :class:`~napixclient.Response` when an answer came.
    :param remote_error: what the far side said (a ``dict`` error document,
        a ``str``), or a description of the transport failure.
    """

    def __init__(
        self,
        request: RequestRecord,
        *,
        status: Optional[int] = None,
        response: Optional["Response"] = None,
        remote_error: Any = None,
    ) -> None:
        super().__init__(request, status)
        self.request = request
        self.status = status
        self.response = response
        self.remote_call = request.call
        self.remote_error = remote_error
        self._chain: Optional[Chain] = None

    @classmethod
    def from_response(cls, response: "Response") -> "HTTPError":
        """Build the error for an answer with a status of 400 or more.

        ``remote_error`` is the decoded body when it is a JSON object (kept
        as it is), otherwise ``"<status> <reason>: <text>"`` with the text
        cut to :data:`MAX_TEXT` characters (a body of another JSON type is
        shown in a short rendering). Never raises for any body.

        :param response: the :class:`~napixclient.Response` of status 400 or
            more.
        :returns: an instance of the class it is called on, with
            ``status``, ``request`` and ``response`` taken from ``response``.
        """
        body = response.body
        if isinstance(body, dict):
            remote_error: Any = body
        else:
            remote_error = _status_prefix(response) + (_text_of(body) or "")
        return cls(response.request, status=response.status, response=response,
                   remote_error=remote_error)

    @property
    def chain(self) -> Chain:
        """The hops from this call to the root cause: a :class:`Chain` (a
        list of :class:`Hop`), hop 0 being this call; see :func:`read_chain`.
        Read once, then kept; never raises."""
        if self._chain is None:
            self._chain = self._read_chain()
        return self._chain

    def _read_chain(self) -> Chain:
        try:
            document = self.remote_error
            if isinstance(document, str) and self.response is not None:
                # Our own "<status> <reason>: " prefix is not the far side's text.
                prefix = _status_prefix(self.response)
                if document.startswith(prefix):
                    document = document[len(prefix):]
            chain = read_chain(self.remote_call, self.status, document)
            if type(self) is not HTTPError and chain[0].error_class is None:
                chain[0] = chain[0]._replace(error_class=type(self).__name__)
            return chain
        except Exception:
            # Only a broken subclass or attribute gets here.
            fallback = Chain()
            fallback.append(Hop(_text_of(getattr(self, "remote_call", None)),
                                _status_of(getattr(self, "status", None)),
                                type(self).__name__, None))
            return fallback

    @property
    def root(self) -> Hop:
        """The last hop of :attr:`chain`: where the error really happened
        (unless :attr:`Chain.truncated`)."""
        return self.chain[-1]

    def __str__(self) -> str:
        """The chain on one line, safe for a log:
        ``"GET http://a/x -> 500 (HTTPError) | GET http://b/y -> 404 | `10` not
        found"``. Control characters are escaped."""
        hops = self.chain
        parts = [str(hop) for hop in hops]
        if hops.truncated:
            parts.append(f"(cut after {len(hops)} hops)")
        elif hops[-1].error_text:
            parts.append(_printable(hops[-1].error_text))
        return " | ".join(parts)

    def format_chain(self) -> str:
        """The chain on several lines, for people (the CLI, examples)::

            hop 0: GET http://a/x -> 500 (HTTPError)
            hop 1: GET http://b/y -> 404
            root cause: `10` not found

        A root text on several lines is indented under ``root cause:``.
        Control characters other than newlines are escaped.
        """
        hops = self.chain
        lines = [f"hop {depth}: {hop}" for depth, hop in enumerate(hops)]
        if hops.truncated:
            lines.append(f"(more than {len(hops)} hops: the rest was not read)")
        elif hops[-1].error_text:
            text = _printable(hops[-1].error_text, keep_newlines=True)
            lines.append("root cause: " + text.replace("\n", "\n    "))
        return "\n".join(lines)

    def __repr__(self) -> str:
        """``<HTTPError 404 GET http://b/y>``: no body, no secrets."""
        try:
            call = _printable(_text_of(self.remote_call) or "?")
            return f"<{type(self).__name__} {_status_of(self.status)} {call}>"
        except Exception:
            return f"<{type(self).__name__}>"

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.request, self.status, self.response,
                           self.remote_error))


def _status_prefix(response: "Response") -> str:
    """``"404 Not Found: "``: how :meth:`HTTPError.from_response` starts the
    ``remote_error`` of a text answer (the reason cut to 80 characters)."""
    reason = _printable(str(response.reason)[:80]).replace(":", " ")[:80]
    return f"{response.status} {reason}: " if reason else f"{response.status}: "


def _rebuild(cls: type, request: RequestRecord, status: Optional[int],
             response: Optional["Response"], remote_error: Any) -> HTTPError:
    error: HTTPError = cls(request, status=status, response=response, remote_error=remote_error)
    return error


class ConnectionError(HTTPError):
    """No answer came: the connection was refused, reset or dropped, the name
    did not resolve, or TLS failed. ``status`` is ``None``."""


class Timeout(HTTPError):
    """The connection or the answer took longer than the timeout. ``status``
    is ``None``."""


class BodyTooLarge(HTTPError):
    """The answer's body was larger than the client's ``max_body_size``; it
    was not read to the end. ``status`` is the answer's status."""
