"""Undoing content codings: gzip, deflate, br and zstd, bounded while decoding.

:func:`decode_content` undoes the codings an answer names, never holding
more than ``max_body_size`` bytes of decoded body, so a compression bomb is
refused after that many bytes; :func:`accept_encoding` is what a client says
it can undo. No I/O: both drivers call it on a whole body.
"""

from __future__ import annotations

import importlib
import re
import sys
import zlib
from typing import Any, Callable, Dict, List, Optional

from napixclient.failures import BodyLimitExceeded, MalformedAnswer

__all__ = ["MAX_CODINGS", "MAX_MEMBERS", "accept_encoding", "content_codings",
           "decode_content"]

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

