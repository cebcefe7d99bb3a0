"""OpenTelemetry: a span and a measurement per HTTP request, and the trace
carried from server to server (the ``otel`` extra, ``opentelemetry-api``).

napixclient writes to its sockets itself, so no OpenTelemetry
instrumentation of another HTTP library sees its traffic; this module is
its own, written against the OpenTelemetry API only (never the SDK: the
program chooses and configures that). See :doc:`/tracing` for a guide.

When it is on
-------------
Nothing of OpenTelemetry is imported with napixclient. At each request
napixclient looks whether the program has imported ``opentelemetry.trace``
(one dictionary look-up): configuring an SDK, opening a span, running under
``opentelemetry-instrument`` or any OpenTelemetry instrumentation does.
From then on, the next request loads this module, and every request, and
every request :class:`~napixclient.wsgi.ExceptionsCatcher` serves, goes
through it. ``import napixclient.otel`` turns it on at once. A program that
never touches OpenTelemetry loads none of it, even where it is installed.

:func:`uninstrument` turns it off, :func:`instrument` on again (with
providers of your own if you like); ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``
holding ``napixclient`` (a comma-separated list, as
``opentelemetry-instrument`` reads it) keeps it off from the start.

What is recorded
----------------
Following the stable OpenTelemetry semantic conventions for HTTP
(https://opentelemetry.io/docs/specs/semconv/http/http-spans/ and
https://opentelemetry.io/docs/specs/semconv/http/http-metrics/, schema
:data:`SCHEMA_URL`):

* a ``CLIENT`` span per HTTP request sent, named after the method
  (``"GET"``; ``"HTTP"`` for a method the conventions do not know), with
  ``http.request.method``, ``url.full`` (from the
  :class:`~napixclient.RequestRecord`: a token added by the authenticator
  reads ``***``), ``server.address``, ``server.port``,
  ``network.protocol.version`` (``"1.1"``), ``http.response.status_code``
  when an answer came, and on failure ``error.type`` (the status as a
  string for 400 and more, else the class of the failure:
  ``"ConnectionError"``, ``"Timeout"``, ``"BodyTooLarge"``) with the span's
  status set to ``ERROR``. Its parent is the span current where the request
  was made: a :class:`~napixclient.ClientPool` carries the caller's context
  into each request's greenlet, which gevent starts with an empty one.
  A request the connection layer retries has a span per attempt (its
  ``request.retry`` event ends one), the later ones with
  ``http.request.resend_count``: siblings under the caller's span or, for a
  request made outside any span, children of the first attempt, so that a
  request is always one trace.
* the ``http.client.request.duration`` histogram (seconds, buckets
  :data:`DURATION_BUCKETS`), one measurement per attempt, with
  ``http.request.method``, ``server.address``, ``server.port``,
  ``network.protocol.version``, ``http.response.status_code`` and
  ``error.type``.
* the context of the span, written into the request's headers by the
  global propagator (by default W3C ``traceparent`` and ``tracestate``, and
  ``baggage``) before the authenticator signs, so that a signature covers
  the headers as sent. A header the caller set itself is left as it is.
  Each attempt is signed anew, so the far side sees each attempt's own
  ``traceparent``.
* on the server side, :class:`~napixclient.wsgi.ExceptionsCatcher`
  continues the trace a request brings (the global propagator reads its
  headers) in a ``SERVER`` span, unless a span is already current (an
  OpenTelemetry WSGI middleware around it), and writes the ``trace_id`` and
  ``span_id`` of the current span into the Napix error document, so that
  :attr:`HTTPError.chain <napixclient.HTTPError.chain>` points at each hop's
  trace.

No key, token, signature or proxy credential goes into an attribute: the
URL is the record's, headers are never recorded, and exceptions are not
recorded as span events (their texts are not ours to vouch for).

With the API but no SDK configured (no tracer nor meter provider given or
set), a request starts no span: it only passes on the trace it came in
with, if any. See :doc:`/tracing` for the measured cost.
"""

