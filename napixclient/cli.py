"""The ``napix`` command: one request, a probe of many hosts, and a demo.

::

    napix request HOST METHOD PATH [--data JSON] [--header K:V ...]
                  [--login L --key K | --token T] [--timeout S]
    napix probe HOST... PATH [--hosts-file F] [--simultaneous N] [--timeout S]
                [--json] [--first-where EXPR] [--sort arrival|host]
    napix demo [-v]

Credentials come from ``--login``/``--key`` or ``--token``, else from the
environment (``NAPIX_LOGIN`` and ``NAPIX_KEY``, or ``NAPIX_TOKEN``). They are
never printed, not even with ``-v``: whatever the command prints or logs
goes through :mod:`napixclient.redact`, which replaces them with ``***``,
also where a server echoes them percent-encoded, and masks signatures in log
lines; urllib3's own debug log (which prints whole URLs, a token parameter
included) stays off.

Output: bodies, table rows and JSON lines on standard output, written as
they come; log records (one line each, never a traceback), error chains,
hints and the progress bar on standard error. On a terminal, a far side's
control characters are shown escaped, and what is printed while the
progress bar runs appears whole above it.

Exit codes follow the usual Unix convention: 0 success, 1 a request failed
(``request``) or not every host answered well (``probe``), 2 bad usage
(argparse's own convention), 130 interrupted (128 + SIGINT), 141 standard
output closed before the command was done writing (128 + SIGPIPE, as for
``napix probe ... | head -1``; nothing is printed, and a probe cancels what
it had pending).

The command runs its requests in the main greenlet and in a
:class:`~napixclient.ClientPool`: nothing is monkey-patched.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import ipaddress
import json
import logging
import math
import operator
import os
import re
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    Iterator,
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
from rich.cells import cell_len, chop_cells, set_cell_size
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.text import Text

from napixclient import __version__
from napixclient.authenticators import LoginAuthenticator, TokenIdentifier
from napixclient.client import Client, parse_host
from napixclient.exceptions import HTTPError, Timeout
from napixclient.pool import ClientPool, Result
from napixclient.redact import redact_secrets, redact_signatures
from napixclient.response import Response

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
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
    "host_argument",
    "host_sort_key",
    "raise_open_files_limit",
    "read_hosts_file",
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
#: Exit status when interrupted (Ctrl-C): 128 + SIGINT, as a shell reports it.
EXIT_INTERRUPTED = 130
#: Exit status when standard output was closed before the command was done
#: writing (``napix ... | head -1``): 128 + SIGPIPE, what a shell reports for
#: a command that a closed pipe ended, so scripts see what they see with
#: other tools. Nothing is printed.
EXIT_BROKEN_PIPE = 141

ENV_LOGIN = "NAPIX_LOGIN"
ENV_KEY = "NAPIX_KEY"
ENV_TOKEN = "NAPIX_TOKEN"

#: Said after a 401 when the command had no credentials to send.
NO_CREDENTIALS_HINT = (
    "napix: no credentials were sent: set NAPIX_LOGIN and NAPIX_KEY (or NAPIX_TOKEN) "
    "in the environment, or give --login and --key (or --token)")

#: The most characters of a body shown in a probe table's row.
SUMMARY_WIDTH = 60
#: Columns of a table written to a pipe or a file when ``COLUMNS`` is not set.
PIPE_WIDTH = 120
#: The longest ``--first-where`` expression accepted, in characters.
MAX_EXPRESSION = 1000

_LOG = logging.getLogger(__name__)


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


def _redact(text: str, secrets: Iterable[str]) -> str:
    """What the command prints: ``text`` with the credentials masked, in
    every encoding a server may echo them in (:func:`~napixclient.redact.redact_secrets`)."""
    return redact_secrets(text, secrets)


def _redact_bytes(data: bytes, secrets: Sequence[str]) -> bytes:
    """:func:`_redact` for a body written as bytes: read as Latin-1 (one
    character per byte, so any bytes go through unchanged), with each
    secret's UTF-8 bytes masked too."""
    as_bytes = [secret.encode("utf-8").decode("latin-1") for secret in secrets]
    return _redact(data.decode("latin-1"), [*secrets, *as_bytes]).encode("latin-1")


def _redact_log(text: str, secrets: Iterable[str]) -> str:
    """What the command logs: :func:`_redact`, and every signature too
    (:func:`~napixclient.redact.redact_signatures`)."""
    return redact_signatures(redact_secrets(text, secrets))


