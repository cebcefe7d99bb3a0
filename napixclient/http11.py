"""HTTP/1.1 without I/O of its own: request bytes, field checks, answer parsers.

This is the core the connection layer (:mod:`napixclient.connections`)
stands on. It holds no gevent and opens no socket, so an asyncio twin could
reuse it:

* building a request: :func:`check_method`, :func:`check_headers`,
  :func:`quote_target`, :func:`encode_body`, :func:`merge_fields` and
  :func:`request_bytes` give the bytes of a request as RFC 9112 frames it;
* reading an answer: a :class:`Parser` reads it from a socket-like object
  it is handed (anything with ``recv_into``/``makefile`` as
  :class:`http.client.HTTPResponse` needs), in two steps, so that a failure
  before the first byte of the answer can be told from one in its body;
* undoing its content codings: :func:`decode_content` (gzip, deflate, and
  br and zstd with the ``compression`` extra), bounded by a size as it
  decodes; :func:`accept_encoding` is what a client says it can undo.

Parsers, by the name :class:`~napixclient.Client` takes as ``parser=``:

* ``"geventhttpclient"`` (the default wherever it loads): geventhttpclient's
  response parser, llhttp (C), for the lowest CPU per request;
  geventhttpclient is a dependency of napixclient (wheels for CPython
  3.10 to 3.13 on Linux x86_64 and aarch64);
* ``"http.client"`` (the fallback): the standard library's
  :class:`http.client.HTTPResponse`, the parser urllib3 itself uses.

:func:`default_parser` says which one a client gets when it names none.

Both read the same answers and refuse the same ones with the same
:mod:`~napixclient.failures`; socket errors (``OSError``, ``TimeoutError``)
pass through for the connection layer to translate. The limits of a head,
the same on both (those of http.client, which cannot be raised without
changing its module's globals):

* at most :data:`MAX_HEADER_FIELDS` (99) header fields in one head (an
  interim answer's head counts apart): more is refused with
  ``MalformedAnswer("the answer has too many header fields (more than 99)")``;
* no line of a head (the status line included) longer than :data:`MAX_LINE`
  (65,536) bytes, its CRLF included: a longer one is refused with
  ``MalformedAnswer("the answer has a header line longer than 65536 bytes")``.

A body is limited by the caller's ``max_body_size`` (see :class:`Parser`).
"""

from __future__ import annotations

import http.client
import importlib
import io
import json
import re
import sys
import zlib
from collections.abc import Mapping
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from requests.utils import requote_uri

from napixclient.failures import BodyLimitExceeded, ConnectionBroken, MalformedAnswer
from napixclient.response import Field, Headers

