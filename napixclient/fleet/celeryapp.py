"""The fleet's Celery application: the shard task, the settings a probe
relies on, the workers' report of their size, and the look of its broker in
Celery's own output.

Celery is imported only when a function here needs it, so that importing
:mod:`napixclient.fleet` works without the ``fleet`` extra.
"""

from __future__ import annotations

import math
import os
import resource
from typing import Any, Dict, List, Optional

from napixclient import __version__
from napixclient.fleet.broker import (
    CONNECT_TIMEOUT,
    DEFAULT_BROKER,
    ENV_BROKER,
    FleetError,
    broker_name,
    check_broker_url,
    unreachable,
)
from napixclient.fleet.shards import WorkerInfo, run_shard

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_VISIBILITY_TIMEOUT",
    "ENV_VISIBILITY_TIMEOUT",
    "INFO_COMMAND",
    "QUEUE",
    "RETRY_POLICY",
    "TASK_NAME",
    "app_for",
    "check_seconds",
    "connect",
    "discover",
    "make_app",
    "redis_transport",
]

#: The environment variable holding a worker's visibility timeout (seconds).
ENV_VISIBILITY_TIMEOUT = "NAPIX_FLEET_VISIBILITY_TIMEOUT"
#: The queue the shards go through; a worker of another Celery application on
#: the same broker does not consume it.
QUEUE = "napixclient.fleet"
#: The task's name, as sent in messages.
TASK_NAME = "napixclient.fleet.probe_shard"
#: The remote-control command by which workers report their size.
INFO_COMMAND = "napix_fleet_info"
#: Seconds a shard may stay unacknowledged in a worker before the broker
#: hands it to another one (Redis ``visibility_timeout``), counted from when
#: the worker takes it; a worker holds one more shard than it runs per slot.
#: A shard unacknowledged longer than this is run twice (its rows are kept
#: once): keep it above twice the longest shard, 2 x (``timeout`` + 3) s.
DEFAULT_VISIBILITY_TIMEOUT = 60.0
#: ``-c`` of ``napix worker``: shards run at once by one worker process.
DEFAULT_CONCURRENCY = 4
#: How sending a task and storing a result retry when the broker blinks:
#: twice, within about a second (kombu's ``retry_policy`` keys).
RETRY_POLICY: Dict[str, Any] = {"max_retries": 2, "interval_start": 0,
                                "interval_step": 0.2, "interval_max": 0.5}


def _celery() -> Any:
    try:
        import celery
    except ImportError:
        raise FleetError("the fleet needs Celery and redis: pip install 'celery[redis]' "
                         "redis (the napixclient[fleet] extra)") from None
    return celery


