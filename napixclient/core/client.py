"""What a client does besides waiting: options, requests built and signed,
answers read into results, and the decisions between attempts.

:class:`BaseClient` holds what :class:`napixclient.Client` (gevent) and
:class:`napixclient.aio.AsyncClient` (asyncio) share, as httpx's
``BaseClient`` serves its two clients: the options checked at once, each
request checked and built (:meth:`BaseClient.prepare`), signed anew at every
attempt, and an answer turned into a :class:`~napixclient.Response` or an
:class:`~napixclient.HTTPError`. :class:`Attempts` is one request from its
first attempt to its result: after each attempt it says whether to send the
request again and after how long (one :class:`~napixclient.core.retry.RetryPolicy`
for connection failures and statuses), and emits the ``request.retry`` and
``request.failed`` events. The drivers only move the bytes, wait and
schedule::

    attempts = client.attempts(call, tracer, origin)
    while True:
        method, data, record = attempts.next()
        try:
            answer = <send data, read the answer>
        except Failure as failure:
            wait = attempts.failed(failure)
        else:
            wait = attempts.answered(answer)
        if wait is None:
            return attempts.result()       # the Response, or raises the HTTPError
        <sleep wait seconds>
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Mapping
from typing import Any, Dict, FrozenSet, List, Optional, Tuple, Union
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from requests.structures import CaseInsensitiveDict

from napixclient import __version__
from napixclient.core.authenticators import (
    Authenticator,
    NativeAuthenticator,
    SignedRequest,
    coerce_authenticator,
)
from napixclient.core.codings import accept_encoding, decode_content
from napixclient.core.hosts import check_path, host_header, parse_host
from napixclient.core.origin import Origin
from napixclient.core.parser import Answer, check_parser
from napixclient.core.proxies import check_proxies, choose_proxy
from napixclient.core.request import (
    check_fields,
    check_framing,
    check_headers,
    check_method,
    encode_body,
    field_block,
    merge_fields,
    quote_target,
    request_bytes,
)
from napixclient.core.retry import IDEMPOTENT_METHODS, RetryPolicy
from napixclient.core.tls import check_cert, check_verify
from napixclient.core.trace import Tracer, instrumentation
from napixclient.exceptions import HTTPError, Timeout
from napixclient.failures import ConnectionBroken, Failure, ProxyFailed, status_text
from napixclient.redact import MASK, register_secret_parameters
from napixclient.response import RequestRecord, Response

__all__ = ["DEFAULT_MAX_BODY_SIZE", "Attempts", "BaseClient", "ClientOptions", "PreparedCall",
           "TimeoutSpec", "check_timeout"]

#: What a timeout may be: seconds (``float``) or a ``(connect, read)`` pair.
TimeoutSpec = Union[float, Tuple[float, float]]

#: The default ``max_body_size``: 64 MiB.
DEFAULT_MAX_BODY_SIZE = 64 * 1024 * 1024

#: The parser a client uses when ``parser`` is not given: a name, or
#: ``None`` for :func:`napixclient.core.parser.default_parser` (llhttp
#: wherever httptools loads, else h11). The test suite sets it to run every
#: client on one parser.
DEFAULT_PARSER: Optional[str] = None

# A request target an authenticator may return: visible ASCII, no space.
_VALID_TARGET = re.compile(r"[!-~]+")


def check_timeout(timeout: Any) -> TimeoutSpec:
    """Check a ``timeout`` argument at once.

    :param timeout: seconds (``float`` > 0) or a ``(connect, read)`` pair of them.
    :returns: the timeout, as floats.
    :raises ValueError: for anything else.
    """
    def positive(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0

    if positive(timeout):
        return float(timeout)
    if (isinstance(timeout, tuple) and len(timeout) == 2
            and all(positive(v) for v in timeout)):
        return float(timeout[0]), float(timeout[1])
    raise ValueError(f"timeout must be seconds > 0 or a (connect, read) pair of them, "
                     f"got {timeout!r}")


def socket_timeouts(timeout: TimeoutSpec) -> Tuple[Tuple[float, float], float]:
    """The ``(connect, read)`` timeouts of each wait, and the deadline of
    the whole exchange (seconds): the float for both and for the whole, or
    ``connect + read`` for a pair."""
    if isinstance(timeout, tuple):
        return timeout, timeout[0] + timeout[1]
    return (timeout, timeout), timeout


class PreparedCall:
    """A request validated and built, ready to be signed and sent.

    Made by :meth:`BaseClient.prepare`. It holds no secret: the
    authenticator runs at each attempt, so a signature's timestamp is fresh
    and a nonce never sent twice.

    :ivar method: the HTTP method, upper case.
    :ivar url: the absolute URL, percent-encoded.
    :ivar target: the request target of ``url`` (path and ``?query``).
    :ivar extra_headers: the headers of this request only (``dict``), on top
        of the client's.
    :ivar body: the encoded body (``bytes``) or ``None``.
    :ivar timeout: seconds, or a ``(connect, read)`` pair.
    :ivar record: the :class:`~napixclient.RequestRecord` of the request
        before it is signed (made once, here).
    """

    __slots__ = ("method", "url", "target", "base_headers", "extra_headers", "body",
                 "timeout", "record")

    def __init__(self, method: str, url: str, target: str,
                 base_headers: CaseInsensitiveDict[str], extra_headers: Dict[str, str],
                 body: Optional[bytes], timeout: TimeoutSpec) -> None:
        self.method = method
        self.url = url
        self.target = target
        # The client's headers, shared by its calls: never changed here.
        self.base_headers = base_headers
        self.extra_headers = extra_headers
        self.body = body
        self.timeout = timeout
        # RequestRecord(...) without the frame of the __new__ NamedTuple writes.
        self.record = tuple.__new__(RequestRecord, (method, url.split("/", 3)[2], url, target))

    @property
    def headers(self) -> CaseInsensitiveDict[str]:
        """The request headers (``Host`` included): a new case-insensitive
        mapping, the client's headers updated with this request's."""
        headers = self.base_headers.copy()
        headers.update(self.extra_headers)
        return headers

    def __repr__(self) -> str:
        return f"<PreparedCall {self.method} {self.url}>"


# Names of fields that native authenticators set and that were found valid
# (RFC 9110 tokens), with their lower case: not checked again. Bounded.
_VALID_NAMES: Dict[str, str] = {}


def _added_fields(headers: Mapping[str, Any]) -> List[Tuple[str, str, str]]:
    """The fields a native authenticator adds, checked as
    :func:`~napixclient.core.request.check_fields` checks them, as ``(name,
    value, name in lower case)``: an ASCII ``str`` value is looked at for CR,
    LF and NUL with ``in`` (a seventh of what the regular expression costs on
    a signature's 180 characters), and a name found valid once is not checked
    again; anything else goes through ``check_fields``, which raises its
    :class:`ValueError`."""
    fields = []
    for name, value in headers.items():
        lower = _VALID_NAMES.get(name)
        if (lower is not None and type(value) is str and value.isascii()
                and "\r" not in value and "\n" not in value and "\x00" not in value):
            fields.append((name, value, lower))
            continue
        for checked, text in check_fields({name: value}):
            fields.append((checked, text, checked.lower()))
        if len(_VALID_NAMES) < 256:
            _VALID_NAMES[name] = name.lower()
    return fields


def _framing_names(names: Any) -> bool:
    return any(name.lower() in ("content-length", "transfer-encoding") for name in names)


class ClientOptions:
    """The options of a client that do not depend on its host, checked at
    once: a :class:`~napixclient.ClientPool` checks them once and shares them
    with the client of each host. :class:`napixclient.Client` documents
    each argument.

    :raises ValueError: naming the argument, for any bad option.
    :raises FileNotFoundError: if ``verify`` or ``cert`` names a missing file.
    """

    __slots__ = ("authenticator", "native", "simultaneous", "timeout", "timeouts",
                 "max_body_size", "retry", "retries", "retry_backoff", "headers", "parser",
                 "proxies", "trust_env", "verify", "cert")

    def __init__(
        self,
        authenticator: Any = None,
        simultaneous: int = 2,
        timeout: TimeoutSpec = 60.0,
        verify: Any = True,
        *,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        headers: Optional[Mapping[str, str]] = None,
        retries: Any = 0,
        retry_backoff: float = 0.0,
        parser: Optional[str] = None,
        transport: Optional[str] = None,
        proxies: Optional[Mapping[str, Optional[str]]] = None,
        trust_env: bool = True,
        cert: Any = None,
    ) -> None:
        if transport is not None:
            warnings.warn("Client(transport=...) is now Client(parser=...)",
                          DeprecationWarning, stacklevel=4)
            if parser is None:
                parser = transport
        self.authenticator: Optional[Authenticator] = (
            None if authenticator is None else coerce_authenticator(authenticator))
        # The native path serves an authenticator that signs with
        # sign_request and whose __call__ is NativeAuthenticator's own: a
        # subclass with a __call__ of its own is called as requests would.
        self.native = (isinstance(self.authenticator, NativeAuthenticator)
                       and type(self.authenticator).__call__ is NativeAuthenticator.__call__)
        if (not isinstance(simultaneous, int) or isinstance(simultaneous, bool)
                or simultaneous < 1):
            raise ValueError(f"simultaneous must be an int >= 1, got {simultaneous!r}")
        self.simultaneous = simultaneous
        self.timeout = check_timeout(timeout)
        self.timeouts = socket_timeouts(self.timeout)
        if (not isinstance(max_body_size, int) or isinstance(max_body_size, bool)
                or max_body_size < 1):
            raise ValueError(f"max_body_size must be a number of bytes >= 1, "
                             f"got {max_body_size!r}")
        self.max_body_size = max_body_size
        # One immutable policy serves every request (each step returns a new one).
        self.retry = RetryPolicy.from_option(retries, retry_backoff)
        self.retries = retries
        self.retry_backoff = self.retry.backoff_factor
        register_secret_parameters(getattr(self.authenticator, "secret_parameters", ()))
        self.headers = check_headers(headers)
        if _framing_names(self.headers):
            raise ValueError("headers: Content-Length and Transfer-Encoding are written by "
                             "napixclient for each request's body; leave them out")
        self.parser = check_parser(DEFAULT_PARSER if parser is None else parser)
        if not isinstance(trust_env, bool):
            raise ValueError(f"trust_env must be True or False, got {trust_env!r}")
        self.proxies = check_proxies(proxies)
        self.trust_env = trust_env
        self.verify = check_verify(verify)
        self.cert = check_cert(cert)


class BaseClient:
    """The I/O-free work of a client for one host (see the module).

    :param host: as :func:`~napixclient.core.hosts.parse_host` takes it, or
        what it returned.
    :param options: the :class:`ClientOptions`.
    :raises ValueError: for a malformed host, or a malformed proxy URL in
        the environment.
    """

    def __init__(self, host: Union[str, Tuple[str, str, Optional[int], str]],
                 options: ClientOptions) -> None:
        scheme, name, port, prefix = parse_host(host) if isinstance(host, str) else host
        self.options = options
        self.authenticator = options.authenticator
        self._native = options.native
        self.simultaneous = options.simultaneous
        self.timeout = options.timeout
        self._timeouts = options.timeouts
        self.max_body_size = options.max_body_size
        self._retry = options.retry
        self.retries = options.retries
        self.retry_backoff = options.retry_backoff
        self.parser = options.parser
        self.scheme = scheme
        #: ``name`` or ``name:port``, as the ``Host`` header says it.
        self.host = host_header(scheme, name, port)
        #: ``scheme://host[/prefix]``, with no trailing ``/``.
        self.base_url = f"{scheme}://{self.host}{prefix}"
        self._prefix = prefix
        # One field per name: the client's headers replace the defaults
        # whatever the case of their names (a request's replace both).
        self._headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(merge_fields({
            "Host": self.host,
            "User-Agent": f"napixclient/{__version__}",
            "Accept": "application/json",
            # What decode_content can undo: gzip, deflate (br, zstd).
            "Accept-Encoding": accept_encoding(),
        }, options.headers))
        # Prepared once per host: the fields every request sends, the
        # percent-encoded prefix.
        self._fields = field_block(self._headers)
        # The Host field those headers send (a caller's may replace ours).
        self._sent_host: str = self._headers.get("Host", self.host)
        self._header_names: FrozenSet[str] = frozenset(name.lower() for name in self._headers)
        self._quoted_prefix = quote_target(prefix)
        # The route is chosen once, here: the proxy (or none) is part of the
        # origin, so connections through it are never mixed with direct ones.
        proxy = choose_proxy(f"{scheme}://{self.host}/", options.proxies, options.trust_env)
        #: The proxy requests go through, ``"scheme://host:port"`` (never
        #: its credentials), or ``None`` for a direct connection.
        self.proxy: Optional[str] = None if proxy is None else str(proxy)
        self.origin = Origin(scheme, name,
                             port if port is not None else (443 if scheme == "https" else 80),
                             options.verify, options.cert, proxy)
        # The proxy an answer comes through, which errors name (a forwarding
        # proxy may answer for a dead origin); through a CONNECT tunnel the
        # answer is the origin's own.
        self._via: Optional[str] = self.proxy if self.origin.forwarded else None
        self._closed = False

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<{type(self).__name__} {self.base_url} simultaneous={self.simultaneous}{state}>"

    #: The driver's connection manager class (set by each driver's client).
    manager_class: Any = None

    def _attach(self, host: Tuple[str, str, Optional[int], str], options: "ClientOptions",
                connections: Any = None, max_connections: Any = None,
                keepalive_expiry: Any = None, trace: Any = None) -> None:
        """Set the client up for ``host`` with ``options``: on ``connections``
        (a pool's manager, shared) or on a manager of its own made with
        ``max_connections``, ``keepalive_expiry`` and ``trace``; the TLS
        contexts it needs built, and so checked, now.

        :raises ValueError: for ``connections`` of another class, or given
            with the options of a manager of its own.
        """
        cls = self.manager_class
        if connections is None:
            self._manager = cls(max_connections, cls.DEFAULT_KEEPALIVE_EXPIRY
                                if keepalive_expiry is None else keepalive_expiry, trace)
            self._owns_manager = True
        elif not isinstance(connections, cls):
            raise ValueError(f"connections must be a {cls.__name__}, got {connections!r}")
        elif (max_connections is not None or trace is not None
              or keepalive_expiry not in (None, cls.DEFAULT_KEEPALIVE_EXPIRY)):
            raise ValueError("max_connections, keepalive_expiry and trace belong to the "
                             f"shared {cls.__name__} given as connections=")
        else:
            self._manager = connections
            self._owns_manager = False
        BaseClient.__init__(self, host, options)
        for verify, cert in self._tls_contexts_needed():
            self._manager.contexts.get(verify, cert)

    @classmethod
    def for_pool(cls, host: Tuple[str, str, Optional[int], str], options: "ClientOptions",
                 connections: Any) -> Any:
        """The client of one host of a pool: ``host`` as
        :func:`~napixclient.core.hosts.parse_host` returned it, the pool's
        checked options and its connection manager (nothing checked again).

        :raises ValueError: for a malformed proxy URL in the environment.
        """
        client = cls.__new__(cls)
        client._attach(host, options, connections)
        return client

    def _tls_contexts_needed(self) -> List[Tuple[Any, Any]]:
        """The ``(verify, cert)`` configurations this client's connections
        need, built (and so checked) when the client is made: one for an
        https origin, or a client certificate (checked even for http, where
        it is not used), and one for an https proxy."""
        origin = self.origin
        needed = []
        if origin.scheme == "https" or origin.cert is not None:
            needed.append((origin.verify, origin.cert))
        if origin.proxy is not None and origin.proxy.scheme == "https":
            needed.append((origin.verify, None))
        return needed

    # -- building -------------------------------------------------------------

    def prepare(
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        *,
        timeout: Optional[TimeoutSpec] = None,
        params: Any = None,
    ) -> PreparedCall:
        """Validate and build a request without sending it.

        The arguments are those of :meth:`napixclient.Client.request`. An
        empty query (``/items/?``) is dropped, as requests drops it: a Napix
        server checks the signed path against the path and query it got.

        :returns: a :class:`PreparedCall`.
        :raises ValueError: naming the argument, for a method that is not an
            HTTP token, a URL that is not a path starting with ``/`` (see
            :func:`~napixclient.core.hosts.check_path`), a URL holding CR,
            LF, NUL or a ``#`` fragment (see
            :func:`~napixclient.core.request.quote_target`), a body of another
            type or that is not JSON, bad headers (a character outside
            Latin-1, a ``Content-Length`` that does not match the body, a
            ``Transfer-Encoding``) or a bad timeout.
        :raises RuntimeError: if the client is closed.
        """
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        method = check_method(method)
        path = check_path(url)
        try:
            target = self._quoted_prefix + quote_target(path)
        except ValueError as error:
            raise ValueError(f"url {url!r}: {error}") from None
        if target.endswith("?"):
            target = target[:-1]
        if params:
            pairs = params.items() if isinstance(params, Mapping) else params
            query = urlencode(list(pairs), doseq=True)
            if query:
                target += ("&" if "?" in target else "?") + query
        payload, content_type = encode_body(body)
        extra = check_headers(headers) if headers else {}
        if extra and _framing_names(extra):
            extra = check_framing(extra, payload)
        if (content_type and "content-type" not in self._header_names
                and not any(name.lower() == "content-type" for name in extra)):
            extra["Content-Type"] = content_type
        return PreparedCall(method, f"{self.scheme}://{self.host}{target}", target,
                            self._headers, extra, payload,
                            self.timeout if timeout is None else check_timeout(timeout))

    # -- signing ----------------------------------------------------------------

    def build(self, call: PreparedCall,
              added: Optional[Mapping[str, str]] = None) -> Tuple[str, bytes, RequestRecord]:
        """The method, the bytes to send and the record of ``call``, signed
        now (each attempt calls it again: a fresh nonce and timestamp).

        :param added: header fields to add before signing (the trace
            context), not replacing the request's own.
        :raises ValueError: when the authenticator set a header or a target
            that is not valid HTTP, or framing fields that disagree with the
            body.
        """
        if added:
            present = {name.lower() for name in call.extra_headers}
            fresh = {name: value for name, value in added.items()
                     if name.lower() not in present and name not in call.base_headers}
            if fresh:
                call = _with_extra(call, fresh)
        if self.authenticator is None:
            fields = self._fields
            if call.extra_headers:
                # One field per name: this request's replace the client's.
                fields = field_block(merge_fields(call.base_headers, call.extra_headers))
            return call.method, request_bytes(call.method, call.target, fields,
                                              call.body), call.record
        if self._native:
            return self._build_signed(call)
        return self._build_called(call)

    def _build_called(self, call: PreparedCall) -> Tuple[str, bytes, RequestRecord]:
        """:meth:`build` for a requests-style authenticator: it is called on a
        :class:`requests.PreparedRequest` of ``call`` (its public contract)."""
        assert self.authenticator is not None
        prepared = requests.PreparedRequest()
        prepared.method = call.method
        prepared.url = call.url
        prepared.headers = call.headers
        prepared.body = call.body
        result = self.authenticator(prepared)
        if result is not None:
            prepared = result
        record, target = self._record(call, str(prepared.url))
        method = check_method(prepared.method)
        body = prepared.body
        if isinstance(body, str):
            body = body.encode("utf-8")
        if body is not None and not isinstance(body, bytes):
            raise ValueError("the authenticator left a body that is not bytes")
        fields = check_framing(dict(check_fields(prepared.headers)), body,
                               "the authenticator's headers")
        return method, request_bytes(method, target, field_block(fields), body), record

    def _record(self, call: PreparedCall, sent_url: str) -> Tuple[RequestRecord, str]:
        """The secret-free record of what a requests-style authenticator
        sent, and the request target to send: query parameters the
        authenticator added (or named as secret) read ``***`` in the record."""
        if sent_url == call.url:
            return call.record, call.target
        before = {name for name, _ in parse_qsl(call.target.partition("?")[2],
                                                keep_blank_values=True)}
        secret = set(getattr(self.authenticator, "secret_parameters", ()))
        parts = urlsplit(sent_url)
        sent_target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        if not _VALID_TARGET.fullmatch(sent_target):
            raise ValueError("the authenticator returned a URL whose request target is not "
                             "valid (visible ASCII characters only)")
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        redacted = [(n, MASK if (n not in before or n in secret) else v)
                    for n, v in pairs]
        query = urlencode(redacted, safe="*")
        target = (parts.path or "/") + ("?" + query if query else "")
        return (RequestRecord(call.method, self.host,
                              urlunsplit(parts._replace(query=query)), target), sent_target)

    def _build_signed(self, call: PreparedCall) -> Tuple[str, bytes, RequestRecord]:
        """:meth:`build` for a :class:`NativeAuthenticator`: it signs the
        request as it goes on the wire; its fields are added to the ones
        prepared once per host, and the record comes from the redacted
        target it returns, with no URL parsed."""
        extra = call.extra_headers
        if extra:
            headers = call.headers
            host = headers["Host"]
        elif call.base_headers is self._headers:
            headers = call.base_headers
            host = self._sent_host
        else:
            headers = call.base_headers
            host = self.host if "Host" not in headers else headers["Host"]
        authenticator: NativeAuthenticator = self.authenticator  # type: ignore[assignment]
        signed: SignedRequest = authenticator.sign_request(call.method, host, call.target,
                                                           headers, call.body)
        added = _added_fields(signed.headers) if signed.headers else ()
        repeated = bool(extra)
        names = self._header_names
        for _, _, lower in added:
            repeated = repeated or lower in names
        if repeated:
            # One field per name: the authenticator's replace the request's.
            merged = merge_fields(call.base_headers, extra,
                                  {name: value for name, value, _ in added})
            if _framing_names(merged):
                merged = check_framing(merged, call.body, "the authenticator's headers")
            fields = field_block(merged)
        else:
            fields = self._fields
            for name, value, lower in added:
                if lower in ("content-length", "transfer-encoding"):
                    check_framing({name: value}, call.body, "the authenticator's headers")
                    continue
                fields += f"{name}: {value}\r\n"
        target = signed.target
        if target == call.target:
            record = call.record
        else:
            if not isinstance(target, str) or not _VALID_TARGET.fullmatch(target):
                # Never quoted: it may hold a secret.
                raise ValueError("the authenticator returned a request target that is not "
                                 "valid (visible ASCII characters only)")
            shown = signed.redacted_target
            record = RequestRecord(call.method, self.host, f"{self.scheme}://{self.host}{shown}",
                                   shown)
        return call.method, request_bytes(call.method, target, fields, call.body), record

    # -- results ------------------------------------------------------------------

    def attempts(self, call: PreparedCall, tracer: Tracer) -> "Attempts":
        """The attempts of ``call``, starting now (see :class:`Attempts`)."""
        return Attempts(self, call, tracer)

    def decoded(self, answer: Answer) -> bytes:
        """The body of ``answer`` with its content codings undone
        (:func:`~napixclient.core.codings.decode_content`), at most
        ``max_body_size`` bytes of it.

        :raises napixclient.failures.BodyLimitExceeded: past that size.
        :raises napixclient.failures.MalformedAnswer: for a body its coding
            cannot read.
        """
        content = answer.content
        if content:
            # A scan of the fields: building the headers' index for this
            # costs more than the rest of reading a small answer.
            codings = [value for name, value in answer.headers.fields
                       if len(name) == 16 and name.lower() == "content-encoding"]
            if codings:
                return decode_content(content, ", ".join(codings), self.max_body_size,
                                      answer.status)
        return content

    def failure_error(self, failure: Failure, record: RequestRecord) -> HTTPError:
        """The :class:`~napixclient.HTTPError` that stands for ``failure``:
        the subclass its kind names (:attr:`~napixclient.failures.Failure.error`)."""
        text = failure.message
        if (isinstance(failure, ConnectionBroken) and failure.stale
                and record.method not in IDEMPOTENT_METHODS):
            text += f"; not retried, since a {record.method} may not be repeated"
        status = getattr(failure, "status", None)
        # A proxy's refusal names the proxy in its own text: the request did
        # not go through it.
        via = None if isinstance(failure, ProxyFailed) else self._via
        return failure.error(record, status=status, remote_error=text, proxy=via)


def _with_extra(call: PreparedCall, added: Dict[str, str]) -> PreparedCall:
    """A copy of ``call`` with further headers of its own."""
    copied = PreparedCall(call.method, call.url, call.target, call.base_headers,
                          {**call.extra_headers, **added}, call.body, call.timeout)
    copied.record = call.record
    return copied


class Attempts:
    """One request, from its first attempt to its result (see the module).

    :param client: the client sending it.
    :param call: the request.
    :param tracer: where ``request.retry`` and ``request.failed`` go.

    :ivar started: :func:`time.monotonic` when it started (seconds).
    :ivar deadline: :func:`time.monotonic` past which the exchange must not
        go on (seconds): the start plus the timeout (``connect + read`` for
        a pair).
    :ivar timeouts: ``(connect, read)``: the longest wait for a connection,
        and for data (seconds).
    :ivar attempt: how many attempts were sent before the current one.
    """

    __slots__ = ("client", "call", "tracer", "policy", "started", "deadline", "timeouts",
                 "total", "attempt", "method", "record", "_response", "_error", "_hooks",
                 "_done")

    def __init__(self, client: BaseClient, call: PreparedCall, tracer: Tracer) -> None:
        self.client = client
        self.call = call
        self.tracer = tracer
        self.policy = client._retry
        self.timeouts, self.total = (client._timeouts if call.timeout is client.timeout
                                     else socket_timeouts(call.timeout))
        self.started = time.monotonic()
        self.deadline = self.started + self.total
        self.attempt = -1
        self.method = call.method
        self.record = call.record
        self._response: Optional[Response] = None
        self._error: Optional[HTTPError] = None
        self._hooks = instrumentation()
        self._done = False

    def next(self) -> Tuple[str, bytes, RequestRecord]:
        """The next attempt: ``(method, bytes, record)``, signed now.

        :raises ValueError: when the authenticator's output is not valid HTTP.
        """
        self.attempt += 1
        added = None
        if self._hooks is not None:
            added = self._hooks.attempt(self.client, self.call, self.attempt)
        self.method, data, self.record = self.client.build(self.call, added)
        return self.method, data, self.record

    def answered(self, answer: Answer) -> Optional[float]:
        """An answer came; ``None`` when it is the result, else the seconds
        to wait before the next attempt."""
        client = self.client
        origin = client.origin
        if answer.status == 407 and origin.proxy is not None and origin.scheme == "http":
            # Only a proxy answers 407 (RFC 9110, section 15.5.8).
            return self.failed(ProxyFailed(f"the proxy {origin.proxy} answered "
                                           f"{status_text(407)}", origin.proxy, status=407))
        policy = self.policy
        if policy.retries_statuses:
            step = policy.after_status(self.method, answer.status,
                                       answer.headers.get("Retry-After"), time.time())
            if step is not None and time.monotonic() + step[1] < self.deadline:
                self.policy, wait = step
                if self.tracer.tracing():
                    self.tracer.emit("request.retry", origin, self.record,
                                     status=answer.status, wait=wait,
                                     failure=f"the server answered {answer.status}")
                return wait
        try:
            content = client.decoded(answer)
        except Failure as failure:
            self._fail(failure)
            return None
        response = Response(answer.status, answer.reason, answer.headers, content,
                            time.monotonic() - self.started, self.record)
        if response.status >= 400:
            self._error = HTTPError.from_response(response, proxy=client._via)
        else:
            self._response = response
        return None

    def failed(self, failure: Failure) -> Optional[float]:
        """A connection failure; ``None`` when it is final, else the seconds
        to wait before the next attempt."""
        step = self.policy.after_failure(self.method, failure)
        if step is not None and time.monotonic() + step[1] < self.deadline:
            self.policy, wait = step
            if self.tracer.tracing():
                self.tracer.emit("request.retry", self.client.origin, self.record,
                                 failure=str(failure), error_class=failure.error_class,
                                 wait=wait)
            return wait
        self._fail(failure)
        return None

    def expired(self) -> HTTPError:
        """The deadline passed: the :class:`~napixclient.Timeout` that is the
        result."""
        self._error = Timeout(self.record, remote_error=(
            f"the exchange took longer than {self.total:g} s"), proxy=self.client._via)
        if self.tracer.tracing():
            self.tracer.emit("request.failed", self.client.origin, self.record,
                             failure=self._error.remote_error, error_class="Timeout")
        return self._error

    def _fail(self, failure: Failure) -> None:
        self._error = self.client.failure_error(failure, self.record)
        if self.tracer.tracing():
            self.tracer.emit("request.failed", self.client.origin, self.record,
                             failure=str(failure), error_class=failure.error_class)

    def result(self) -> Response:
        """The :class:`~napixclient.Response` (the ``request.done`` event
        says so).

        :raises HTTPError: the error that is the result: a status of 400 or
            more, or a subclass for a failure.
        """
        self.close()
        if self._error is not None:
            raise self._error
        assert self._response is not None
        return self._response

    def close(self) -> None:
        """The request ends: ``request.done`` is emitted once, with its
        result, or ``"Cancelled"`` when it has none (the driver calls this
        however the request ended: killed, cancelled, timed out)."""
        if self._done:
            return
        self._done = True
        if self.tracer.tracing():
            error = self._error
            if error is not None:
                status, error_class = error.status, type(error).__name__
            elif self._response is not None:
                status, error_class = self._response.status, None
            else:
                status, error_class = None, "Cancelled"
            self.tracer.emit("request.done", self.client.origin, self.record, status=status,
                             error_class=error_class,
                             seconds=time.monotonic() - self.started)
