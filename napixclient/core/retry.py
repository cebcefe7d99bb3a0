"""When a request is sent again: one retry policy for connection failures
and statuses, free of I/O.

A :class:`RetryPolicy` is an immutable value. Each request starts with its
client's; after each attempt the driver asks it what to do
(:meth:`RetryPolicy.after_failure` for a connection failure,
:meth:`RetryPolicy.after_status` for an answer) and gets either ``None``
(that outcome is final) or the policy for the next attempt and the seconds
to wait first. The driver waits (in its own way: :func:`gevent.sleep`,
:func:`asyncio.sleep`) and sends the request again, signed anew: a nonce is
never sent twice. Nothing here sleeps or reads a socket.

What is retried, as urllib3 and requests retry it:

* a kept-alive connection found closed before the first byte of the answer
  (a *stale* connection: the server closed it as the request arrived):
  once, on a fresh connection, whatever the counts say, for the methods
  that may be repeated;
* a connection refused or unreachable, a name that did not resolve (the
  request never left): for any method; a connection reset before the first
  byte of the answer: for the methods that may be repeated
  (:data:`IDEMPOTENT_METHODS` by default, RFC 9110 section 9.2.2);
* with a :class:`urllib3.util.Retry`, the statuses of its
  ``status_forcelist`` for the methods of its ``allowed_methods``, and a
  413, 429 or 503 that carries a ``Retry-After``.

Never retried: timeouts (a retried timeout doubles the wait), TLS failures,
malformed answers, a connection broken during the answer, and a POST or
PATCH once it may have reached the server (unless a Retry's
``allowed_methods`` lists it).

Waits: nothing before the first retry, then ``backoff_factor * 2 ** (n -
1)`` seconds before the n-th (plus up to ``backoff_jitter`` at random), at
most ``backoff_max``, ``n`` counting every retry of the request; a status
retry waits the answer's ``Retry-After`` instead (seconds or an HTTP date,
at most ``retry_after_max``, 6 hours unless the Retry says otherwise, as
urllib3 caps it). Every number is bounded, so no count of attempts and no
``Retry-After`` can overflow.
"""

from __future__ import annotations

import datetime
import email.utils
import random
import re
from typing import Any, FrozenSet, Optional, Tuple, Union

from napixclient.failures import (
    ConnectFailed,
    ConnectionBroken,
    Failure,
    NameNotResolved,
)

__all__ = ["DEFAULT_RETRY_AFTER_MAX", "IDEMPOTENT_METHODS", "RetryPolicy",
           "parse_retry_after"]

