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
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import time
from collections import Counter, deque
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
    Tuple,
)
from urllib.parse import urlsplit, urlunsplit

from napixclient import ClientPool, Response, __version__
from napixclient.cli import ProbeRow, UsageError, resolve_credentials
from napixclient.cli.probe import probe_hosts
from napixclient.client import parse_host
from napixclient.redact import redact_secrets

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
    "add_worker_arguments",
    "make_app",
    "probe",
    "run_shard",
    "run_worker",
    "safe_url",
    "shard_size_for",
    "worker_command",
    "worker_main",
]

#: The broker (and result backend) when neither ``broker=`` nor
#: ``NAPIX_BROKER`` says otherwise.
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
#: The environment variable naming the broker, for workers and callers.
ENV_BROKER = "NAPIX_BROKER"
#: The environment variable holding a worker's visibility timeout (seconds).
ENV_VISIBILITY_TIMEOUT = "NAPIX_FLEET_VISIBILITY_TIMEOUT"
#: The queue the shards go through; a worker of another Celery application on
#: the same broker does not consume it.
QUEUE = "napixclient.fleet"
#: The task's name, as sent in messages.
TASK_NAME = "napixclient.fleet.probe_shard"
#: The remote-control command by which workers report their size.
INFO_COMMAND = "napix_fleet_info"
#: Seconds to connect to the broker before giving up: a broker that is down
#: or unreachable is an error within this, not a hang.
CONNECT_TIMEOUT = 3.0
#: Seconds the caller waits for workers to report their size.
DISCOVERY_TIMEOUT = 1.0
#: Seconds a shard may stay unacknowledged in a worker before the broker
#: hands it to another one (Redis ``visibility_timeout``), counted from when
#: the worker takes it; a worker holds one more shard than it runs per slot.
#: A shard unacknowledged longer than this is run twice (its rows are kept
#: once): keep it above twice the longest shard, 2 x (``timeout`` + 3) s.
DEFAULT_VISIBILITY_TIMEOUT = 60.0
#: ``-c`` of ``napix worker``: shards run at once by one worker process.
DEFAULT_CONCURRENCY = 4
#: File descriptors a worker keeps for itself (broker, result backend, logs)
#: besides one socket per host of each shard it runs.
FD_HEADROOM = 64
#: Shards per worker slot (a slot is one of a worker's ``-c``): more than one,
#: so a fast worker takes more of them and a lost worker loses less.
SHARDS_PER_SLOT = 2
#: The smallest shard chosen by :func:`shard_size_for`: below it, broker round
#: trips cost more than the requests.
MIN_SHARD = 25

#: Seconds between two looks at the broker's queue while rows are awaited
#: (see :class:`Probe`).
CHECK_INTERVAL = 1.0
#: How many times one overdue shard is sent again.
MAX_RESENDS = 2

_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2,
                 "interval_max": 0.5}


class FleetError(Exception):
    """The fleet cannot run the probe: the ``fleet`` extra is not installed,
    the broker is unreachable, no worker answers, or a shard failed on a
    worker. The message names the broker without its password."""


# -- sizing ----------------------------------------------------------------


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


# -- rows ------------------------------------------------------------------


