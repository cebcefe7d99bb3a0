"""Reading an answer: a push parser, bytes in, events out.

A :class:`ResponseParser` reads one answer to one request. The driver that
owns the socket hands it the bytes it received, as they came
(:meth:`ResponseParser.feed`), and the end of the stream
(:meth:`ResponseParser.feed_eof`); the parser returns what those bytes
completed, as events:

* :class:`Head`: the final answer's status line and fields (interim 1xx
  answers, such as ``100 Continue`` or ``103 Early Hints``, are read, counted
  and dropped);
* :class:`Body`: a piece of the body, as it came (content codings are
  :mod:`napixclient.core.codings`' to undo);
* :class:`End`: the answer is whole, with the framing verdict: whether the
  connection may carry another request.

It never reads a socket, sleeps or spawns, so the gevent and the asyncio
drivers share it, and it is tested byte by byte without a socket. Its
:class:`Reading` gathers the events of one answer into an :class:`Answer`,
which is what both drivers do with them.

Two engines parse the bytes, by the name a client takes as ``parser=``:

* ``"llhttp"`` (the default wherever it loads): llhttp, the C parser of
  Node.js, through httptools, the binding uvicorn and other asyncio servers
  use: well kept, with wheels for every supported Python, and it imports
  neither gevent nor asyncio (geventhttpclient's binding imports gevent);
* ``"h11"``: the pure-Python h11, the fallback where httptools does not
  load.

``"geventhttpclient"`` and ``"http.client"``, the names of earlier
releases, still work, with a :class:`DeprecationWarning`: they mean
``"llhttp"`` and ``"h11"``.

One set of limits holds on both, so that a hostile server can make the
parser hold neither unbounded memory nor work that never yields an event
(each exceeded limit is a
:class:`~napixclient.failures.MalformedAnswer` naming it):

* :data:`MAX_LINE` bytes for a line of a head (the status line included);
* :data:`MAX_HEADER_FIELDS` fields in a head, and in the trailer section;
* :data:`MAX_HEAD_SIZE` bytes for all the heads of one answer together,
  interim ones included, and :data:`MAX_INTERIM_ANSWERS` interim answers;
* :data:`MAX_TRAILER_SIZE` bytes of chunked framing that carry no body: the
  trailer section after the last chunk (RFC 9112, section 7.1.2), or chunk
  extensions;
* ``max_body_size`` bytes of body, as it came
  (:class:`~napixclient.failures.BodyLimitExceeded`, at once when a
  ``Content-Length`` announces more).

Other failures: an answer that is not HTTP/1.1 as RFC 9112 allows is a
:class:`~napixclient.failures.MalformedAnswer` (a status below 100, a 101
nobody asked for, ambiguous framing); one cut short is a
:class:`~napixclient.failures.ConnectionBroken` (``before_answer`` when not a
byte of it came). No message quotes the far side's bytes.
"""

from __future__ import annotations

import importlib
import re
import warnings
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

from napixclient.failures import BodyLimitExceeded, ConnectionBroken, MalformedAnswer
from napixclient.response import Field, Headers

__all__ = [
    "BROKE",
    "MAX_HEADER_FIELDS",
    "MAX_HEAD_SIZE",
    "MAX_INTERIM_ANSWERS",
    "MAX_LINE",
    "MAX_TRAILER_SIZE",
    "Answer",
    "Body",
    "End",
    "Event",
    "Head",
    "Reading",
    "ResponseParser",
    "available_parsers",
    "check_parser",
    "default_parser",
]

#: The most header fields one head may have (an interim answer's head counts
#: apart), and the most fields of a trailer section.
MAX_HEADER_FIELDS = 99
#: The longest line of a head, status line included, in bytes with its CRLF.
MAX_LINE = 65536
#: The most bytes of all the heads of one answer, interim ones included.
MAX_HEAD_SIZE = 256 * 1024
#: The most interim (1xx) answers before the final one.
MAX_INTERIM_ANSWERS = 16
#: The most bytes of chunked framing in a row that carry no body: the
#: trailer section, or chunk extensions.
MAX_TRAILER_SIZE = 64 * 1024

