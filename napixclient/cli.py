"""The ``napix`` command: one request, a probe of many hosts, and a demo.

::

    napix request HOST METHOD PATH [--data JSON] [--header K:V ...]
                  [--login L --key K | --token T] [--timeout S]
    napix probe HOST... PATH [--hosts-file F] [--simultaneous N] [--timeout S]
                [--json] [--first-where EXPR] [--sort arrival|host]
    napix demo

Credentials come from ``--login``/``--key`` or ``--token``, else from the
environment (``NAPIX_LOGIN`` and ``NAPIX_KEY``, or ``NAPIX_TOKEN``). They are
never printed, not even with ``-v``: the logs go through a filter that
replaces them with ``***``, and urllib3's own debug log (which prints whole
URLs, a token parameter included) stays off.

Exit codes follow the usual Unix convention: 0 success, 1 a request failed
(``request``) or not every host answered well (``probe``), 2 bad usage
(argparse's own convention), 130 interrupted.

The command runs its requests in the main greenlet and in a
:class:`~napixclient.ClientPool`: nothing is monkey-patched.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import math
import operator
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    NoReturn,
    Optional,
    Sequence,
    TextIO,
    Tuple,
)

import gevent
from gevent import Greenlet

from napixclient import __version__
from napixclient.authenticators import LoginAuthenticator, TokenIdentifier
from napixclient.client import Client, parse_host
from napixclient.exceptions import HTTPError, Timeout
from napixclient.pool import ClientPool, Result
from napixclient.response import Response

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Credentials",
    "ExpressionError",
    "ProbeRow",
    "UsageError",
    "build_parser",
    "compile_condition",
    "main",
    "parse_data",
    "parse_header",
    "read_hosts_file",
    "redact",
    "redact_log",
    "resolve_credentials",
    "summarize",
]

#: Exit status of a success.
EXIT_OK = 0
#: Exit status when the request failed (``request``) or not every host
#: answered well (``probe``).
EXIT_FAILED = 1
#: argparse exits with 2 on bad usage; the command's own usage checks agree.
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

ENV_LOGIN = "NAPIX_LOGIN"
ENV_KEY = "NAPIX_KEY"
ENV_TOKEN = "NAPIX_TOKEN"

#: The most characters of a body shown in a probe table's row.
SUMMARY_WIDTH = 60
#: The longest ``--first-where`` expression accepted, in characters.
MAX_EXPRESSION = 1000

_LOG = logging.getLogger(__name__)
_SIGNATURE = re.compile(r"\b[0-9a-fA-F]{64}\b")
_TOKEN_PARAMETER = re.compile(r"([?&]token=)[^&\s\"']+")


class UsageError(ValueError):
    """The command line is wrong: a malformed ``--data``, host, header,
    hosts file or expression. The command exits with :data:`EXIT_USAGE`."""


# -- credentials -----------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """What the command authenticates with, and where it came from.

    :ivar authenticator: a :class:`~napixclient.authenticators.LoginAuthenticator`,
        a :class:`~napixclient.authenticators.TokenIdentifier`, or ``None``
        to send requests unauthenticated.
    :ivar source: a secret-free description for ``-v``, such as
        ``"login and key from NAPIX_LOGIN, NAPIX_KEY"``.
    :ivar secrets: the secret values (key, token), for redaction only.
    """

    authenticator: Any
    source: str
    secrets: Tuple[str, ...] = field(default=(), repr=False)

    def __repr__(self) -> str:
        return f"Credentials({self.source!r})"


def resolve_credentials(login: Optional[str], key: Optional[str], token: Optional[str],
                        environ: Mapping[str, str]) -> Credentials:
    """Choose the credentials from the flags, else from the environment.

    Flags win over the environment: ``--token`` means the token protocol;
    ``--login`` or ``--key`` means the signed protocol, the missing half
    taken from ``NAPIX_LOGIN``/``NAPIX_KEY``. Without flags, ``NAPIX_LOGIN``
    and ``NAPIX_KEY`` (the signed protocol, PROTOCOL.md section 1) win over
    ``NAPIX_TOKEN`` (section 2). Empty values count as absent.

    :param login, key, token: the flags' values (``str``) or ``None``.
    :param environ: the environment (``os.environ``).
    :returns: :class:`Credentials`.
    :raises UsageError: for ``--token`` together with ``--login``/``--key``,
        or a login without a key (or the reverse). The message names the
        flags and variables, never their values.
    """
    env_login = environ.get(ENV_LOGIN) or None
    env_key = environ.get(ENV_KEY) or None
    env_token = environ.get(ENV_TOKEN) or None
    login, key, token = login or None, key or None, token or None
    if token and (login or key):
        raise UsageError("use either --login/--key or --token, not both")
    if token:
        return Credentials(TokenIdentifier(token), "token from --token", (token,))
    if login or key:
        where = "--login/--key"
        login, key = login or env_login, key or env_key
        if not login or not key:
            missing = "--login (or NAPIX_LOGIN)" if not login else "--key (or NAPIX_KEY)"
            raise UsageError(f"{where} given without {missing}")
        return Credentials(LoginAuthenticator(login, key), f"login and key from {where}",
                           (key,))
    if env_login or env_key:
        if not env_login or not env_key:
            missing = ENV_LOGIN if not env_login else ENV_KEY
            present = ENV_KEY if not env_login else ENV_LOGIN
            raise UsageError(f"{present} is set but {missing} is not")
        return Credentials(LoginAuthenticator(env_login, env_key),
                           f"login and key from {ENV_LOGIN}, {ENV_KEY}", (env_key,))
    if env_token:
        return Credentials(TokenIdentifier(env_token), f"token from {ENV_TOKEN}",
                           (env_token,))
    return Credentials(None, "none (no --login/--key, --token or NAPIX_* variables)")


def redact(text: str, secrets: Iterable[str]) -> str:
    """Return ``text`` with every secret value (a key, a token) replaced by
    ``***``; what the command prints goes through it, in case a far side
    echoes a credential back.

    :param text: the text to print (``str``).
    :param secrets: the secret values (``str``); empty ones are skipped.
    :returns: the redacted text (``str``).
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def redact_log(text: str, secrets: Iterable[str]) -> str:
    """:func:`redact`, and also every 64-hex-digit string (an HMAC-SHA256
    signature, PROTOCOL.md) and every ``token=`` query value: for log lines,
    where a masked checksum costs less than a leaked signature.

    :param text: the log line (``str``).
    :param secrets: the secret values (``str``); empty ones are skipped.
    :returns: the redacted line (``str``).
    """
    text = _SIGNATURE.sub("***", redact(text, secrets))
    return _TOKEN_PARAMETER.sub(r"\1***", text)


