"""The caller's side of the fleet: :func:`probe` sends the shards and the
:class:`Probe` it returns streams their rows back, one per host given."""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Dict,
    Generator,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
)

from napixclient.core.hosts import check_path, parse_host
from napixclient.fleet.broker import FleetError, broker_name, unreachable
from napixclient.fleet.celeryapp import (
    QUEUE,
    RETRY_POLICY,
    TASK_NAME,
    app_for,
    check_seconds,
    connect,
    discover,
)
from napixclient.fleet.shards import WorkerInfo, shard_size_for
from napixclient.probing import ProbeRow

__all__ = [
    "CHECK_INTERVAL",
    "DISCOVERY_TIMEOUT",
    "MAX_RESENDS",
    "FleetRow",
    "Probe",
    "probe",
]

#: Seconds the caller waits for workers to report their size.
DISCOVERY_TIMEOUT = 1.0
#: Seconds between two looks at the broker's queue while rows are awaited
#: (see :class:`Probe`).
CHECK_INTERVAL = 1.0
#: How many times one overdue shard is sent again.
MAX_RESENDS = 2


@dataclass
class FleetRow:
    """One host's row, as a worker sent it back.

    It reads like a local probe's row
    (:class:`napixclient.probing.ProbeRow`: ``host``, ``latency``, ``queued``,
    ``outcome``, ``match``, :meth:`summary`, :meth:`status_label`,
    :meth:`as_json`, :meth:`json_line`), so the same printer shows both.

    :ivar host: the host as given (``str``).
    :ivar index: its position in the list given to :func:`probe` (``int``).
    :ivar status: the HTTP status (``int``), or ``None`` when no answer came.
    :ivar error: the error's class name (``"ConnectionError"``,
        ``"Timeout"``, ``"HTTPError"``...), ``"Cancelled"``, or ``None`` for
        an answer below 400.
    :ivar latency: seconds (``float``) the exchange took, from the request's
        turn to its result, or ``None``.
    :ivar queued: seconds (``float``) the request waited for its turn on
        its worker (a host given more than ``simultaneous`` times in one
        shard), ``0.0`` when sent at once, ``None`` when it never began.
    :ivar outcome: ``"ok"``, ``"failed"``, ``"timed out"`` or ``"cancelled"``.
    :ivar summary_text: what :meth:`summary` returns (``str``).
    :ivar label: what :meth:`status_label` returns (``str``).
    :ivar body: the decoded body when asked for (``body=True`` or
        ``first_where``) and it is JSON or text; for an error, the body of
        the error's answer; else ``None``.
    :ivar chain: ``str(error)``, the error read hop by hop, or ``None``.
    :ivar worker: the worker's node name, or ``None`` for a row made by the
        caller (cancelled, or past the deadline).
    :ivar answered: whether a result came (an answer or an error), as
        opposed to no result by the deadline, or a cancellation.
    :ivar match: whether this is the ``first_where`` match.
    """

    host: str
    index: int
    status: Optional[int]
    error: Optional[str]
    latency: Optional[float]
    outcome: str
    summary_text: str
    label: str
    body: Any = None
    chain: Optional[str] = None
    queued: Optional[float] = None
    worker: Optional[str] = None
    answered: bool = True
    match: bool = False

    @classmethod
    def from_wire(cls, data: Mapping[str, Any], worker: Optional[str]) -> "FleetRow":
        """Build a row from the ``dict`` a worker sent (see
        :func:`~napixclient.fleet.shards.run_shard`)."""
        latency_ms, queued_ms = data.get("latency_ms"), data.get("queued_ms")
        return cls(
            host=data["host"], index=data["index"], status=data.get("status"),
            error=data.get("error"),
            latency=None if latency_ms is None else latency_ms / 1000.0,
            outcome=data["outcome"], summary_text=data.get("summary", ""),
            label=data.get("label", ""), body=data.get("body"),
            chain=data.get("chain"),
            queued=None if queued_ms is None else queued_ms / 1000.0,
            worker=worker, answered=bool(data.get("answered")))

    @classmethod
    def missing(cls, host: str, index: int, outcome: str) -> "FleetRow":
        """The row of a host whose shard gave no result: ``"cancelled"`` (a
        ``first_where`` match came first) or ``"timed out"`` (the probe's
        deadline passed)."""
        row = ProbeRow(host, None, None, outcome)
        return cls(host=host, index=index, status=None,
                   error=row.as_json()["error"], latency=None, outcome=outcome,
                   summary_text=row.summary(), label=row.status_label(), answered=False)

    def summary(self) -> str:
        """The body or error summary shown in the table (``str``)."""
        return self.summary_text

    def status_label(self) -> str:
        """The table's status column: the status, or an error class name."""
        return self.label

    def as_json(self) -> Dict[str, Any]:
        """The row as ``napix probe --json`` prints it: the keys and values
        of :meth:`napixclient.probing.ProbeRow.as_json` (``host``, ``status``,
        ``error``, ``latency_ms``, ``queued_ms``, ``outcome``, ``body``,
        ``summary``, ``chain``, ``match``)."""
        return {
            "host": self.host,
            "status": self.status,
            "error": self.error,
            "latency_ms": None if self.latency is None else round(self.latency * 1000, 1),
            "queued_ms": None if self.queued is None else round(self.queued * 1000, 1),
            "outcome": self.outcome,
            "body": self.body if self.error is None else None,
            "summary": self.summary_text,
            "chain": self.chain,
            "match": self.match,
        }

    #: :meth:`as_json` as one line of JSON, written as the command writes a
    #: local row's (:meth:`napixclient.probing.ProbeRow.json_line`).
    json_line = ProbeRow.json_line