BROKE = "the connection broke during the exchange: "

_TOO_MANY_FIELDS = f"the answer has too many header fields (more than {MAX_HEADER_FIELDS})"
_TOO_MANY_TRAILERS = f"the answer has too many trailer fields (more than {MAX_HEADER_FIELDS})"
_LINE_TOO_LONG = f"the answer has a header line longer than {MAX_LINE} bytes"
_HEAD_TOO_LONG = (f"the answer's head (interim answers included) is longer than "
                  f"{MAX_HEAD_SIZE} bytes")
_TOO_MANY_INTERIM = (f"the server sent more than {MAX_INTERIM_ANSWERS} interim (1xx) "
                     "answers")
_TRAILERS_TOO_LONG = (f"the answer's trailer section (or its chunk framing) is longer than "
                      f"{MAX_TRAILER_SIZE} bytes")
_SWITCHED = "the server switched protocols (101) without being asked to"
_NOT_HTTP = BROKE + "the answer is not HTTP (BadStatusLine)"
_AMBIGUOUS = BROKE + "ambiguous or invalid Content-Length"
# RFC 9112, section 6.3, rule 1: these answers end with their head, whatever
# their fields say (and so does any answer to HEAD).
_NO_BODY = frozenset([204, 304])
# A status line: an HTTP version, a three-digit status, then a space or the
# line's end (the reason phrase may be empty).
_STATUS_LINE = re.compile(rb"HTTP/[0-9]\.[0-9] ([0-9]{3})(?:[ \t]|\r?\n)")
# What a fast first read must stay under to be handed to the engine whole:
# one line can then be no longer than MAX_LINE, and a head of n fields has
# n + 2 line ends.
_FAST_LINES = MAX_HEADER_FIELDS + 2


# -- events ---------------------------------------------------------------------------

class Head(NamedTuple):
    """The final answer's head: ``status`` (``int``, 200 to 999), ``reason``
    (``str``, possibly empty), ``fields`` (``(name, value)`` pairs of
    ``str`` as they came, Latin-1, in order)."""

    status: int
    reason: str
    fields: List[Field]


class Body(NamedTuple):
    """A piece of the body (``bytes``, never empty), as it came."""

    data: bytes


class End(NamedTuple):
    """The answer is whole.

    ``reusable`` (``bool``): whether the connection may carry another
    request: not when the server said it closes it (``Connection: close``,
    HTTP/1.0), when bytes came after the end of the answer (they would be
    read as the next answer), when the body ran until the connection closed,
    and not for a 204 or 304 that announced a chunked body (some servers
    send its last chunk; RFC 9112 says nothing follows: either way the
    connection is not trusted again). ``rest`` (``bytes``): what came after
    the head of an answer that has no body (after a ``2xx`` to ``CONNECT``,
    the tunnel's first bytes), else ``b""``.
    """

    reusable: bool
    rest: bytes = b""


#: What :meth:`ResponseParser.feed` returns a list of.
Event = Union[Head, Body, End]

# The events (and the Answer) of every answer are made with tuple.__new__,
# as their classes' own __new__ does it, without the frame of that __new__
# (a Python function NamedTuple writes).
_new = tuple.__new__


def _no_answer() -> ConnectionBroken:
    return ConnectionBroken(BROKE + "the server closed the connection without answering",
                            before_answer=True)


def _head_cut() -> ConnectionBroken:
    return ConnectionBroken(BROKE + "the answer ended before the end of its head")


def _cut_short(partial: int, expected: Optional[int]) -> ConnectionBroken:
    if expected is not None:
        return ConnectionBroken(BROKE + f"the body ended after {partial} bytes, "
                                f"{expected} fewer than announced")
    return ConnectionBroken(BROKE + "the body ended early, or its chunked encoding is "
                            f"malformed, after {partial} bytes")


class _Beyond(Exception):
    """A new answer began after the end of the final one (engine signal)."""


# Phases of a parser.
_HEAD, _BODY, _DONE = 0, 1, 2


# -- the parser -----------------------------------------------------------------------