class _RedactingFilter(logging.Filter):
    """A handler filter that passes every record with its secrets redacted."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self._secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_log(record.exc_text, self._secrets)
        record.msg, record.args = redact_log(message, self._secrets), ()
        return True


_handler: Optional[logging.Handler] = None


def _setup_logging(verbosity: int, secrets: Sequence[str]) -> None:
    """Log to stderr through a redacting filter: warnings by default, the
    command's own steps with ``-v``, napixclient's debug lines with ``-vv``.

    urllib3 stays at WARNING whatever the verbosity: its debug lines print
    whole URLs, a token parameter included.
    """
    global _handler
    root = logging.getLogger()
    if _handler is not None:  # main() called again in the same process
        root.removeHandler(_handler)
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("napix: %(name)s: %(message)s"))
    _handler.addFilter(_RedactingFilter(secrets))
    root.addHandler(_handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if verbosity >= 1:
        _LOG.setLevel(logging.DEBUG)
    if verbosity >= 2:
        logging.getLogger("napixclient").setLevel(logging.DEBUG)


# -- argument types --------------------------------------------------------


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be a finite number > 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 1")
    return value


def parse_header(text: str) -> Tuple[str, str]:
    """``"Name: value"`` -> ``("Name", "value")``.

    :param text: one ``--header`` value (``str``).
    :returns: ``(name, value)``, both stripped of surrounding spaces.
    :raises UsageError: when there is no ``:`` or the name is empty.
    """
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise UsageError(f"--header {text!r} must look like NAME:VALUE")
    return name.strip(), value.strip()


def parse_data(text: str) -> bytes:
    """Check that ``--data`` is a JSON document and return its bytes as typed.

    :param text: the ``--data`` value (``str``).
    :returns: ``text`` encoded as UTF-8 (``bytes``), unchanged otherwise.
    :raises UsageError: naming where the JSON is malformed.
    """
    try:
        json.loads(text)
    except ValueError as error:
        raise UsageError(f"--data is not valid JSON: {error}") from None
    return text.encode("utf-8")


def read_hosts_file(path: str) -> List[str]:
    """Read a hosts file: one host per line; ``#`` starts a comment; blank
    lines are ignored.

    :param path: the file's path (``-`` reads standard input).
    :returns: the hosts in file order (``List[str]``).
    :raises UsageError: when the file cannot be read, or a line holds more
        than one word or a malformed host (naming the file and line).
    """
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--hosts-file {path}: {error}") from None
    hosts = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if len(entry.split()) != 1:
            raise UsageError(f"{path}:{number}: one host per line, got {entry!r}")
        try:
            parse_host(entry)
        except ValueError as error:
            raise UsageError(f"{path}:{number}: {error}") from None
        hosts.append(entry)
    return hosts


# -- the --first-where expression ------------------------------------------


class ExpressionError(UsageError):
    """A ``--first-where`` expression that is not valid or uses something
    outside the allowed subset."""


_NAMES = ("status", "body", "host")
_COMPARE: Dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
    ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Is: operator.is_, ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}
_ALLOWED = (
    ast.Expression, ast.Compare, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not,
    ast.USub, ast.Subscript, ast.Constant, ast.Name, ast.Load, ast.Tuple, ast.List,
    *_COMPARE,
)


def compile_condition(text: str) -> Callable[[Mapping[str, Any]], bool]:
    """Compile a ``--first-where`` expression into a predicate.

    The expression is parsed with :mod:`ast` and evaluated by walking the
    tree, never with :func:`eval`. Allowed: comparisons (``== != < <= > >=
    in not in is is not``), ``and``/``or``/``not``, unary minus, subscripts
    (``body['free_slots']``), constants, tuples and lists, and the names
    ``status``, ``body`` and ``host``. Calls, attributes, other names and
    operators are refused.

    :param text: e.g. ``"status == 200 and body['free_slots'] > 0"``.
    :returns: ``predicate(values)``, where ``values`` maps the names to
        their values; it returns ``bool`` and never raises: an expression
        that fails on a value (a missing key, comparing ``None`` with an
        ``int``) is false for that value.
    :raises ExpressionError: at once, for a syntax error, a disallowed
        construct or name, or an expression longer than
        :data:`MAX_EXPRESSION` characters.
    """
    if len(text) > MAX_EXPRESSION:
        raise ExpressionError(f"--first-where: longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise ExpressionError(f"--first-where {text!r}: {error.msg}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise ExpressionError(
                f"--first-where {text!r}: {type(node).__name__} is not allowed; use "
                "comparisons, and/or/not, subscripts, constants and the names "
                + ", ".join(_NAMES))
        if isinstance(node, ast.Name) and node.id not in _NAMES:
            raise ExpressionError(f"--first-where {text!r}: unknown name {node.id!r}; "
                                  "the names are " + ", ".join(_NAMES))

    def predicate(values: Mapping[str, Any]) -> bool:
        try:
            return bool(_evaluate(tree.body, values))
        except Exception:  # a failing comparison or lookup is a non-match
            return False

    return predicate


def _evaluate(node: ast.AST, values: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return values.get(node.id)
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_evaluate(item, values) for item in node.elts)
    if isinstance(node, ast.Subscript):
        return _evaluate(node.value, values)[_evaluate(node.slice, values)]
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, values)
        return (not operand) if isinstance(node.op, ast.Not) else -operand
    if isinstance(node, ast.BoolOp):
        result: Any = None
        for item in node.values:
            result = _evaluate(item, values)
            # Python's own short-circuit: and stops at a false value, or at a true one.
            if isinstance(node.op, ast.And) != bool(result):
                return result
        return result
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, values)
        for op, right_node in zip(node.ops, node.comparators):
            right = _evaluate(right_node, values)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    raise ExpressionError(f"{type(node).__name__} is not allowed")  # checked at compile


# -- output helpers --------------------------------------------------------


def _body_text(body: Any) -> str:
    """The decoded body for people: JSON pretty-printed, text as is."""
    if body is None:
        return ""
    if isinstance(body, (dict, list)):
        return json.dumps(body, indent=2, ensure_ascii=False)
    if isinstance(body, bytes):
        return body.decode("utf-8", errors="replace")
    return str(body)


def summarize(result: Result, width: int = SUMMARY_WIDTH) -> str:
    """A one-line summary of a result's body (JSON compacted) or error.

    :param result: a :class:`~napixclient.Response` or an
        :class:`~napixclient.HTTPError`.
    :param width: the most characters kept (``int``).
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
    # A far side's text must not drive the terminal (escape sequences).
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in " ".join(text.split()))
    return text if len(text) <= width else text[: width - 3] + "..."


