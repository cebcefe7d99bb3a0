"""When a failed exchange is sent again: the retry policy, free of I/O.

A :class:`RetryPolicy` is an immutable value: :meth:`RetryPolicy.after`
looks at a failure and returns the policy for the next attempt, or ``None``
when the failure is final; :meth:`RetryPolicy.backoff` says how long to wait
first. The connection layer (:mod:`napixclient.connections`) drives it and
does the waiting (with :func:`gevent.sleep`); nothing here sleeps or reads a
socket, so it is unit-tested on its own.

What is retried, for idempotent methods only (:data:`IDEMPOTENT_METHODS`,
RFC 9110 section 9.2.2), and for any method when the request cannot have
reached the server:

* a kept-alive connection found closed before the first byte of the answer
  (a *stale* connection: the server closed it as the request arrived): once,
  on a fresh connection, whatever ``retries`` says;
* a connection refused or unreachable, a name that did not resolve, or a
  connection reset before the first byte of the answer: ``retries`` times.

Never retried: timeouts (a retried timeout doubles the wait), TLS failures,
malformed answers, a connection broken during the answer, and any failure of
a POST or PATCH once the request may have reached the server.
"""

from __future__ import annotations

from typing import FrozenSet, Optional

from napixclient.failures import (
    ConnectFailed,
    ConnectionBroken,
    NameNotResolved,
    TransportFailure,
)

__all__ = ["IDEMPOTENT_METHODS", "RetryPolicy"]

#: Methods that RFC 9110 (section 9.2.2) makes idempotent: sending one twice
#: has the effect of sending it once.
IDEMPOTENT_METHODS: FrozenSet[str] = frozenset(
    ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"])


class RetryPolicy:
    """How many more times, and after what wait, a failed exchange is sent again.

    :param retries: how many times a connection failure is retried (``int``
        >= 0), besides the single retry of a stale connection.
    :param backoff: seconds (``float`` >= 0): no wait before the first
        retry, then ``backoff * 2 ** (n - 1)`` seconds before the n-th (the
        rule of urllib3's ``backoff_factor``).
    :param stale: how many stale kept-alive connections may be retried (``int``).
    :raises ValueError: for a negative or non-integer ``retries`` or
        ``stale``, or a ``backoff`` that is not a finite number >= 0.
    """

    __slots__ = ("retries", "backoff_factor", "stale", "attempts")

    def __init__(self, retries: int = 0, backoff: float = 0.0, stale: int = 1,
                 *, attempts: int = 0) -> None:
        for name, value in (("retries", retries), ("stale", stale), ("attempts", attempts)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if (not isinstance(backoff, (int, float)) or isinstance(backoff, bool)
                or not 0 <= backoff < float("inf")):
            raise ValueError(f"retry_backoff must be seconds >= 0, got {backoff!r}")
        self.retries = retries
        self.backoff_factor = float(backoff)
        self.stale = stale
        #: How many retries of counted failures were made so far (``int``).
        self.attempts = attempts

    def after(self, method: str, failure: TransportFailure) -> Optional["RetryPolicy"]:
        """The policy for the next attempt after ``failure``, or ``None`` when
        ``failure`` is final.

        :param method: the request's method, upper case.
        :param failure: what went wrong.
        """
        may_repeat = method in IDEMPOTENT_METHODS or failure.before_sending
        if not may_repeat:
            return None
        if isinstance(failure, ConnectionBroken) and failure.stale and self.stale > 0:
            return RetryPolicy(self.retries, self.backoff_factor, self.stale - 1,
                               attempts=self.attempts)
        counted = (isinstance(failure, (ConnectFailed, NameNotResolved))
                   or (isinstance(failure, ConnectionBroken) and failure.before_answer))
        if counted and self.retries > 0:
            return RetryPolicy(self.retries - 1, self.backoff_factor, self.stale,
                               attempts=self.attempts + 1)
        return None

    def backoff(self) -> float:
        """Seconds to wait before the attempt this policy is for: 0 before
        the first retry, ``backoff * 2 ** (n - 1)`` before the n-th."""
        if self.attempts <= 1:
            return 0.0
        return self.backoff_factor * 2 ** (self.attempts - 1)

    def __repr__(self) -> str:
        return (f"RetryPolicy(retries={self.retries}, backoff={self.backoff_factor:g}, "
                f"stale={self.stale})")