class ResponseParser:
    """Reads one answer to one request: bytes in, events out (see the module).

    :param method: the request's method, upper case: the answer to ``HEAD``
        has no body, and a ``2xx`` to ``CONNECT`` ends with its head (the
        tunnel follows).
    :param max_body_size: the most bytes of body (as it came) accepted
        (``int`` >= 1).
    :param engine: ``"llhttp"`` or ``"h11"`` (see :func:`check_parser`).
    :raises ValueError: for an unknown or unavailable engine.

    Not reusable: make one per answer. After it raised, it must not be fed
    again (the connection is not trusted again either).
    """

    __slots__ = ("method", "max_body_size", "_name", "_engine", "_events", "_phase", "_seen",
                 "_line", "_blank", "_fields", "_head_bytes", "_interim", "_status",
                 "_status_line",
                 "_body_size", "_length", "_until_close", "_framing", "_trailers",
                 "_extra", "_no_body_rest", "_chunked_no_body")

    def __init__(self, method: str, max_body_size: int, engine: str = "llhttp") -> None:
        self.method = method
        self.max_body_size = max_body_size
        self._events: List[Event] = []
        self._phase = _HEAD
        self._seen = 0            # bytes fed so far
        self._line = 0            # bytes of the head line being read, before this feed
        self._blank = True        # that line holds only CR so far
        self._fields = -1         # fields of the head being read; -1 before its status line
        self._head_bytes = 0
        self._interim = 0
        self._status = 0
        self._status_line = b""   # the status line being read, line by line
        self._body_size = 0
        self._length: Optional[int] = None   # the announced Content-Length
        self._until_close = False            # the body runs until the connection closes
        self._framing = 0                    # bytes in a row that carried no body
        self._trailers = 0                   # trailer fields
        self._extra = False                  # bytes came after the end of the answer
        self._no_body_rest = b""
        self._chunked_no_body = False
        self._name = (engine if type(engine) is str and _loadable.get(engine)
                      else check_parser(engine))
        # Made by the first feed: one that fits the first bytes.
        self._engine: Any = None

    @property
    def started(self) -> bool:
        """Whether a byte of the answer came (``bool``)."""
        return self._seen > 0

    @property
    def head_done(self) -> bool:
        """Whether the final answer's head was read (``bool``)."""
        return self._phase != _HEAD

    @property
    def done(self) -> bool:
        """Whether the answer is whole (``bool``)."""
        return self._phase == _DONE

    def feed(self, data: bytes) -> List[Event]:
        """Take the next bytes of the answer.

        :param data: what the connection received (``bytes``, not empty).
        :returns: the events these bytes completed, in order (a new
            ``list``; empty when they completed nothing).
        :raises MalformedAnswer: for an answer that is not HTTP/1.1, or
            breaks a limit of the module.
        :raises BodyLimitExceeded: for a body larger than ``max_body_size``.
        """
        events = self._events = []
        if self._phase == _DONE:
            self._extra = True
            return events
        self._seen += len(data)
        if self._phase == _HEAD:
            if self._seen == len(data) and data[9:10] != b"1":
                # The usual answer: the final head, whole in the first bytes
                # and within the limits, is handed to the engine at once.
                end = data.find(b"\r\n\r\n") + 4
                if (4 <= end <= MAX_LINE
                        and data.count(b"\n", 0, end) <= _FAST_LINES):
                    if self._read_first(data, end):
                        return events
                    self._restart()  # read again line by line, to say where it breaks
            self._read_head(data)
        else:
            self._read_body(data)
        if self._phase == _DONE:
            self._drop_engine()
        return events

    def feed_eof(self) -> List[Event]:
        """The connection closed: the end of the stream.

        :returns: the events that completed (the :class:`End` of a body
            read until the close).
        :raises ConnectionBroken: when the answer is not whole
            (``before_answer=True`` when not a byte of it came).
        """
        events = self._events = []
        if self._phase == _HEAD:
            raise _no_answer() if self._seen == 0 else _head_cut()
        if self._phase == _BODY:
            if self._until_close:
                self._engine.feed_eof()
                if self._phase != _DONE:
                    self._end(False)
            else:
                expected = self._length
                raise _cut_short(self._body_size, None if expected is None
                                 else max(0, expected - self._body_size))
        if self._phase == _DONE:
            self._drop_engine()
        return events

    def _drop_engine(self) -> None:
        """The answer is whole: the engine is let go, and its references to
        this parser with it, so that an answer read leaves no reference
        cycle for the garbage collector (the engine and the parser point at
        each other; llhttp's binding holds the engine's callbacks)."""
        engine = self._engine
        if engine is not None:
            self._engine = None
            engine.close()

    # -- the head, line by line -------------------------------------------------

    def _read_first(self, data: bytes, end: int) -> bool:
        """Read the first bytes received, ``data``, whose final head ends at
        ``data[end]`` and is within the limits, the head in one call of the
        engine; whether it was read (``False``: the engine refused it, and
        it is to be read again line by line).

        On llhttp, the body that came with the head goes in the same call,
        but for an answer without a body, whose end the front decides (h11
        is given the head alone: it counts ``Content-Length`` fields in
        what it is fed).
        """
        size = len(data)
        head = data[:end] if end < size else data
        name = self._name
        whole = False
        if name == "llhttp":
            whole = (end < size and self.method != "HEAD" and self.method != "CONNECT"
                     and data[9:12] != b"204" and data[9:12] != b"304")
        engine = self._engine = _ENGINES[name](self, self.method)
        try:
            engine.feed(data if whole else head)
        except MalformedAnswer:
            return False
        if self._phase == _HEAD:
            return False
        self._head_bytes = end
        if not whole:
            self._after_head(data, end)
        elif self._phase == _BODY and self._body_size == 0:
            # As _read_body counts bytes that carried no body.
            self._framing = size - end
            if self._framing > MAX_TRAILER_SIZE:
                raise MalformedAnswer(_TRAILERS_TOO_LONG)
        if self._phase == _DONE:
            self._drop_engine()
        return True

    def _restart(self) -> None:
        """Forget what a fast read of the first bytes found: they are read
        again, line by line, by an engine made afresh."""
        del self._events[:]
        self._phase = _HEAD
        self._interim = 0
        self._body_size = self._framing = self._trailers = 0
        self._length = None
        self._until_close = self._extra = self._chunked_no_body = False
        self._no_body_rest = b""
        self._engine = None

    def _read_head(self, data: bytes) -> None:
        """Hand ``data`` to the engine a line at a time while heads are read,
        counting the limits on the bytes as they came; what follows the final
        head goes to the body."""
        if self._engine is None:
            self._engine = _ENGINES[self._name](self, self.method)
        start, size = 0, len(data)
        while start < size:
            end = data.find(b"\n", start) + 1
            piece_end = end if end else size
            length = piece_end - start
            self._line += length
            if self._line > MAX_LINE:
                raise MalformedAnswer(_LINE_TOO_LONG)
            self._head_bytes += length
            if self._head_bytes > MAX_HEAD_SIZE:
                raise MalformedAnswer(_HEAD_TOO_LONG)
            if self._blank:
                # Only CR and LF so far: the blank line that ends a head.
                self._blank = data[start:piece_end].strip(b"\r\n") == b""
            status_line = self._fields < 0
            if status_line:
                self._status_line += data[start:piece_end]
                if end:
                    self._check_status_line()
            elif end and not self._blank:
                self._fields += 1
                if self._fields > MAX_HEADER_FIELDS:
                    raise MalformedAnswer(_TOO_MANY_FIELDS)
            self._engine.feed(data[start:piece_end] if start or piece_end < size else data)
            if not end:
                return
            if status_line:
                self._fields = 0
                self._status_line = b""
            self._line, self._blank = 0, True
            start = end
            if self._phase != _HEAD:
                self._after_head(data, end)
                return

    def _check_status_line(self) -> None:
        """A whole status line (RFC 9112, section 4), checked the same way
        whatever the engine: an HTTP version and a three-digit status."""
        match = _STATUS_LINE.match(self._status_line)
        if match is None:
            raise MalformedAnswer(_NOT_HTTP)
        self._check_status(int(match.group(1)))

    @staticmethod
    def _check_status(status: int) -> None:
        if status == 101:
            raise MalformedAnswer(_SWITCHED)
        if status < 100:
            raise MalformedAnswer(f"{BROKE}the answer's status {status:03d} is not an HTTP "
                                  "status (100 to 999)")

    def _after_head(self, data: bytes, end: int) -> None:
        """The final head ended at ``data[end]``: the rest is body, or, for
        an answer without one, what follows it."""
        if self._phase == _BODY:
            if end < len(data):
                self._read_body(data[end:])
            return
        # An answer without a body: it ended with its head.
        rest = data[end:]
        if rest:
            self._extra = True
            self._no_body_rest = rest
        self._end(self._engine.keep_alive())

    # -- the body -----------------------------------------------------------------

    def _read_body(self, data: bytes) -> None:
        before = self._body_size
        self._engine.feed(data)
        if self._phase == _BODY:
            if self._body_size == before:
                # No body came: chunk framing, or trailers, or nothing yet.
                self._framing += len(data)
                if self._framing > MAX_TRAILER_SIZE:
                    raise MalformedAnswer(_TRAILERS_TOO_LONG)
            else:
                self._framing = 0

    # -- what the engine found ------------------------------------------------------

    def _head(self, status: int, reason: str, fields: List[Field]) -> None:
        """A head was read (an interim one, or the final one)."""
        if status < 200:
            if status >= 100 and status != 101:
                self._interim += 1
                if self._interim > MAX_INTERIM_ANSWERS:
                    raise MalformedAnswer(_TOO_MANY_INTERIM)
                self._fields = -1
                return
            self._check_status(status)  # raises
        self._status = status
        self._events.append(_new(Head, (status, reason, fields)))
        no_body = (self.method == "HEAD" or status in _NO_BODY
                   or (self.method == "CONNECT" and 200 <= status < 300))
        lengths: List[str] = []
        chunked = False
        for name, value in fields:
            if len(name) == 14 and name.lower() == "content-length":
                lengths.append(value)
            elif len(name) == 17 and name.lower() == "transfer-encoding":
                chunked = True
        if no_body:
            # No body whatever the fields say; a 204 or 304 that announces a
            # chunked one is not trusted again.
            self._chunked_no_body = chunked and status in _NO_BODY
            self._phase = _DONE
            return
        if lengths:
            # Refuse ambiguous framing (RFC 9112, section 6.3, rules 3 and 5).
            value = lengths[0].strip()
            if len(lengths) > 1 or chunked or not (value.isascii() and value.isdigit()):
                raise MalformedAnswer(_AMBIGUOUS)
            self._length = int(value)
            if self._length > self.max_body_size:
                raise BodyLimitExceeded(self._length, status, self.max_body_size)
        elif not chunked:
            self._until_close = True
        self._phase = _BODY

    def _data(self, data: bytes) -> None:
        """A piece of the body came."""
        if data:
            self._body_size += len(data)
            if self._body_size > self.max_body_size:
                raise BodyLimitExceeded(None, self._status, self.max_body_size)
            self._events.append(_new(Body, (bytes(data),)))

    def _trailer(self) -> None:
        """A trailer field came."""
        self._trailers += 1
        if self._trailers > MAX_HEADER_FIELDS:
            raise MalformedAnswer(_TOO_MANY_TRAILERS)

    def _complete(self, keep_alive: bool) -> None:
        """The engine read the whole answer."""
        if self._phase == _BODY:
            self._end(keep_alive and not self._until_close)

    def _end(self, keep_alive: bool) -> None:
        self._phase = _DONE
        reusable = keep_alive and not self._extra and not self._chunked_no_body
        self._events.append(_new(End, (reusable, self._no_body_rest)))

    def _beyond(self) -> None:
        """Bytes of a new answer came after the end of this one."""
        self._extra = True
        for index, event in enumerate(self._events):
            if type(event) is End:
                self._events[index] = End(False, event.rest)

    def _malformed(self, detail: str) -> Union[MalformedAnswer, ConnectionBroken]:
        """The failure for what the engine refused, in the phase it was in."""
        if self._phase == _HEAD:
            if self._fields < 0 and self._interim == 0:
                return MalformedAnswer(_NOT_HTTP)
            return MalformedAnswer(BROKE + f"malformed head ({detail})")
        return _cut_short(self._body_size, None)