from __future__ import annotations

import contextvars
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, propagate, trace
    from opentelemetry.propagators.textmap import Getter
    from opentelemetry.trace import (
        SpanKind,
        Status,
        StatusCode,
        format_span_id,
        format_trace_id,
    )
except ImportError as missing:  # pragma: no cover - checked in a subprocess
    raise ImportError(
        "napixclient.otel needs the OpenTelemetry API: pip install 'napixclient[otel]' "
        f"({missing})") from missing

from napixclient import __version__
from napixclient.core import trace as core_trace
from napixclient.core.request import check_headers
from napixclient.redact import redact_secret_parameters

if TYPE_CHECKING:
    from napixclient.core.client import BaseClient, PreparedCall

__all__ = [
    "DISABLE_VARIABLE",
    "DURATION_BUCKETS",
    "INSTRUMENTATION_NAME",
    "KNOWN_METHODS",
    "SCHEMA_URL",
    "instrument",
    "is_instrumented",
    "uninstrument",
]

_log = logging.getLogger(__name__)

#: The name of napixclient's tracer and meter (the instrumentation scope).
INSTRUMENTATION_NAME = "napixclient"
#: The version of the semantic conventions followed.
SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"
#: The bucket boundaries (seconds) advised for ``http.client.request.duration``,
#: the conventions' own.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0,
                    2.5, 5.0, 7.5, 10.0)
#: The methods the conventions name (RFC 9110 and PATCH, RFC 5789); any
#: other is recorded as ``"_OTHER"``, with ``http.request.method_original``.
KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST",
                           "PUT", "TRACE"})
#: The environment variable whose comma-separated list, holding
#: ``napixclient``, keeps the instrumentation off (``opentelemetry-instrument``
#: reads the same).
DISABLE_VARIABLE = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"

_PROTOCOL_VERSION = "1.1"
# Seconds between two looks at whether a global provider was set.
_RECHECK = 1.0
# A proxy (nothing set yet) or no-op provider records nothing.
_IDLE_TRACER_PROVIDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
_IDLE_METER_PROVIDERS = ("_ProxyMeterProvider", "NoOpMeterProvider")


# -- client ---------------------------------------------------------------------


class _Request:
    """One request of a client while it runs: the span of its current
    attempt, and what the next attempt's span and each measurement need."""

    __slots__ = ("hooks", "span", "parent", "name", "attributes", "metric", "started",
                 "resends", "recording", "measuring", "status", "open")

    def __init__(self, hooks: "_Hooks", parent: Any, name: str,
                 attributes: Dict[str, Any], metric: Dict[str, Any],
                 recording: bool, measuring: bool) -> None:
        self.hooks = hooks
        self.span: Any = None
        self.parent = parent
        self.name = name
        self.attributes = attributes
        self.metric = metric
        self.started = 0.0
        self.resends = 0
        self.recording = recording
        self.measuring = measuring
        #: The status of the current attempt's answer, once read.
        self.status: Optional[int] = None
        self.open = False

    def start_attempt(self, span: Any) -> None:
        """``span`` is the current attempt's, from now on."""
        self.span = span
        self.started = time.perf_counter()
        self.status = None
        self.open = True

    def end_attempt(self, url: Optional[str], status: Optional[int],
                    error_type: Optional[str], description: Optional[str] = None) -> None:
        """End the current attempt's span and record its duration (once)."""
        if not self.open:
            return
        self.open = False
        seconds = time.perf_counter() - self.started
        span = self.span
        if self.recording:
            if url is not None:
                span.set_attribute("url.full", url)
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            if error_type is not None:
                span.set_attribute("error.type", error_type)
                span.set_status(Status(StatusCode.ERROR, description))
        span.end()
        if self.measuring:
            metric = self.metric
            if status is not None or error_type is not None:
                metric = dict(metric)
                if status is not None:
                    metric["http.response.status_code"] = status
                if error_type is not None:
                    metric["error.type"] = error_type
            self.hooks.duration.record(seconds, metric)

    def next_attempt(self) -> Any:
        """The span of the next attempt: a sibling of the first under the
        caller's span or, for a request made outside any span, a child of
        the first attempt, so that a request is always one trace."""
        if self.resends == 0 and not trace.get_current_span(
                self.parent).get_span_context().is_valid:
            self.parent = trace.set_span_in_context(self.span, self.parent)
        self.resends += 1
        attributes = dict(self.attributes)
        attributes["http.request.resend_count"] = self.resends
        return self.hooks.tracer.start_span(self.name, self.parent, SpanKind.CLIENT, attributes)