def _status_label(result: Result) -> str:
    """``"200"`` for an answer; the class name where no status tells the story."""
    if isinstance(result, Response) or (type(result) is HTTPError and result.status):
        return str(result.status)
    return type(result).__name__


# -- napix request ---------------------------------------------------------


def _cmd_request(args: argparse.Namespace, credentials: Credentials,
                 out: TextIO, err: TextIO) -> int:
    headers = dict(parse_header(item) for item in args.header or ())
    body = None
    if args.data is not None:
        body = parse_data(args.data)
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"
    try:
        client = Client(args.host, credentials.authenticator, simultaneous=1,
                        timeout=args.timeout)
        call = client.prepare(args.method, args.path, body, headers)
    except ValueError as error:
        raise UsageError(str(error)) from None
    _LOG.debug("auth: %s", credentials.source)
    _LOG.debug("sending %s %s%s", call.method, client.base_url, args.path)
    with client:
        try:
            response = client.send(call)
        except HTTPError as error:
            _LOG.debug("failed: %s", type(error).__name__)
            print(redact(error.format_chain(), credentials.secrets), file=err)
            return EXIT_FAILED
    _LOG.debug("%s %s in %.0f ms", response.status, response.reason,
               response.elapsed * 1000)
    if 300 <= response.status < 400 and "Location" in response.headers:
        print(f"{response.status} {response.reason}: Location: "
              f"{redact(response.headers['Location'], credentials.secrets)}", file=err)
    # decode_body leaves a body as bytes only when its media type is not
    # text: write those as they came.
    if isinstance(response.body, bytes):
        buffer = getattr(out, "buffer", None)
        if buffer is not None:
            out.flush()
            buffer.write(response.body)
            buffer.flush()
            return EXIT_OK
    text = _body_text(response.body)
    if text:
        print(redact(text, credentials.secrets), file=out)
    return EXIT_OK