# -- engines -------------------------------------------------------------------------

class _LLHTTP:
    """llhttp through httptools: httptools calls back ``on_*`` as it reads."""

    name = "llhttp"
    __slots__ = ("front", "parser", "reason", "fields")
    # Callbacks not wanted: None rather than absent, since httptools looks
    # each up with getattr(), and a failed look-up raises and catches an
    # AttributeError, each time a parser is made.
    on_chunk_header = None
    on_chunk_complete = None

    def __init__(self, front: ResponseParser, method: str) -> None:
        self.front = front
        self.parser = (_httptools_module or _httptools()).HttpResponseParser(self)
        self.reason = b""
        self.fields: List[Field] = []

    # httptools' protocol -------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.front._phase == _DONE:
            raise _Beyond()
        self.reason = b""
        self.fields = []

    def on_status(self, data: bytes) -> None:
        self.reason += data

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.front._phase == _HEAD:
            self.fields.append((name.decode("latin-1"), value.decode("latin-1")))
        else:
            self.front._trailer()

    def on_headers_complete(self) -> None:
        self.front._head(self.parser.get_status_code(), self.reason.decode("latin-1"),
                         self.fields)

    def on_body(self, data: bytes) -> None:
        self.front._data(data)

    def on_message_complete(self) -> None:
        # An answer without a body is ended by the front, after its head.
        front = self.front
        if front._phase == _BODY:  # as front._complete(), a frame less
            front._end(self.parser.should_keep_alive() and not front._until_close)

    # -- ----------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        errors = _errors  # set: the engine's parser came from _httptools()
        try:
            self.parser.feed_data(data)
        except errors.HttpParserCallbackError as error:
            cause = error.__context__
            if isinstance(cause, _Beyond):
                self.front._beyond()
                return
            if isinstance(cause, (MalformedAnswer, BodyLimitExceeded, ConnectionBroken)):
                raise cause from None
            raise
        except errors.HttpParserUpgrade:
            raise MalformedAnswer(_SWITCHED) from None
        except errors.HttpParserError as error:
            raise self.front._malformed(str(error).strip() or type(error).__name__) from None

    def feed_eof(self) -> None:
        """llhttp has no end of stream in httptools: a body read until the
        close ends here (the parser says so)."""

    def keep_alive(self) -> bool:
        return bool(self.parser.should_keep_alive())

    def close(self) -> None:
        """Let go of the binding's parser, which holds this engine's
        callbacks (a reference cycle otherwise)."""
        self.parser = None


