"""The ways an exchange can fail below HTTP, named once.

The connection layer (:mod:`napixclient.connections`) and the HTTP/1.1 core
(:mod:`napixclient.http11`) translate socket, TLS and parser errors into
these classes where they happen, and nothing above them reads another
library's exception again (the way httpcore maps its backends' errors once,
at the boundary). :class:`~napixclient.Client` turns each into the
:class:`~napixclient.HTTPError` subclass its :attr:`~TransportFailure.error_class`
names, with the failure's text as ``remote_error``.

Every message is written for a person and holds no secret: no URL, no
query string, no header value, none of the far side's bytes.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "BodyLimitExceeded",
    "ConnectFailed",
    "ConnectTimedOut",
    "ConnectionBroken",
    "MalformedAnswer",
    "NameNotResolved",
    "ReadTimedOut",
    "TLSFailed",
    "TransportFailure",
]


class TransportFailure(Exception):
    """An exchange failed below HTTP: no answer, or no usable one.

    :param message: what happened, for a person, secret-free (``str``).
    :ivar message: the same.
    :cvar error_class: the name of the :class:`~napixclient.HTTPError`
        subclass this failure becomes: ``"ConnectionError"``, ``"Timeout"``
        or ``"BodyTooLarge"``.
    :cvar before_sending: ``True`` when the request cannot have reached the
        server (so repeating it, whatever its method, cannot act twice).
    """

    error_class = "ConnectionError"
    before_sending = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NameNotResolved(TransportFailure):
    """The host name did not resolve to an address."""

    before_sending = True


class ConnectFailed(TransportFailure):
    """No connection could be made: refused, unreachable, no file descriptor
    left."""

    before_sending = True


class ConnectTimedOut(TransportFailure):
    """Connecting (TCP, or the TLS handshake) took longer than the connect
    timeout."""

    error_class = "Timeout"
    before_sending = True


class TLSFailed(TransportFailure):
    """The TLS handshake failed, or the server's certificate was refused."""

    before_sending = True


class ReadTimedOut(TransportFailure):
    """The server sent nothing for longer than the read timeout."""

    error_class = "Timeout"


class ConnectionBroken(TransportFailure):
    """The connection was closed or reset during the exchange.

    :param message: as for :class:`TransportFailure`.
    :param before_answer: ``True`` when not one byte of the answer had come.
    :param stale: ``True`` when the connection had carried an earlier answer
        and was closed before this one began: the server closed an idle
        kept-alive connection as the request arrived (the keep-alive race),
        so it most likely never processed the request.
    """

    def __init__(self, message: str, *, before_answer: bool = False,
                 stale: bool = False) -> None:
        super().__init__(message)
        self.before_answer = before_answer
        self.stale = stale


class MalformedAnswer(TransportFailure):
    """The answer is not HTTP/1.1 as RFC 9112 allows (ambiguous framing, a
    101 nobody asked for...), or breaks one of the limits of
    :mod:`napixclient.http11`, which the message names: ``the answer has too
    many header fields (more than 99)``
    (:data:`~napixclient.http11.MAX_HEADER_FIELDS`), ``the answer has a
    header line longer than 65536 bytes``
    (:data:`~napixclient.http11.MAX_LINE`)."""


class BodyLimitExceeded(TransportFailure):
    """The answer's body is larger than ``max_body_size``.

    :param length: the announced ``Content-Length`` (``int``), or ``None``
        when the body had no length and grew past the limit.
    :param status: the answer's status (``int``).
    :param limit: ``max_body_size`` (bytes).
    """

    error_class = "BodyTooLarge"

    def __init__(self, length: Optional[int], status: int, limit: int) -> None:
        super().__init__(
            f"the body has more than max_body_size ({limit} bytes)" if length is None else
            f"the body has {length} bytes, more than max_body_size ({limit} bytes)")
        self.length = length
        self.status = status
        self.limit = limit
