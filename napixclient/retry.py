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

A :class:`StatusRetry` reads a :class:`urllib3.util.Retry` (what requests
users configure) into the same kind of value, for answers: which statuses
of which methods are sent again (its ``status_forcelist`` and
``allowed_methods``), after how long (``Retry-After``, else its backoff),
and how many times (its ``total``, ``status``, ``connect`` and ``read``
counts), and gives the :class:`RetryPolicy` that the connection failures of
each exchange follow, with its counts. The client drives it, signing each
attempt anew.
"""

from __future__ import annotations

import datetime
import email.utils
import random
import re
import sys
from typing import Any, FrozenSet, List, Optional, Tuple

from urllib3.util import Retry

from napixclient.failures import (
    ConnectFailed,
    ConnectionBroken,
    NameNotResolved,
    TransportFailure,
)

__all__ = ["IDEMPOTENT_METHODS", "RetryPolicy", "StatusRetry", "parse_retry_after"]

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
    :param attempts: how many counted retries came before (``int`` >= 0):
        the backoff doubles from there.
    :param connect: how many of the ``retries`` may be failures before the
        request was sent (refused, unreachable, unresolved), or ``None``
        for no count of their own (urllib3's ``connect``).
    :param read: how many may be resets before the first byte of the
        answer, or ``None`` for no count of their own (urllib3's ``read``).
    :param methods: the methods whose request may be sent again once it may
        have reached the server (``frozenset`` of upper-case names), or
        ``None`` for every method; :data:`IDEMPOTENT_METHODS` by default.
    :param backoff_max: the longest backoff, seconds (``float`` >= 0).
    :param jitter: seconds (``float`` >= 0): a random wait of up to this much
        is added to each backoff after the first retry (urllib3's
        ``backoff_jitter``).
    :param record: a ``list`` to which :meth:`after` appends each policy it
        returns, and which those policies share, so that the caller of a
        retry loop it does not run (the connection layer's) can see the
        last one, and so what was spent; ``None``: not recorded.
    :raises ValueError: for a negative or non-integer ``retries``,
        ``stale``, ``attempts``, ``connect`` or ``read``, or a ``backoff``,
        ``backoff_max`` or ``jitter`` that is not a finite number >= 0
        (``backoff_max`` may be infinite).
    """

    __slots__ = ("retries", "backoff_factor", "stale", "attempts", "connect", "read",
                 "methods", "backoff_max", "jitter", "record")

    def __init__(self, retries: int = 0, backoff: float = 0.0, stale: int = 1,
                 *, attempts: int = 0, connect: Optional[int] = None,
                 read: Optional[int] = None,
                 methods: Optional[FrozenSet[str]] = IDEMPOTENT_METHODS,
                 backoff_max: float = float("inf"), jitter: float = 0.0,
                 record: Optional[List["RetryPolicy"]] = None) -> None:
        for name, value in (("retries", retries), ("stale", stale), ("attempts", attempts),
                            ("connect", connect), ("read", read)):
            if value is None and name in ("connect", "read"):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if not _seconds(backoff):
            raise ValueError(f"retry_backoff must be seconds >= 0, got {backoff!r}")
        if not _seconds(jitter):
            raise ValueError(f"jitter must be seconds >= 0, got {jitter!r}")
        if not _seconds(backoff_max, infinite=True):
            raise ValueError(f"backoff_max must be seconds >= 0, got {backoff_max!r}")
        self.retries = retries
        self.backoff_factor = float(backoff)
        self.stale = stale
        #: How many retries of counted failures were made so far (``int``).
        self.attempts = attempts
        self.connect = connect
        self.read = read
        self.methods = methods
        self.backoff_max = float(backoff_max)
        self.jitter = float(jitter)
        self.record = record

    def _following(self, retries: int, stale: int, attempts: int, connect: Optional[int],
                   read: Optional[int]) -> "RetryPolicy":
        following = RetryPolicy(retries, self.backoff_factor, stale, attempts=attempts,
                                connect=connect, read=read, methods=self.methods,
                                backoff_max=self.backoff_max, jitter=self.jitter,
                                record=self.record)
        if self.record is not None:
            self.record.append(following)
        return following

    def after(self, method: str, failure: TransportFailure) -> Optional["RetryPolicy"]:
        """The policy for the next attempt after ``failure``, or ``None`` when
        ``failure`` is final.

        :param method: the request's method, upper case.
        :param failure: what went wrong.
        """
        may_repeat = (self.methods is None or method in self.methods
                      or failure.before_sending)
        if not may_repeat:
            return None
        if isinstance(failure, ConnectionBroken) and failure.stale and self.stale > 0:
            return self._following(self.retries, self.stale - 1, self.attempts,
                                   self.connect, self.read)
        before = isinstance(failure, (ConnectFailed, NameNotResolved))
        reset = isinstance(failure, ConnectionBroken) and failure.before_answer
        if not (before or reset) or self.retries <= 0:
            return None
        connect, read = self.connect, self.read
        if before and connect is not None:
            if connect <= 0:
                return None
            connect -= 1
        if reset and read is not None:
            if read <= 0:
                return None
            read -= 1
        return self._following(self.retries - 1, self.stale, self.attempts + 1, connect, read)

    def backoff(self) -> float:
        """Seconds to wait before the attempt this policy is for: 0 before
        the first retry, ``backoff * 2 ** (n - 1)`` before the n-th (plus
        up to ``jitter``), at most ``backoff_max``."""
        return _backoff(self.attempts, self.backoff_factor, self.jitter, self.backoff_max)

    def __repr__(self) -> str:
        return (f"RetryPolicy(retries={self.retries}, backoff={self.backoff_factor:g}, "
                f"stale={self.stale})")