# -- napix probe -----------------------------------------------------------


@dataclass
class ProbeRow:
    """One probed host's line in the table (or ``--json`` output).

    :ivar host: the host as given.
    :ivar result: its :class:`~napixclient.Response` or
        :class:`~napixclient.HTTPError`, or ``None`` when it was cancelled
        (``--first-where`` matched first) or outlived the probe's deadline.
    :ivar latency: seconds (``float``) from sending to the result, or ``None``.
    :ivar outcome: ``"ok"``, ``"failed"``, ``"timed out"`` or ``"cancelled"``.
    :ivar match: whether this is the ``--first-where`` match.
    """

    host: str
    result: Optional[Result]
    latency: Optional[float]
    outcome: str
    match: bool = False

    def as_json(self) -> Dict[str, Any]:
        """The row as a JSON-ready ``dict``: ``host``, ``status`` (``int`` or
        ``null``), ``error`` (class name or ``null``), ``latency_ms``,
        ``outcome``, ``body`` (the decoded body when it is JSON or text,
        else ``null``), ``summary``, ``chain`` (``str(err)``, or ``null``)
        and ``match``."""
        result = self.result
        body: Any = None
        error = chain = None
        if isinstance(result, Response):
            body = result.body if not isinstance(result.body, bytes) else None
        elif result is not None:
            error, chain = type(result).__name__, str(result)
        else:
            error = "Cancelled" if self.outcome == "cancelled" else "Timeout"
        return {
            "host": self.host,
            "status": None if result is None else result.status,
            "error": error,
            "latency_ms": None if self.latency is None else round(self.latency * 1000, 1),
            "outcome": self.outcome,
            "body": body,
            "summary": self.summary(),
            "chain": chain,
            "match": self.match,
        }

    def summary(self) -> str:
        """The body or error summary shown in the table."""
        if self.result is None:
            return ("not waited for: a match came first" if self.outcome == "cancelled"
                    else "no result before the probe's deadline")
        return summarize(self.result)

    def status_label(self) -> str:
        """The table's status column: the status, or an error class name."""
        if self.result is None:
            return "Cancelled" if self.outcome == "cancelled" else "Timeout"
        return _status_label(self.result)