class _LogHandler(logging.Handler):
    """Writes each log record as one line, ``napix: LOGGER: MESSAGE``, with
    the credentials and signatures masked.

    An exception attached to a record is named on the same line (``(KeyError:
    'x')``), never printed as a traceback: a traceback is not for a user of
    the command, and the servers of ``napix demo`` log their failures with
    one on purpose.
    """

    def __init__(self, write: Callable[[str], None], secrets: Sequence[str]) -> None:
        super().__init__()
        self._write = write
        self._secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            message += f" ({type(error).__name__}: {error})"
        line = " ".join(f"napix: {record.name}: {message}".splitlines())
        return _printable(_redact_log(line, self._secrets))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._write(self.format(record))
        except Exception:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        """Drop a record that cannot be written (standard error closed, say):
        logging's default prints a traceback about it on standard error."""


_handler: Optional[logging.Handler] = None


def _setup_logging(verbosity: int, secrets: Sequence[str], write: Callable[[str], None]) -> None:
    """Log to stderr, one line per record with the secrets masked: warnings
    by default, the command's own steps with ``-v``, napixclient's debug
    lines with ``-vv``.

    urllib3 stays at WARNING whatever the verbosity: its debug lines print
    whole URLs, a token parameter included.
    """
    global _handler
    root = logging.getLogger()
    if _handler is not None:  # main() called again in the same process
        root.removeHandler(_handler)
    _handler = _LogHandler(write, secrets)
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
    :raises UsageError: naming where the JSON is malformed, or for
        ``NaN``, ``Infinity`` and ``-Infinity``, which Python's json module
        reads but JSON does not have (RFC 8259, section 6).
    """
    try:
        json.loads(text, parse_constant=_refuse_constant)
    except ValueError as error:
        raise UsageError(f"--data is not valid JSON: {error}") from None
    return text.encode("utf-8")


def _merge_headers(fields: Iterable[Tuple[str, str]]) -> Dict[str, str]:
    """``--header`` fields as one mapping: the values of fields repeated under
    one name (in any case) are joined with ``", "`` in the order given, which
    RFC 9110 (section 5.3) makes the same as sending them apart."""
    headers: Dict[str, str] = {}
    names: Dict[str, str] = {}  # lower-case name -> the name as first given
    for name, value in fields:
        first = names.setdefault(name.lower(), name)
        headers[first] = f"{headers[first]}, {value}" if first in headers else value
    return headers


def _refuse_constant(name: str) -> Any:
    """Python's json reads ``NaN``, ``Infinity`` and ``-Infinity``; JSON
    (RFC 8259, section 6) has no such numbers, and a server may refuse them."""
    raise ValueError(f"{name} is not a JSON number (RFC 8259 has no NaN or Infinity)")


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
            hosts.append(host_argument(entry))
        except ValueError as error:
            raise UsageError(f"{path}:{number}: {error}") from None
    return hosts


def host_argument(text: str) -> str:
    """Check a host given on the command line; return it as
    :class:`~napixclient.Client` takes it.

    A bare IPv6 address (``::1``, ``fe80::1``) is put in brackets (``[::1]``,
    the default port): in a URL, a colon after the address starts the port,
    so an IPv6 address with a port is written ``[::1]:8002``. An address
    whose last group could be read as a port (``::1:8002``) is refused as
    ambiguous rather than guessed.

    :param text: ``name``, ``name:port``, ``[v6]:port``, a bare IPv6
        address, or ``http(s)://name[:port][/prefix]``.
    :returns: the host (``str``), ``text`` itself unless it was a bare IPv6
        address.
    :raises UsageError: naming the problem, for a malformed host.
    """
    host = text.strip()
    if "://" not in host and not host.startswith("[") and host.count(":") >= 2:
        address, _, last = host.rpartition(":")
        if last.isdigit() and _is_ipv6(address):
            raise UsageError(f"host {text!r} is ambiguous: write [{address}]:{last} for port "
                             f"{last}, or [{host}] for that address")
        if not _is_ipv6(host):
            raise UsageError(f"host {text!r} is malformed: write an IPv6 address alone "
                             "(::1) or in brackets with a port ([::1]:8002)")
        host = f"[{host}]"
    try:
        parse_host(host)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return host


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def host_sort_key(host: str) -> Tuple[Any, ...]:
    """The order of ``--sort host``: names in natural order (``hv-2`` before
    ``hv-10``, ``127.0.0.9`` before ``127.0.0.10``), then ports as numbers
    (the scheme's default when none is given), then scheme and prefix.

    :param host: a host as :func:`host_argument` returns it.
    :returns: a key for :func:`sorted` (a ``tuple``).
    :raises ValueError: for a malformed host.
    """
    scheme, name, port, prefix = parse_host(host)
    default = 443 if scheme == "https" else 80
    return _natural(name.lower()), port or default, scheme, _natural(prefix)


def _natural(text: str) -> Tuple[Tuple[int, int, str], ...]:
    """``text`` as runs of digits (compared as numbers) and of the rest."""
    return tuple((0, int(run), "") if run.isdigit() else (1, 0, run)
                 for run in re.split(r"(\d+)", text) if run)


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


# What is refused, in words a user knows: the first class that matches.
_REFUSED: Tuple[Tuple[Any, str], ...] = (
    (ast.BinOp, "arithmetic is not allowed"),
    ((ast.UAdd, ast.Invert), "unary + and ~ are not allowed"),
    (ast.Call, "calling functions is not allowed"),
    (ast.Attribute, "attributes (x.y) are not allowed"),
    (ast.Slice, "slices (x[1:2]) are not allowed"),
    ((ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp),
     "comprehensions are not allowed"),
    (ast.Lambda, "lambda is not allowed"),
    (ast.IfExp, "conditional expressions (a if b else c) are not allowed"),
    ((ast.Dict, ast.Set), "dicts and sets are not allowed"),
    (ast.NamedExpr, "assignments (:=) are not allowed"),
    ((ast.JoinedStr, ast.FormattedValue), "f-strings are not allowed"),
    (ast.Starred, "unpacking (*x) is not allowed"),
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
    :raises ExpressionError: at once, for an empty expression, a syntax
        error, a disallowed construct (named in words: "arithmetic is not
        allowed") or name, or an expression longer than
        :data:`MAX_EXPRESSION` characters.
    """
    if len(text) > MAX_EXPRESSION:
        raise ExpressionError(f"--first-where: longer than {MAX_EXPRESSION} characters")
    if not text.strip():
        raise ExpressionError("--first-where needs an expression, such as "
                              "\"status == 200 and body['free_slots'] > 0\"")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise ExpressionError(f"--first-where {text!r}: {error.msg}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            what = next((words for kinds, words in _REFUSED if isinstance(node, kinds)),
                        "this construct is not allowed")
            raise ExpressionError(
                f"--first-where {text!r}: {what}; use comparisons (== != < <= > >= in is), "
                "and/or/not, subscripts (body['key']), constants and the names "
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


def _printable(text: str, keep: str = "") -> str:
    """``text`` with every character that is not printable (the ESC that
    starts a terminal's escape sequences, other control characters) written
    as its Python escape (``\\x1b``), except those in ``keep``: a far
    side's text must not drive the terminal."""
    return "".join(c if c.isprintable() or c in keep
                   else c.encode("unicode_escape").decode("ascii") for c in text)


def _body_text(body: Any) -> str:
    """The decoded body for people: JSON pretty-printed, text as is."""
    if body is None:
        return ""
    if isinstance(body, (dict, list)):
        return json.dumps(body, indent=2, ensure_ascii=False)
    if isinstance(body, bytes):
        return body.decode("utf-8", errors="replace")
    return str(body)


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
    text = _redact(text, secrets)
    # A far side's text must not drive the terminal (escape sequences).
    text = _printable(" ".join(text.split()))
    return text if len(text) <= width else text[: width - 3] + "..."


def _redact_value(value: Any, secrets: Sequence[str]) -> Any:
    """A decoded JSON value with the credentials masked in every string,
    keys included, before it is encoded again (where escaping could hide
    them from a search in the encoded text)."""
    if isinstance(value, str):
        return _redact(value, secrets)
    if isinstance(value, dict):
        return {_redact_value(k, secrets): _redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(item, secrets) for item in value]
    return value


def _status_label(result: Result) -> str:
    """``"200"`` for an answer; the class name where no status tells the story."""
    if isinstance(result, Response) or (type(result) is HTTPError and result.status):
        return str(result.status)
    return type(result).__name__


# -- where the output goes -------------------------------------------------


def _same_terminal(first: TextIO, second: TextIO) -> bool:
    """Whether two streams are one terminal (the same device), as standard
    output and standard error are in an interactive shell."""
    try:
        return (first.isatty() and second.isatty()
                and os.fstat(first.fileno()).st_rdev == os.fstat(second.fileno()).st_rdev)
    except (OSError, ValueError, AttributeError):
        return False


def _pipe_width() -> int:
    """Columns for a table written to a pipe or a file: ``COLUMNS`` when set,
    else :data:`PIPE_WIDTH`."""
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else PIPE_WIDTH


class _Output:
    """Where the command writes, and how.

    Bodies, table rows and JSON lines go to standard output; log records,
    errors, the progress bar and (with ``--json``) the summary go to
    standard error. Each stream has its rich Console. While the progress
    bar runs on a terminal, log records and (when standard output is that
    same terminal) rows are printed through the bar's console, which draws
    them whole above the bar (rich's live display), so nothing is written
    over.
    """

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err
        self.out_is_terminal = _isatty(out)
        self.err_console = Console(file=err, highlight=False, markup=False, emoji=False,
                                   soft_wrap=True)
        self.out_console = Console(file=out, highlight=False, markup=False, emoji=False,
                                   width=None if self.out_is_terminal else _pipe_width())
        self._rows_above_bar = _same_terminal(out, err)
        self._bar: Optional[Progress] = None

    @property
    def width(self) -> int:
        """Columns of standard output (``int``)."""
        return self.out_console.width

    def row(self, line: Text) -> None:
        """Write one line of output (a table row, a JSON line) on standard
        output, at once: rows appear as results arrive, in a pipe too."""
        if self._bar is not None and self._rows_above_bar:
            self.err_console.print(line)
        elif self.out_is_terminal:
            self.out_console.print(line, soft_wrap=True)
        else:
            self.out.write(line.plain + "\n")
            self.out.flush()

    def body(self, text: str) -> None:
        """Write a body (``str``) and a line end on standard output; on a
        terminal, with its control characters escaped (line ends and tabs
        kept), so that a far side's escape sequences do not drive it."""
        if self.out_is_terminal:
            text = _printable(text, keep="\n\t")
        print(text, file=self.out, flush=True)

    def body_bytes(self, data: bytes) -> None:
        """Write a body (``bytes``) on standard output as it came; on a
        terminal, read as UTF-8 and written as :meth:`body` writes text."""
        buffer = getattr(self.out, "buffer", None)
        if self.out_is_terminal or buffer is None:
            self.body(data.decode("utf-8", "backslashreplace"))
            return
        self.out.flush()
        buffer.write(data)
        buffer.flush()

    def message(self, text: str) -> None:
        """Write a message for people (an error chain, a hint) on standard
        error, its control characters escaped (line ends and tabs kept)."""
        print(_printable(text, keep="\n\t"), file=self.err, flush=True)

    def log(self, line: str) -> None:
        """Write one log line on standard error (above the bar, if it runs)."""
        self.err_console.print(Text(line))

    @contextlib.contextmanager
    def progress(self, total: int) -> Iterator[Callable[[], None]]:
        """A transient progress bar on standard error when it is a terminal
        (else nothing); yields ``advance()``, to call once per result."""
        if not _isatty(self.err):
            yield lambda: None
            return
        bar = Progress(
            "probing", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.err_console, transient=True,
            # rich refreshes from a thread; without monkey-patching that
            # thread cannot run while the hub waits, so refresh by hand.
            auto_refresh=False,
            # Rows go through self.row; standard output is not to be
            # redirected to the bar's stream (standard error).
            redirect_stdout=False,
        )
        task = bar.add_task("probe", total=total)

        def tick() -> None:
            # Keeps the elapsed time moving while no result comes.
            while True:
                gevent.sleep(0.25)
                bar.refresh()

        def advance() -> None:
            bar.advance(task)
            bar.refresh()

        ticker = gevent.spawn(tick)
        try:
            # Started inside the try: a Ctrl-C during start() still stops
            # the bar, or it would stay on screen and keep standard error.
            bar.start()
            self._bar = bar
            yield advance
        finally:
            ticker.kill()
            self._bar = None
            bar.stop()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (ValueError, AttributeError):  # closed, or not a file
        return False


# -- napix request ---------------------------------------------------------


def _cmd_request(args: argparse.Namespace, credentials: Credentials, output: _Output) -> int:
    headers = _merge_headers(parse_header(item) for item in args.header or ())
    body = None
    if args.data is not None:
        body = parse_data(args.data)
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"
    try:
        client = Client(host_argument(args.host), credentials.authenticator, simultaneous=1,
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
            output.message(_redact(error.format_chain(), credentials.secrets))
            if error.status == 401 and credentials.authenticator is None:
                output.message(NO_CREDENTIALS_HINT)
            return EXIT_FAILED
    _LOG.debug("%s %s in %.0f ms", response.status, response.reason,
               response.elapsed * 1000)
    if 300 <= response.status < 400 and "Location" in response.headers:
        output.message(f"{response.status} {response.reason}: Location: "
                       f"{_redact(response.headers['Location'], credentials.secrets)}")
    # decode_body leaves a body as bytes only when its media type is not
    # text: those go out as they came.
    if isinstance(response.body, bytes):
        output.body_bytes(_redact_bytes(response.body, credentials.secrets))
        return EXIT_OK
    text = _body_text(_redact_value(response.body, credentials.secrets))
    if text:
        output.body(_redact(text, credentials.secrets))
    return EXIT_OK


# -- napix probe -----------------------------------------------------------


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
            error, chain = type(result).__name__, _redact(str(result), self.secrets)
        else:
            error = "Cancelled" if self.outcome == "cancelled" else "Timeout"
        return {
            "host": self.host,
            "status": None if result is None else result.status,
            "error": error,
            "latency_ms": None if self.latency is None else round(self.latency * 1000, 1),
            "queued_ms": None if self.queued is None else round(self.queued * 1000, 1),
            "outcome": self.outcome,
            "body": _redact_value(body, self.secrets),
            "summary": self.summary(),
            "chain": chain,
            "match": self.match,
        }

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


def _cmd_probe(args: argparse.Namespace, credentials: Credentials, output: _Output) -> int:
    targets = list(args.targets)
    path = targets.pop()
    if not path.startswith("/"):
        raise UsageError(f"the PATH comes last and starts with '/', got {path!r}")
    hosts = [host_argument(host) for host in targets]
    if args.hosts_file:
        hosts += read_hosts_file(args.hosts_file)
    if not hosts:
        raise UsageError("no host to probe: give HOST... PATH or --hosts-file F PATH")
    condition = None if args.first_where is None else compile_condition(args.first_where)
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
    table = None if args.json else _Table(hosts, output.width)

    def emit(row: ProbeRow) -> None:
        if table is None:
            line = json.dumps(row.as_json(), ensure_ascii=False, default=str)
            output.row(Text(_redact(line, credentials.secrets)))
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
    with pool, output.progress(len(hosts)) as advance:
        rows, left = _probe(pool, hosts, path, condition, deadline, show, advance,
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
    if credentials.authenticator is None and any(
            row.result is not None and row.result.status == 401 for row in rows):
        output.message(NO_CREDENTIALS_HINT)
    if condition is not None:
        return EXIT_OK if match else EXIT_FAILED
    return EXIT_OK if counts["ok"] == len(rows) else EXIT_FAILED


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


def _probe(pool: ClientPool, hosts: List[str], path: str,
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


class _Table:
    """The probe's table, one row at a time, to fit ``width`` columns.

    The status and latency columns keep their width; the body column
    narrows first (its summary is cut with an ellipsis), down to
    :data:`_BODY_COLUMN_MIN`; past that the host column narrows and a host
    longer than it wraps onto the next lines, whole: the host is the last
    thing cut.
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



# -- napix demo ------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace, credentials: Credentials, output: _Output) -> int:
    from napixclient.demo import run_demo

    return run_demo(output.out, verbose=args.verbose)


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
        epilog="Exit codes: 0 success, 1 a request failed, 2 bad usage, 130 interrupted "
        "(Ctrl-C), 141 standard output closed before the end (napix ... | head -1).")
    parser.add_argument("--version", action="version", version=f"napix {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    request = commands.add_parser(
        "request", parents=[common, auth], help="send one request and print the body",
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
                       help="order of the rows (table or --json): arrival, as results "
                            "come (default), or host, all at the end, by name in "
                            "natural order then port as a number")
    probe.set_defaults(run=_cmd_probe, parser=probe)

    demo = commands.add_parser(
        "demo", parents=[common], help="run the library against local demo servers",
        description="Start Napix servers on 127.0.0.1 and show the three uses of "
        "napixclient end to end: orchestration, capacity probing, error chains.")
    demo.set_defaults(run=_cmd_demo, parser=demo)
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
    if args.command != "demo":
        try:
            credentials = resolve_credentials(args.login, args.key, args.token, os.environ)
        except (UsageError, ValueError) as error:
            _usage_error(sub, str(error))
    output = _Output(sys.stdout, sys.stderr)
    _setup_logging(args.verbose, credentials.secrets, output.log)
    if raised:
        _LOG.debug("%s", raised)
    try:
        code: int = args.run(args, credentials, output)
        # Flushed here, so that a closed pipe is noticed here rather than
        # at the interpreter's exit.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # Standard output's reader went away (napix ... | head -1): the
        # rest is not wanted. Leaving run() has cancelled what a probe had
        # pending; what Python would flush at exit goes nowhere (the
        # Python docs' "Note on SIGPIPE").
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except UsageError as error:
        _usage_error(sub, _redact(str(error), credentials.secrets))


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
