"""Trace events: what happens to requests and connections, named, for whoever listens.

A :class:`Tracer` belongs to a connection manager (gevent's or asyncio's:
both send the same events). It hands each event to the ``trace`` callable
the caller gave, to the DEBUG log of ``napixclient.connections``, and to
the listeners added with :func:`add_listener` (OpenTelemetry support,
:mod:`napixclient.otel`, is one). Nothing is built when nobody listens:
:meth:`Tracer.tracing` says whether anyone does.

``trace(event, info)`` receives ``info``, a ``dict`` with ``"time"``
(:func:`time.monotonic` seconds), ``"origin"`` (``"scheme://host:port"``),
``"request"`` (the secret-free :class:`~napixclient.RequestRecord`, or
``None`` for events of an idle connection) and ``"connection"`` (a number
naming the connection within the manager, when there is one), plus:

============================ =================================================
event                        further keys
============================ =================================================
``request.queued``           the request waits for a place under a cap
``connection.reused``        ``idle`` (seconds the connection was idle)
``connection.opened``        ``address`` (the peer: the proxy, when there is
                             one), ``seconds`` (to connect, through the
                             proxy's tunnel and TLS included), and ``proxy``
                             (``"scheme://host:port"``, no credentials) when
                             the connection goes through a proxy
``connection.tls``           ``version`` (e.g. ``"TLSv1.3"``)
``request.sent``             ``bytes``, ``attempt`` (0 for the first)
``response.headers``         ``status`` (``int``): the status line and the
                             fields were read
``response.done``            ``status``, ``bytes`` (of body), ``reusable``
``request.retry``            ``failure`` (its text) and ``error_class`` (the
                             :class:`~napixclient.HTTPError` subclass it
                             would have been) for a connection failure, or
                             ``status`` for a status retry; ``wait``
                             (seconds)
``request.failed``           ``failure`` (its text), ``error_class``
``request.done``             the request has its result: ``status`` (of the
                             answer, or ``None``), ``error_class`` (of the
                             :class:`~napixclient.HTTPError`, or ``None`` for
                             a :class:`~napixclient.Response`;
                             ``"Cancelled"`` for a request cancelled before
                             its result), ``seconds`` (since it started)
``connection.closed``        ``reason``: ``"expired"``, ``"evicted"`` (to make
                             room under ``max_connections``), ``"not
                             reusable"`` (the server closed it or asked to),
                             ``"failed"``, ``"dropped while idle"``,
                             ``"closed"`` (the manager was closed)
============================ =================================================

No event holds a key, token, signature or proxy credential: requests are
named by their record, proxies by ``scheme://host:port``. An exception
raised by a listener is logged and otherwise ignored.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

from napixclient.response import RequestRecord

__all__ = ["Instrumentation", "TraceHook", "Tracer", "add_listener", "instrumentation",
           "remove_listener", "set_instrumentation"]

#: ``trace(event, info)``: see the module's documentation.
TraceHook = Callable[[str, Dict[str, Any]], None]

#: The log the events are written to at DEBUG (its name predates this module).
LOG = logging.getLogger("napixclient.connections")

_listeners: List[TraceHook] = []


class Instrumentation(Protocol):
    """What an instrumentation (:mod:`napixclient.otel`) does besides
    listening to the events: hand the trace context over, in the header
    fields of each attempt (added before the request is signed, so that a
    signature covers them), and on the server side
    (:class:`~napixclient.wsgi.ExceptionsCatcher`,
    :class:`~napixclient.asgi.ExceptionsCatcher`)."""

    def attempt(self, client: Any, call: Any, attempt: int) -> Optional[Dict[str, str]]:
        """The fields to add to attempt number ``attempt`` (0 for the first)
        of ``call`` (a :class:`~napixclient.core.client.PreparedCall`) that
        ``client`` sends, or ``None``; fields the request has already are
        not replaced."""

    def serve(self, environ: Any) -> Any:
        """The scope of the server span of an incoming request (``with
        scope: ...``, then ``scope.end(status, error)``), or ``None``.

        :param environ: the WSGI environ of the request.
        """

    def serve_asgi(self, scope: Any) -> Any:
        """The same as :meth:`serve`, for an ASGI ``scope``."""

    def current_ids(self) -> Tuple[Optional[str], Optional[str]]:
        """The trace id and span id of the current span, or ``(None, None)``."""


_instrumentation: Optional[Instrumentation] = None
# Instrumentations loaded when the program has imported the library they
# instrument (a plugin's name, not a dependency: importing napixclient never
# imports OpenTelemetry), and whether each was looked for.
_AUTOLOAD = {"opentelemetry.trace": "napixclient.otel"}
_looked: Dict[str, bool] = {}


def set_instrumentation(hooks: Optional[Instrumentation]) -> None:
    """Make ``hooks`` the instrumentation of every client (``None``: none)."""
    global _instrumentation
    _instrumentation = hooks


def instrumentation() -> Optional[Instrumentation]:
    """The instrumentation of every client, or ``None``.

    Until one is set, this looks (one dictionary look-up) whether the
    program imported ``opentelemetry.trace``; the first time it has,
    :mod:`napixclient.otel` is loaded, which sets itself (a failure to load
    it is logged once, and nothing is instrumented)."""
    hooks = _instrumentation
    if hooks is None:
        for library, module in _AUTOLOAD.items():
            if library in sys.modules and not _looked.get(module):
                _looked[module] = True
                try:
                    importlib.import_module(module)
                except ImportError:
                    LOG.warning("%s is loaded but %s cannot be: no instrumentation",
                                library, module, exc_info=True)
                hooks = _instrumentation
    return hooks


def add_listener(listener: TraceHook) -> None:
    """Send every event of every tracer to ``listener`` too (once, however
    often it is added)."""
    if listener not in _listeners:
        _listeners.append(listener)


def remove_listener(listener: TraceHook) -> None:
    """Stop sending events to ``listener`` (nothing if it was not added)."""
    if listener in _listeners:
        _listeners.remove(listener)


class Tracer:
    """The events of one connection manager (see the module).

    :param hook: the caller's ``trace(event, info)``, or ``None``.
    :raises ValueError: when ``hook`` is neither callable nor ``None``.
    """

    __slots__ = ("hook",)

    def __init__(self, hook: Optional[TraceHook] = None) -> None:
        if hook is not None and not callable(hook):
            raise ValueError(f"trace must be a callable trace(event, info), got {hook!r}")
        self.hook = hook

    def tracing(self) -> bool:
        """Whether events are wanted now: a ``trace`` hook, a listener, or
        the log enabled for DEBUG."""
        return self.hook is not None or bool(_listeners) or LOG.isEnabledFor(logging.DEBUG)

    def emit(self, event: str, origin: Any, request: Optional[RequestRecord],
             connection: Optional[int] = None, **info: Any) -> None:
        """Send ``event`` to the hook, the listeners and the DEBUG log.

        :param origin: where the request goes (its ``str()`` is
            ``scheme://host:port``).
        :param request: the request's record, or ``None``.
        :param connection: the connection's number, or ``None``.
        :param info: the event's further keys.
        """
        info.update(time=time.monotonic(), origin=str(origin), request=request,
                    connection=connection)
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("%s", describe(event, info))
        for listener in (self.hook, *_listeners):
            if listener is None:
                continue
            try:
                listener(event, info)
            except Exception:
                LOG.warning("the trace hook failed on %s", event, exc_info=True)


def describe(event: str, info: Dict[str, Any]) -> str:
    """One log line for an event (no secret: requests are their records)."""
    request = info.get("request")
    what = f"{request.method} {request.path}" if request is not None else ""
    number = info.get("connection")
    conn = f"#{number} " if number is not None else ""
    origin = info["origin"]
    if event == "response.done":
        return (f'{origin} "{what} HTTP/1.1" {info["status"]} {info["bytes"]}'
                + ("" if info["reusable"] else " (connection closed)"))
    if event == "request.retry":
        if "status" in info:
            return f"Retrying {what} after a {info['status']} answer, in {info['wait']:g} s"
        return f"Retrying {what} on a new connection after: {info['failure']}"
    if event == "request.failed":
        return f"{what} on {origin} failed: {info['failure']}"
    if event == "request.done":
        outcome = info["error_class"] or info["status"]
        return f"{what} on {origin}: {outcome} in {info['seconds'] * 1000:.1f} ms"
    if event == "connection.closed":
        return f"Closed connection {conn}to {origin} ({info['reason']})"
    if event == "connection.opened":
        via = f" through the proxy {info['proxy']}" if "proxy" in info else ""
        return (f"Opened connection {conn}to {origin}{via} in "
                f"{info['seconds'] * 1000:.1f} ms for {what}")
    extras = ", ".join(f"{key}={value}" for key, value in info.items()
                       if key not in ("time", "origin", "request", "connection"))
    return f"{event} {conn}{origin} {what} {extras}".rstrip()