__all__ = [
    "MAX_CODINGS",
    "MAX_HEADER_FIELDS",
    "MAX_LINE",
    "MAX_MEMBERS",
    "PARSERS",
    "Answer",
    "Parser",
    "accept_encoding",
    "available_parsers",
    "check_headers",
    "default_parser",
    "check_method",
    "content_codings",
    "decode_content",
    "encode_body",
    "merge_fields",
    "parser",
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
# A "%" that does not start a %XX escape (RFC 3986, section 2.1).
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Methods whose requests carry "Content-Length: 0" when they have no body
# (RFC 9110, section 8.6: a user agent should send it for them).
_METHODS_EXPECTING_BODY = frozenset(["POST", "PUT", "PATCH"])

BROKE = "the connection broke during the exchange: "


def check_method(method: Any) -> str:
    """Return ``method`` upper case.

    :param method: an HTTP method (``str``), an RFC 9110 token.
    :raises ValueError: when it is not such a token.
    """
    if not isinstance(method, str) or not _TOKEN.fullmatch(method):
        raise ValueError(f"method must be an HTTP token such as 'GET', got {method!r}")
    return method.upper()


def check_headers(headers: Any) -> Dict[str, str]:
    """Check header fields given by a caller.

    :param headers: ``Mapping[str, str]`` (``bytes`` values are read as
        Latin-1), or ``None``.
    :returns: a new ``dict`` of the fields.
    :raises ValueError: naming the field, for a name that is not an RFC 9110
        token or a value holding CR, LF or NUL (which would split the request).
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
                or _FORBIDDEN_IN_FIELD_VALUE.search(value)):
            raise ValueError(f"the authenticator set header {name!r} to a value that is "
                             "not a valid field (CR, LF or NUL, or a bad name)")
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
    if _PLAIN_TARGET.fullmatch(path):
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


def request_bytes(method: str, target: str, fields: str, body: Optional[bytes],
                  has_length: bool) -> bytes:
    """The request as it goes on the wire (RFC 9112, sections 3 and 6): the
    request line, the fields, ``Content-Length`` when the fields have none,
    the blank line and the body.

    :param method: upper case.
    :param target: the request target, already percent-encoded.
    :param fields: the field lines (see :func:`field_block`).
    :param body: the body, or ``None``.
    :param has_length: whether ``fields`` already hold a ``Content-Length``.
    """
    if has_length:
        length = ""
    elif body is not None:
        length = f"Content-Length: {len(body)}\r\n"
    elif method in _METHODS_EXPECTING_BODY:
        length = "Content-Length: 0\r\n"
    else:
        length = ""
    head = f"{method} {target} HTTP/1.1\r\n{fields}{length}\r\n".encode("latin-1")
    return head + body if body else head


# -- reading an answer --------------------------------------------------------------

#: The most header fields one head may have (an interim 1xx answer's head
#: counts apart): http.client reads at most 100 lines after the status line,
#: the empty line that ends them included, so 99 fields.
MAX_HEADER_FIELDS = 99
#: The longest line of a head, status line included, in bytes with its CRLF
#: (http.client's limit).
MAX_LINE = 65536

_READ_CHUNK = 256 * 1024
# Bytes asked of the socket at once by the geventhttpclient parser.
_RECV_SIZE = 64 * 1024
# RFC 9112, section 6.3, rule 1: these answers end with their head, whatever
# their fields say (and so does any answer to HEAD).
_NO_BODY = frozenset([204, 304])

_TOO_MANY_FIELDS = f"the answer has too many header fields (more than {MAX_HEADER_FIELDS})"
_LINE_TOO_LONG = f"the answer has a header line longer than {MAX_LINE} bytes"
_SWITCHED = "the server switched protocols (101) without being asked to"
_NOT_HTTP = BROKE + "the answer is not HTTP (BadStatusLine)"


def _no_answer() -> ConnectionBroken:
    return ConnectionBroken(BROKE + "the server closed the connection without answering",
                            before_answer=True)


def _head_cut() -> ConnectionBroken:
    return ConnectionBroken(BROKE + "the answer ended before the end of its head")


class Answer(NamedTuple):
    """What came back: ``status`` (``int``), ``reason`` (``str``), ``headers``
    (:class:`~napixclient.response.Headers`), ``content`` (the whole body,
    ``bytes``)."""

    status: int
    reason: str
    headers: Headers
    content: bytes


class Parser(NamedTuple):
    """A response parser, in two steps.

    ``begin(sock, method)`` reads the head of the final answer (status line
    and fields; interim 1xx answers before it, such as ``100 Continue`` or
    ``103 Early Hints``, are read and dropped) and returns the parser's own
    object for it, to hand to ``finish``. ``finish(reading, max_body_size)``
    reads the body and returns the :class:`Answer` and whether the
    connection may carry another request (``bool``): ``False`` when the
    server said it closes it, when bytes were already there after the end of
    the answer (they would be read as the next answer), when the socket is
    readable (such bytes, or the server's close), and for a 204 or 304 that
    announced a chunked body (some servers send its last chunk, RFC 9112
    says nothing follows: either way the connection is not trusted again).

    ``sock`` is a connected socket-like object, with a timeout, that has
    ``recv``, ``recv_into`` and ``fileno`` (``pending`` too for TLS).

    Both raise :class:`~napixclient.failures.MalformedAnswer` for an answer
    that is not HTTP/1.1 or breaks a limit (:data:`MAX_HEADER_FIELDS`,
    :data:`MAX_LINE`), :class:`~napixclient.failures.ConnectionBroken` for
    one cut short (``before_answer=True`` when not a byte of it came);
    ``finish`` raises :class:`~napixclient.failures.BodyLimitExceeded` for
    a body larger than ``max_body_size`` (never for an answer to HEAD, nor
    a 204 or 304, which have no body whatever their ``Content-Length``
    says); socket errors (``OSError``, ``TimeoutError``) pass through.
    """

    begin: Callable[[Any, str], Any]
    finish: Callable[[Any, int], Tuple[Answer, bool]]


def _read_limited(read: Callable[[int], bytes], max_body_size: int, status: int) -> bytes:
    chunks: List[bytes] = []
    total = 0
    while True:
        chunk = read(_READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_body_size:
            raise BodyLimitExceeded(None, status, max_body_size)
        chunks.append(chunk)


def _check_framing(message: Any) -> None:
    """Refuse ambiguous framing, as RFC 9112 (section 6.3, rules 3 and 5)
    advises and as geventhttpclient's parser does, where http.client alone
    would guess: ``Transfer-Encoding`` with ``Content-Length``, a repeated
    ``Content-Length``, or one that is not a non-negative number.

    :raises MalformedAnswer: for such an answer.
    """
    lengths = message.get_all("Content-Length") or ()
    if lengths and (len(lengths) > 1 or "Transfer-Encoding" in message
                    or not (lengths[0].strip().isascii() and lengths[0].strip().isdigit())):
        raise MalformedAnswer(BROKE + "ambiguous or invalid Content-Length")


def _cut_short(partial: int, expected: Optional[int]) -> ConnectionBroken:
    if expected is not None:
        return ConnectionBroken(BROKE + f"the body ended after {partial} bytes, "
                                f"{expected} fewer than announced")
    return ConnectionBroken(BROKE + "the body ended early, or its chunked encoding is "
                            f"malformed, after {partial} bytes")


# -- the http.client parser

class _SocketReader(io.RawIOBase):
    """``sock.recv_into`` as a raw stream, which can be told to stop reading."""

    def __init__(self, sock: Any) -> None:
        super().__init__()
        self._recv_into = sock.recv_into
        self.stopped = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> Optional[int]:
        # None: "no bytes for now", so a stopped reader never waits.
        return None if self.stopped else int(self._recv_into(buffer))


_buffered_readline = io.BufferedReader.readline


class _AnswerBuffer(io.BufferedReader):
    """The bytes of a socket as :class:`http.client.HTTPResponse` reads them,
    with the head limits of this module, kept open after http.client closes
    it, so that bytes it read beyond the answer can be seen (:meth:`unread`).

    It stands for the socket too: ``HTTPResponse(sock)`` reads from
    ``sock.makefile("rb")``, which is this buffer itself, so one buffer
    serves the interim answers and the final one.
    """

    def __init__(self, sock: Any) -> None:
        self._reader = _SocketReader(sock)
        super().__init__(self._reader)
        self.in_head = False
        self._at_status = True
        self._fields = 0
        self._heads = 0

    def makefile(self, mode: str) -> "_AnswerBuffer":
        return self

    def close(self) -> None:
        """Nothing: http.client closes its file at the end of an answer, and
        what it left in the buffer is still to be looked at."""

    def flush(self) -> None:
        """Nothing to flush in a reading buffer; never an error, even once
        the garbage collector has closed it (an ``HTTPResponse`` collected
        later flushes its file from ``close()``: Python 3.13 reports the
        error ``io`` would raise as "Exception ignored")."""

    def readline(self, size: Optional[int] = -1) -> bytes:
        line = _buffered_readline(self, -1 if size is None else size)
        if not self.in_head:
            return line
        # The head's limits, checked before http.client sees the line.
        if len(line) > MAX_LINE:
            raise MalformedAnswer(_LINE_TOO_LONG)
        if line[-1:] != b"\n":
            raise _no_answer() if self._heads == 0 and not line else _head_cut()
        if self._at_status:
            self._at_status = False
            self._fields = 0
            self._heads += 1
        elif line == b"\r\n" or line == b"\n":
            self._at_status = True  # http.client reads on after a 100 Continue
        else:
            self._fields += 1
            if self._fields > MAX_HEADER_FIELDS:
                raise MalformedAnswer(_TOO_MANY_FIELDS)
        return line

    def unread(self) -> bool:
        """Whether bytes after the answer are in the buffer (reading no more)."""
        self._reader.stopped = True
        return bool(self.peek(1))


class _HTTPClientReading(NamedTuple):
    response: http.client.HTTPResponse
    buffer: _AnswerBuffer
    sock: Any
    method: str


def _begin_http_client(sock: Any, method: str) -> _HTTPClientReading:
    buffer = _AnswerBuffer(sock)
    while True:
        response = http.client.HTTPResponse(buffer, method=method)  # type: ignore[arg-type]
        buffer.in_head = True
        try:
            response.begin()
        except http.client.BadStatusLine as error:
            response.close()
            raise MalformedAnswer(_NOT_HTTP) from error
        except http.client.HTTPException as error:
            response.close()
            raise MalformedAnswer(BROKE + type(error).__name__) from error
        except BaseException:
            response.close()
            raise
        buffer.in_head = False
        if response.status == 101:
            raise MalformedAnswer(_SWITCHED)
        if response.status >= 200:
            break
        # http.client skips 100 Continue itself, and returns any other
        # interim answer (103 Early Hints): the final one follows.
    _check_framing(response.msg)
    return _HTTPClientReading(response, buffer, sock, method)


def _finish_http_client(reading: _HTTPClientReading,
                        max_body_size: int) -> Tuple[Answer, bool]:
    response = reading.response
    status = response.status
    try:
        if reading.method == "HEAD" or status in _NO_BODY:
            # No body; http.client would read the chunked one a 204 announces.
            content = b""
            reusable = not (status in _NO_BODY and "Transfer-Encoding" in response.msg)
        else:
            length = response.length
            if length is not None and length > max_body_size:
                raise BodyLimitExceeded(length, status, max_body_size)
            try:
                content = (response.read() if length is not None
                           else _read_limited(response.read, max_body_size, status))
            except http.client.IncompleteRead as error:
                raise _cut_short(len(error.partial), error.expected
                                 if isinstance(error.expected, int) else None) from error
            except http.client.HTTPException as error:
                raise MalformedAnswer(BROKE + type(error).__name__) from error
            reusable = True
        headers = Headers(response.msg.items())
        # Bytes that come after the answer, now or later, are seen by the
        # connection manager, which never reuses a connection that is
        # readable while idle (one select instead of two per request).
        reusable = reusable and not response.will_close and not reading.buffer.unread()
        return Answer(status, response.reason or "", headers, content), reusable
    finally:
        response.close()


#: :class:`http.client.HTTPResponse`, the parser urllib3 uses (RFC 9112:
#: ``Content-Length``, chunked or close-delimited bodies, no body for HEAD,
#: 1xx, 204 and 304), with this module's head limits and interim answers.
HTTP_CLIENT = Parser(_begin_http_client, _finish_http_client)


# -- the geventhttpclient parser

def _load_gevent() -> Parser:
    """geventhttpclient's parser (llhttp, in C), imported on first use (it
    is a dependency; the ``fast`` extra names it too), so that importing
    napixclient never imports geventhttpclient.

    Its :class:`HTTPResponseParser` calls back ``_on_status``,
    ``_on_header_field``... as llhttp reads; the socket is read here, the
    head one line at a time, so that the head limits are counted on the
    bytes as they came and the end of the answer is known to the byte.

    :raises ImportError: when geventhttpclient is not installed.
    """
    from geventhttpclient._parser import HTTPParseError, HTTPResponseParser

    class Beyond(Exception):
        """A new answer began after the end of the final one."""

    class Message(HTTPResponseParser):  # type: ignore[misc]
        """One answer, gathered from llhttp's callbacks."""

        # What an answer starts with, in the class: an instance sets what
        # it reads, and starts with four stores.
        rest = b""  # bytes read with the head, past its end
        extra = False  # bytes came after the end of the answer
        final = False  # the head read is not an interim answer's
        complete = False
        head_done = False
        reason = ""
        _name: Optional[str] = None
        _value: Optional[str] = None

        def __init__(self, sock: Any, method: str) -> None:
            super().__init__()
            self.sock = sock
            self.method = method
            self.fields: List[Field] = []
            self.body = bytearray()

        def _on_message_begin(self) -> None:
            if self.final:
                self.extra = True
                raise Beyond()
            if self.head_done:  # the answer after an interim one
                self.reason = ""
                self.fields = []
                self.head_done = self.complete = False
                self._name = self._value = None

        def _on_status(self, text: str) -> None:
            self.reason += text

        def _on_header_field(self, text: str) -> None:
            if self._value is None and self._name is not None:
                self._name += text  # the name came in pieces
                return
            if self._name is not None:
                self.fields.append((self._name, self._value or ""))
            self._name, self._value = text, None

        def _on_header_value(self, text: str) -> None:
            self._value = text if self._value is None else self._value + text

        def _on_headers_complete(self) -> bool:
            if self._name is not None:
                self.fields.append((self._name, self._value or ""))
                self._name = self._value = None
            self.head_done = True
            status = self.get_code()
            self.final = not 100 <= status < 200
            # True: no body, for HEAD (llhttp knows 1xx, 204 and 304 have none).
            return self.method == "HEAD"

        def _on_body(self, data: bytearray) -> None:
            self.body += data

        def _on_message_complete(self) -> None:
            self.complete = True

    def feed_head(message: Message, data: bytes, status_line: bool) -> None:
        try:
            message.feed(data)
        except Beyond:
            pass
        except HTTPParseError as error:
            if message.get_code() == 101:
                raise MalformedAnswer(_SWITCHED) from error
            if message.final and message.complete:
                message.extra = True  # bytes after a bodyless answer
                return
            if status_line:
                raise MalformedAnswer(_NOT_HTTP) from error
            raise MalformedAnswer(BROKE + f"malformed head ({error.args[0]})") from error

    def begin(sock: Any, method: str) -> Message:
        data = sock.recv(_RECV_SIZE)
        if not data:
            raise _no_answer()
        # The usual answer: one head (no interim answer before it), whole in
        # the first bytes and within the limits (one recv is no longer than
        # MAX_LINE, and a head of n fields has n + 2 line ends), is fed to
        # llhttp at once. Anything else, or anything llhttp refuses, is read
        # again from these bytes, line by line, as read_head says.
        end = data.find(b"\r\n\r\n") + 4
        if (end >= 4 and len(data) <= MAX_LINE
                and data.count(b"\n", 0, end) <= MAX_HEADER_FIELDS + 2):
            message = Message(sock, method)
            try:
                message.feed(data[:end] if end < len(data) else data)
            except HTTPParseError:
                pass
            else:
                if message.head_done and message.final:
                    message.rest = data[end:]
                    if message.complete and message.rest:
                        message.extra = True
                    return message
        return read_head(sock, method, data)

    def read_head(sock: Any, method: str, data: bytes) -> Message:
        """The head read line by line, from ``data`` (the first bytes) on:
        the head limits are counted on the bytes as they came."""
        message = Message(sock, method)
        line = 0  # bytes of the line being read, before this chunk
        fields = -1  # fields of the head being read; -1 before its status line
        while True:
            start, size = 0, len(data)
            while start < size:
                end = data.find(b"\n", start) + 1
                if end == 0:  # the line goes on in the next bytes
                    line += size - start
                    if line > MAX_LINE:
                        raise MalformedAnswer(_LINE_TOO_LONG)
                    feed_head(message, data[start:], fields < 0)
                    break
                line += end - start
                if line > MAX_LINE:
                    raise MalformedAnswer(_LINE_TOO_LONG)
                feed_head(message, data[start:end], fields < 0)
                start, line = end, 0
                if message.head_done:
                    if message.final:
                        message.rest = data[end:]
                        if message.complete and message.rest:
                            message.extra = True
                        return message
                    fields = -1  # an interim answer: another head follows
                elif fields < 0:
                    fields = 0  # that was the status line
                else:
                    fields += 1
                    if fields > MAX_HEADER_FIELDS:
                        raise MalformedAnswer(_TOO_MANY_FIELDS)
            data = sock.recv(_RECV_SIZE)
            if not data:
                raise _head_cut()

    def feed_body(message: Message, data: bytes) -> None:
        try:
            message.feed(data)
        except Beyond:
            pass
        except HTTPParseError as error:
            if message.complete:
                message.extra = True  # bytes after the body
                return
            raise _cut_short(len(message.body), None) from error

    def announced_length(headers: Headers) -> Optional[int]:
        values = headers.get_all("Content-Length")
        return int(values[0]) if len(values) == 1 and values[0].strip().isdigit() else None

    def finish(message: Message, max_body_size: int) -> Tuple[Answer, bool]:
        status = message.get_code()
        headers = Headers(message.fields)
        if not message.complete:
            length = announced_length(headers)
            if length is not None and length > max_body_size:
                raise BodyLimitExceeded(length, status, max_body_size)
            if message.rest:
                feed_body(message, message.rest)
            while not message.complete:
                if len(message.body) > max_body_size:
                    raise BodyLimitExceeded(None, status, max_body_size)
                data = message.sock.recv(_RECV_SIZE)
                if data:
                    feed_body(message, data)
                    continue
                try:
                    message.feed(b"")  # the end of the stream ends a body read until it
                except HTTPParseError:
                    pass
                if not message.complete:
                    raise _cut_short(len(message.body), None if length is None
                                     else max(0, length - len(message.body)))
            if len(message.body) > max_body_size:
                raise BodyLimitExceeded(None, status, max_body_size)
        reusable = (bool(message.should_keep_alive()) and not message.extra
                    and not (status in _NO_BODY and "Transfer-Encoding" in headers))
        return Answer(status, message.reason, headers, bytes(message.body)), reusable

    return Parser(begin, finish)


#: The parsers loaded so far, by name; see :func:`available_parsers` for all
#: that can load.
PARSERS: Dict[str, Parser] = {"http.client": HTTP_CLIENT}
#: Optional parsers: name -> (loader, the extra that installs it).
_OPTIONAL: Dict[str, Tuple[Callable[[], Parser], str]] = {
    "geventhttpclient": (_load_gevent, "fast"),
}
#: The parsers a client uses when it names none, best first: the first that
#: loads is :func:`default_parser`.
PREFERRED = ("geventhttpclient", "http.client")


def parser(name: Optional[str]) -> Parser:
    """Return the parser called ``name``, loading an optional one on first use.

    :param name: ``"http.client"`` or ``"geventhttpclient"``; ``None`` for
        :func:`default_parser`.
    :raises ValueError: for an unknown name, or ``"geventhttpclient"`` when
        geventhttpclient cannot be imported.
    """
    if name is None:
        name = default_parser()
    if not isinstance(name, str):
        raise ValueError(f"parser must be a str such as 'http.client', got {name!r}")
    if name not in PARSERS and name in _OPTIONAL:
        load, extra = _OPTIONAL[name]
        try:
            PARSERS[name] = load()
        except ImportError:
            raise ValueError(f"parser {name!r} needs the {extra} extra: from a checkout, "
                             f"pip install '.[{extra}]'") from None
    if name not in PARSERS:
        names = sorted(set(PARSERS) | set(_OPTIONAL))
        raise ValueError(f"parser must be one of {names}, got {name!r}")
    return PARSERS[name]


def default_parser() -> str:
    """The name of the parser a :class:`~napixclient.Client` uses when it
    names none: the first of :data:`PREFERRED` that loads, so
    ``"geventhttpclient"`` (llhttp, a dependency) and ``"http.client"`` where
    geventhttpclient cannot be imported (a platform without its wheel, where
    it did not build). Loading it imports geventhttpclient, on the first call
    only (importing napixclient does not)."""
    for name in PREFERRED:
        try:
            parser(name)
        except ValueError:
            continue
        return name
    return "http.client"  # never reached: http.client always loads


def available_parsers() -> List[str]:
    """The names of the parsers that can be used here (``http.client``, and
    ``geventhttpclient`` when it can be imported), sorted."""
    names = []
    for name in sorted(set(PARSERS) | set(_OPTIONAL)):
        try:
            parser(name)
        except ValueError:
            continue
        names.append(name)
    return names


# -- content codings ----------------------------------------------------------------

#: The most content codings one answer may list for :func:`decode_content`
#: to undo (``Content-Encoding: gzip, br`` lists two; ``identity`` does not
#: count), as urllib3 allows: each one is a pass over up to
#: ``max_body_size`` bytes.
MAX_CODINGS = 5

#: The most gzip members, or zstd frames, one body may hold: each one costs
#: a new decompressor and a copy of up to a slice of input, so a body of
#: millions of empty members would take seconds of CPU.
MAX_MEMBERS = 4096

# Bytes of output asked of a decompressor at once: how much the decoded body
# may grow before its size is checked again.
_DECODE_STEP = 1024 * 1024
# Bytes of input given to a decompressor at once: bounds what it copies of
# the input left after a member's end.
_INPUT_STEP = 64 * 1024
_NOT_ZERO = re.compile(rb"[^\x00]")


class _Output:
    """A decoded body as it grows, refused as soon as it passes ``limit``
    bytes (with the answer's ``status``, for the failure)."""

    __slots__ = ("parts", "size", "limit", "status")

    def __init__(self, limit: int, status: int) -> None:
        self.parts: List[bytes] = []
        self.size = 0
        self.limit = limit
        self.status = status

    def room(self) -> int:
        """How many bytes to ask for next: a step, or one more than the limit
        leaves, so that a body one byte too large is seen."""
        return min(_DECODE_STEP, self.limit - self.size + 1)

    def add(self, chunk: bytes) -> None:
        """Keep ``chunk``.

        :raises BodyLimitExceeded: when the body passes the limit with it.
        """
        self.size += len(chunk)
        if self.size > self.limit:
            raise BodyLimitExceeded(None, self.status, self.limit)
        if chunk:
            self.parts.append(chunk)

    def clear(self) -> None:
        self.parts = []
        self.size = 0

    def value(self) -> bytes:
        return b"".join(self.parts)


class _Undecodable(Exception):
    """The body is not valid data of its coding; the text says why, in a
    decompressor's words (never quoting the body)."""


_TRUNCATED = "it ends before the end of its compressed data"

#: ``decoder(data, output)``: undo one coding of ``data`` into ``output``.
_Decoder = Callable[[bytes, _Output], None]


def _inflate(data: memoryview, start: int, wbits: int, output: _Output) -> int:
    """Inflate the zlib, gzip or raw deflate stream (by ``wbits``, as
    :func:`zlib.decompressobj` takes it) that starts at ``data[start]`` into
    ``output``, a step of output at a time, reading the input a slice at a
    time (so that what zlib copies of it stays small); return the offset
    just after the end of the stream."""
    inflater = zlib.decompressobj(wbits)
    position = start
    try:
        while position < len(data):
            pending: Any = data[position:position + _INPUT_STEP]
            position += len(pending)
            while True:
                room = output.room()
                chunk = inflater.decompress(pending, room)
                output.add(chunk)
                if inflater.eof:
                    return position - len(inflater.unused_data)
                left = inflater.unconsumed_tail
                if len(chunk) < room:
                    if not left:
                        break  # this slice is read: on to the next one
                    if len(left) == len(pending):
                        raise _Undecodable("zlib makes no progress")
                pending = left
    except zlib.error as error:
        # "Error -3 while decompressing data: incorrect header check"
        raise _Undecodable(str(error).rpartition(": ")[2] or "zlib refused it") from None
    raise _Undecodable(_TRUNCATED)


def _gunzip(data: bytes, output: _Output) -> None:
    """gzip (RFC 1952): one member or several (at most
    :data:`MAX_MEMBERS`), one after the other, and zero bytes of padding
    after them, as :func:`gzip.decompress` reads them."""
    view = memoryview(data)
    position = 0
    for _ in range(MAX_MEMBERS):
        position = _inflate(view, position, 16 + zlib.MAX_WBITS, output)
        more = _NOT_ZERO.search(data, position)
        if more is None:
            return
        position = more.start()
    raise _Undecodable(f"it has more than {MAX_MEMBERS} members")


def _looks_like_zlib(data: bytes) -> bool:
    """Whether ``data`` starts with a zlib header (RFC 1950, section 2.2):
    the deflate method, and a check on the first two bytes."""
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def _deflate(data: bytes, output: _Output) -> None:
    """deflate: the zlib format RFC 9110 names (RFC 1950), or the raw
    deflate (RFC 1951) that some servers send under that name, as urllib3
    and browsers accept; bytes after the end of the stream are ignored, as
    :func:`zlib.decompress` ignores them."""
    view = memoryview(data)
    first: Optional[_Undecodable] = None
    if _looks_like_zlib(data):
        try:
            _inflate(view, 0, zlib.MAX_WBITS, output)
            return
        except _Undecodable as error:
            first = error
            output.clear()
    try:
        _inflate(view, 0, -zlib.MAX_WBITS, output)
    except _Undecodable:
        if first is not None:
            raise first from None
        raise


def _brotli_decoder(module: Any) -> _Decoder:
    """br (RFC 7932), with the ``brotli`` module's decompressor, whose
    output is bounded by ``output_buffer_limit`` (brotli >= 1.2)."""

    def unbrotli(data: bytes, output: _Output) -> None:
        decompressor = module.Decompressor()
        try:
            output.add(decompressor.process(data, output_buffer_limit=output.room()))
            # Every byte of input is in: ask for the output it holds back.
            while not decompressor.is_finished():
                chunk = decompressor.process(b"", output_buffer_limit=output.room())
                if not chunk:
                    raise _Undecodable(_TRUNCATED)
                output.add(chunk)
        except module.error as error:
            raise _Undecodable(str(error) or "brotli refused it") from None

    return unbrotli


def _zstd_decoder(module: Any) -> _Decoder:
    """zstd (RFC 8878): one frame or several, with the decompressor of
    :mod:`compression.zstd` (Python 3.14) or its backport for older
    Pythons, ``backports.zstd``, the one urllib3 uses."""

    def unzstd(data: bytes, output: _Output) -> None:
        view = memoryview(data)
        position = 0
        frames = 0
        try:
            while position < len(view):
                frames += 1
                if frames > MAX_MEMBERS:
                    raise _Undecodable(f"it has more than {MAX_MEMBERS} frames")
                decompressor = module.ZstdDecompressor()
                while not decompressor.eof:
                    piece: Any = b""
                    if decompressor.needs_input:  # else: output held back
                        if position >= len(view):
                            raise _Undecodable(_TRUNCATED)
                        piece = view[position:position + _INPUT_STEP]
                        position += len(piece)
                    chunk = decompressor.decompress(piece, output.room())
                    if not piece and not chunk and not decompressor.eof:
                        raise _Undecodable("zstd makes no progress")
                    output.add(chunk)
                position -= len(decompressor.unused_data)
        except module.ZstdError as error:
            raise _Undecodable(str(error) or "zstd refused it") from None

    return unzstd


def _optional(name: str) -> Any:
    """The module ``name``, or ``None`` when it cannot be imported."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


_decoders: Optional[Dict[str, _Decoder]] = None


def _load_decoders() -> Dict[str, _Decoder]:
    """The codings :func:`decode_content` can undo, by name; the optional
    ones are looked for once, on first use, so that importing napixclient
    imports neither brotli nor zstd."""
    global _decoders
    if _decoders is None:
        decoders: Dict[str, _Decoder] = {"gzip": _gunzip, "deflate": _deflate}
        brotli = _optional("brotli")
        # Before 1.2, its decompressor could not bound its output.
        if brotli is not None and hasattr(brotli.Decompressor, "can_accept_more_data"):
            decoders["br"] = _brotli_decoder(brotli)
        zstd = _optional("compression.zstd" if sys.version_info >= (3, 14)
                         else "backports.zstd")
        if zstd is not None:
            decoders["zstd"] = _zstd_decoder(zstd)
        decoders["x-gzip"] = _gunzip  # RFC 9110, section 8.4.1.3
        _decoders = decoders
    return _decoders


def content_codings() -> List[str]:
    """The content codings :func:`decode_content` can undo here, in the
    order a client prefers them: ``gzip`` and ``deflate``, then ``br``
    when the ``brotli`` module (1.2 or later) imports, ``zstd`` when
    :mod:`compression.zstd` (Python 3.14) or ``backports.zstd`` imports (the
    ``compression`` extra installs both). ``x-gzip`` is undone too, as
    ``gzip``, but never asked for."""
    return [name for name in _load_decoders() if name != "x-gzip"]


def accept_encoding() -> str:
    """The ``Accept-Encoding`` a client sends by default (RFC 9110, section
    12.5.3): :func:`content_codings` joined with ``", "``, such as ``"gzip,
    deflate, br, zstd"``."""
    return ", ".join(content_codings())


def decode_content(content: bytes, content_encoding: Optional[str], max_body_size: int,
                   status: int = 200) -> bytes:
    """Undo the content codings of a body (RFC 9110, section 8.4), the last
    applied first (``Content-Encoding: gzip, br`` was gzipped, then
    brotli-compressed), never holding more than ``max_body_size`` bytes of
    decoded body: each decompressor is asked for a step of output at a
    time, so a small body that would inflate to gigabytes (a compression
    bomb) is refused after ``max_body_size`` bytes of it.

    * ``gzip`` (and ``x-gzip``): one or more members (at most
      :data:`MAX_MEMBERS`), zero padding after them ignored (as
      :func:`gzip.decompress`);
    * ``deflate``: zlib-wrapped (RFC 1950, what RFC 9110 means) or raw
      deflate (RFC 1951, what some servers send), as urllib3 accepts;
    * ``br`` and ``zstd`` (one or more frames, at most
      :data:`MAX_MEMBERS`) when their modules import (see
      :func:`content_codings`);
    * ``identity`` is nothing to undo.

    A body is decoded whole or not at all: when one of its codings is not
    one of these, it is returned as it came. An empty body (the answer to
    HEAD, a 204, a 304) is returned as it is.

    :param content: the body as it came (``bytes``).
    :param content_encoding: the ``Content-Encoding`` field (its values
        joined with ``", "`` when repeated), or ``None``.
    :param max_body_size: the most bytes of decoded body (``int`` >= 1);
        each intermediate coding's output is bounded by it too.
    :param status: the answer's status, for the failure.
    :returns: the decoded body (``bytes``).
    :raises BodyLimitExceeded: when the decoded body passes ``max_body_size``
        (``length`` is ``None``).
    :raises MalformedAnswer: when the body is not valid data of a coding it
        names (``"the body is not valid gzip: incorrect header check"``,
        ``"... it ends before the end of its compressed data"``), has more
        than :data:`MAX_MEMBERS` gzip members or zstd frames, or names more
        than :data:`MAX_CODINGS` codings.
    """
    if not content or not content_encoding:
        return content
    codings = [name for name in (part.strip().lower() for part in content_encoding.split(","))
               if name and name != "identity"]
    if not codings:
        return content
    decoders = _load_decoders()
    if any(name not in decoders for name in codings):
        return content
    if len(codings) > MAX_CODINGS:
        raise MalformedAnswer(f"the answer has {len(codings)} content codings, "
                              f"more than {MAX_CODINGS}")
    for name in reversed(codings):
        output = _Output(max_body_size, status)
        try:
            decoders[name](content, output)
        except _Undecodable as error:
            raise MalformedAnswer(f"the body is not valid {name}: {error}") from None
        content = output.value()
    return content