@dataclass
class FleetRow:
    """One host's row, as a worker sent it back.

    It reads like the ``napix probe`` command's own row
    (:class:`napixclient.cli.ProbeRow`: ``host``, ``latency``, ``queued``,
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
        """Build a row from the ``dict`` a worker sent (see :func:`run_shard`)."""
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
        of :meth:`napixclient.cli.ProbeRow.as_json` (``host``, ``status``,
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
    #: local row's (:meth:`napixclient.cli.ProbeRow.json_line`).
    json_line = ProbeRow.json_line


# -- the worker's side: one shard ------------------------------------------


def _scrub(value: Any, secrets: Sequence[str]) -> Any:
    """``value`` with every secret masked in every string of it, keys too."""
    if isinstance(value, str):
        return redact_secrets(value, secrets)
    if isinstance(value, list):
        return [_scrub(item, secrets) for item in value]
    if isinstance(value, dict):
        return {_scrub(k, secrets): _scrub(v, secrets) for k, v in value.items()}
    return value


def _wire_row(row: ProbeRow, index: int, body: bool) -> Dict[str, Any]:
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
            data["body"] = decoded
    return _scrub(data, row.secrets)


def run_shard(hosts: Sequence[str], path: str, *, start: int = 0, timeout: float = 10.0,
              simultaneous: int = 2, body: bool = False,
              environ: Optional[Mapping[str, str]] = None) -> List[Dict[str, Any]]:
    """GET ``path`` on every host of one shard with one
    :class:`~napixclient.ClientPool`, as a local ``napix probe`` does (the
    command's own :func:`napixclient.cli.probe.probe_hosts`); what a worker
    runs for each task.

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
        :meth:`FleetRow.as_json` but ``match``, plus ``index`` (position
        in the probe), ``label`` (the status column) and ``answered``.
        Every string has the credentials' secret values masked.
    :raises ValueError: for a malformed host, path or option, or
        inconsistent credentials in ``environ`` (a login without a key).
    """
    credentials = resolve_credentials(None, None, None,
                                      os.environ if environ is None else environ)
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/', got {path!r}")
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
    return [_wire_row(row, places[row.host].popleft(), body) for row in rows]


# -- the Celery application ------------------------------------------------


def _celery() -> Any:
    try:
        import celery
    except ImportError:
        raise FleetError("the fleet needs Celery and redis: pip install 'celery[redis]' "
                         "redis (the napixclient[fleet] extra)") from None
    return celery


def safe_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``: how a broker
    is named in messages.

    :param url: a broker URL such as ``redis://:pw@127.0.0.1:6379/0``.
    :returns: ``str``, e.g. ``redis://:***@127.0.0.1:6379/0``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed broker URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _check_broker_url(url: Any) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"the broker must be a URL such as {DEFAULT_BROKER}, got "
                         f"{safe_url(url) if isinstance(url, str) else url!r}")
    return url


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0 < value < math.inf):
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def _visibility_from_env() -> float:
    text = os.environ.get(ENV_VISIBILITY_TIMEOUT)
    if not text:
        return DEFAULT_VISIBILITY_TIMEOUT
    try:
        return _seconds(ENV_VISIBILITY_TIMEOUT, float(text))
    except ValueError:
        raise ValueError(f"{ENV_VISIBILITY_TIMEOUT} must be a number of seconds > 0, "
                         f"got {text!r}") from None


_registered_control = False


def make_app(broker: Optional[str] = None, *,
             visibility_timeout: Optional[float] = None, for_worker: bool = False) -> Any:
    """Make the fleet's Celery application for ``broker``.

    The result backend is the same Redis (``rpc://`` for another broker).
    Settings that matter: shards acknowledged late and requeued when their
    worker is lost (``task_acks_late``, ``task_reject_on_worker_lost``), two
    shards prefetched per slot (``worker_prefetch_multiplier=2``: the next
    one is at hand when a shard ends), JSON
    messages only, connection timeouts of :data:`CONNECT_TIMEOUT` and no
    endless retries (``broker_connection_retry_on_startup=False``), results
    kept one hour.

    :param broker: a Celery broker URL; ``NAPIX_BROKER``, else
        :data:`DEFAULT_BROKER`, when ``None``.
    :param visibility_timeout: seconds (``float``) before a shard left
        unacknowledged by a lost worker is handed to another; from
        ``NAPIX_FLEET_VISIBILITY_TIMEOUT``, else
        :data:`DEFAULT_VISIBILITY_TIMEOUT`, when ``None``.
    :param for_worker: make the application a worker runs (what
        ``celery -A napixclient.fleet`` loads): with Redis, its transport
        waits longer on each BRPOP, so that an idle ``-P gevent`` worker
        puts back the shards of lost workers (see ``_redis_transport``).
        Callers must not use it: their own short waits for replies would
        leave a BRPOP pending that takes the next reply.
    :returns: a :class:`celery.Celery` with the shard task registered.
    :raises ValueError: for a broker that is not a URL or a bad timeout.
    :raises FleetError: when Celery is not installed.
    """
    url = _check_broker_url(broker or os.environ.get(ENV_BROKER) or DEFAULT_BROKER)
    visibility = (_visibility_from_env() if visibility_timeout is None
                  else _seconds("visibility_timeout", visibility_timeout))
    celery = _celery()
    app = celery.Celery("napixclient.fleet", set_as_current=False)
    redis = url.split("://", 1)[0] in ("redis", "rediss")
    app.conf.update(
        broker_url=url,
        broker_transport=f"{__name__}:_RedisTransport" if redis and for_worker else None,
        result_backend=url if redis else "rpc://",
        task_default_queue=QUEUE,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One shard more than it runs, per slot: with the gevent pool, a
        # Redis consumer whose prefetch is full stops polling for up to two
        # seconds (Celery's synloop), so a worker that only fetched after
        # finishing a shard would idle that long between shards.
        worker_prefetch_multiplier=2,
        result_expires=3600,
        broker_connection_timeout=CONNECT_TIMEOUT,
        broker_connection_retry_on_startup=False,
        broker_transport_options={
            "visibility_timeout": visibility,
            # Look for shards of lost workers on every idle poll, not on
            # every tenth: recovery within about visibility_timeout.
            "unacked_restore_throttle": 1,
            "unacked_restore_interval": 1,
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "socket_timeout": 5.0,
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        redis_socket_connect_timeout=CONNECT_TIMEOUT,
        redis_socket_timeout=5.0,
        result_backend_transport_options={"retry_policy": dict(_RETRY_POLICY)},
        task_publish_retry_policy=dict(_RETRY_POLICY),
        worker_hijack_root_logger=True,
    )

    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)
    def probe_shard(self: Any, hosts: List[str], path: str,
                    options: Dict[str, Any]) -> Dict[str, Any]:
        known = {"start", "timeout", "simultaneous", "body"}
        rows = run_shard(hosts, path, **{k: v for k, v in options.items() if k in known})
        return {"rows": rows, "worker": self.request.hostname}

    _register_info_command()
    return app


def _register_info_command() -> None:
    global _registered_control
    if _registered_control:
        return
    from celery.worker.control import inspect_command

    @inspect_command(name=INFO_COMMAND)
    def napix_fleet_info(state: Any, **kwargs: Any) -> Dict[str, Any]:
        """Report the worker's concurrency, file limit and visibility timeout."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        options = state.app.conf.broker_transport_options or {}
        return {
            "napixclient": __version__,
            "concurrency": int(getattr(state.consumer.pool, "limit", 1) or 1),
            "nofile": int(soft) if soft != resource.RLIM_INFINITY else 1 << 20,
            "visibility_timeout": float(options.get("visibility_timeout",
                                                    DEFAULT_VISIBILITY_TIMEOUT)),
        }

    _registered_control = True


_apps: Dict[str, Any] = {}


def _app_for(broker: Optional[str]) -> Any:
    url = _check_broker_url(broker or os.environ.get(ENV_BROKER) or DEFAULT_BROKER)
    app = _apps.get(url)
    if app is None:
        app = _apps[url] = make_app(url)
    return app


_transport: Any = None
_worker_app: Any = None


def _redis_transport() -> Any:
    """kombu's Redis transport, with BRPOP waits longer than the poll of a
    ``-P gevent`` worker.

    Such a worker polls for two seconds at a time (Celery's ``synloop``),
    and kombu puts back the shards of lost workers (past their visibility
    timeout) only after a poll that saw no event at all. With kombu's
    one-second BRPOP, an idle worker's poll always sees the BRPOP's empty
    answer, so the shards of a killed worker would wait in ``unacked`` for
    good. Three seconds leaves polls without events, hence the restore,
    while idle.
    """
    global _transport
    if _transport is None:
        from kombu.transport.redis import Transport

        class RedisTransport(Transport):  # type: ignore[misc, valid-type]
            brpop_timeout = 3

        _transport = RedisTransport
    return _transport


def __getattr__(name: str) -> Any:
    # celery -A napixclient.fleet looks for the module's ``app``; the
    # broker_transport setting names _RedisTransport.
    if name == "app":
        global _worker_app
        if _worker_app is None:
            _worker_app = make_app(None, for_worker=True)
        return _worker_app
    if name == "_RedisTransport":
        return _redis_transport()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- the caller's side -----------------------------------------------------


def _unreachable(url: str, error: BaseException) -> FleetError:
    reason = " ".join(str(error).split()) or type(error).__name__
    return FleetError(f"cannot reach the broker {safe_url(url)} within "
                      f"{CONNECT_TIMEOUT:g} s: {redact_secrets(reason, _passwords(url))}")


def _passwords(url: str) -> Tuple[str, ...]:
    try:
        password = urlsplit(url).password
    except ValueError:
        return ()
    return (password,) if password else ()


def _connect(app: Any) -> None:
    url = app.conf.broker_url
    # A broker that accepts connections and never answers fails this
    # check within CONNECT_TIMEOUT too, not only one that refuses them.
    connection = app.connection_for_write(transport_options={
        "socket_timeout": CONNECT_TIMEOUT, "socket_connect_timeout": CONNECT_TIMEOUT})
    try:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2,
                                     interval_max=0.5, timeout=CONNECT_TIMEOUT)
    except Exception as error:
        raise _unreachable(url, error) from None
    finally:
        connection.release()


def _discover(app: Any, timeout: float) -> List[WorkerInfo]:
    url = app.conf.broker_url
    try:
        # A connection of its own: a pooled one may still have a BRPOP
        # pending from an earlier wait for replies, which would take these.
        with app.connection_for_write() as connection:
            replies = app.control.broadcast(INFO_COMMAND, reply=True, timeout=timeout,
                                            connection=connection)
    except Exception as error:
        raise _unreachable(url, error) from None
    workers = []
    for reply in replies or ():
        for name, info in reply.items():
            # A worker of another application answers with an "error" key.
            if isinstance(info, dict) and "nofile" in info:
                workers.append(WorkerInfo(name, int(info["concurrency"]), int(info["nofile"]),
                                          float(info["visibility_timeout"])))
    return sorted(workers, key=lambda w: w.name)


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
    hosts into shards (:func:`shard_size_for`) and sends them. Then iterate
    over the returned :class:`Probe`: one :class:`FleetRow` per host given,
    in the order the shards finish, then the rows of hosts that got no
    result (``"cancelled"`` after a match, ``"timed out"`` at the deadline).

    No credential is sent: workers sign with their own environment's.

    :param hosts: the hosts (``str`` each: ``name``, ``name:port`` or a base
        URL); a host given twice is probed twice, like a local probe.
    :param path: the path to GET, starting with ``/``.
    :param broker: the broker URL; ``NAPIX_BROKER``, else
        :data:`DEFAULT_BROKER`, when ``None``.
    :param shard_size: hosts per shard (``int`` >= 1), instead of the size
        :func:`shard_size_for` derives from the workers.
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
    :raises ValueError: at once, for no host, a malformed host, a path
        without a leading ``/``, or a bad number.
    :raises FleetError: within about :data:`CONNECT_TIMEOUT` seconds when
        the broker cannot be reached; when no worker answered in
        ``discovery_timeout``; when Celery is not installed.
    """
    hosts = _check_hosts(hosts)
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"path must be a str starting with '/', got {path!r}")
    if shard_size is not None and (isinstance(shard_size, bool)
                                   or not isinstance(shard_size, int) or shard_size < 1):
        raise ValueError(f"shard_size must be an int >= 1, got {shard_size!r}")
    if isinstance(simultaneous, bool) or not isinstance(simultaneous, int) or simultaneous < 1:
        raise ValueError(f"simultaneous must be an int >= 1, got {simultaneous!r}")
    if first_where is not None and not callable(first_where):
        raise ValueError("first_where must be a callable taking a mapping of status, "
                         "body and host")
    timeout = _seconds("timeout", timeout)
    discovery_timeout = _seconds("discovery_timeout", discovery_timeout)
    if deadline is not None:
        deadline = _seconds("deadline", deadline)

    app = _app_for(broker)
    url = app.conf.broker_url
    _connect(app)
    workers = _discover(app, discovery_timeout)
    if not workers:
        raise FleetError(f"no fleet worker answered on {safe_url(url)} within "
                         f"{discovery_timeout:g} s: start some with "
                         f"`napix worker --broker {safe_url(url)}`")
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
            raise _unreachable(app.conf.broker_url, error) from None
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
            retry=True, retry_policy=dict(_RETRY_POLICY))
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


# -- workers ---------------------------------------------------------------


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``napix worker``'s options to ``parser`` (no Celery needed):
    ``--broker URL``, ``-c/--concurrency N``, ``--visibility-timeout S``,
    ``-n/--hostname NAME`` and ``--loglevel LEVEL``.

    :param parser: an :class:`argparse.ArgumentParser` (or a subcommand's).
    """
    parser.add_argument("--broker", metavar="URL",
                        help=f"the broker; default: {ENV_BROKER}, else {DEFAULT_BROKER}")
    parser.add_argument("-c", "--concurrency", metavar="N", type=_positive_int,
                        default=DEFAULT_CONCURRENCY,
                        help="shards run at once; each holds one socket per host "
                             f"(default: {DEFAULT_CONCURRENCY})")
    parser.add_argument("--visibility-timeout", metavar="S", type=_positive_seconds,
                        default=None,
                        help="seconds before a shard of a lost worker goes to another "
                             f"(default: {ENV_VISIBILITY_TIMEOUT}, else "
                             f"{DEFAULT_VISIBILITY_TIMEOUT:g}); keep it above twice the "
                             "longest shard, 2 x (probe --timeout + 3)")
    parser.add_argument("-n", "--hostname", metavar="NAME",
                        help="the worker's node name, e.g. w1@%%h (default: celery@%%h); "
                             "each worker on a machine needs its own")
    parser.add_argument("--loglevel", metavar="LEVEL", default="WARNING",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
                        type=str.upper, help="Celery's log level (default: WARNING)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 1")
    return value


def _positive_seconds(text: str) -> float:
    try:
        return _seconds("seconds", float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: must be a finite number of seconds > 0") from None


def worker_command(args: argparse.Namespace,
                   environ: Optional[Mapping[str, str]] = None
                   ) -> Tuple[List[str], Dict[str, str]]:
    """The command line and environment of a worker for ``args`` (parsed
    with :func:`add_worker_arguments`)::

        python -m celery -A napixclient.fleet worker -P gevent -c N -Q napixclient.fleet

    The broker and visibility timeout go in the environment
    (``NAPIX_BROKER``, ``NAPIX_FLEET_VISIBILITY_TIMEOUT``), as does the
    folder this napixclient comes from (``PYTHONPATH``), so the worker runs
    the same code.

    :param args: the parsed options.
    :param environ: the environment to start from; ``os.environ`` by default.
    :returns: ``(argv, env)``.
    :raises ValueError: for a broker that is not a URL.
    """
    env = dict(os.environ if environ is None else environ)
    env[ENV_BROKER] = _check_broker_url(args.broker or env.get(ENV_BROKER) or DEFAULT_BROKER)
    if args.visibility_timeout is not None:
        env[ENV_VISIBILITY_TIMEOUT] = repr(args.visibility_timeout)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "celery", "-A", "napixclient.fleet", "worker",
            "-P", "gevent", "-c", str(args.concurrency), "-Q", QUEUE,
            "--loglevel", args.loglevel]
    if args.hostname:
        argv += ["-n", args.hostname]
    return argv, env


def run_worker(args: argparse.Namespace, err: Any = None) -> int:
    """Check what a worker needs, then replace this process with it
    (:func:`worker_command`): ``celery`` patches the new process for gevent
    before it imports anything, as ``-P gevent`` requires, which this
    process, having imported napixclient, can no longer have done.

    :param args: options parsed with :func:`add_worker_arguments`.
    :param err: where to write what is wrong (``sys.stderr`` by default).
    :returns: only on a failure: 2 for a bad broker URL or inconsistent
        credentials in the environment, 1 when Celery, redis or gevent is
        missing. On success it does not return: the worker takes the process.
    """
    err = err or sys.stderr
    try:
        credentials = resolve_credentials(None, None, None, os.environ)
        argv, env = worker_command(args)
        make_app(env[ENV_BROKER])  # checks the settings and that Celery is here
        import redis  # noqa: F401
    except (UsageError, ValueError) as error:
        print(f"napix worker: {error}", file=err)
        return 2
    except (FleetError, ImportError) as error:
        message = str(error) if isinstance(error, FleetError) else (
            f"the fleet needs {error.name}: pip install 'celery[redis]' redis")
        print(f"napix worker: {message}", file=err)
        return 1
    print(f"napix worker: broker {safe_url(env[ENV_BROKER])}; signing with "
          f"{credentials.source}", file=err)
    err.flush()
    os.execve(argv[0], argv, env)
    return 1  # not reached: execve does not return


def worker_main(argv: Optional[Sequence[str]] = None) -> int:
    """``napix worker``: parse ``argv`` with :func:`add_worker_arguments` and
    run the worker (:func:`run_worker`).

    :param argv: the arguments after ``worker``; ``sys.argv[1:]`` by default.
    :returns: an exit code, only when the worker could not start.
    :raises SystemExit: from argparse, for bad usage (2) or ``--help`` (0).
    """
    parser = argparse.ArgumentParser(
        prog="napix worker",
        description="Run a fleet worker: celery -A napixclient.fleet worker -P gevent. "
                    "It signs with NAPIX_LOGIN and NAPIX_KEY, or NAPIX_TOKEN, from its "
                    "own environment.")
    add_worker_arguments(parser)
    return run_worker(parser.parse_args(argv))
