"""``napix worker``: run a fleet worker (:mod:`napixclient.fleet`), after
checking what it needs: a broker URL that is one, a broker that answers,
Celery, and credentials that hold together in the environment."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import napixclient
from napixclient.cli.arguments import positive_int, seconds
from napixclient.fleet import (
    DEFAULT_BROKER,
    DEFAULT_CONCURRENCY,
    DEFAULT_VISIBILITY_TIMEOUT,
    ENV_BROKER,
    ENV_VISIBILITY_TIMEOUT,
    QUEUE,
    FleetError,
    broker_name,
    check_broker_url,
    make_app,
)
from napixclient.fleet.celeryapp import connect
from napixclient.probing import UsageError, environment_credentials

__all__ = ["add_worker_arguments", "run_worker", "worker_command", "worker_main"]


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``napix worker``'s options to ``parser`` (no Celery needed):
    ``--broker URL``, ``-c/--concurrency N``, ``--visibility-timeout S``,
    ``-n/--hostname NAME`` and ``--loglevel LEVEL``.

    :param parser: an :class:`argparse.ArgumentParser` (or a subcommand's).
    """
    parser.add_argument("--broker", metavar="URL",
                        help=f"the broker; default: {ENV_BROKER}, else {DEFAULT_BROKER}")
    parser.add_argument("-c", "--concurrency", metavar="N", type=positive_int,
                        default=DEFAULT_CONCURRENCY,
                        help="shards run at once; each holds one socket per host "
                             f"(default: {DEFAULT_CONCURRENCY})")
    parser.add_argument("--visibility-timeout", metavar="S", type=seconds,
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
    :raises ValueError: for a bad broker URL
        (:func:`~napixclient.fleet.broker.check_broker_url`).
    """
    env = dict(os.environ if environ is None else environ)
    env[ENV_BROKER] = check_broker_url(args.broker or env.get(ENV_BROKER) or DEFAULT_BROKER)
    if args.visibility_timeout is not None:
        env[ENV_VISIBILITY_TIMEOUT] = repr(args.visibility_timeout)
    here = os.path.dirname(os.path.dirname(os.path.abspath(napixclient.__file__)))
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
    :returns: only on a failure, after one line on ``err``: 2 for a bad
        broker URL or inconsistent credentials in the environment; 1 when
        Celery, redis or gevent is missing, or the broker does not answer
        within :data:`~napixclient.fleet.CONNECT_TIMEOUT` seconds. On
        success it does not return: the worker takes the process.
    """
    err = err or sys.stderr
    try:
        credentials = environment_credentials(os.environ)
        argv, env = worker_command(args)
        app = make_app(env[ENV_BROKER])  # checks the settings and that Celery is here
        import redis  # noqa: F401
    except (UsageError, ValueError) as error:
        print(f"napix worker: {error}", file=err)
        return 2
    except (FleetError, ImportError) as error:
        message = str(error) if isinstance(error, FleetError) else (
            f"the fleet needs {error.name}: pip install 'celery[redis]' redis")
        print(f"napix worker: {message}", file=err)
        return 1
    try:
        # Celery would say only that it does not retry at startup.
        connect(app)
    except FleetError as error:
        print(f"napix worker: {error}", file=err)
        return 1
    print(f"napix worker: broker {broker_name(env[ENV_BROKER])}; signing with "
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