class _H11:
    """The pure-Python h11, told the request's method so that it frames the
    answer as RFC 9112 says (HEAD, CONNECT)."""

    name = "h11"
    __slots__ = ("front", "connection", "h11", "lengths")

    def __init__(self, front: ResponseParser, method: str) -> None:
        import h11

        self.h11 = h11
        self.front = front
        # Content-Length fields of the final head: h11 folds equal ones into
        # one, and the front refuses repeated ones whatever their values.
        self.lengths = 0
        # Our limits are counted by the front; h11's is a backstop.
        self.connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_SIZE)
        self.connection.send(h11.Request(method=method, target="/",
                                         headers=[("Host", "napixclient")]))
        self.connection.send(h11.EndOfMessage())

    def feed(self, data: bytes) -> None:
        if self.front._phase == _HEAD:
            self.lengths += data.lower().count(b"content-length:")
        self.connection.receive_data(data)
        self._events()

    def feed_eof(self) -> None:
        self.connection.receive_data(b"")
        self._events()

    def _events(self) -> None:
        h11 = self.h11
        front = self.front
        connection = self.connection
        try:
            while True:
                event: Any = connection.next_event()
                kind = type(event)
                if kind is h11.Data:
                    front._data(event.data)
                elif kind is h11.Response or kind is h11.InformationalResponse:
                    fields = [(name.decode("latin-1"), value.decode("latin-1"))
                              for name, value in event.headers.raw_items()]
                    if kind is h11.Response and self.lengths > 1:
                        fields.append(("Content-Length", "(repeated)"))
                    self.lengths = 0
                    front._head(event.status_code, event.reason.decode("latin-1"), fields)
                elif kind is h11.EndOfMessage:
                    for _ in event.headers:
                        front._trailer()
                    if front._phase == _BODY:
                        front._complete(self.keep_alive())
                    if connection.trailing_data[0]:
                        front._beyond()
                    return
                elif event is h11.NEED_DATA or event is h11.PAUSED:
                    return
                elif kind is h11.ConnectionClosed:
                    return
        except h11.RemoteProtocolError as error:
            text = str(error)
            if "_SWITCH_UPGRADE" in text:
                raise MalformedAnswer(_SWITCHED) from None
            if front._phase == _BODY and "buffer" in text.lower():
                # h11's own bound on what it holds: trailers that never end.
                raise MalformedAnswer(_TRAILERS_TOO_LONG) from None
            if "status_code" in text or "illegal status line" in text:
                # A status h11 will not take (below 100): what the front says of it.
                raise front._malformed("bad status line") from None
            # h11's words, up to the far side's bytes they may quote.
            raise front._malformed(text.split(":")[0].strip() or "refused by h11") from None

    def keep_alive(self) -> bool:
        h11 = self.h11
        return (self.connection.their_state is h11.DONE
                and self.connection.our_state is h11.DONE)

    def close(self) -> None:
        """Nothing to let go: h11's connection holds no reference to the
        front."""


