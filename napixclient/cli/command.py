"""The ``napix`` command itself: its parser, its four subcommands, its exit
statuses, and :func:`main`, which runs them."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections import Counter
from typing import (
    Any,
    List,
    NoReturn,
    Optional,
    Sequence,
    Tuple,
)

import gevent
from rich.text import Text

from napixclient import __version__
from napixclient.cli.arguments import (
    NO_CREDENTIALS_HINT,
    Connection,
    host_argument,
    host_sort_key,
    merge_headers,
    parse_data,
    parse_header,
    path_argument,
    positive_int,
    read_hosts_file,
    resolve_connection,
    seconds,
)
from napixclient.cli.expressions import compile_condition
from napixclient.cli.output import Output, WriteError, redact, redact_bytes, setup_logging
from napixclient.cli.probe import Table
from napixclient.client import Client
from napixclient.exceptions import HTTPError
from napixclient.pool import ClientPool
from napixclient.probing import (
    Credentials,
    ProbeRow,
    UsageError,
    probe_hosts,
    redact_value,
    resolve_credentials,
)

_LOG = logging.getLogger("napixclient.cli")

#: Exit status of a success.
EXIT_OK = 0

#: Exit status when the request failed (``request``) or not every host
#: answered well (``probe``).
EXIT_FAILED = 1

#: argparse exits with 2 on bad usage; the command's own usage checks agree.
EXIT_USAGE = 2

#: Exit status when interrupted (Ctrl-C): 128 + SIGINT, as a shell reports it.
EXIT_INTERRUPTED = 130

#: Exit status when standard output was closed before the command was done
#: writing (``napix ... | head -1``): 128 + SIGPIPE, what a shell reports for
#: a command that a closed pipe ended, so scripts see what they see with
#: other tools. Nothing is printed.
EXIT_BROKEN_PIPE = 141


def _body_text(body: Any) -> str:
    """The decoded body for people: JSON pretty-printed, text as is."""
    if body is None:
        return ""
    if isinstance(body, (dict, list)):
        return json.dumps(body, indent=2, ensure_ascii=False)
    if isinstance(body, bytes):
        return body.decode("utf-8", errors="replace")
    return str(body)


def _cmd_request(args: argparse.Namespace, credentials: Credentials, output: Output) -> int:
    path = path_argument(args.path)
    headers = merge_headers(parse_header(item) for item in args.header or ())
    body = None
    if args.data is not None:
        body = parse_data(args.data)
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"
    connection: Connection = args.connection
    try:
        client = Client(host_argument(args.host), credentials.authenticator, simultaneous=1,
                        timeout=args.timeout, **connection.options)
        call = client.prepare(args.method, path, body, headers)
    except (ValueError, OSError) as error:  # OSError: a --cert file that is not there
        raise UsageError(str(error)) from None
    _LOG.debug("auth: %s", credentials.source)
    route = (f"through the proxy {client.proxy}" if client.proxy else "directly")
    _LOG.debug("sending %s %s%s %s (%s)", call.method, client.base_url, path, route,
               connection.source)
    with client:
        try:
            response = client.send(call)
        except HTTPError as error:
            _LOG.debug("failed: %s", type(error).__name__)
            output.message(redact(error.format_chain(), credentials.secrets))
            if error.status == 401 and credentials.authenticator is None:
                output.message(NO_CREDENTIALS_HINT)
            return EXIT_FAILED
    _LOG.debug("%s %s in %.0f ms", response.status, response.reason,
               response.elapsed * 1000)
    if 300 <= response.status < 400 and "Location" in response.headers:
        output.message(f"{response.status} {response.reason}: Location: "
                       f"{redact(response.headers['Location'], credentials.secrets)}")
    # decode_body leaves a body as bytes only when its media type is not
    # text: those go out as they came.
    if isinstance(response.body, bytes):
        output.body_bytes(redact_bytes(response.body, credentials.secrets))
        return EXIT_OK
    text = _body_text(redact_value(response.body, credentials.secrets))
    if text:
        output.body(redact(text, credentials.secrets))
    return EXIT_OK


def _cmd_probe(args: argparse.Namespace, credentials: Credentials, output: Output) -> int:
    targets = list(args.targets)
    path = targets.pop()
    try:
        path_argument(path)
    except UsageError as error:
        raise UsageError(f"{error} (the PATH comes last)") from None
    hosts = [host_argument(host) for host in targets]
    if args.hosts_file:
        hosts += read_hosts_file(args.hosts_file)
    if not hosts:
        if args.hosts_file:
            raise UsageError(f"no host to probe: --hosts-file {args.hosts_file} holds none "
                             "(one host per line; # starts a comment)")
        raise UsageError("no host to probe: give HOST... PATH or --hosts-file F PATH")
    condition = None if args.first_where is None else compile_condition(args.first_where)
    noun = "host" if len(hosts) == 1 else "hosts"
    started = time.monotonic()
    connection: Connection = args.connection
    if args.broker:
        # The workers sign and connect: nothing of this process's
        # credentials or proxies is used.
        _LOG.debug("auth: each worker's own (NAPIX_LOGIN and NAPIX_KEY, or NAPIX_TOKEN, "
                   "of its environment)")
        _LOG.debug("probing %d %s for GET %s on the fleet's workers (their proxies)",
                   len(hosts), noun, path)
    else:
        _LOG.debug("auth: %s", credentials.source)
        _LOG.debug("probing %d %s for GET %s (%s)", len(hosts), noun, path,
                   connection.source)
    fleet_probe = _start_fleet(args, hosts, path, condition, output) if args.broker else None
    if args.broker and fleet_probe is None:
        return EXIT_FAILED
    if fleet_probe is not None:
        _LOG.debug("%d %s of %d sent to %s; rows awaited for %.0f s at most",
                   fleet_probe.shards, "shard" if fleet_probe.shards == 1 else "shards",
                   fleet_probe.shard_size,
                   ", ".join(f"{w.name} (-c {w.concurrency})" for w in fleet_probe.workers),
                   fleet_probe.deadline)
    pool: Optional[ClientPool] = None
    if fleet_probe is None:
        # With --broker the workers probe (fleet.probe checked each host):
        # no client here, whose making cost the caller most of its CPU per
        # row (a Client per host).
        try:
            pool = ClientPool(credentials.authenticator, simultaneous=args.simultaneous,
                              timeout=args.timeout, **connection.options)
            for host in hosts:
                pool.client(host)  # the route of each host, checked now
        except (ValueError, OSError) as error:  # OSError: a --cert file that is not there
            raise UsageError(str(error)) from None
    # Each request is bounded by --timeout once its turn under
    # --simultaneous comes; this deadline only catches what the client did
    # not, so that a probe always ends.
    waves = math.ceil(max(Counter(hosts).values()) / args.simultaneous)
    deadline = args.timeout * waves + 2.0
    table = None if args.json else Table(hosts, output.width)

    def emit(row: ProbeRow) -> None:
        if table is None:
            # A row masks the credentials in what came from the far side;
            # its own words (field names, outcome) stay as they are.
            output.row(Text(row.json_line()))
        else:
            for text in table.row(row):
                output.row(text)

    if args.sort == "host":
        later: List[ProbeRow] = []
        show = later.append
    else:
        show = emit
        if table is not None:
            for line in table.header():
                output.row(line)
    with (contextlib.nullcontext() if pool is None else pool), \
            output.progress(len(hosts)) as advance:
        if fleet_probe is not None:
            from napixclient.fleet import FleetError
            try:
                rows, left = _fleet_rows(fleet_probe, show, advance)
            except FleetError as error:
                output.message(f"napix: {error}")
                return EXIT_FAILED
        else:
            assert pool is not None
            rows, left = probe_hosts(pool, hosts, path, condition, deadline, show, advance,
                                     credentials.secrets)
    elapsed = time.monotonic() - started
    if args.sort == "host":
        if table is not None:
            for line in table.header():
                output.row(line)
        for row in sorted(later, key=lambda row: host_sort_key(row.host)):
            emit(row)

    match = next((row for row in rows if row.match), None)
    counts = {name: sum(1 for row in rows if row.outcome == name)
              for name in ("ok", "failed", "timed out", "cancelled")}
    noun = "host" if len(rows) == 1 else "hosts"
    summary = (f"{len(rows)} {noun}: {counts['ok']} ok, {counts['failed']} failed, "
               f"{counts['timed out']} timed out")
    if condition is not None:
        summary += f", {counts['cancelled']} cancelled"
    summary += f" in {elapsed:.2f} s"
    if condition is not None:
        summary += (f"; first match: {match.host} ({left} still pending, cancelled)"
                    if match else "; no match")
    if args.json:
        output.log(summary)
    else:
        output.row(Text())
        output.row(Text(summary))
    if not args.broker and credentials.authenticator is None and any(
            row.result is not None and row.result.status == 401 for row in rows):
        output.message(NO_CREDENTIALS_HINT)
    if condition is not None:
        return EXIT_OK if match else EXIT_FAILED
    return EXIT_OK if counts["ok"] == len(rows) else EXIT_FAILED


def _start_fleet(args: argparse.Namespace, hosts: List[str], path: str, condition: Any,
                 output: Output) -> Any:
    """``--broker``: send the same probe to the fleet's workers
    (:func:`napixclient.fleet.probe`); ``None`` when the fleet cannot take
    it (the broker is unreachable, no worker answers), the reason printed."""
    from napixclient import fleet

    if args.login or args.key or args.token:
        raise UsageError("--broker: the workers sign with NAPIX_LOGIN/NAPIX_KEY or "
                         "NAPIX_TOKEN from their own environment; --login, --key and "
                         "--token are not sent")
    if args.proxy or args.no_proxy or args.cert or args.cert_key:
        raise UsageError("--broker: the workers reach the hosts through the proxies of "
                         "their own environment and present no client certificate; "
                         "--proxy, --no-proxy, --cert and --cert-key are not sent")
    try:
        return fleet.probe(hosts, path, broker=args.broker, first_where=condition,
                           timeout=args.timeout, simultaneous=args.simultaneous,
                           body=args.json)
    except fleet.FleetError as error:
        output.message(f"napix: {error}")
        return None
    except ValueError as error:  # a bad broker URL: the rest was checked here
        raise UsageError(f"--broker: {error}") from None


def _fleet_rows(probe: Any, show: Any, advance: Any) -> Tuple[List[Any], int]:
    """A fleet probe's rows as its shards finish; they print like
    :class:`ProbeRow`. Leaving early revokes what is left."""
    rows = []
    with probe:
        for row in probe:
            rows.append(row)
            if row.answered:
                advance()
            show(row)
    return rows, probe.left


def _cmd_demo(args: argparse.Namespace, credentials: Credentials, output: Output) -> int:
    from napixclient.demo import run_demo

    return run_demo(output.out, verbose=args.verbose)


def _cmd_worker(args: argparse.Namespace, credentials: Credentials, output: Output) -> int:
    from napixclient.cli.worker import run_worker

    return run_worker(args, output.err)


def build_parser() -> argparse.ArgumentParser:
    """The ``napix`` argument parser, with its four subcommands (``request``,
    ``probe``, ``demo``, ``worker``).

    :returns: an :class:`argparse.ArgumentParser`; each subcommand's parser
        sets ``run`` (the function that runs it) and ``parser`` (itself).
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="log what the command does on stderr (-vv: the library's "
                             "debug lines too); credentials are never shown")
    auth = argparse.ArgumentParser(add_help=False)
    group = auth.add_argument_group(
        "credentials", "default: NAPIX_LOGIN and NAPIX_KEY, or NAPIX_TOKEN, from the "
        "environment (prefer them: flags show in the process list)")
    group.add_argument("--login", help="login for the signed protocol")
    group.add_argument("--key", help="secret key for the signed protocol")
    group.add_argument("--token", help="token for the token protocol (?token=...)")
    reach = argparse.ArgumentParser(add_help=False)
    group = reach.add_argument_group(
        "proxy and client certificate", "default: the proxies of the environment "
        "(http_proxy, https_proxy, all_proxy, no_proxy), as requests and curl read them")
    group.add_argument("--proxy", metavar="URL",
                       help="send every request through this proxy, http and https hosts "
                            "alike: http://[USER:PASSWORD@]HOST:PORT or https://...")
    group.add_argument("--no-proxy", action="store_true",
                       help="connect directly, ignoring the proxy variables")
    group.add_argument("--cert", metavar="PEM",
                       help="client certificate for hosts that ask for one (mutual TLS): "
                            "a PEM file with the certificate and, when no --cert-key "
                            "is given, its key")
    group.add_argument("--cert-key", metavar="PEM",
                       help="the client certificate's private key (unencrypted PEM)")

    parser = argparse.ArgumentParser(
        prog="napix", description="Call Napix HTTP hosts: one request, a probe of many "
        "hosts at once (here, or on a fleet of workers), or a demo against local servers.",
        epilog="Exit codes: 0 success, 1 a request failed, 2 bad usage, 130 interrupted "
        "(Ctrl-C), 141 standard output closed before the end (napix ... | head -1).")
    parser.add_argument("--version", action="version", version=f"napix {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    request = commands.add_parser(
        "request", parents=[common, auth, reach], help="send one request and print the body",
        description="Send one request; print the decoded body (JSON pretty-printed). "
        "Exit 0 on 2xx/3xx; 1 on a failure, the error chain printed hop by hop on "
        "stderr; 2 on bad usage.")
    request.add_argument("host", metavar="HOST",
                         help="name, name:port, [IPv6]:port or http(s)://name[:port]"
                              "[/prefix]; a bare IPv6 address (::1) means its default port")
    request.add_argument("method", metavar="METHOD", help="GET, POST, PUT, DELETE...")
    request.add_argument("path", metavar="PATH", help="e.g. /vm-ip/")
    request.add_argument("--data", metavar="JSON",
                         help="a JSON request body (RFC 8259: no NaN or Infinity)")
    request.add_argument("--header", metavar="K:V", action="append",
                         help="an extra header; repeatable, a repeated name sends "
                              "every value")
    request.add_argument("--timeout", metavar="S", type=seconds, default=60.0,
                         help="seconds for the whole exchange (default: 60)")
    request.set_defaults(run=_cmd_request, parser=request)

    probe = commands.add_parser(
        "probe", parents=[common, auth, reach], help="GET one path on many hosts at once",
        usage="napix probe [options] HOST... PATH\n       "
              "napix probe [options] --hosts-file F [HOST...] PATH",
        description="GET PATH on every host at once; print a table (or JSON lines) "
        "as results arrive. Exit 0 when every host answered with a status below "
        "400 (with --first-where: when a host matched), else 1; 2 on bad usage.")
    probe.add_argument("targets", metavar="HOST... PATH", nargs="+",
                       help="hosts to probe, then the path to GET")
    probe.add_argument("--hosts-file", metavar="F",
                       help="more hosts, one per line; # comments; '-' for stdin")
    probe.add_argument("--simultaneous", metavar="N", type=positive_int, default=2,
                       help="most connections open to one host at once (default: 2)")
    probe.add_argument("--timeout", metavar="S", type=seconds, default=10.0,
                       help="seconds for each request's whole exchange (default: 10)")
    probe.add_argument("--json", action="store_true",
                       help="one JSON object per line, as results arrive; the "
                            "summary goes to stderr")
    probe.add_argument("--first-where", metavar="EXPR",
                       help="stop at the first result for which EXPR is true, e.g. "
                            "\"status == 200 and body['free_slots'] > 0\" (names: "
                            "status, body, host); the rest is cancelled")
    probe.add_argument("--sort", choices=("arrival", "host"), default="arrival",
                       help="order of the rows (table or --json): arrival, as results "
                            "come (default), or host, all at the end, by name in "
                            "natural order then port as a number")
    probe.add_argument("--broker", metavar="URL",
                       help="spread the probe over the fleet's workers on this Celery "
                            "broker, e.g. redis://127.0.0.1:6379/0 (they sign with "
                            "their own credentials; see napix worker)")
    probe.set_defaults(run=_cmd_probe, parser=probe)

    demo = commands.add_parser(
        "demo", parents=[common], help="run the library against local demo servers",
        description="Start Napix servers on 127.0.0.1 and show the three uses of "
        "napixclient end to end: orchestration, capacity probing, error chains.")
    demo.set_defaults(run=_cmd_demo, parser=demo)

    from napixclient.cli.worker import add_worker_arguments

    worker = commands.add_parser(
        "worker", parents=[common], help="run a fleet worker for probe --broker",
        description="Run a fleet worker: celery -A napixclient.fleet worker -P gevent. "
        "It signs with NAPIX_LOGIN and NAPIX_KEY, or NAPIX_TOKEN, from its own "
        "environment. Needs the fleet extra (celery[redis], redis).")
    add_worker_arguments(worker)
    worker.set_defaults(run=_cmd_worker, parser=worker)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``napix`` command.

    :param argv: the arguments after the program name; ``sys.argv[1:]`` by
        default.
    :returns: the exit code: :data:`EXIT_OK`, :data:`EXIT_FAILED`,
        :data:`EXIT_USAGE`, :data:`EXIT_INTERRUPTED` when interrupted, or
        :data:`EXIT_BROKEN_PIPE` when standard output was closed early.
    :raises SystemExit: from argparse, with code 2, for bad usage it detects
        itself (and 0 for ``--help``/``--version``).
    """
    # A Ctrl-C that lands while gevent's hub runs is raised in the hub,
    # which prints it with a timestamp before passing it to this greenlet;
    # an error it does not print is still passed on (gevent's
    # Hub.handle_error), and caught below.
    hub = gevent.get_hub()
    not_error = hub.NOT_ERROR
    hub.NOT_ERROR = (*not_error, KeyboardInterrupt)
    try:
        return _run(argv)
    except KeyboardInterrupt:
        # Whatever was running has been left (a probe's pool closed, its
        # progress bar erased) on the way here.
        if sys.stderr is not None:  # print would write to standard output
            with contextlib.suppress(OSError):
                print("napix: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        hub.NOT_ERROR = not_error


def raise_open_files_limit() -> Optional[str]:
    """Raise the process's soft limit of open files (``RLIMIT_NOFILE``) to
    its hard limit, as many tools that open many connections do: a probe
    of thousands of hosts needs a descriptor per connection, and the common
    soft default of 1,024 would fail most of them (issue 11). The pool's
    default connection cap follows the limit in force when it is made.

    Failures are ignored: the limit stays as it was. Where the
    :mod:`resource` module does not exist (Windows), nothing is done.

    :returns: what happened, for ``-v`` (``str``, with the limit read back
        after the change), or ``None`` when there is nothing to say (no
        :mod:`resource` module, or the soft limit already at the hard one).
    """
    try:
        import resource
    except ImportError:
        return None
    unlimited = resource.RLIM_INFINITY
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    if soft == hard or soft == unlimited:
        return None
    # An unlimited hard limit is refused as a soft one on some systems
    # (macOS caps it at OPEN_MAX, 10,240): then that is tried.
    failure: Optional[Exception] = None
    for target in (hard, 10240) if hard == unlimited else (hard,):
        if target != unlimited and target <= soft:
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as error:
            failure = error
            continue
        now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return f"open files limit raised from {soft} to {now}"
    return None if failure is None else f"open files limit left at {soft}: {failure}"


def _run(argv: Optional[Sequence[str]]) -> int:
    raised = raise_open_files_limit()
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    sub: argparse.ArgumentParser = args.parser
    if unknown:
        # argparse would show the top-level usage; the subcommand's helps.
        _usage_error(sub, "unrecognized arguments: " + " ".join(unknown))
    credentials = Credentials(None, "none")
    if args.command not in ("demo", "worker"):
        try:
            credentials = resolve_credentials(args.login, args.key, args.token, os.environ)
            args.connection = resolve_connection(args.proxy, args.no_proxy, args.cert,
                                                 args.cert_key, os.environ)
        except (UsageError, ValueError) as error:
            _usage_error(sub, str(error))
        # A proxy's password is masked like a key in whatever is printed.
        credentials = dataclasses.replace(
            credentials, secrets=credentials.secrets + args.connection.secrets)
    output = Output(sys.stdout, sys.stderr)
    setup_logging(args.verbose, credentials.secrets, output.log)
    if raised:
        _LOG.debug("%s", raised)
    try:
        code: int = args.run(args, credentials, output)
        # Flushed here, so that a closed pipe is noticed here rather than
        # at the interpreter's exit.
        output.flush()
        return code
    except BrokenPipeError:
        # Standard output's reader went away (napix ... | head -1): the
        # rest is not wanted. Leaving run() has cancelled what a probe had
        # pending; what Python would flush at exit goes nowhere (the
        # Python docs' "Note on SIGPIPE").
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except WriteError as error:
        # A full disk, standard output closed (napix ... >&-): one line,
        # as cat says it; what a probe had pending was cancelled.
        _discard_stdout()
        output.message(f"napix: cannot write to standard output: {error.reason}")
        return EXIT_FAILED
    except UsageError as error:
        _usage_error(sub, redact(str(error), credentials.secrets))


def _discard_stdout() -> None:
    """Point standard output at the null device, so that nothing more
    written to it (Python flushes it at exit) can fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (a test's capture): nothing will flush it


def _usage_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    parser.error(message)  # prints the usage on stderr, exits with 2