def _check_hosts(hosts: Any) -> List[str]:
    if isinstance(hosts, (str, bytes)):
        raise ValueError("hosts must be a list of host strings, not one string")
    hosts = list(hosts)
    if not hosts:
        raise ValueError("no host to probe")
    for host in hosts:
        if not isinstance(host, str):
            raise ValueError(f"each host must be a str, got {host!r}")
        parse_host(host)  # ValueError naming the host
    return hosts


def probe(hosts: Sequence[str], path: str, *, broker: Optional[str] = None,
          shard_size: Optional[int] = None,
          first_where: Optional[Callable[[Mapping[str, Any]], bool]] = None,
          timeout: float = 10.0, simultaneous: int = 2, body: bool = False,
          deadline: Optional[float] = None,
          discovery_timeout: float = DISCOVERY_TIMEOUT) -> "Probe":
    """GET ``path`` on every host, spread over the fleet's workers; rows come
    back as shards finish.

    Before it returns, it checks the arguments, connects to the broker, asks
    the workers for their size (``discovery_timeout`` seconds), cuts the
    hosts into shards (:func:`~napixclient.fleet.shards.shard_size_for`) and
    sends them. Then iterate over the returned :class:`Probe`: one
    :class:`FleetRow` per host given, in the order the shards finish, then
    the rows of hosts that got no result (``"cancelled"`` after a match,
    ``"timed out"`` at the deadline).

    No credential is sent: workers sign with their own environment's.

    :param hosts: the hosts (``str`` each: ``name``, ``name:port`` or a base
        URL); a host given twice is probed twice, like a local probe.
    :param path: the path to GET, starting with ``/``.
    :param broker: the broker URL; ``NAPIX_BROKER``, else
        :data:`~napixclient.fleet.broker.DEFAULT_BROKER`, when ``None``.
    :param shard_size: hosts per shard (``int`` >= 1), instead of the size
        :func:`~napixclient.fleet.shards.shard_size_for` derives from the workers.
    :param first_where: a predicate on ``{"status": ..., "body": ...,
        "host": ...}`` (what :func:`napixclient.cli.compile_condition`
        returns): at the first row for which it is true, the iteration
        marks that row ``match``, revokes the shards not started and ends
        with the rows of the hosts left, as ``"cancelled"``. Bodies are
        fetched for it, as with ``body=True``.
    :param timeout: seconds (``float``) for each request's whole exchange.
    :param simultaneous: the most connections a worker opens to one host.
    :param body: send each decoded body (JSON or text) back, not only its
        summary.
    :param deadline: seconds (``float``) from the sending of the shards to
        the end of the wait for them; ``None`` derives it from ``timeout``,
        the waves of shards over the workers' slots, and the time for a
        lost worker's shard to run elsewhere (its visibility timeout, or
        the wait before an overdue shard is sent again: see :class:`Probe`).
    :param discovery_timeout: seconds (``float``) to wait for the workers'
        reports.
    :returns: a :class:`Probe`, an iterator of :class:`FleetRow`.
    :raises ValueError: at once, for no host, a malformed host
        (:func:`~napixclient.core.hosts.parse_host`), a path without a
        leading ``/`` (:func:`~napixclient.core.hosts.check_path`), a bad
        broker URL (:func:`~napixclient.fleet.broker.check_broker_url`) or
        a bad number.
    :raises FleetError: within about :data:`~napixclient.fleet.broker.CONNECT_TIMEOUT` seconds when
        the broker cannot be reached; when no worker answered in
        ``discovery_timeout``; when Celery is not installed.
    """
    hosts = _check_hosts(hosts)
    check_path(path)
    if shard_size is not None and (isinstance(shard_size, bool)
                                   or not isinstance(shard_size, int) or shard_size < 1):
        raise ValueError(f"shard_size must be an int >= 1, got {shard_size!r}")
    if isinstance(simultaneous, bool) or not isinstance(simultaneous, int) or simultaneous < 1:
        raise ValueError(f"simultaneous must be an int >= 1, got {simultaneous!r}")
    if first_where is not None and not callable(first_where):
        raise ValueError("first_where must be a callable taking a mapping of status, "
                         "body and host")
    timeout = check_seconds("timeout", timeout)
    discovery_timeout = check_seconds("discovery_timeout", discovery_timeout)
    if deadline is not None:
        deadline = check_seconds("deadline", deadline)

    app = app_for(broker)
    url = app.conf.broker_url
    connect(app)
    workers = discover(app, discovery_timeout)
    if not workers:
        raise FleetError(f"no fleet worker answered on {broker_name(url)} within "
                         f"{discovery_timeout:g} s: start some with "
                         f"`napix worker --broker {broker_name(url)}`")
    size = shard_size or shard_size_for(len(hosts), workers)
    shards = [hosts[start:start + size] for start in range(0, len(hosts), size)]
    # The longest a shard runs once a worker starts it (run_shard's own
    # deadline, plus the way back); a worker may hold one more waiting per
    # slot (the prefetch), so a shard taken from the queue ends within
    # twice that, or its worker was lost.
    waves = math.ceil(max(Counter(hosts).values()) / simultaneous)
    per_shard = timeout * waves + 3.0
    overdue = 2 * per_shard + 2.0
    if deadline is None:
        slots = sum(w.concurrency for w in workers)
        deadline = (per_shard * (math.ceil(len(shards) / slots) + 1) + overdue
                    + max(w.visibility_timeout for w in workers) + 10.0)
    options = {"timeout": timeout, "simultaneous": simultaneous,
               "body": bool(body or first_where is not None)}
    return Probe(app, hosts, path, size, shards, options, first_where, deadline, overdue,
                 workers)