_httptools_module: Any = None
# httptools.parser.errors, once httptools is imported.
_errors: Any = None


def _httptools() -> Any:
    """httptools, imported on first use (:class:`ImportError` where it is
    not installed)."""
    global _httptools_module, _errors
    if _httptools_module is None:
        module = importlib.import_module("httptools")
        _errors = module.parser.errors
        _httptools_module = module
    return _httptools_module


_ENGINES: Dict[str, Callable[[ResponseParser, str], Any]] = {"llhttp": _LLHTTP, "h11": _H11}
#: The modules each engine needs.
_NEEDS = {"llhttp": "httptools", "h11": "h11"}
#: Names of earlier releases, and the engine each means now.
_ALIASES = {"geventhttpclient": "llhttp", "http.client": "h11"}
#: The engines a client uses when it names none, best first.
PREFERRED = ("llhttp", "h11")
_loadable: Dict[str, bool] = {}


def _loads(name: str) -> bool:
    if name not in _loadable:
        try:
            importlib.import_module(_NEEDS[name])
        except ImportError:
            _loadable[name] = False
        else:
            _loadable[name] = True
    return _loadable[name]


def check_parser(name: Optional[str]) -> str:
    """The engine called ``name``, checked: ``"llhttp"`` or ``"h11"``;
    ``None`` for :func:`default_parser`. ``"geventhttpclient"`` and
    ``"http.client"`` (earlier releases) mean ``"llhttp"`` and ``"h11"``,
    with a :class:`DeprecationWarning`.

    :raises ValueError: for another name, or an engine whose library cannot
        be imported here.
    """
    if name is None:
        return default_parser()
    if not isinstance(name, str):
        raise ValueError(f"parser must be a str such as 'llhttp', got {name!r}")
    if name in _ENGINES and _loadable.get(name):
        return name
    if name in _ALIASES:
        meant = _ALIASES[name]
        warnings.warn(f"parser={name!r} is now parser={meant!r}", DeprecationWarning,
                      stacklevel=3)
        name = meant
    if name not in _ENGINES:
        raise ValueError(f"parser must be one of {sorted(_ENGINES)}, got {name!r}")
    if not _loads(name):
        raise ValueError(f"parser {name!r} needs {_NEEDS[name]}, which cannot be imported "
                         f"here: pip install {_NEEDS[name]}")
    return name


