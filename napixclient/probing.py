"""Probing many hosts, as ``napix probe`` and the fleet's workers do: the
credentials a probe signs with, ``GET PATH`` on every host through one
:class:`~napixclient.ClientPool`, and a row per host.

The command (:mod:`napixclient.cli`) and the fleet (:mod:`napixclient.fleet`)
both stand on this module, which imports neither: a fleet worker probes its
shard exactly as a local ``napix probe`` does, and its rows read the same.

Whatever a row shows of the far side's answers has the credentials masked
(:mod:`napixclient.redact`): its body, its summary and its error chain. What
the row says itself (the host given, the status, the outcome, the names of
its fields) is never masked, so a short key cannot turn ``ok`` into ``o***``.
"""

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
    Sequence,
    Tuple,
)

import gevent
from gevent import Greenlet

from napixclient.authenticators import LoginAuthenticator, TokenIdentifier
from napixclient.exceptions import HTTPError, Timeout
from napixclient.pool import ClientPool, Result
from napixclient.redact import redact_secrets
from napixclient.response import Response

__all__ = [
    "ENV_KEY",
    "ENV_LOGIN",
    "ENV_TOKEN",
    "SUMMARY_WIDTH",
    "Credentials",
    "ProbeRow",
    "UsageError",
    "environment_credentials",
    "printable",
    "probe_hosts",
    "redact_value",
    "resolve_credentials",
    "summarize",
]

# The command's logger: ``napix probe -v`` shows a line per host.
_LOG = logging.getLogger("napixclient.cli")

#: The environment variable holding the login of the signed protocol.
ENV_LOGIN = "NAPIX_LOGIN"
#: The environment variable holding the key of the signed protocol.
ENV_KEY = "NAPIX_KEY"
#: The environment variable holding a token (the token protocol).
ENV_TOKEN = "NAPIX_TOKEN"


class UsageError(ValueError):
    """What the user gave is wrong: a malformed ``--data``, host, path,
    header, hosts file, expression or broker URL, or inconsistent
    credentials in the environment. The ``napix`` command exits with
    status 2 (:data:`napixclient.cli.EXIT_USAGE`), the message on one line;
    the library's own callers catch it as the :class:`ValueError` it is."""