# The request the current greenlet or task runs (a greenlet of a pool runs in
# a copy of its caller's context; an asyncio task in its own).
_CURRENT: contextvars.ContextVar[Optional[_Request]] = contextvars.ContextVar(
    "napixclient.otel.request", default=None)


def _error_type(status: Optional[int], error_class: Optional[str]) -> Optional[str]:
    """``error.type``: the status as a string for 400 and more, else the
    class of the failure (``"ConnectionError"``...), else none."""
    if isinstance(status, int) and status >= 400:
        return str(status)
    return error_class


def _listen(event: str, info: Dict[str, Any]) -> None:
    """The trace events' listener: ends each attempt's span (at a retry, and
    when the request has its result) and notes the status it read."""
    if event not in ("response.done", "request.retry", "request.done"):
        return
    request = _CURRENT.get()
    if request is None:
        return
    try:
        if event == "response.done":
            request.status = info.get("status")
            return
        record = info.get("request")
        url = getattr(record, "url", None)
        status = info.get("status")
        if event == "request.retry":
            failure = info.get("failure")
            request.end_attempt(url, status if status is not None else request.status,
                                _error_type(status, info.get("error_class"))
                                or "ConnectionError",
                                failure if isinstance(failure, str) else None)
            return
        request.end_attempt(url, status, _error_type(status, info.get("error_class")))
        _CURRENT.set(None)
    except Exception:
        _log.warning("napixclient.otel failed on %s", event, exc_info=True)


def _with_headers(call: "PreparedCall", carrier: Dict[str, str]) -> Optional[Dict[str, str]]:
    """The propagator's headers that ``call`` does not set itself, checked;
    ``None`` when there is nothing to add."""
    present = {name.lower() for name in call.extra_headers}
    added = {name: value for name, value in carrier.items()
             if name.lower() not in present and name not in call.base_headers}
    if not added:
        return None
    try:
        check_headers(added)
    except ValueError:
        _log.warning("the OpenTelemetry propagator wrote headers that are not valid HTTP "
                     "fields; the trace context is not sent")
        return None
    return added


# -- server ---------------------------------------------------------------------


class _EnvironGetter(Getter[Mapping[str, Any]]):
    """Reads request headers from a WSGI environ for a propagator:
    ``traceparent`` is ``environ["HTTP_TRACEPARENT"]`` (PEP 3333)."""

    def get(self, carrier: Mapping[str, Any], key: str) -> Optional[List[str]]:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> List[str]:
        return [key[5:].lower().replace("_", "-") for key in carrier
                if isinstance(key, str) and key.startswith("HTTP_")]


_ENVIRON = _EnvironGetter()


def _wsgi_text(value: Any) -> str:
    """A WSGI string (bytes decoded as latin-1, PEP 3333) as the UTF-8 text
    clients send."""
    text = value if isinstance(value, str) else ""
    try:
        return text.encode("latin-1").decode("utf-8", "replace")
    except UnicodeError:
        return text