def _seconds(value: Any, infinite: bool = False) -> bool:
    """Whether ``value`` is a number of seconds >= 0 (finite unless ``infinite``)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0 <= value and (value < float("inf") or (infinite and value == value)))


def _backoff(attempts: int, factor: float, jitter: float, ceiling: float) -> float:
    """urllib3's rule: nothing before the first retry, then ``factor * 2 **
    (n - 1)`` before the n-th, plus up to ``jitter`` at random, at most
    ``ceiling``."""
    if attempts <= 1:
        return 0.0
    wait = factor * 2 ** (attempts - 1)
    if jitter:
        wait += random.random() * jitter
    return float(max(0.0, min(ceiling, wait)))


# Retry-After as a number of seconds (RFC 9110, section 10.2.3), blanks around.
_DELAY_SECONDS = re.compile(r"\s*[0-9]+\s*")


def parse_retry_after(value: Optional[str], now: float) -> Optional[float]:
    """The wait a ``Retry-After`` field asks for (RFC 9110, section 10.2.3).

    :param value: the field: a number of seconds (``"120"``) or an HTTP
        date (``"Wed, 21 Oct 2015 07:28:00 GMT"``), or ``None``.
    :param now: the current time, Unix seconds (:func:`time.time`), for a date.
    :returns: seconds (``float`` >= 0; a date in the past gives 0), or
        ``None`` when there is no field or it is neither form.
    """
    if value is None:
        return None
    if _DELAY_SECONDS.fullmatch(value):
        return float(int(value))
    try:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        # An HTTP date is in GMT; the obsolete asctime form says no zone.
        moment = datetime.datetime(*parsed[:6], tzinfo=datetime.timezone.utc)
        seconds = moment.timestamp() - (parsed[9] or 0)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None  # a day 99, a month 13...
    return max(0.0, seconds - now)


def _count(value: Any, name: str) -> Optional[int]:
    """A count of a :class:`urllib3.util.Retry`: ``None`` (no count of its
    own), ``False`` (none) or an ``int`` (below 0: none)."""
    if value is None:
        return None
    if value is False:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"retries: the Retry's {name} must be an int, False or None, "
                         f"got {value!r}")
    return max(0, value)


#: ``total=None`` with no other count: no limit but the request's deadline.
_UNLIMITED = sys.maxsize


class StatusRetry:
    """The retries a :class:`urllib3.util.Retry` asks for, as an immutable
    value that :meth:`after_status` and :meth:`spent` step on (one per
    request; one serves all the requests of a client).

    Read from the Retry's public attributes, with urllib3's meaning:

    * a status in ``status_forcelist`` is retried for the methods of
      ``allowed_methods`` (``None``, or empty, as urllib3 reads it: every
      method; the default: the idempotent ones, so never POST or PATCH
      unless listed); so is a 413, 429 or 503
      (``Retry.RETRY_AFTER_STATUS_CODES``) that carries a ``Retry-After``,
      when ``respect_retry_after_header`` and ``total`` is not 0;
    * the wait before a status retry is the answer's ``Retry-After``
      (seconds or an HTTP date, at most ``retry_after_max``) when
      ``respect_retry_after_header``, else the backoff: nothing before the
      first retry, then ``backoff_factor * 2 ** (n - 1)`` plus up to
      ``backoff_jitter``, at most ``backoff_max``, ``n`` counting every
      retry of the request, status or connection;
    * each retry takes one from ``total`` and from its own count
      (``status``; ``connect`` for a failure before sending; ``read`` for
      a reset before the answer), ``None`` being no count; a retry that
      would take a count below 0 is not made. ``False`` counts as 0.

    Connection failures follow the rules of :class:`RetryPolicy` (never a
    timeout, a TLS failure or a malformed answer, whatever ``read`` or
    ``connect`` say), with these counts; ``methods`` replaces
    :data:`IDEMPOTENT_METHODS` there too. ``raise_on_status``, ``redirect``
    and the rest of what is about redirects mean nothing here: redirects
    are not followed, and when retries run out the last answer is what the
    caller gets (a :class:`~napixclient.HTTPError` for a 503).

    :param retry: a :class:`urllib3.util.Retry` (what
        ``requests.adapters.Retry`` is).
    :raises ValueError: for a Retry whose counts or times are not numbers.
    """

    __slots__ = ("total", "connect", "read", "status", "methods", "statuses",
                 "after_statuses", "respect_retry_after", "retry_after_max",
                 "backoff_factor", "backoff_max", "jitter", "attempts")

    def __init__(self, retry: Retry) -> None:
        if not isinstance(retry, Retry):
            raise ValueError(f"retries must be an int >= 0 or a urllib3.util.Retry, "
                             f"got {retry!r}")
        self.total = _count(retry.total, "total")
        self.connect = _count(retry.connect, "connect")
        self.read = _count(retry.read, "read")
        self.status = _count(retry.status, "status")
        allowed = retry.allowed_methods
        #: Methods whose statuses are retried (``frozenset``), or ``None``: all.
        self.methods: Optional[FrozenSet[str]] = (
            frozenset(str(name).upper() for name in allowed) if allowed else None)
        #: The statuses retried (``frozenset`` of ``int``).
        self.statuses: FrozenSet[int] = frozenset(retry.status_forcelist or ())
        self.after_statuses: FrozenSet[int] = frozenset(retry.RETRY_AFTER_STATUS_CODES)
        self.respect_retry_after = bool(retry.respect_retry_after_header)
        # urllib3 >= 2.6 caps a Retry-After (6 hours by default).
        ceiling = getattr(retry, "retry_after_max", None)
        self.retry_after_max = float("inf") if ceiling is None else float(ceiling)
        factor, maximum = retry.backoff_factor, retry.backoff_max
        jitter = getattr(retry, "backoff_jitter", 0.0)
        for name, value in (("backoff_factor", factor), ("backoff_jitter", jitter)):
            if not _seconds(value):
                raise ValueError(f"retries: the Retry's {name} must be seconds >= 0, "
                                 f"got {value!r}")
        if not _seconds(maximum, infinite=True):
            raise ValueError(f"retries: the Retry's backoff_max must be seconds >= 0, "
                             f"got {maximum!r}")
        self.backoff_factor = float(factor)
        self.backoff_max = float(maximum)
        self.jitter = float(jitter)
        #: How many retries of the request came before (``int``).
        self.attempts = 0

    def _with(self, **changes: Any) -> "StatusRetry":
        following = object.__new__(StatusRetry)
        for name in self.__slots__:
            setattr(following, name, changes.get(name, getattr(self, name)))
        return following

    def connection_policy(self, record: Optional[List[RetryPolicy]] = None) -> RetryPolicy:
        """The :class:`RetryPolicy` for the connection failures of the next
        exchange, with what is left of ``total``, ``connect`` and ``read``.

        :param record: passed to the policy: give a list, then :meth:`spent`
            with its last entry (or the policy itself when it is empty).
        """
        return RetryPolicy(_UNLIMITED if self.total is None else self.total,
                           self.backoff_factor, attempts=self.attempts,
                           connect=self.connect, read=self.read, methods=self.methods,
                           backoff_max=self.backoff_max, jitter=self.jitter, record=record)

    def spent(self, last: RetryPolicy) -> "StatusRetry":
        """What is left after an exchange whose connection failures ended
        with the policy ``last`` (the last one recorded, or the one
        :meth:`connection_policy` gave when nothing was retried)."""
        used = last.attempts - self.attempts
        if used <= 0:
            return self
        return self._with(total=None if self.total is None else max(0, self.total - used),
                          connect=last.connect, read=last.read, attempts=last.attempts)

    def retries_status(self, method: str, status: int, has_retry_after: bool) -> bool:
        """Whether an answer of ``status`` to ``method`` is one to retry
        (urllib3's ``Retry.is_retry``), counts aside.

        :param method: upper case.
        :param has_retry_after: whether the answer has a ``Retry-After``.
        """
        if self.methods is not None and method not in self.methods:
            return False
        if status in self.statuses:
            return True
        return bool(self.total != 0 and self.respect_retry_after and has_retry_after
                    and status in self.after_statuses)

    def after_status(self, method: str, status: int, retry_after: Optional[str],
                     now: float) -> Optional[Tuple["StatusRetry", float]]:
        """Whether to send the request again after an answer, and after how long.

        :param method: the request's method, upper case.
        :param status: the answer's status.
        :param retry_after: its ``Retry-After`` field, or ``None``.
        :param now: Unix seconds (:func:`time.time`), for a ``Retry-After`` date.
        :returns: ``(the value for the next attempt, seconds to wait)``, or
            ``None`` when the answer is final: not a status to retry, or
            ``total`` or ``status`` spent.
        """
        if not self.retries_status(method, status, bool(retry_after)):
            return None
        total = None if self.total is None else self.total - 1
        count = None if self.status is None else self.status - 1
        if (total is not None and total < 0) or (count is not None and count < 0):
            return None
        following = self._with(total=total, status=count, attempts=self.attempts + 1)
        wait = None
        if self.respect_retry_after:
            wait = parse_retry_after(retry_after, now)
            if wait is not None:
                wait = min(wait, self.retry_after_max)
        if not wait:  # none, or 0: the backoff, as urllib3 does
            wait = _backoff(following.attempts, self.backoff_factor, self.jitter,
                            self.backoff_max)
        return following, wait

    def __repr__(self) -> str:
        return (f"StatusRetry(total={self.total}, status={self.status}, "
                f"statuses={sorted(self.statuses)}, attempts={self.attempts})")
