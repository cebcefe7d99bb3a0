"""The ways an exchange can fail below HTTP, named once.

The drivers (:mod:`napixclient.connections`, :mod:`napixclient.aio`) and
the parser (:mod:`napixclient.core.parser`) translate socket, TLS and parser
errors into these classes where they happen, and nothing above them reads
another library's exception again (the way httpcore maps its backends'
errors once, at the boundary). Each kind names the
:class:`~napixclient.HTTPError` subclass it becomes
(:attr:`Failure.error`), with the failure's text as
``remote_error``: failures map to exceptions by type.

Every message is written for a person and holds no secret: no URL, no
query string, no header value, none of the far side's bytes.
"""

from __future__ import annotations

import http
import os
from typing import Optional, Type

from napixclient.exceptions import BodyTooLarge, ConnectionError, HTTPError, ProxyError, Timeout

__all__ = [
    "BodyLimitExceeded",
    "ConnectFailed",
    "ConnectTimedOut",
    "ConnectionBroken",
    "MalformedAnswer",
    "NameNotResolved",
    "ProxyFailed",
    "ProxyUnreachable",
    "ReadTimedOut",
    "TLSFailed",
    "Failure",
    "os_reason",
    "status_text",
]


class Failure(Exception):
    """A kind of failure below HTTP: no answer, or no usable one.

    :param message: what happened, for a person, secret-free (``str``).
    :ivar message: the same.
    :cvar error: the :class:`~napixclient.HTTPError` subclass this failure
        becomes: :class:`~napixclient.ConnectionError`,
        :class:`~napixclient.Timeout`,
        :class:`~napixclient.exceptions.BodyTooLarge` or
        :class:`~napixclient.ProxyError`.
    :cvar before_sending: ``True`` when the request cannot have reached the
        server (so repeating it, whatever its method, cannot act twice).
    """

    error: Type[HTTPError] = ConnectionError
    before_sending = False

    @property
    def error_class(self) -> str:
        """The name of :attr:`error` (``"ConnectionError"``...), as trace
        events and spans say it."""
        return self.error.__name__

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NameNotResolved(Failure):
    """The host name did not resolve to an address."""

    before_sending = True


class ConnectFailed(Failure):
    """No connection could be made: refused, unreachable, no file descriptor
    left."""

    before_sending = True


class ConnectTimedOut(Failure):
    """Connecting (TCP, or the TLS handshake) took longer than the connect
    timeout."""

    error = Timeout
    before_sending = True


class TLSFailed(Failure):
    """The TLS handshake failed, or the server's certificate was refused."""

    before_sending = True


class ProxyFailed(Failure):
    """The proxy would not carry the request to the origin: it answered
    ``CONNECT`` with a status other than 2xx (a 407 for want of credentials,
    a 403, a 502 when it could not reach the origin...), or a forwarded
    plain-http request with 407 Proxy Authentication Required (an answer
    only a proxy gives, RFC 9110 section 15.5.8); or it did not answer
    ``CONNECT`` in HTTP; or TLS with an https proxy failed. The message
    names the proxy, without its credentials: ``the proxy
    http://127.0.0.1:3128 answered 407 Proxy Authentication Required to
    CONNECT``. Becomes a :class:`~napixclient.exceptions.ProxyError`.

    :param message: as for :class:`Failure`.
    :param proxy: the proxy, shown as ``str(proxy)``
        (:class:`~napixclient.dialing.Proxy` prints no credentials).
    :param status: the proxy's answer's status (``int``), or ``None``.
    :ivar proxy: ``"scheme://host:port"`` of the proxy (``str``).
    :ivar status: the same status.
    """

    error = ProxyError
    before_sending = True

    def __init__(self, message: str, proxy: object, *, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.proxy = str(proxy)
        self.status = status


class ProxyUnreachable(ProxyFailed, ConnectFailed):
    """The proxy could not be reached: its name did not resolve, or it
    refused the connection. A :class:`ConnectFailed` too, so that
    ``retries`` retries it as it retries an origin that cannot be reached."""


class ReadTimedOut(Failure):
    """The server sent nothing for longer than the read timeout."""

    error = Timeout


class ConnectionBroken(Failure):
    """The connection was closed or reset during the exchange.

    :param message: as for :class:`Failure`.
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


class MalformedAnswer(Failure):
    """The answer is not HTTP/1.1 as RFC 9112 allows (ambiguous framing, a
    101 nobody asked for...), or breaks one of the limits of
    :mod:`napixclient.core.parser`, which the message names: ``the answer has too
    many header fields (more than 99)``
    (:data:`~napixclient.core.parser.MAX_HEADER_FIELDS`), ``the answer has a
    header line longer than 65536 bytes``
    (:data:`~napixclient.core.parser.MAX_LINE`), and the bounds of interim
    answers, of the whole head and of the trailer section."""


class BodyLimitExceeded(Failure):
    """The answer's body is larger than ``max_body_size``.

    :param length: the announced ``Content-Length`` (``int``), or ``None``
        when the body had no length and grew past the limit.
    :param status: the answer's status (``int``).
    :param limit: ``max_body_size`` (bytes).
    """

    error = BodyTooLarge

    def __init__(self, length: Optional[int], status: int, limit: int) -> None:
        super().__init__(
            f"the body has more than max_body_size ({limit} bytes)" if length is None else
            f"the body has {length} bytes, more than max_body_size ({limit} bytes)")
        self.length = length
        self.status = status
        self.limit = limit


def status_text(status: int) -> str:
    """``"407 Proxy Authentication Required"``: a status and the phrase RFC
    9110 gives it (never the far side's own reason phrase), or the status
    alone when it has none.

    :param status: an HTTP status (``int``).
    """
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def os_reason(error: OSError) -> str:
    """What an :class:`OSError` says, for a person: the system's words for
    its error number, in lower case (``"connection refused"``; the same
    whatever wrapped the error: gevent says it so, asyncio adds the
    address), else its ``strerror``, else its class's name."""
    if error.errno:
        return os.strerror(error.errno).lower()
    return error.strerror.lower() if error.strerror else type(error).__name__