def _server_attributes(environ: Mapping[str, Any], method: str) -> Dict[str, Any]:
    """The ``SERVER`` span's attributes at its start, from a WSGI environ."""
    protocol = environ.get("SERVER_PROTOCOL")
    return _request_attributes(
        method,
        _wsgi_text(f"{environ.get('SCRIPT_NAME', '')}{environ.get('PATH_INFO', '')}"),
        str(environ.get("wsgi.url_scheme", "http")),
        protocol[5:] if isinstance(protocol, str) and protocol.startswith("HTTP/") else None,
        environ.get("HTTP_HOST"), environ.get("REMOTE_ADDR"), environ.get("HTTP_USER_AGENT"))


def _request_attributes(method: str, path: str, scheme: str, version: Any, host: Any,
                        client: Any, agent: Any) -> Dict[str, Any]:
    """The ``SERVER`` span's attributes at its start (WSGI or ASGI). Never
    the query string (it may carry a token) nor a header but ``Host`` and
    ``User-Agent``."""
    attributes: Dict[str, Any] = {
        "http.request.method": method if method in KNOWN_METHODS else "_OTHER",
        "url.path": path or "/",
        "url.scheme": scheme,
    }
    if method not in KNOWN_METHODS:
        attributes["http.request.method_original"] = method
    if isinstance(version, str) and version:
        attributes["network.protocol.version"] = version
    if isinstance(host, str) and host:
        name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        if not name or not port.isdigit():
            name, port = host, ""
        attributes["server.address"] = name.strip("[]")
        if port:
            attributes["server.port"] = int(port)
    if isinstance(client, str) and client:
        attributes["client.address"] = client
    if isinstance(agent, str) and agent:
        attributes["user_agent.original"] = agent
    return attributes


# -- server, ASGI ---------------------------------------------------------------


class _ScopeGetter(Getter[Mapping[str, Any]]):
    """Reads request headers from an ASGI HTTP scope for a propagator: its
    ``headers``, ``(name, value)`` byte pairs, names in lower case (ASGI
    HTTP connection scope)."""

    def get(self, carrier: Mapping[str, Any], key: str) -> Optional[List[str]]:
        name = key.lower().encode("latin-1")
        values = [value.decode("latin-1") for field, value in carrier.get("headers") or ()
                  if field.lower() == name]
        return values or None

    def keys(self, carrier: Mapping[str, Any]) -> List[str]:
        return [field.decode("latin-1").lower() for field, _ in carrier.get("headers") or ()]


_SCOPE = _ScopeGetter()


def _scope_attributes(scope: Mapping[str, Any], method: str) -> Dict[str, Any]:
    """The ``SERVER`` span's attributes at its start, from an ASGI scope
    (whose ``path`` is decoded already, its ``root_path`` included)."""
    client = scope.get("client")
    host, agent = (_SCOPE.get(scope, name) for name in ("host", "user-agent"))
    return _request_attributes(
        method, str(scope.get("path") or "/"), str(scope.get("scheme") or "http"),
        scope.get("http_version"), host[0] if host else None,
        client[0] if isinstance(client, (list, tuple)) and client else None,
        agent[0] if agent else None)


class _ServerScope:
    """The ``SERVER`` span of one request an ExceptionsCatcher serves, and
    the context to attach while the application runs (``with scope:``)."""

    __slots__ = ("span", "context", "token", "ended", "status", "error")

    def __init__(self, span: Any, context: Any) -> None:
        self.span = span
        self.context = context
        self.token: Any = None
        self.ended = False
        #: The answer's status (``int``) and what escaped the application,
        #: as the middleware learns them.
        self.status: Optional[int] = None
        self.error: Optional[BaseException] = None

    def __enter__(self) -> None:
        self.token = otel_context.attach(self.context)

    def __exit__(self, *exc_info: Any) -> None:
        otel_context.detach(self.token)

    def end(self, status: Optional[int], error: Optional[BaseException] = None) -> None:
        """End the span (once): ``status`` the answer's status, or ``None``
        when none went out; ``error`` what escaped the application."""
        if self.ended:
            return
        self.ended = True
        span = self.span
        if span.is_recording():
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            if status is not None and status >= 500:
                span.set_attribute("error.type", str(status))
                span.set_status(Status(StatusCode.ERROR, None if error is None
                                       else type(error).__name__))
            elif status is None and error is not None:
                span.set_attribute("error.type", type(error).__name__)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()