def _outcome(result: Result) -> str:
    if isinstance(result, Response):
        return "ok"
    return "timed out" if isinstance(result, Timeout) else "failed"


def _cmd_probe(args: argparse.Namespace, credentials: Credentials,
               out: TextIO, err: TextIO) -> int:
    targets = list(args.targets)
    path = targets.pop()
    if not path.startswith("/"):
        raise UsageError(f"the PATH comes last and starts with '/', got {path!r}")
    hosts = list(targets)
    if args.hosts_file:
        hosts += read_hosts_file(args.hosts_file)
    if not hosts:
        raise UsageError("no host to probe: give HOST... PATH or --hosts-file F PATH")
    # read_hosts_file checked the file's hosts as it read them.
    for host in targets:
        try:
            parse_host(host)
        except ValueError as error:
            raise UsageError(str(error)) from None
    condition = compile_condition(args.first_where) if args.first_where else None
    _LOG.debug("auth: %s", credentials.source)
    _LOG.debug("probing %d hosts for GET %s", len(hosts), path)

    started = time.monotonic()
    try:
        pool = ClientPool(credentials.authenticator, simultaneous=args.simultaneous,
                          timeout=args.timeout)
    except ValueError as error:
        raise UsageError(str(error)) from None
    # Each request is bounded by --timeout once its turn under
    # --simultaneous comes; this deadline only catches what the client did
    # not, so that a probe always ends.
    waves = math.ceil(max(Counter(hosts).values()) / args.simultaneous)
    deadline = args.timeout * waves + 2.0

    def emit(row: ProbeRow) -> None:
        if args.json:
            line = json.dumps(row.as_json(), ensure_ascii=False, default=str)
            print(redact(line, credentials.secrets), file=out, flush=True)

    with pool, _progress(len(hosts), err) as advance:
        if args.broker:
            from napixclient.fleet import FleetError
            try:
                rows, left = _probe_fleet(args, hosts, path, condition, emit, advance)
            except FleetError as error:
                print(f"napix: {error}", file=err)
                return EXIT_FAILED
        else:
            rows, left = _probe(pool, hosts, path, condition, deadline, emit, advance)
    elapsed = time.monotonic() - started

    if not args.json:
        _print_table(rows, args.sort, out, credentials)
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
    print(summary, file=err if args.json else out)
    if condition is not None:
        return EXIT_OK if match else EXIT_FAILED
    return EXIT_OK if counts["ok"] == len(rows) else EXIT_FAILED