@dataclass(frozen=True)
class Credentials:
    """What a probe authenticates with, and where it came from.

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
    """Choose the credentials from the command's flags, else from the
    environment (:func:`environment_credentials`).

    Flags win over the environment: ``--token`` means the token protocol;
    ``--login`` or ``--key`` means the signed protocol, the missing half
    taken from ``NAPIX_LOGIN``/``NAPIX_KEY``. Empty values count as absent.

    :param login: ``--login`` (``str``), or ``None``.
    :param key: ``--key`` (``str``), or ``None``.
    :param token: ``--token`` (``str``), or ``None``.
    :param environ: the environment (``os.environ``).
    :returns: :class:`Credentials`.
    :raises UsageError: for ``--token`` together with ``--login``/``--key``,
        or a login without a key (or the reverse). The message names the
        flags and variables, never their values.
    """
    login, key, token = login or None, key or None, token or None
    if token and (login or key):
        raise UsageError("use either --login/--key or --token, not both")
    if token:
        return Credentials(TokenIdentifier(token), "token from --token", (token,))
    if login or key:
        where = "--login/--key"
        login = login or environ.get(ENV_LOGIN) or None
        key = key or environ.get(ENV_KEY) or None
        if not login or not key:
            missing = "--login (or NAPIX_LOGIN)" if not login else "--key (or NAPIX_KEY)"
            raise UsageError(f"{where} given without {missing}")
        return Credentials(LoginAuthenticator(login, key), f"login and key from {where}",
                           (key,))
    credentials = environment_credentials(environ)
    if credentials.authenticator is None:
        return Credentials(None, "none (no --login/--key, --token or NAPIX_* variables)")
    return credentials


def environment_credentials(environ: Mapping[str, str]) -> Credentials:
    """The credentials of the environment alone, as a fleet worker signs:
    ``NAPIX_LOGIN`` and ``NAPIX_KEY`` (the signed protocol, PROTOCOL.md
    section 1) win over ``NAPIX_TOKEN`` (section 2). Empty values count as
    absent.

    :param environ: the environment (``os.environ``).
    :returns: :class:`Credentials`; without any, an authenticator of
        ``None`` and the source ``"none (no NAPIX_LOGIN and NAPIX_KEY, or
        NAPIX_TOKEN, in the environment)"``.
    :raises UsageError: when one of ``NAPIX_LOGIN`` and ``NAPIX_KEY`` is set
        without the other, naming the variables, never their values.
    """
    env_login = environ.get(ENV_LOGIN) or None
    env_key = environ.get(ENV_KEY) or None
    env_token = environ.get(ENV_TOKEN) or None
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
    return Credentials(None, f"none (no {ENV_LOGIN} and {ENV_KEY}, or {ENV_TOKEN}, "
                             "in the environment)")


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
    text = redact_secrets(text, secrets)
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
            error, chain = type(result).__name__, redact_secrets(str(result), self.secrets)
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


def probe_hosts(pool: ClientPool, hosts: Sequence[str], path: str,
                condition: Optional[Callable[[Mapping[str, Any]], bool]], deadline: float,
                emit: Callable[[ProbeRow], None], advance: Callable[[], None],
                secrets: Tuple[str, ...]) -> Tuple[List[ProbeRow], int]:
    """GET ``path`` on every host through ``pool``, each row handed to
    ``emit`` as it comes.

    :param pool: the :class:`~napixclient.ClientPool` to send through; the
        caller closes it (which cancels what is left).
    :param hosts: the hosts (``str`` each); one given twice is probed twice.
    :param path: the path to GET, starting with ``/``.
    :param condition: ``None``, or a predicate on ``{"status": ..., "body":
        ..., "host": ...}``: the probe stops at the first result for which
        it is true, that row marked ``match``.
    :param deadline: seconds (``float``) to wait for results, at most.
    :param emit: called with each :class:`ProbeRow` as it comes, then with
        the rows of the requests not collected.
    :param advance: called once per result collected (a progress bar's).
    :param secrets: the credentials' values (``str``), masked in the rows.
    :returns: ``(rows, left)``: one row per host given, in arrival order
        then the uncollected ones (``"cancelled"`` after a match, ``"timed
        out"`` past the deadline), and how many requests were still pending
        when the probe stopped (``int``).
    :raises UsageError: for a host or path the pool refuses.
    """
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


def printable(text: str, keep: str = "") -> str:
    """``text`` with every character that is not printable (the ESC that
    starts a terminal's escape sequences, other control characters) written
    as its Python escape (``\\x1b``), except those in ``keep``: a far
    side's text must not drive the terminal.

    :param text: the text to show (``str``).
    :param keep: characters left as they are, such as ``"\\n\\t"`` (``str``).
    :returns: ``str``; ``text`` itself when it is all printable.
    """
    if text.isprintable():  # the common case, at C speed
        return text
    return "".join(c if c.isprintable() or c in keep
                   else c.encode("unicode_escape").decode("ascii") for c in text)


def redact_value(value: Any, secrets: Sequence[str]) -> Any:
    """A decoded JSON value with the credentials masked in every string,
    keys included, before it is encoded again (where escaping could hide
    them from a search in the encoded text).

    :param value: a decoded JSON value (``dict``, ``list``, ``str``, a
        number, ``None``...).
    :param secrets: the secret values (``str``) to mask.
    :returns: a copy of ``value`` with every ``str`` in it masked
        (:func:`~napixclient.redact.redact_secrets`); other values as they
        are.
    """
    if isinstance(value, str):
        return redact_secrets(value, secrets)
    if isinstance(value, dict):
        return {redact_value(k, secrets): redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(item, secrets) for item in value]
    return value