# -- the hooks ----------------------------------------------------------------------


class _Hooks:
    """What napixclient's client, pool and WSGI middleware call (through
    :mod:`napixclient.core.trace`); one instance, :data:`HOOKS`."""

    def __init__(self) -> None:
        self.enabled = False
        self.tracer: Any = None
        self.duration: Any = None
        self._tracing = False
        self._measuring = False
        self._checked = -_RECHECK
        self.configure(None, None)

    def configure(self, tracer_provider: Any, meter_provider: Any) -> None:
        """Take the tracer and meter of these providers (``None``: the
        global ones, as ``opentelemetry.trace.set_tracer_provider`` and
        ``opentelemetry.metrics.set_meter_provider`` set them, even later)."""
        self.tracer = trace.get_tracer(INSTRUMENTATION_NAME, __version__, tracer_provider,
                                       schema_url=SCHEMA_URL)
        meter = metrics.get_meter(INSTRUMENTATION_NAME, __version__, meter_provider,
                                  schema_url=SCHEMA_URL)
        self.duration = meter.create_histogram(
            "http.client.request.duration", unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS))
        self._tracing = tracer_provider is not None
        self._measuring = meter_provider is not None
        self._checked = -_RECHECK

    def _look(self) -> None:
        """Whether spans and measurements go anywhere: a provider was given,
        or a global one is set. A global provider is set once and for all
        (the API allows no other), but looking for it costs more than the
        rest of a request's no-op path: it is done at most once a second
        while there is none."""
        now = time.monotonic()
        if now - self._checked < _RECHECK:
            return
        self._checked = now
        if not self._tracing:
            self._tracing = not isinstance(trace.get_tracer_provider(), _IDLE_TRACER_PROVIDERS)
        if not self._measuring:
            provider = metrics.get_meter_provider()
            self._measuring = type(provider).__name__ not in _IDLE_METER_PROVIDERS

    # -- client --

    def attempt(self, client: "BaseClient", call: "PreparedCall",
                attempt: int) -> Optional[Dict[str, str]]:
        """Start the ``CLIENT`` span of an attempt (see the module); return
        the headers that carry its context (``None``: none to add).
        Called by the core before each attempt is signed."""
        carrier: Dict[str, str] = {}
        if attempt > 0:
            request = _CURRENT.get()
            if request is None:
                return None
            span = request.next_attempt()
            request.start_attempt(span)
            propagate.inject(carrier, trace.set_span_in_context(span, request.parent))
            return _with_headers(call, carrier)
        if not (self._tracing and self._measuring):
            self._look()
            if not (self._tracing or self._measuring):
                # No SDK: pass on the trace a request of ours came in with.
                if trace.get_current_span().get_span_context().is_valid:
                    propagate.inject(carrier)
                    return _with_headers(call, carrier)
                return None
        method = call.method
        known = method if method in KNOWN_METHODS else "_OTHER"
        name = method if known == method else "HTTP"
        origin = client.origin
        metric: Dict[str, Any] = {
            "http.request.method": known,
            "server.address": origin.host,
            "server.port": origin.port,
            "network.protocol.version": _PROTOCOL_VERSION,
        }
        attributes = dict(metric)
        attributes["url.full"] = redact_secret_parameters(call.url)
        if known != method:
            attributes["http.request.method_original"] = method
        parent = otel_context.get_current()
        span = self.tracer.start_span(name, parent, SpanKind.CLIENT, attributes)
        added = None
        if span.get_span_context().is_valid:
            propagate.inject(carrier, trace.set_span_in_context(span, parent))
            added = _with_headers(call, carrier)
        recording = span.is_recording()
        if not recording and not self._measuring:
            span.end()
            return added
        request = _Request(self, parent, name, attributes, metric, recording, self._measuring)
        request.start_attempt(span)
        _CURRENT.set(request)
        return added

    # -- server --

    def serve(self, environ: Mapping[str, Any]) -> Optional[_ServerScope]:
        """The ``SERVER`` span of a request (a WSGI environ), continuing the
        trace its headers bring; ``None`` when a span is current already (an
        OpenTelemetry middleware around ours) or there is neither a span to
        record nor a trace to continue."""
        if trace.get_current_span().get_span_context().is_valid:
            return None
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        return self._serve(propagate.extract(environ, getter=_ENVIRON), method,
                           _server_attributes(environ, method))

    def serve_asgi(self, scope: Mapping[str, Any]) -> Optional[_ServerScope]:
        """:meth:`serve` for an ASGI HTTP scope: its ``headers`` bring the
        trace to continue."""
        if trace.get_current_span().get_span_context().is_valid:
            return None
        method = str(scope.get("method") or "GET").upper()
        return self._serve(propagate.extract(scope, getter=_SCOPE), method,
                           _scope_attributes(scope, method))

    def _serve(self, parent: Any, method: str,
               attributes: Dict[str, Any]) -> Optional[_ServerScope]:
        span = self.tracer.start_span(method if method in KNOWN_METHODS else "HTTP", parent,
                                      SpanKind.SERVER, attributes)
        if not span.is_recording() and not span.get_span_context().is_valid:
            return None
        return _ServerScope(span, trace.set_span_in_context(span, parent))

    @staticmethod
    def current_ids() -> Tuple[Optional[str], Optional[str]]:
        """The trace id (32 hex digits) and span id (16) of the current span,
        or ``(None, None)`` when there is none."""
        span_context = trace.get_current_span().get_span_context()
        if not span_context.is_valid:
            return None, None
        return format_trace_id(span_context.trace_id), format_span_id(span_context.span_id)