def _probe(pool: ClientPool, hosts: List[str], path: str,
           condition: Optional[Callable[[Mapping[str, Any]], bool]], deadline: float,
           emit: Callable[[ProbeRow], None],
           advance: Callable[[], None]) -> Tuple[List[ProbeRow], int]:
    """GET ``path`` on every host through ``pool``; return the rows, in
    arrival order then the uncollected ones, and how many requests were
    still pending when the probe stopped (at a match or at ``deadline``
    seconds). ``emit`` and ``advance`` are called as each row comes."""
    sent: Dict[Greenlet, Tuple[str, float]] = {}
    # Filled by each greenlet's link as it finishes: its result's id ->
    # (greenlet, when). The result is the greenlet's value; through it the
    # row gets the host as given, which Response.request.host normalizes.
    done: Dict[int, Tuple[Greenlet, float]] = {}

    def on_done(greenlet: Greenlet) -> None:
        done[id(greenlet.value)] = greenlet, time.monotonic()

    for host in hosts:
        try:
            greenlet = pool.request(host, "GET", path)
        except ValueError as error:
            raise UsageError(str(error)) from None
        sent[greenlet] = host, time.monotonic()
        greenlet.rawlink(on_done)

    rows: List[ProbeRow] = []
    collected = set()
    matched = False
    for result in pool.wait_unordered(timeout=deadline):
        greenlet, when = done[id(result)]
        collected.add(greenlet)
        host, since = sent[greenlet]
        row = ProbeRow(host, result, when - since, _outcome(result))
        if condition is not None:
            body = result.body if isinstance(result, Response) else (
                result.response.body if result.response is not None else None)
            row.match = matched = condition({"status": result.status, "body": body,
                                             "host": host})
        rows.append(row)
        advance()
        emit(row)
        _LOG.debug("%s: %s in %.0f ms", host, row.status_label(), (when - since) * 1000)
        if matched:
            break
    # Requests not collected (a match came first, or the deadline passed)
    # are rows too; leaving the pool cancels them.
    left = pool.pending
    for greenlet, (host, _) in sent.items():
        if greenlet not in collected:
            row = ProbeRow(host, None, None, "cancelled" if matched else "timed out")
            rows.append(row)
            emit(row)
    return rows, left


def _probe_fleet(args: argparse.Namespace, hosts: List[str], path: str,
                 condition: Optional[Callable[[Mapping[str, Any]], bool]],
                 emit: Callable[[Any], None],
                 advance: Callable[[], None]) -> Tuple[List[Any], int]:
    """``--broker``: the same probe spread over the fleet's workers
    (:func:`napixclient.fleet.probe`); its rows print like :class:`ProbeRow`."""
    from napixclient import fleet

    if args.login or args.key or args.token:
        raise UsageError("--broker: the workers sign with NAPIX_LOGIN/NAPIX_KEY or "
                         "NAPIX_TOKEN from their own environment; --login, --key and "
                         "--token are not sent")
    rows = []
    with fleet.probe(hosts, path, broker=args.broker, first_where=condition,
                     timeout=args.timeout, simultaneous=args.simultaneous,
                     body=args.json) as probe:
        for row in probe:
            rows.append(row)
            if row.answered:
                advance()
            emit(row)
    return rows, probe.left