def check_seconds(name: str, value: Any) -> float:
    """Check a number of seconds given to the fleet.

    :param name: the argument's name, for the message (``str``).
    :param value: the value (``int`` or ``float``).
    :returns: ``value`` as a ``float``.
    :raises ValueError: naming ``name``, unless ``value`` is a finite
        number > 0 (a ``bool`` is not one).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0 < value < math.inf):
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def _visibility_from_env() -> float:
    text = os.environ.get(ENV_VISIBILITY_TIMEOUT)
    if not text:
        return DEFAULT_VISIBILITY_TIMEOUT
    try:
        return check_seconds(ENV_VISIBILITY_TIMEOUT, float(text))
    except ValueError:
        raise ValueError(f"{ENV_VISIBILITY_TIMEOUT} must be a number of seconds > 0, "
                         f"got {text!r}") from None


def _amqp_naming(url: str) -> Any:
    """Celery's AMQP class for an application on ``url``, whose connections
    name their broker as :func:`~napixclient.fleet.broker.broker_name` does.

    kombu's own naming (``Connection.as_uri``), which the worker's banner and
    Celery's log lines use, writes ``:**@`` where there is no password, and
    the worker's transport as a class path.
    """
    from celery.app.amqp import AMQP
    from kombu import Connection

    name = broker_name(url)

    class NamedConnection(Connection):  # type: ignore[misc, valid-type]
        def as_uri(self, include_password: Any = False, mask: Any = "**",
                   getfields: Any = None) -> str:
            if include_password:
                return str(super().as_uri(include_password, mask))
            return name

    class NamingAMQP(AMQP):  # type: ignore[misc, valid-type]
        Connection = NamedConnection

    return NamingAMQP


_registered_control = False


def make_app(broker: Optional[str] = None, *,
             visibility_timeout: Optional[float] = None, for_worker: bool = False) -> Any:
    """Make the fleet's Celery application for ``broker``.

    The result backend is the same Redis (``rpc://`` for another broker).
    Settings that matter: shards acknowledged late and requeued when their
    worker is lost (``task_acks_late``, ``task_reject_on_worker_lost``), two
    shards prefetched per slot (``worker_prefetch_multiplier=2``: the next
    one is at hand when a shard ends), JSON
    messages only, connection timeouts of :data:`~napixclient.fleet.broker.CONNECT_TIMEOUT` and no
    endless retries (``broker_connection_retry_on_startup=False``), results
    kept one hour.

    :param broker: a Celery broker URL; ``NAPIX_BROKER``, else
        :data:`~napixclient.fleet.broker.DEFAULT_BROKER`, when ``None``.
    :param visibility_timeout: seconds (``float``) before a shard left
        unacknowledged by a lost worker is handed to another; from
        ``NAPIX_FLEET_VISIBILITY_TIMEOUT``, else
        :data:`DEFAULT_VISIBILITY_TIMEOUT`, when ``None``.
    :param for_worker: make the application a worker runs (what
        ``celery -A napixclient.fleet`` loads): with Redis, its transport
        waits longer on each BRPOP, so that an idle ``-P gevent`` worker
        puts back the shards of lost workers (see :func:`redis_transport`).
        Callers must not use it: their own short waits for replies would
        leave a BRPOP pending that takes the next reply.
    :returns: a :class:`celery.Celery` with the shard task registered; its
        connections name the broker with :func:`~napixclient.fleet.broker.broker_name`
        (the worker's banner, Celery's log lines).
    :raises ValueError: for a bad broker URL
        (:func:`~napixclient.fleet.broker.check_broker_url`) or timeout.
    :raises FleetError: when Celery is not installed.
    """
    url = check_broker_url(broker or os.environ.get(ENV_BROKER) or DEFAULT_BROKER)
    visibility = (_visibility_from_env() if visibility_timeout is None
                  else check_seconds("visibility_timeout", visibility_timeout))
    celery = _celery()
    app = celery.Celery("napixclient.fleet", set_as_current=False, amqp=_amqp_naming(url))
    redis = url.split("://", 1)[0] in ("redis", "rediss")
    app.conf.update(
        broker_url=url,
        broker_transport=f"{__name__}:RedisTransport" if redis and for_worker else None,
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
        result_backend_transport_options={"retry_policy": dict(RETRY_POLICY)},
        task_publish_retry_policy=dict(RETRY_POLICY),
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


def app_for(broker: Optional[str]) -> Any:
    """The caller's application for ``broker``, made once per URL.

    :param broker: a broker URL, or ``None`` for ``NAPIX_BROKER``, else
        :data:`~napixclient.fleet.broker.DEFAULT_BROKER`.
    :returns: a :class:`celery.Celery` (:func:`make_app`).
    :raises ValueError: for a bad broker URL.
    :raises FleetError: when Celery is not installed.
    """
    url = check_broker_url(broker or os.environ.get(ENV_BROKER) or DEFAULT_BROKER)
    app = _apps.get(url)
    if app is None:
        app = _apps[url] = make_app(url)
    return app


_transport: Any = None


def redis_transport() -> Any:
    """kombu's Redis transport, with BRPOP waits longer than the poll of a
    ``-P gevent`` worker: what a worker's application
    (``make_app(for_worker=True)``) uses with a Redis broker.

    Such a worker polls for two seconds at a time (Celery's ``synloop``),
    and kombu puts back the shards of lost workers (past their visibility
    timeout) only after a poll that saw no event at all. With kombu's
    one-second BRPOP, an idle worker's poll always sees the BRPOP's empty
    answer, so the shards of a killed worker would wait in ``unacked`` for
    good. Three seconds leaves polls without events, hence the restore,
    while idle.

    :returns: a subclass of ``kombu.transport.redis.Transport`` (one, made
        on first use: kombu is imported then).
    """
    global _transport
    if _transport is None:
        from kombu.transport.redis import Transport

        class RedisTransport(Transport):  # type: ignore[misc, valid-type]
            brpop_timeout = 3

        _transport = RedisTransport
    return _transport


def __getattr__(name: str) -> Any:
    # The worker's broker_transport setting names RedisTransport.
    if name == "RedisTransport":
        return redis_transport()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def connect(app: Any) -> None:
    """Check that ``app``'s broker answers, within
    :data:`~napixclient.fleet.broker.CONNECT_TIMEOUT` seconds.

    :param app: an application of :func:`make_app`.
    :raises FleetError: naming the broker without its credentials, when it
        cannot be reached or does not answer in time.
    """
    url = app.conf.broker_url
    # A broker that accepts connections and never answers fails this
    # check within CONNECT_TIMEOUT too, not only one that refuses them.
    connection = app.connection_for_write(transport_options={
        "socket_timeout": CONNECT_TIMEOUT, "socket_connect_timeout": CONNECT_TIMEOUT})
    try:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2,
                                     interval_max=0.5, timeout=CONNECT_TIMEOUT)
    except Exception as error:
        raise unreachable(url, error) from None
    finally:
        connection.release()


def discover(app: Any, timeout: float) -> List[WorkerInfo]:
    """Ask the workers on ``app``'s broker for their size.

    :param app: an application of :func:`make_app`.
    :param timeout: seconds (``float``) to wait for their replies.
    :returns: the workers of the fleet that replied, by name
        (``List[WorkerInfo]``); workers of other applications are left out.
    :raises FleetError: when the broker cannot be reached.
    """
    url = app.conf.broker_url
    try:
        # A connection of its own: a pooled one may still have a BRPOP
        # pending from an earlier wait for replies, which would take these.
        with app.connection_for_write() as connection:
            replies = app.control.broadcast(INFO_COMMAND, reply=True, timeout=timeout,
                                            connection=connection)
    except Exception as error:
        raise unreachable(url, error) from None
    workers = []
    for reply in replies or ():
        for name, info in reply.items():
            # A worker of another application answers with an "error" key.
            if isinstance(info, dict) and "nofile" in info:
                workers.append(WorkerInfo(name, int(info["concurrency"]), int(info["nofile"]),
                                          float(info["visibility_timeout"])))
    return sorted(workers, key=lambda w: w.name)
