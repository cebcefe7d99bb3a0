"""One attempt on one connection, decided: what is sent, what the answer
is, what a failure is called, and whether the connection serves again.

Both drivers carry an attempt out the same way: they make an
:class:`Exchange` for the connection they hold, send
:meth:`Exchange.data`, feed :attr:`Exchange.reading` what the connection
receives (:meth:`Exchange.head_read` once the head is in, when events are
wanted), and end with :meth:`Exchange.done` (the answer, and whether to keep
the connection) or :meth:`Exchange.failed` (the failure kind that stands for
what went wrong). The events ``request.sent``, ``response.headers`` and
``response.done`` are emitted here, so they are the same whatever the
driver.
"""

from __future__ import annotations

import ssl
from typing import Optional, Tuple

from napixclient.core.origin import Origin
from napixclient.core.parser import BROKE, Answer, Reading
from napixclient.core.request import absolute_form
from napixclient.core.tls import tls_reason
from napixclient.core.trace import Tracer
from napixclient.failures import ConnectionBroken, Failure, ReadTimedOut, os_reason
from napixclient.response import RequestRecord

__all__ = ["Deadline", "Exchange", "broken", "stale", "unsent"]


class Deadline(Exception):
    """The deadline of a request passed while one of its attempts waited
    (the driver's signal to :meth:`napixclient.core.client.Attempts.expired`)."""


def stale() -> ConnectionBroken:
    """The failure of a kept-alive connection closed before the answer began
    (retried once, on a fresh connection: the keep-alive race)."""
    return ConnectionBroken(BROKE + "the server closed the kept-alive connection before "
                            "answering", before_answer=True, stale=True)


def broken(error: BaseException) -> str:
    """What a connection's error says, for a person: a TLS alert after the
    handshake (in TLS 1.3, a server refuses the client's certificate when
    the answer is read), or the :class:`OSError`'s text."""
    if isinstance(error, ssl.SSLError):
        return tls_reason(error)
    if isinstance(error, OSError):
        return os_reason(error)
    return type(error).__name__


def unsent(error: Optional[BaseException] = None) -> ConnectionBroken:
    """The server closed or reset the connection, or answered, before it
    took the whole request: what stands for that if no answer can be read."""
    reason = ("the server answered before the whole request was sent" if error is None
              else broken(error))
    return ConnectionBroken(BROKE + reason, before_answer=True)


class Exchange:
    """One attempt on one connection (see the module).

    :param tracer: where events go.
    :param origin: where the request goes.
    :param record: the request's secret-free record.
    :param connection: the connection's number, for events.
    :param reused: whether the connection carried an answer before.
    :param method: the request's method, upper case.
    :param max_body_size: the most bytes of body.
    :param engine: the parser engine.
    :param attempt: the attempt's number (0 for the first).

    :ivar reading: the :class:`~napixclient.core.parser.Reading` the driver
        feeds.
    :ivar unsent: the failure that stands for a request the server did not
        take whole (set by the driver), or ``None``.
    """

    __slots__ = ("tracer", "tracing", "origin", "record", "connection", "reused", "reading",
                 "attempt", "unsent")

    def __init__(self, tracer: Tracer, origin: Origin, record: RequestRecord,
                 connection: int, reused: bool, method: str, max_body_size: int,
                 engine: str, attempt: int) -> None:
        self.tracer = tracer
        self.tracing = tracer.tracing()
        self.origin = origin
        self.record = record
        self.connection = connection
        self.reused = reused
        self.reading = Reading(method, max_body_size, engine)
        self.attempt = attempt
        self.unsent: Optional[ConnectionBroken] = None

    def data(self, data: bytes) -> bytes:
        """What goes on the connection for ``data`` (the request in origin
        form): through a proxy that forwards it, the request line in
        absolute form and ``Proxy-Authorization`` after it
        (:func:`~napixclient.core.request.absolute_form`)."""
        origin = self.origin
        if origin.forwarded:
            proxy = origin.proxy
            assert proxy is not None
            return absolute_form(data, origin.scheme, origin.authority, proxy.authorization)
        return data

    def sent(self, size: int) -> None:
        """The request went out (``size`` bytes)."""
        if self.tracing:
            self.tracer.emit("request.sent", self.origin, self.record, self.connection,
                             bytes=size, attempt=self.attempt)

    def head_read(self) -> None:
        """The answer's head is in (call it when :attr:`tracing`)."""
        head = self.reading.head
        if self.tracing and head is not None:
            self.tracer.emit("response.headers", self.origin, self.record, self.connection,
                             status=head.status)

    def failed(self, error: BaseException) -> Failure:
        """The failure kind that stands for ``error``, which interrupted the
        attempt: the parser's failure (kept, but a kept-alive connection cut
        before the answer began is *stale*), a read timeout
        (:class:`TimeoutError`), or the connection's :class:`OSError`."""
        started = self.reading.started
        if isinstance(error, (ConnectionBroken, OSError)) and not started:
            if self.unsent is not None:
                return self.unsent
        if isinstance(error, TimeoutError):
            return ReadTimedOut("timed out while reading the answer")
        if isinstance(error, ConnectionBroken):
            return stale() if self.reused and error.before_answer else error
        if isinstance(error, Failure):
            return error
        if self.reused and not started:
            return stale()
        return ConnectionBroken(BROKE + broken(error), before_answer=not started)

    def done(self) -> Tuple[Answer, bool]:
        """The answer is whole: it, and whether the connection may carry
        another request (the framing verdict, and the whole request taken)."""
        answer = self.reading.answer()
        keep = self.reading.reusable and self.unsent is None
        if self.tracing:
            self.tracer.emit("response.done", self.origin, self.record, self.connection,
                             status=answer.status, bytes=len(answer.content), reusable=keep)
        return answer, keep