def _print_table(rows: List[ProbeRow], sort: str, out: TextIO,
                 credentials: Credentials) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if sort == "host":
        rows = sorted(rows, key=lambda row: row.host)
    table = Table(box=box.SIMPLE, pad_edge=False)
    table.add_column("host", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("latency ms", justify="right", no_wrap=True)
    table.add_column("body", overflow="ellipsis", no_wrap=True)
    for row in rows:
        latency = "-" if row.latency is None else f"{row.latency * 1000:.0f}"
        style = "bold green" if row.match else (
            None if row.outcome == "ok" else "red" if row.outcome == "failed" else "yellow")
        # Text, not str: rich would read "[...]" in a body as markup.
        table.add_row(Text(row.host), Text(row.status_label()), Text(latency),
                      Text(redact(row.summary(), credentials.secrets)), style=style)
    console = Console(file=out, width=None if out.isatty() else 120,
                      highlight=False)
    console.print(table)


class _progress:
    """A transient rich progress bar on ``stream`` when it is a terminal;
    otherwise nothing. Used as ``with _progress(total, stream) as advance:``."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self._total = total
        self._stream = stream
        self._progress: Any = None
        self._ticker: Any = None

    def __enter__(self) -> Callable[[], None]:
        if not self._stream.isatty():
            return lambda: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self._progress = Progress(
            "probing", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(file=self._stream), transient=True,
            # rich refreshes from a thread; without monkey-patching that
            # thread cannot run while the hub waits, so refresh by hand.
            auto_refresh=False,
        )
        self._progress.start()
        task = self._progress.add_task("probe", total=self._total)
        self._ticker = gevent.spawn(self._tick)

        def advance() -> None:
            self._progress.advance(task)
            self._progress.refresh()

        return advance

    def _tick(self) -> None:
        # Keeps the elapsed time moving while no result comes; killed on exit.
        while True:
            gevent.sleep(0.25)
            self._progress.refresh()

    def __exit__(self, *exc_info: Any) -> None:
        if self._progress is not None:
            self._ticker.kill()
            self._progress.stop()


# -- napix demo ------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace, credentials: Credentials,
              out: TextIO, err: TextIO) -> int:
    from napixclient.demo import run_demo

    return run_demo(out, verbose=args.verbose)


def _cmd_worker(args: argparse.Namespace, credentials: Credentials,
                out: TextIO, err: TextIO) -> int:
    from napixclient.fleet import run_worker

    return run_worker(args, err)


# -- the parser ------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``napix`` argument parser, with its three subcommands."""
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

    parser = argparse.ArgumentParser(
        prog="napix", description="Call Napix HTTP hosts: one request, a probe of many "
        "hosts at once, or a demo against local servers.",
        epilog="Exit codes: 0 success, 1 a request failed, 2 bad usage.")
    parser.add_argument("--version", action="version", version=f"napix {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    request = commands.add_parser(
        "request", parents=[common, auth], help="send one request and print the body",
        description="Send one request; print the decoded body (JSON pretty-printed). "
        "Exit 0 on 2xx/3xx; 1 on a failure, the error chain printed hop by hop on "
        "stderr; 2 on bad usage.")
    request.add_argument("host", metavar="HOST",
                         help="name, name:port or http(s)://name[:port][/prefix]")
    request.add_argument("method", metavar="METHOD", help="GET, POST, PUT, DELETE...")
    request.add_argument("path", metavar="PATH", help="e.g. /vm-ip/")
    request.add_argument("--data", metavar="JSON", help="a JSON request body")
    request.add_argument("--header", metavar="K:V", action="append",
                         help="an extra header; repeatable")
    request.add_argument("--timeout", metavar="S", type=_seconds, default=60.0,
                         help="seconds for the whole exchange (default: 60)")
    request.set_defaults(run=_cmd_request, parser=request)

    probe = commands.add_parser(
        "probe", parents=[common, auth], help="GET one path on many hosts at once",
        usage="napix probe [options] HOST... PATH\n       "
              "napix probe [options] --hosts-file F [HOST...] PATH",
        description="GET PATH on every host at once; print a table (or JSON lines) "
        "as results arrive. Exit 0 when every host answered with a status below "
        "400 (with --first-where: when a host matched), else 1; 2 on bad usage.")
    probe.add_argument("targets", metavar="HOST... PATH", nargs="+",
                       help="hosts to probe, then the path to GET")
    probe.add_argument("--hosts-file", metavar="F",
                       help="more hosts, one per line; # comments; '-' for stdin")
    probe.add_argument("--simultaneous", metavar="N", type=_positive_int, default=2,
                       help="most connections open to one host at once (default: 2)")
    probe.add_argument("--timeout", metavar="S", type=_seconds, default=10.0,
                       help="seconds for each request's whole exchange (default: 10)")
    probe.add_argument("--json", action="store_true",
                       help="one JSON object per line, as results arrive; the "
                            "summary goes to stderr")
    probe.add_argument("--first-where", metavar="EXPR",
                       help="stop at the first result for which EXPR is true, e.g. "
                            "\"status == 200 and body['free_slots'] > 0\" (names: "
                            "status, body, host); the rest is cancelled")
    probe.add_argument("--sort", choices=("arrival", "host"), default="arrival",
                       help="table order (default: arrival)")
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

    from napixclient.fleet import add_worker_arguments

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
        :data:`EXIT_USAGE` or 130 when interrupted.
    :raises SystemExit: from argparse, with code 2, for bad usage it detects
        itself (and 0 for ``--help``/``--version``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    sub: argparse.ArgumentParser = args.parser
    credentials = Credentials(None, "none")
    if args.command not in ("demo", "worker"):
        try:
            credentials = resolve_credentials(args.login, args.key, args.token, os.environ)
        except (UsageError, ValueError) as error:
            _usage_error(sub, str(error))
    _setup_logging(args.verbose, credentials.secrets)
    try:
        code: int = args.run(args, credentials, sys.stdout, sys.stderr)
        return code
    except UsageError as error:
        _usage_error(sub, redact(str(error), credentials.secrets))
    except KeyboardInterrupt:
        print("napix: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _usage_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    parser.error(message)  # prints the usage on stderr, exits with 2
