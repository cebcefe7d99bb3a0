"""``napix probe``'s machinery: GET one path on many hosts through a
:class:`~napixclient.ClientPool`, time each exchange apart from its wait
for a turn, and show each result as a row (a table that fits the terminal,
or JSON lines)."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Tuple,
)

import gevent
from gevent import Greenlet
from rich.cells import cell_len, chop_cells, set_cell_size
from rich.text import Text

from napixclient.cli.arguments import UsageError
from napixclient.cli.output import printable, redact, redact_value
from napixclient.exceptions import HTTPError, Timeout
from napixclient.pool import ClientPool, Result
from napixclient.response import Response

_LOG = logging.getLogger("napixclient.cli")

#: The most characters of a body shown in a probe table's row.
SUMMARY_WIDTH = 60


def summarize(result: Result, width: int = SUMMARY_WIDTH, secrets: Iterable[str] = ()) -> str:
    """A one-line summary of a result's body (JSON compacted) or error.

    :param result: a :class:`~napixclient.Response` or an
        :class:`~napixclient.HTTPError`.
    :param width: the most characters kept (``int``).
    :param secrets: credentials (``str`` values) to mask, before the text is
        cut, so that no part of one shows.
    :returns: the summary (``str``) on one line, whitespace runs collapsed,
        unprintable characters escaped, cut with ``...`` past ``width``.
    """
    if isinstance(result, Response):
        body = result.body
        if body is None:
            text = ""
        elif isinstance(body, bytes):
            text = f"<{len(body)} bytes>"
        elif isinstance(body, str):
            text = body
        else:
            text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    else:
        text = str(result.root.error_text or "")
    text = redact(text, secrets)
    # A far side's text must not drive the terminal (escape sequences).
    text = printable(" ".join(text.split()))
    return text if len(text) <= width else text[: width - 3] + "..."


def _status_label(result: Result) -> str:
    """``"200"`` for an answer; the class name where no status tells the story."""
    if isinstance(result, Response) or (type(result) is HTTPError and result.status):
        return str(result.status)
    return type(result).__name__


@dataclass
class ProbeRow:
    """One probed host's line in the table (or ``--json`` output).

    :ivar host: the host as given.
    :ivar result: its :class:`~napixclient.Response` or
        :class:`~napixclient.HTTPError`, or ``None`` when it was cancelled
        (``--first-where`` matched first) or outlived the probe's deadline.
    :ivar latency: seconds (``float``) the exchange took, from the request's
        turn (under ``--simultaneous``) to its result, or ``None``.
    :ivar outcome: ``"ok"``, ``"failed"``, ``"timed out"`` or ``"cancelled"``.
    :ivar match: whether this is the ``--first-where`` match.
    :ivar queued: seconds (``float``) the request waited for its turn, when
        more than ``--simultaneous`` went to its host; ``0.0`` when it was
        sent at once; ``None`` when it never began.
    :ivar secrets: the credentials (``str`` values), masked in whatever the
        row shows.
    """

    host: str
    result: Optional[Result]
    latency: Optional[float]
    outcome: str
    match: bool = False
    queued: Optional[float] = None
    secrets: Tuple[str, ...] = field(default=(), repr=False)

    def as_json(self) -> Dict[str, Any]:
        """The row as a JSON-ready ``dict``: ``host``, ``status`` (``int`` or
        ``null``), ``error`` (class name or ``null``), ``latency_ms`` (the
        exchange's own time), ``queued_ms`` (the wait for its turn before),
        ``outcome``, ``body`` (the decoded body when it is JSON or text,
        else ``null``), ``summary``, ``chain`` (``str(err)``, or ``null``)
        and ``match``."""
        result = self.result
        body: Any = None
        error = chain = None
        if isinstance(result, Response):
            body = result.body if not isinstance(result.body, bytes) else None
        elif result is not None:
            error, chain = type(result).__name__, redact(str(result), self.secrets)
        else:
            error = "Cancelled" if self.outcome == "cancelled" else "Timeout"
        return {
            "host": self.host,
            "status": None if result is None else result.status,
            "error": error,
            "latency_ms": None if self.latency is None else round(self.latency * 1000, 1),
            "queued_ms": None if self.queued is None else round(self.queued * 1000, 1),
            "outcome": self.outcome,
            "body": redact_value(body, self.secrets),
            "summary": self.summary(),
            "chain": chain,
            "match": self.match,
        }

    def json_line(self) -> str:
        """:meth:`as_json` as one line of JSON (``--json``). Characters that
        are not printable are written as ``\\uXXXX`` escapes, the control
        characters JSON leaves as they are (C1 controls such as ``\\x9b``,
        a terminal's CSI) and line separators (U+2028) included: the line is
        the same JSON, and cannot drive a terminal or split a line-reader's
        line."""
        line = json.dumps(self.as_json(), ensure_ascii=False, default=str)
        if line.isprintable():  # the common case: one C call, not one per character
            return line
        return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in line)

    def summary(self) -> str:
        """The body or error summary shown in the table."""
        if self.result is None:
            return ("not waited for: a match came first" if self.outcome == "cancelled"
                    else "no result before the probe's deadline")
        return summarize(self.result, secrets=self.secrets)

    def status_label(self) -> str:
        """The table's status column: the status, or an error class name."""
        if self.result is None:
            return "Cancelled" if self.outcome == "cancelled" else "Timeout"
        return _status_label(self.result)


def _outcome(result: Result) -> str:
    if isinstance(result, Response):
        return "ok"
    return "timed out" if isinstance(result, Timeout) else "failed"


class _Clock:
    """When each of a probe's requests was submitted, began and ended.

    A request waits for its turn when ``--simultaneous`` requests to its
    host are running: the pool starts its greenlet only then
    (:meth:`~napixclient.ClientPool.request`), so the time it began is the
    time ``greenlet.started`` became true. That is noted when one of the
    host's requests ends, the moment the pool starts the next one.
    """

    def __init__(self) -> None:
        self.submitted: Dict[Greenlet, float] = {}
        self.began: Dict[Greenlet, float] = {}
        self.ended: Dict[Greenlet, float] = {}
        #: id of a finished request's result (its greenlet's value) -> greenlet.
        self.greenlet_of: Dict[int, Greenlet] = {}
        self._queued: Dict[str, Deque[Greenlet]] = {}
        self._host: Dict[Greenlet, str] = {}

    def submit(self, greenlet: Greenlet, host: str) -> None:
        now = time.monotonic()
        self.submitted[greenlet] = now
        self._host[greenlet] = host
        if greenlet.started:
            self.began[greenlet] = now
        else:
            self._queued.setdefault(host, deque()).append(greenlet)
        greenlet.rawlink(self._end)

    def _end(self, greenlet: Greenlet) -> None:
        self.ended[greenlet] = time.monotonic()
        self.greenlet_of[id(greenlet.value)] = greenlet
        queued = self._queued.get(self._host[greenlet])
        if queued:
            # The pool starts the next request from its own link, which may
            # run after this one: look once every link has run.
            gevent.get_hub().loop.run_callback(self._note_starts, queued)

    def _note_starts(self, queued: Deque[Greenlet]) -> None:
        now = time.monotonic()
        while queued and (queued[0].started or queued[0].ready()):
            greenlet = queued.popleft()
            self.began.setdefault(greenlet, now)

    def queued(self, greenlet: Greenlet) -> Optional[float]:
        """Seconds from submission to the request's turn, or ``None``."""
        began = self.began.get(greenlet)
        return None if began is None else began - self.submitted[greenlet]

    def latency(self, greenlet: Greenlet, result: Result) -> Optional[float]:
        """Seconds the exchange itself took, its wait for a turn left out:
        the response's ``elapsed`` when there is one, else from the
        request's turn to its end."""
        response = result if isinstance(result, Response) else result.response
        if response is not None:
            return float(response.elapsed)
        began, ended = self.began.get(greenlet), self.ended.get(greenlet)
        return None if began is None or ended is None else ended - began


def probe_hosts(pool: ClientPool, hosts: List[str], path: str,
           condition: Optional[Callable[[Mapping[str, Any]], bool]], deadline: float,
           emit: Callable[[ProbeRow], None],
           advance: Callable[[], None],
           secrets: Tuple[str, ...]) -> Tuple[List[ProbeRow], int]:
    """GET ``path`` on every host through ``pool``; return the rows, in
    arrival order then the uncollected ones, and how many requests were
    still pending when the probe stopped (at a match or at ``deadline``
    seconds). ``emit`` and ``advance`` are called as each row comes."""
    clock = _Clock()
    sent: Dict[Greenlet, str] = {}
    for host in hosts:
        try:
            greenlet = pool.request(host, "GET", path)
        except ValueError as error:
            raise UsageError(str(error)) from None
        sent[greenlet] = host
        clock.submit(greenlet, host)
    rows: List[ProbeRow] = []
    collected = set()
    matched = False
    for result in pool.wait_unordered(timeout=deadline):
        # The result is its greenlet's value: through the greenlet, the row
        # gets the host as given, which Response.request.host normalizes.
        greenlet = clock.greenlet_of[id(result)]
        collected.add(greenlet)
        host = sent[greenlet]
        row = ProbeRow(host, result, clock.latency(greenlet, result), _outcome(result),
                       queued=clock.queued(greenlet), secrets=secrets)
        if condition is not None:
            body = result.body if isinstance(result, Response) else (
                result.response.body if result.response is not None else None)
            row.match = matched = condition({"status": result.status, "body": body,
                                             "host": host})
        rows.append(row)
        advance()
        emit(row)
        _LOG.debug("%s: %s in %.0f ms", host, row.status_label(), (row.latency or 0) * 1000)
        if matched:
            break
    # Requests not collected (a match came first, or the deadline passed)
    # are rows too; leaving the pool cancels them.
    left = pool.pending
    for greenlet, host in sent.items():
        if greenlet not in collected:
            row = ProbeRow(host, None, None, "cancelled" if matched else "timed out",
                           secrets=secrets)
            rows.append(row)
            emit(row)
    return rows, left


#: Width of the table's status column: its longest label, ``ConnectionError``.
_STATUS_COLUMN = 15

#: Width of the latency column: its title, ``latency ms``.
_LATENCY_COLUMN = 10

#: The narrowest body column before the host column is made narrower.
_BODY_COLUMN_MIN = 20

_GAP = "  "


class Table:
    """The probe's table, one row at a time, to fit ``width`` columns.

    The status and latency columns keep their width; the body column
    narrows first (its summary is cut with an ellipsis), down to 20 columns;
    past that the host column narrows and a host longer than it wraps onto
    the next lines, whole: the host is the last thing cut.

    :param hosts: the hosts the table will show (``str``), to size the
        host column.
    :param width: the columns available (``int``).
    """

    def __init__(self, hosts: Iterable[str], width: int) -> None:
        fixed = _STATUS_COLUMN + _LATENCY_COLUMN + 3 * len(_GAP)
        longest = max([len("host"), *(cell_len(host) for host in hosts)])
        self.host_width = max(min(longest, width - fixed - _BODY_COLUMN_MIN), 8)
        self.body_width = max(min(width - fixed - self.host_width, SUMMARY_WIDTH), 8)

    def header(self) -> List[Text]:
        """The title line and the rule under it."""
        title = self._line("host", "status", "latency ms", "body")
        title.stylize("bold")
        rule = "─" * (self.host_width + _STATUS_COLUMN + _LATENCY_COLUMN + 3 * len(_GAP)
                      + self.body_width)
        return [title, Text(rule, style="dim")]

    def row(self, row: ProbeRow) -> List[Text]:
        """A row's lines: one, or more when its host wraps."""
        latency = "-" if row.latency is None else f"{row.latency * 1000:.0f}"
        chunks = chop_cells(row.host, self.host_width) or [""]
        first = self._line(chunks[0], row.status_label(), latency, row.summary())
        style = ("bold green" if row.match else "" if row.outcome == "ok"
                 else "red" if row.outcome == "failed" else "yellow")
        lines = [first, *(Text(chunk) for chunk in chunks[1:])]
        for line in lines:
            line.stylize(style)
        return lines

    def _line(self, host: str, status: str, latency: str, body: str) -> Text:
        cut = Text(body)
        cut.truncate(self.body_width, overflow="ellipsis")
        line = Text(_GAP.join([set_cell_size(host, self.host_width),
                               status.ljust(_STATUS_COLUMN),
                               latency.rjust(_LATENCY_COLUMN), cut.plain]))
        line.rstrip()
        return line