def default_parser() -> str:
    """The engine a client uses when it names none: ``"llhttp"`` where
    httptools loads (a dependency, with wheels for CPython 3.10 to 3.13),
    else ``"h11"``."""
    for name in PREFERRED:
        if _loads(name):
            return name
    raise ValueError("no HTTP parser can be imported: pip install httptools or h11")


def available_parsers() -> List[str]:
    """The engines that can be used here (``"h11"``, ``"llhttp"``), sorted."""
    return sorted(name for name in _ENGINES if _loads(name))


# -- gathering an answer ----------------------------------------------------------------

class Answer(NamedTuple):
    """What came back: ``status`` (``int``), ``reason`` (``str``),
    ``headers`` (:class:`~napixclient.response.Headers`), ``content`` (the
    whole body as it came, ``bytes``)."""

    status: int
    reason: str
    headers: Headers
    content: bytes


class Reading:
    """One answer being read, as a driver reads it: it feeds what the
    connection receives, until :meth:`feed` says the answer is whole.

    :param method: the request's method, upper case.
    :param max_body_size: the most bytes of body (``int`` >= 1).
    :param engine: as for :class:`ResponseParser`.

    :ivar head: the :class:`Head` once read, else ``None``.
    :ivar end: the :class:`End` once read, else ``None``.
    """

    __slots__ = ("parser", "head", "end", "_parts")

    def __init__(self, method: str, max_body_size: int, engine: str) -> None:
        self.parser = ResponseParser(method, max_body_size, engine)
        self.head: Optional[Head] = None
        self.end: Optional[End] = None
        self._parts: List[bytes] = []

    @property
    def started(self) -> bool:
        """Whether a byte of the answer came."""
        return self.parser._seen > 0

    def feed(self, data: bytes) -> bool:
        """Take bytes received; whether the answer is whole now.

        :raises: as :meth:`ResponseParser.feed`.
        """
        for event in self.parser.feed(data):  # as _take(), a frame less
            kind = type(event)
            if kind is Body:
                self._parts.append(event.data)  # type: ignore[union-attr]
            elif kind is Head:
                self.head = event  # type: ignore[assignment]
            else:
                self.end = event  # type: ignore[assignment]
        return self.end is not None

    def feed_eof(self) -> bool:
        """The connection closed; ``True`` (the answer is whole) or a failure.

        :raises: as :meth:`ResponseParser.feed_eof`.
        """
        return self._take(self.parser.feed_eof())

    def _take(self, events: List[Event]) -> bool:
        for event in events:
            kind = type(event)
            if kind is Body:
                self._parts.append(event.data)  # type: ignore[union-attr]
            elif kind is Head:
                self.head = event  # type: ignore[assignment]
            else:
                self.end = event  # type: ignore[assignment]
        return self.end is not None

    @property
    def reusable(self) -> bool:
        """The framing verdict of the whole answer (see :class:`End`)."""
        return self.end is not None and self.end.reusable

    def answer(self) -> Answer:
        """The :class:`Answer`, once whole."""
        head = self.head
        assert head is not None and self.end is not None
        parts = self._parts
        content = parts[0] if len(parts) == 1 else b"".join(parts)
        return _new(Answer, (head.status, head.reason, Headers(head.fields), content))


def parse_answer(raw: bytes, method: str = "GET", *, max_body_size: int = 64 << 20,
                 engine: Optional[str] = None, eof: bool = False) -> Tuple[Answer, bool]:
    """Read a whole answer from ``raw`` (for tests and tools).

    :param raw: the bytes of the answer.
    :param eof: whether the stream ends after ``raw``.
    :returns: ``(answer, reusable)``.
    :raises: the failures of :meth:`ResponseParser.feed`, and
        :class:`~napixclient.failures.ConnectionBroken` when ``raw`` is not a
        whole answer.
    """
    reading = Reading(method, max_body_size, check_parser(engine))
    done = reading.feed(raw) if raw else False
    if not done:
        if not eof:
            raise ConnectionBroken(BROKE + "the answer is not whole")
        reading.feed_eof()
    return reading.answer(), reading.reusable
