"""``napix probe``'s table: a row per host, fitted to the terminal's width.

The probe itself (credentials, requests, rows) is
:mod:`napixclient.probing`, which the fleet's workers share."""

from __future__ import annotations

from typing import Iterable, List

from rich.cells import cell_len, chop_cells, set_cell_size
from rich.text import Text

from napixclient.probing import SUMMARY_WIDTH, ProbeRow

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
    narrows first (its summary is cut, ending with ``...``), down to 20 columns;
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
        # Cut with "...", as the summary itself is (ASCII, in a pipe too).
        if cell_len(body) > self.body_width:
            body = set_cell_size(body, self.body_width - 3).rstrip() + "..."
        line = Text(_GAP.join([set_cell_size(host, self.host_width),
                               status.ljust(_STATUS_COLUMN),
                               latency.rjust(_LATENCY_COLUMN), body]))
        line.rstrip()
        return line