class Probe:
    """A fleet probe under way: an iterator of :class:`FleetRow`, one per
    host given.

    Made by :func:`probe`, which has sent the shards already. Rows come in
    the order the shards finish; then come the rows of the hosts that got
    no result, ``"cancelled"`` after a ``first_where`` match or
    ``"timed out"`` once :attr:`deadline` has passed. Stopping early
    (``break``, an exception, :meth:`close`, the end of a ``with`` block)
    revokes the shards not finished.

    A shard of a worker that died is put back in the queue by the broker
    once the worker's visibility timeout has passed. One more case is
    covered here: kombu's Redis transport takes a message off the queue
    (BRPOP) and records it as unacknowledged in a second step, so a worker
    killed between the two loses the shard outright. While rows are awaited
    the probe looks at the queue every :data:`CHECK_INTERVAL` seconds; once
    it has been empty for ``overdue`` seconds (by then every shard taken
    has ended, or its worker is gone), the shards still without rows are
    sent again, at most :data:`MAX_RESENDS` times each. A shard that runs
    twice gives its rows once: rows are kept by their position in the host
    list.

    :ivar hosts: the hosts given (``List[str]``).
    :ivar shard_size: hosts per shard (``int``).
    :ivar shards: how many shards were sent (``int``).
    :ivar workers: the workers that reported (``List[WorkerInfo]``).
    :ivar deadline: seconds (``float``) from the sending of the shards to
        the end of the wait for them.
    :ivar matched: the ``first_where`` match once found, else ``None``.
    :ivar left: hosts without a result when the shards stopped being awaited
        (``int``).
    :ivar resent: shards sent again because they were overdue (``int``).
    :ivar revoked: task messages revoked when the probe stopped (``int``).
    """

    def __init__(self, app: Any, hosts: List[str], path: str, shard_size: int,
                 shards: List[List[str]], options: Dict[str, Any],
                 first_where: Optional[Callable[[Mapping[str, Any]], bool]],
                 deadline: float, overdue: float, workers: List[WorkerInfo]) -> None:
        self._app = app
        self.hosts = hosts
        self.shard_size = shard_size
        self.shards = len(shards)
        self.workers = workers
        self.deadline = deadline
        self.matched: Optional[FleetRow] = None
        self.left = len(hosts)
        self.resent = 0
        self.revoked = 0
        self._path = path
        self._options = options
        self._first_where = first_where
        self._overdue = overdue
        self._seen: Set[int] = set()
        self._open = set(range(len(shards)))  # shards without rows yet
        self._results: Dict[str, Any] = {}  # task id -> AsyncResult
        self._shard_of: Dict[str, int] = {}  # task id -> shard number
        self._answered: Set[str] = set()  # task ids whose result came
        self._sends = [0] * len(shards)
        self._empty_since: Optional[float] = None
        self._next_check = 0.0
        self._connection: Any = None
        self._stopped = False
        self._end = time.monotonic() + deadline
        try:
            for number in range(len(shards)):
                self._send(number)
        except Exception as error:
            self._stop()
            raise unreachable(app.conf.broker_url, error) from None
        except BaseException:
            # Interrupted (Ctrl-C, a kill) while sending: the shards sent
            # so far are revoked, not left to run for nobody.
            self._stop()
            raise
        self._rows = self._iterate()

    def __repr__(self) -> str:
        return (f"<Probe hosts={len(self.hosts)} shards={self.shards} "
                f"shard_size={self.shard_size} workers={len(self.workers)}>")

    def _send(self, number: int) -> None:
        start = number * self.shard_size
        # Every copy expires with the probe: a worker that comes later does
        # not run what nobody waits for any more.
        result = self._app.send_task(
            TASK_NAME, args=(self.hosts[start:start + self.shard_size], self._path,
                             dict(self._options, start=start)),
            queue=QUEUE, expires=max(1.0, self._end - time.monotonic()) + 10.0,
            retry=True, retry_policy=dict(RETRY_POLICY))
        self._results[result.id] = result
        self._shard_of[result.id] = number
        self._sends[number] += 1

    def __iter__(self) -> Iterator[FleetRow]:
        return self

    def __next__(self) -> FleetRow:
        return next(self._rows)

    def _iterate(self) -> Generator[FleetRow, None, None]:
        try:
            yield from self._collect()
        except BaseException:
            self._stop()
            raise
        self._stop()
        outcome = "cancelled" if self.matched is not None else "timed out"
        for index, host in enumerate(self.hosts):
            if index not in self._seen:
                yield FleetRow.missing(host, index, outcome)

    def _collect(self) -> Iterator[FleetRow]:
        from celery.exceptions import TimeoutError as CeleryTimeout
        from celery.result import ResultSet

        while self._open:
            left = self._end - time.monotonic()
            if left <= 0:
                return
            waiting = [result for task_id, result in self._results.items()
                       if task_id not in self._answered
                       and self._shard_of[task_id] in self._open]
            if not waiting:  # every copy of the open shards was revoked
                time.sleep(min(CHECK_INTERVAL, left))
                self._check_overdue()
                continue
            try:
                for task_id, meta in ResultSet(waiting, app=self._app).iter_native(
                        timeout=min(CHECK_INTERVAL, left), interval=0.25):
                    self._answered.add(task_id)
                    number = self._shard_of[task_id]
                    status = meta.get("status") if isinstance(meta, dict) else None
                    if number not in self._open or status == "REVOKED":
                        continue  # another copy answered first; or expired
                    if status != "SUCCESS":
                        raise self._shard_failed(number, meta)
                    self._open.discard(number)
                    for row in self._rows_of(meta["result"]):
                        yield row
                        if row.match:
                            self.matched = row
                            return
            except CeleryTimeout:
                pass
            self._check_overdue()

    def _rows_of(self, payload: Mapping[str, Any]) -> Iterator[FleetRow]:
        for data in payload["rows"]:
            index = data["index"]
            if index in self._seen:
                continue
            self._seen.add(index)
            row = FleetRow.from_wire(data, payload.get("worker"))
            if self._first_where is not None and row.answered:
                row.match = bool(self._first_where(
                    {"status": row.status, "body": row.body, "host": row.host}))
            yield row

    def _check_overdue(self) -> None:
        """Send again the shards still open once the queue has been empty
        for ``overdue`` seconds (see the class's description)."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + CHECK_INTERVAL
        try:
            if self._connection is None:
                self._connection = self._app.connection_for_write()
            channel = self._connection.default_channel
            try:
                queued = channel.queue_declare(queue=QUEUE, passive=True).message_count
            except self._connection.channel_errors:
                queued = 0  # Redis has no key for an empty queue
        except Exception:  # the broker is away for now; the deadline stands
            self._empty_since = None
            return
        if queued:
            self._empty_since = None
            return
        if self._empty_since is None:
            self._empty_since = now
            return
        if now - self._empty_since < self._overdue:
            return
        for number in sorted(self._open):
            if self._sends[number] <= MAX_RESENDS:
                try:
                    self._send(number)
                except Exception:
                    return
                self.resent += 1
        self._empty_since = None

    def _shard_failed(self, number: int, meta: Any) -> FleetError:
        result = meta.get("result") if isinstance(meta, dict) else None
        if isinstance(result, dict):
            reason = f"{result.get('exc_type', 'Error')}: {result.get('exc_message', '')}"
        else:
            reason = repr(result)
        first = self.shard_size * number
        return FleetError(f"shard {number + 1} of {self.shards} (hosts {first + 1} to "
                          f"{min(first + self.shard_size, len(self.hosts))}) failed on a "
                          f"worker: {reason}")

    def _stop(self) -> None:
        """Revoke every copy whose result has not come (those of open shards,
        and spare copies of shards another copy answered), forget the
        results; once."""
        if self._stopped:
            return
        self._stopped = True
        self.left = len(self.hosts) - len(self._seen)
        unanswered = [task_id for task_id in self._results if task_id not in self._answered]
        try:
            if unanswered:
                self._app.control.revoke(unanswered)
                self.revoked = len(unanswered)
            for result in self._results.values():
                result.forget()
        except Exception:  # the broker went away: the copies expire anyway
            pass
        finally:
            if self._connection is not None:
                self._connection.release()

    def close(self) -> None:
        """Stop the probe: revoke the shards not finished and forget the
        results. Rows not yet read are dropped. Closing twice is harmless."""
        self._rows.close()
        self._stop()

    def __enter__(self) -> "Probe":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