def _disabled_by_environment() -> bool:
    names = os.environ.get(DISABLE_VARIABLE, "")
    return INSTRUMENTATION_NAME in {name.strip() for name in names.split(",")}


#: napixclient's own modules call these; not a public interface.
HOOKS = _Hooks()
HOOKS.enabled = False


def _enable(on: bool) -> None:
    """Hook into the core (:mod:`napixclient.core.trace`), or unhook."""
    HOOKS.enabled = on
    if on:
        core_trace.set_instrumentation(HOOKS)
        core_trace.add_listener(_listen)
    else:
        core_trace.set_instrumentation(None)
        core_trace.remove_listener(_listen)


_enable(not _disabled_by_environment())


def instrument(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Turn the instrumentation on (it is on already once this module is
    loaded, unless :data:`DISABLE_VARIABLE` says otherwise), with these
    providers.

    :param tracer_provider: an ``opentelemetry.trace.TracerProvider``, or
        ``None`` for the global one (set with
        ``opentelemetry.trace.set_tracer_provider``, before or after).
    :param meter_provider: an ``opentelemetry.metrics.MeterProvider``, or
        ``None`` for the global one.

    A global provider set after napixclient's first request is used from
    the next second on: while there is none, napixclient looks for one at
    most once a second (the look costs more than the no-op path itself).
    """
    HOOKS.configure(tracer_provider, meter_provider)
    _enable(True)


def uninstrument() -> None:
    """Turn the instrumentation off: napixclient records no span nor
    measurement, sends no trace context and writes no ``trace_id``, until
    :func:`instrument` is called."""
    _enable(False)


def is_instrumented() -> bool:
    """Whether the instrumentation is on (``bool``)."""
    return HOOKS.enabled
