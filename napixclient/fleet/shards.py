"""The worker's side of the fleet: how big a shard is, and what a worker
does with one (:func:`run_shard`)."""

from __future__ import annotations

import math
import os
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

from napixclient.core.hosts import check_path
from napixclient.pool import ClientPool
from napixclient.probing import ProbeRow, environment_credentials, probe_hosts, redact_value
from napixclient.response import Response

__all__ = [
    "FD_HEADROOM",
    "MIN_SHARD",
    "SHARDS_PER_SLOT",
    "WorkerInfo",
    "run_shard",
    "shard_size_for",
    "wire_row",
]

#: File descriptors a worker keeps for itself (broker, result backend, logs)
#: besides one socket per host of each shard it runs.
FD_HEADROOM = 64
#: Shards per worker slot (a slot is one of a worker's ``-c``): more than one,
#: so a fast worker takes more of them and a lost worker loses less.
SHARDS_PER_SLOT = 2
#: The smallest shard chosen by :func:`shard_size_for`: below it, broker round
#: trips cost more than the requests.
MIN_SHARD = 25


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker reports of itself (the ``napix_fleet_info`` command).

    :ivar name: the worker's node name (``celery@host``).
    :ivar concurrency: its ``-c``: shards it runs at once (``int``).
    :ivar nofile: its soft limit of open files (``RLIMIT_NOFILE``, ``int``).
    :ivar visibility_timeout: seconds before a shard it holds unacknowledged
        goes to another worker (``float``).
    """

    name: str
    concurrency: int
    nofile: int
    visibility_timeout: float


def shard_size_for(hosts: int, workers: Sequence[WorkerInfo]) -> int:
    """The number of hosts per shard for a probe of ``hosts`` hosts.

    Aim for :data:`SHARDS_PER_SLOT` shards per slot (the sum of the workers'
    concurrency), no smaller than :data:`MIN_SHARD` hosts, and never more
    than the smallest worker can hold: each shard opens one socket per host,
    and a worker runs ``concurrency`` shards at once within its file limit
    less :data:`FD_HEADROOM`.

    :param hosts: how many hosts the probe has (``int`` >= 1).
    :param workers: the workers that answered (at least one).
    :returns: hosts per shard (``int``), between 1 and ``hosts``.
    :raises ValueError: for ``hosts < 1`` or no worker.
    """
    if hosts < 1:
        raise ValueError(f"hosts must be >= 1, got {hosts!r}")
    if not workers:
        raise ValueError("shard_size_for needs at least one worker")
    slots = sum(max(1, w.concurrency) for w in workers)
    fits = min((w.nofile - FD_HEADROOM) // max(1, w.concurrency) for w in workers)
    size = max(MIN_SHARD, math.ceil(hosts / (slots * SHARDS_PER_SLOT)))
    return max(1, min(size, fits, hosts))


def wire_row(row: ProbeRow, index: int, body: bool) -> Dict[str, Any]:
    """A row as a worker sends it back: :meth:`ProbeRow.as_json
    <napixclient.probing.ProbeRow.as_json>` without ``match``, plus
    ``index``, ``label`` and ``answered`` (see :func:`run_shard`).

    :param row: the :class:`~napixclient.probing.ProbeRow`.
    :param index: the host's position in the probe (``int``).
    :param body: send the decoded body (JSON or text) back; for an error,
        the body of the error's answer; the credentials masked in it.
    :returns: a JSON-ready ``dict``.
    """
    data = row.as_json()
    del data["match"]
    data["index"] = index
    data["label"] = row.status_label()
    data["answered"] = row.result is not None
    data["body"] = None
    result = row.result
    if body and result is not None:
        decoded = result.body if isinstance(result, Response) else (
            result.response.body if result.response is not None else None)
        if not isinstance(decoded, bytes):
            data["body"] = redact_value(decoded, row.secrets)
    return data


def run_shard(hosts: Sequence[str], path: str, *, start: int = 0, timeout: float = 10.0,
              simultaneous: int = 2, body: bool = False,
              environ: Optional[Mapping[str, str]] = None) -> List[Dict[str, Any]]:
    """GET ``path`` on every host of one shard with one
    :class:`~napixclient.ClientPool`, as a local ``napix probe`` does (the
    same :func:`napixclient.probing.probe_hosts`); what a worker runs for
    each task.

    It runs the same in a monkey-patched process (a ``-P gevent`` worker)
    and in one that is not: the pool opens gevent sockets itself.

    :param hosts: the shard's hosts (``str`` each, as for
        :class:`~napixclient.Client`).
    :param path: the path to GET, starting with ``/``.
    :param start: the position of ``hosts[0]`` in the probe's host list.
    :param timeout: seconds for each request's whole exchange (``float``).
    :param simultaneous: the most connections open to one host (``int``).
    :param body: send back each decoded body (JSON or text), not only its
        summary; for an error, the body of the error's answer.
    :param environ: where the credentials come from (``NAPIX_LOGIN`` and
        ``NAPIX_KEY``, or ``NAPIX_TOKEN``); ``os.environ`` by default.
    :returns: one ``dict`` per host, in completion order, then those
        without a result by the shard's deadline (``timeout`` per wave of
        ``simultaneous`` requests to one host, plus 2 s): the keys of
        :meth:`~napixclient.fleet.FleetRow.as_json` but ``match``, plus
        ``index`` (position in the probe), ``label`` (the status column)
        and ``answered``. What comes from the far side (body, summary,
        chain) has the credentials' secret values masked; the row's own
        words (its keys, outcome, label) never are.
    :raises ValueError: for a malformed host, path or option, or
        inconsistent credentials in ``environ`` (a login without a key).
    """
    credentials = environment_credentials(os.environ if environ is None else environ)
    check_path(path)
    hosts = list(hosts)
    if not hosts:
        return []
    waves = math.ceil(max(Counter(hosts).values()) / simultaneous)
    with ClientPool(credentials.authenticator, simultaneous=simultaneous,
                    timeout=timeout) as pool:
        rows, _ = probe_hosts(pool, hosts, path, None, timeout * waves + 2.0,
                              lambda row: None, lambda: None, credentials.secrets)
    # A row names its host, not its place: a host given twice in the shard
    # takes its places in turn (its rows differ only in their times).
    places: Dict[str, Any] = {}
    for offset, host in enumerate(hosts):
        places.setdefault(host, deque()).append(start + offset)
    return [wire_row(row, places[row.host].popleft(), body) for row in rows]
