"""Fleet probes: one probe spread over Celery workers (the ``fleet`` extra).

A probe wider than one process is cut into shards of hosts; each shard is a
Celery task that a worker runs with one :class:`~napixclient.ClientPool`
(``GET PATH`` on every host of the shard) and answers with compact rows.
The caller streams the rows back as shards finish, one row per host given.

Workers::

    export NAPIX_BROKER=redis://127.0.0.1:6379/0 NAPIX_LOGIN=... NAPIX_KEY=...
    celery -A napixclient.fleet worker -P gevent -c 4
    napix worker --broker redis://127.0.0.1:6379/0 -c 4     # the same

Caller::

    from napixclient import fleet
    for row in fleet.probe(hosts, "/capacity", broker="redis://127.0.0.1:6379/0"):
        print(row.host, row.status_label(), row.summary())

The pieces, all Celery's own: the broker and the result backend are the
same Redis (any Celery broker works; with another than Redis, results go
through ``rpc://``); each shard is acknowledged late (``acks_late``), so a
worker killed in the middle of a shard leaves it in the broker, which hands
it to another worker once its visibility timeout has passed; the rows are
deduplicated by their position in the host list on the caller's side, so
every host given yields exactly one row; a shard lost outright, which
kombu's Redis transport allows, is sent again by the caller once overdue
(see :class:`Probe`); ``first_where`` revokes the shards not yet started.

Credentials never travel in task messages, which whoever reads the broker
can read: a worker signs with the credentials of its own environment
(``NAPIX_LOGIN`` and ``NAPIX_KEY``, or ``NAPIX_TOKEN``, chosen as the
``napix`` command chooses them), and masks them in the rows it sends back.

Celery is imported only when a function here needs it, so ``import
napixclient.fleet`` works without the extra; ``napixclient.fleet.app`` (what
``celery -A napixclient.fleet`` loads) is the Celery application for
``NAPIX_BROKER``, made on first use.

The package's modules, each for one job: :mod:`~napixclient.fleet.broker`
(the broker's URL, checked, and named without its credentials),
:mod:`~napixclient.fleet.shards` (shard sizes, and what a worker does with
one: the probe of :mod:`napixclient.probing`, which ``napix probe`` runs
too), :mod:`~napixclient.fleet.celeryapp` (the Celery application and its
task) and :mod:`~napixclient.fleet.streaming` (the caller's side). The
``napix worker`` command is :mod:`napixclient.cli.worker`: the fleet imports
nothing of the command.
"""

from __future__ import annotations

from typing import Any

from napixclient.fleet.broker import (
    CONNECT_TIMEOUT,
    DEFAULT_BROKER,
    ENV_BROKER,
    FleetError,
    broker_name,
    check_broker_url,
)
from napixclient.fleet.celeryapp import (
    DEFAULT_CONCURRENCY,
    DEFAULT_VISIBILITY_TIMEOUT,
    ENV_VISIBILITY_TIMEOUT,
    QUEUE,
    TASK_NAME,
    make_app,
)
from napixclient.fleet.shards import (
    FD_HEADROOM,
    MIN_SHARD,
    SHARDS_PER_SLOT,
    WorkerInfo,
    run_shard,
    shard_size_for,
)
from napixclient.fleet.streaming import (
    CHECK_INTERVAL,
    DISCOVERY_TIMEOUT,
    MAX_RESENDS,
    FleetRow,
    Probe,
    probe,
)

__all__ = [
    "CHECK_INTERVAL",
    "CONNECT_TIMEOUT",
    "DEFAULT_BROKER",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_VISIBILITY_TIMEOUT",
    "DISCOVERY_TIMEOUT",
    "ENV_BROKER",
    "ENV_VISIBILITY_TIMEOUT",
    "FD_HEADROOM",
    "MAX_RESENDS",
    "MIN_SHARD",
    "QUEUE",
    "SHARDS_PER_SLOT",
    "TASK_NAME",
    "FleetError",
    "FleetRow",
    "Probe",
    "WorkerInfo",
    "broker_name",
    "check_broker_url",
    "make_app",
    "probe",
    "run_shard",
    "shard_size_for",
]

_worker_app: Any = None


def __getattr__(name: str) -> Any:
    # celery -A napixclient.fleet looks for the package's ``app``: the
    # worker's application for NAPIX_BROKER, made on first use.
    if name == "app":
        global _worker_app
        if _worker_app is None:
            _worker_app = make_app(None, for_worker=True)
        return _worker_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