#: Methods that RFC 9110 (section 9.2.2) makes idempotent: sending one twice
#: has the effect of sending it once.
IDEMPOTENT_METHODS: FrozenSet[str] = frozenset(
    ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"])
#: The longest wait a ``Retry-After`` may ask for, in seconds, when the
#: Retry says nothing of it (urllib3's default: 6 hours).
DEFAULT_RETRY_AFTER_MAX = 6 * 3600.0
# The backoff doubles no further than 2 ** this: past it the wait is past any
# deadline anyway, and 2.0 ** 1024 would overflow a float.
_MAX_DOUBLINGS = 62

#: The step of a policy: the policy for the next attempt, and the seconds to
#: wait before it.
Step = Tuple["RetryPolicy", float]


def _seconds(value: Any, infinite: bool = False) -> bool:
    """Whether ``value`` is a number of seconds >= 0 (finite unless ``infinite``)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0 <= value and (value < float("inf") or (infinite and value == value)))


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


def backoff(attempts: int, factor: float, jitter: float = 0.0,
            ceiling: float = float("inf")) -> float:
    """urllib3's rule: nothing before the first retry, then ``factor * 2 **
    (n - 1)`` seconds before the n-th, plus up to ``jitter`` at random, at
    most ``ceiling``; ``n`` may be any count (the doubling stops at 2 ** 62).

    :param attempts: ``n``, the retry about to be made (``int``).
    """
    if attempts <= 1:
        return 0.0
    wait = factor * 2.0 ** min(attempts - 1, _MAX_DOUBLINGS)
    if jitter:
        wait += random.random() * jitter
    return float(max(0.0, min(ceiling, wait)))


# Retry-After as a number of seconds (RFC 9110, section 10.2.3), blanks around.
_DELAY_SECONDS = re.compile(r"\s*[0-9]+\s*")


def parse_retry_after(value: Optional[str], now: float) -> Optional[float]:
    """The wait a ``Retry-After`` field asks for (RFC 9110, section 10.2.3).

    :param value: the field: a number of seconds (``"120"``, of any length:
        one too large for a float is infinite) or an HTTP date (``"Wed, 21
        Oct 2015 07:28:00 GMT"``), or ``None``.
    :param now: the current time, Unix seconds (:func:`time.time`), for a date.
    :returns: seconds (``float`` >= 0; a date in the past gives 0), or
        ``None`` when there is no field or it is neither form.
    """
    if value is None:
        return None
    if _DELAY_SECONDS.fullmatch(value):
        return float(value)  # float("9" * 400) is inf, where int() then float() overflows
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


class RetryPolicy:
    """What is retried, how many more times, and after what wait (see the
    module). Immutable: each step returns a new policy.

    Make one with :meth:`from_option` from what a client takes as
    ``retries``; the constructor takes the counts themselves.

    :param total: retries left in all (``int`` >= 0), or ``None`` for no
        limit but the request's deadline.
    :param backoff_factor: seconds (``float`` >= 0).
    :param connect: retries left for failures before the request was sent
        (refused, unreachable, unresolved), or ``None`` for no count of
        their own.
    :param read: retries left for resets before the first byte of the
        answer, or ``None``.
    :param status: retries left for statuses, or ``None``.
    :param stale: stale kept-alive connections that may still be retried
        (``int``, 1 by default).
    :param attempts: how many retries came before (``int`` >= 0): the
        backoff doubles from there.
    :param methods: the methods that may be sent again once they may have
        reached the server, and whose statuses are retried (``frozenset``
        of upper-case names), or ``None`` for every method.
    :param statuses: the statuses retried (``frozenset`` of ``int``).
    :param after_statuses: statuses retried when they carry a
        ``Retry-After`` (and ``respect_retry_after``).
    :param respect_retry_after: whether a ``Retry-After`` sets the wait.
    :param retry_after_max: the longest ``Retry-After`` wait, seconds.
    :param backoff_max: the longest backoff, seconds (may be infinite).
    :param jitter: seconds (``float`` >= 0) of random wait added to each
        backoff after the first retry.
    :raises ValueError: for a count that is not an ``int`` >= 0 (or
        ``None`` where allowed), or a time that is not seconds >= 0.
    """

    __slots__ = ("total", "backoff_factor", "connect", "read", "status", "stale",
                 "attempts", "methods", "statuses", "after_statuses",
                 "respect_retry_after", "retry_after_max", "backoff_max", "jitter")

    def __init__(self, total: Optional[int] = 0, backoff_factor: float = 0.0, *,
                 connect: Optional[int] = None, read: Optional[int] = None,
                 status: Optional[int] = None, stale: int = 1, attempts: int = 0,
                 methods: Optional[FrozenSet[str]] = IDEMPOTENT_METHODS,
                 statuses: FrozenSet[int] = frozenset(),
                 after_statuses: FrozenSet[int] = frozenset(),
                 respect_retry_after: bool = True,
                 retry_after_max: float = DEFAULT_RETRY_AFTER_MAX,
                 backoff_max: float = float("inf"), jitter: float = 0.0) -> None:
        for name, value in (("retries", total), ("connect", connect), ("read", read),
                            ("status", status), ("stale", stale), ("attempts", attempts)):
            if value is None and name not in ("stale", "attempts"):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if not _seconds(backoff_factor):
            raise ValueError(f"retry_backoff must be seconds >= 0, got {backoff_factor!r}")
        if not _seconds(jitter):
            raise ValueError(f"jitter must be seconds >= 0, got {jitter!r}")
        for name, seconds in (("backoff_max", backoff_max),
                              ("retry_after_max", retry_after_max)):
            if not _seconds(seconds, infinite=True):
                raise ValueError(f"{name} must be seconds >= 0, got {seconds!r}")
        self.total = total
        self.backoff_factor = float(backoff_factor)
        self.connect = connect
        self.read = read
        self.status = status
        self.stale = stale
        self.attempts = attempts
        self.methods = methods
        self.statuses = statuses
        self.after_statuses = after_statuses
        self.respect_retry_after = respect_retry_after
        self.retry_after_max = float(retry_after_max)
        self.backoff_max = float(backoff_max)
        self.jitter = float(jitter)

    @classmethod
    def from_option(cls, retries: Any, retry_backoff: Any = 0.0) -> "RetryPolicy":
        """The policy a client's ``retries`` and ``retry_backoff`` ask for.

        :param retries: an ``int`` >= 0 (connection failures only, see the
            module) or a :class:`urllib3.util.Retry`, read from its public
            attributes with urllib3's meaning: ``total``, ``connect``,
            ``read``, ``status`` (``None``: no count of its own; ``False``:
            none), ``allowed_methods`` (``None`` or empty: every method),
            ``status_forcelist``, ``RETRY_AFTER_STATUS_CODES``,
            ``respect_retry_after_header``, ``retry_after_max`` (urllib3 >=
            2.6), ``backoff_factor``, ``backoff_max``, ``backoff_jitter``.
            ``redirect`` and the rest about redirects mean nothing here:
            redirects are not followed.
        :param retry_backoff: seconds (``float`` >= 0), with an ``int``
            ``retries`` only (a Retry has its own ``backoff_factor``).
        :raises ValueError: for another type, negative or non-integer counts,
            times that are not seconds, or a ``retry_backoff`` with a Retry.
        """
        from urllib3.util import Retry

        if isinstance(retries, Retry):
            if retry_backoff not in (0, 0.0):
                raise ValueError("retry_backoff goes with an int retries=; a Retry has "
                                 "its own backoff_factor")
            return cls._from_retry(retries)
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ValueError(f"retries must be an int >= 0 or a urllib3.util.Retry, "
                             f"got {retries!r}")
        return cls(retries, retry_backoff)

    @classmethod
    def _from_retry(cls, retry: Any) -> "RetryPolicy":
        allowed = retry.allowed_methods
        factor, maximum = retry.backoff_factor, retry.backoff_max
        jitter = getattr(retry, "backoff_jitter", 0.0)
        for name, value in (("backoff_factor", factor), ("backoff_jitter", jitter)):
            if not _seconds(value):
                raise ValueError(f"retries: the Retry's {name} must be seconds >= 0, "
                                 f"got {value!r}")
        if not _seconds(maximum, infinite=True):
            raise ValueError(f"retries: the Retry's backoff_max must be seconds >= 0, "
                             f"got {maximum!r}")
        ceiling = getattr(retry, "retry_after_max", None)
        if ceiling is not None and not _seconds(ceiling, infinite=True):
            raise ValueError(f"retries: the Retry's retry_after_max must be seconds >= 0, "
                             f"got {ceiling!r}")
        return cls(_count(retry.total, "total"), float(factor),
                   connect=_count(retry.connect, "connect"), read=_count(retry.read, "read"),
                   status=_count(retry.status, "status"),
                   methods=(frozenset(str(name).upper() for name in allowed)
                            if allowed else None),
                   statuses=frozenset(retry.status_forcelist or ()),
                   after_statuses=frozenset(retry.RETRY_AFTER_STATUS_CODES),
                   respect_retry_after=bool(retry.respect_retry_after_header),
                   retry_after_max=(DEFAULT_RETRY_AFTER_MAX if ceiling is None
                                    else float(ceiling)),
                   backoff_max=float(maximum), jitter=float(jitter))

    def _with(self, **changes: Any) -> "RetryPolicy":
        following = object.__new__(RetryPolicy)
        for name in self.__slots__:
            setattr(following, name, changes.get(name, getattr(self, name)))
        return following

    @property
    def retries_statuses(self) -> bool:
        """Whether any status may be retried (``bool``)."""
        return bool(self.statuses) or (self.respect_retry_after
                                       and bool(self.after_statuses))

    def backoff(self) -> float:
        """Seconds to wait before the attempt this policy is for (see
        :func:`backoff`)."""
        return backoff(self.attempts, self.backoff_factor, self.jitter, self.backoff_max)

    def after_failure(self, method: str, failure: Failure) -> Optional[Step]:
        """What to do after a connection failure.

        :param method: the request's method, upper case.
        :param failure: what went wrong.
        :returns: ``(the policy for the next attempt, seconds to wait)``, or
            ``None`` when the failure is final.
        """
        if not (self.methods is None or method in self.methods or failure.before_sending):
            return None
        if isinstance(failure, ConnectionBroken) and failure.stale and self.stale > 0:
            following = self._with(stale=self.stale - 1)
            return following, following.backoff()
        before = isinstance(failure, (ConnectFailed, NameNotResolved))
        reset = isinstance(failure, ConnectionBroken) and failure.before_answer
        if not (before or reset):
            return None
        total = self.total
        if total is not None:
            if total <= 0:
                return None
            total -= 1
        connect, read = self.connect, self.read
        if before and connect is not None:
            if connect <= 0:
                return None
            connect -= 1
        if reset and read is not None:
            if read <= 0:
                return None
            read -= 1
        following = self._with(total=total, connect=connect, read=read,
                               attempts=self.attempts + 1)
        return following, following.backoff()

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
                     now: float) -> Optional[Step]:
        """What to do after an answer.

        :param method: the request's method, upper case.
        :param status: the answer's status.
        :param retry_after: its ``Retry-After`` field, or ``None``.
        :param now: Unix seconds (:func:`time.time`), for a ``Retry-After`` date.
        :returns: ``(the policy for the next attempt, seconds to wait)``, or
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
            wait = following.backoff()
        return following, wait

    def __repr__(self) -> str:
        statuses = f", statuses={sorted(self.statuses)}" if self.statuses else ""
        return (f"RetryPolicy(total={self.total}, backoff={self.backoff_factor:g}, "
                f"stale={self.stale}, attempts={self.attempts}{statuses})")


#: What a client takes as ``retries``.
RetriesOption = Union[int, Any]
