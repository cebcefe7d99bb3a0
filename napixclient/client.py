"""Client: requests to one Napix host.

A :class:`Client` validates and builds each request (with
:mod:`napixclient.http11`), runs the authenticator, and sends it over the
keep-alive connections of its
:class:`~napixclient.connections.ConnectionManager` (its own, or its pool's),
which caps how many requests run at once per origin and in total. It reads
the answer into a :class:`~napixclient.Response`, or raises an
:class:`~napixclient.HTTPError`; transport failures
(:mod:`napixclient.failures`) become its subclasses by one table.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import warnings
from collections.abc import Mapping
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple, Union
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import gevent
import gevent.lock
import requests
from requests.structures import CaseInsensitiveDict
from urllib3.util import Retry

from napixclient import __version__
from napixclient.authenticators import Authenticator, SignedRequest, coerce_authenticator
from napixclient.connections import (
    DEFAULT_KEEPALIVE_EXPIRY,
    ConnectionManager,
    Lease,
    TraceHook,
)
from napixclient.core.hosts import base_url, host_header, parse_host
from napixclient.dialing import Cert, Origin, Verify, check_cert, check_verify, choose_proxy
from napixclient.exceptions import BodyTooLarge, ConnectionError, HTTPError, ProxyError, Timeout
from napixclient.failures import ConnectionBroken, TransportFailure
from napixclient.http11 import (
    Answer,
    accept_encoding,
    check_fields,
    check_headers,
    check_method,
    decode_content,
    encode_body,
    field_block,
    merge_fields,
    quote_target,
    request_bytes,
)
from napixclient.http11 import (
    parser as http_parser,
)
from napixclient.redact import MASK, register_secret_parameters
from napixclient.response import RequestRecord, Response
from napixclient.retry import IDEMPOTENT_METHODS, RetryPolicy, StatusRetry

__all__ = ["Client", "PreparedCall", "base_url", "parse_host"]

_log = logging.getLogger(__name__)

#: What a timeout may be: seconds (``float``) or a ``(connect, read)`` pair.
TimeoutSpec = Union[float, Tuple[float, float]]

#: The parser a :class:`Client` uses when ``parser`` is not given: a name,
#: or ``None`` for :func:`napixclient.http11.default_parser` (llhttp, from
#: geventhttpclient, wherever it loads; else http.client).
DEFAULT_PARSER: Optional[str] = None

#: The default ``max_body_size``: 64 MiB.
DEFAULT_MAX_BODY_SIZE = 64 * 1024 * 1024

# A request target an authenticator may return: visible ASCII, no space.
_VALID_TARGET = re.compile(r"[!-~]+")


def _check_timeout(timeout: Any) -> TimeoutSpec:
    def positive(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0

    if positive(timeout):
        return float(timeout)
    if (isinstance(timeout, tuple) and len(timeout) == 2
            and all(positive(v) for v in timeout)):
        return float(timeout[0]), float(timeout[1])
    raise ValueError(f"timeout must be seconds > 0 or a (connect, read) pair of them, "
                     f"got {timeout!r}")


def _socket_timeouts(timeout: TimeoutSpec) -> Tuple[Tuple[float, float], float]:
    """The ``(connect, read)`` socket timeouts, and the deadline of the whole
    exchange (seconds)."""
    if isinstance(timeout, tuple):
        return timeout, timeout[0] + timeout[1]
    return (timeout, timeout), timeout


class PreparedCall:
    """A request validated and built, ready to be signed and sent.

    Made by :meth:`Client.prepare`; pass it to :meth:`Client.send`. It holds
    no secret: the authenticator runs in :meth:`Client.send`, when the
    request's turn comes, so a signature's timestamp is fresh.

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
                 base_headers: CaseInsensitiveDict[str], extra_headers: dict[str, str],
                 body: Optional[bytes], timeout: TimeoutSpec) -> None:
        self.method = method
        self.url = url
        self.target = target
        # The client's headers, shared by its calls: never changed here.
        self.base_headers = base_headers
        self.extra_headers = extra_headers
        self.body = body
        self.timeout = timeout
        self.record = RequestRecord(method, url.split("/", 3)[2], url, target)

    @property
    def headers(self) -> CaseInsensitiveDict[str]:
        """The request headers (``Host`` included): a new case-insensitive
        mapping, the client's headers updated with this request's."""
        headers = self.base_headers.copy()
        headers.update(self.extra_headers)
        return headers

    def __repr__(self) -> str:
        return f"<PreparedCall {self.method} {self.url}>"


class Client:
    """Requests to one Napix host, signed, capped and kept alive.

    :param host: ``name``, ``name:port``, or a base URL
        ``http(s)://name[:port][/prefix]``; a bare name means ``http``.
    :param authenticator: a :class:`~napixclient.authenticators.LoginAuthenticator`,
        a :class:`~napixclient.authenticators.TokenIdentifier`, any callable
        taking a :class:`requests.PreparedRequest` (any
        :class:`requests.auth.AuthBase`), a mapping ``{"login": ..., "key": ...}``,
        or ``None`` to send requests unauthenticated.
    :param simultaneous: the most requests running at once to the host's
        origin, and so the most connections open to it (``int`` >= 1).
        Further requests wait their turn, in submission order.
    :param timeout: seconds (``float`` > 0) or a ``(connect, read)`` pair. The
        connect phase, and each wait for data, is bounded by it; so is the
        whole exchange, by the float, or by ``connect + read`` for a pair, so a
        server that trickles its answer cannot hold a request for longer.
        The wait for a turn (under ``simultaneous`` or ``max_connections``)
        is not counted.
    :param verify: ``True`` verifies TLS certificates against the CA bundle
        requests uses; a path names a CA bundle file or directory; ``False``
        verifies nothing.
    :param max_body_size: the most bytes of a response body read (``int`` > 0,
        64 MiB by default), as it came and once decoded; a larger body raises
        :class:`~napixclient.exceptions.BodyTooLarge`, a compressed one as
        soon as decoding it passes the size, without inflating the rest.
    :param headers: headers sent with every request (``Mapping[str, str]``).
        By default a request says ``Accept-Encoding: gzip, deflate`` (plus
        ``br`` and ``zstd`` with the ``compression`` extra, see
        :func:`~napixclient.http11.accept_encoding`); whatever it says, an
        answer's content codings that napixclient knows are undone, so
        ``Response.content`` and ``Response.body`` are the decoded body (its
        headers stay as they came), and one it cannot decode raises
        :class:`~napixclient.ConnectionError` (see
        :func:`~napixclient.http11.decode_content`).
    :param retries: how many times a connection failure of an idempotent
        request (GET, HEAD, PUT, DELETE, OPTIONS, TRACE) is retried on a new
        connection (``int`` >= 0, default 0): a connection refused or
        unreachable, a name that did not resolve, or a connection reset before
        the first byte of the answer. Never retried: timeouts (a
        retried timeout doubles the wait), TLS failures, malformed answers,
        statuses, POST and PATCH. Whatever ``retries`` says, a kept-alive
        connection that the server closed before answering is retried once
        on a fresh connection, for idempotent methods only. Retries happen
        within the request's timeout. The policy of
        :class:`~napixclient.retry.RetryPolicy`, applied by
        :meth:`napixclient.connections.ConnectionManager.exchange`.
        Or a :class:`urllib3.util.Retry` (what requests users pass as
        ``HTTPAdapter(max_retries=...)``): then the statuses of its
        ``status_forcelist`` are retried too, for the methods of its
        ``allowed_methods`` (by default the idempotent ones: never POST or
        PATCH unless listed), after the answer's ``Retry-After`` or its
        backoff (in :func:`gevent.sleep`), each attempt signed anew, never
        waiting past the request's deadline, within its ``total``,
        ``status``, ``connect`` and ``read`` counts; when they run out, the
        last answer is the result (an :class:`HTTPError` for a 503). See
        :class:`~napixclient.retry.StatusRetry`.
    :param retry_backoff: seconds (``float`` >= 0, default 0): no wait before
        the first retry, then ``retry_backoff * 2 ** (n - 1)`` before the n-th,
        spent in :func:`gevent.sleep`. Only with an ``int`` ``retries``: a
        ``Retry`` has its own ``backoff_factor``.
    :param parser: how answers are parsed: ``"geventhttpclient"`` (llhttp,
        in C: the least CPU per request; geventhttpclient is a dependency) or
        ``"http.client"`` (the standard library's parser, as urllib3 uses);
        ``None`` (the default) means :data:`DEFAULT_PARSER`, which is
        llhttp wherever geventhttpclient loads and http.client elsewhere
        (:func:`~napixclient.http11.default_parser`). Both serve every
        feature of this class; see :mod:`napixclient.http11`.
    :param transport: the old name of ``parser``; it still works, with a
        :class:`DeprecationWarning`.
    :param max_connections: the most sockets this client keeps open, idle
        ones included (``int`` >= 1); ``None`` derives it from the soft limit
        on open files (:func:`~napixclient.connections.default_max_connections`).
    :param keepalive_expiry: seconds (``float`` > 0, default 5) an idle
        connection is kept alive before it is closed.
    :param trace: a callable ``trace(event, info)`` receiving the connection
        layer's events (see :mod:`napixclient.connections`), or ``None``.
    :param connections: a :class:`~napixclient.connections.ConnectionManager`
        to share (a :class:`~napixclient.ClientPool` passes its own); then
        ``max_connections``, ``keepalive_expiry`` and ``trace`` are the
        manager's and may not be given. ``None`` (the default): the client
        makes its own and closes it with itself.
    :param proxies: the proxies to go through, as requests takes them: a
        mapping from ``"http"``, ``"https"``, ``"all"``, ``"scheme://host"``
        or ``"all://host"`` to a proxy URL (``http://[user:password@]host[:port]``,
        or ``https://...`` for a proxy reached over TLS), or to ``None`` for
        none; ``"no_proxy"`` may list hosts that skip the environment's
        proxies. ``None`` (the default): none but the environment's.
        Plain ``http`` goes through the proxy with the request target in
        absolute form; ``https`` through a ``CONNECT`` tunnel, the origin's
        certificate verified against ``verify``. Credentials in the URL are
        sent as ``Proxy-Authorization`` and shown nowhere. See
        :func:`~napixclient.dialing.choose_proxy` and :doc:`/proxies`.
    :param trust_env: whether the environment's proxies apply (``bool``,
        default ``True``): ``http_proxy``, ``https_proxy``, ``all_proxy``
        and ``no_proxy``, in lower or upper case, read once, here, as
        requests reads them. The route of the host is decided once per
        client.
    :param cert: a client certificate for servers that ask for one (mutual
        TLS), as requests takes it: the path of a PEM file holding the
        certificate and its unencrypted key, or a ``(certificate path, key
        path)`` pair; ``None`` (the default) for none. See :doc:`/tls`.
    :raises ValueError: at once, naming the argument, for a malformed host, an
        authenticator of another kind, ``simultaneous < 1``, a bad timeout, a
        bad ``max_body_size``, bad headers, bad ``retries`` or
        ``retry_backoff`` (or both a ``Retry`` and ``retry_backoff``), a bad
        ``max_connections``, ``keepalive_expiry`` or ``trace``, or one of
        them given with ``connections``; bad ``proxies`` or ``trust_env``, a
        malformed proxy URL (from the environment too: the message names the
        variable; a SOCKS proxy is refused); a ``cert`` of another type, or
        one that does not load (a key that does not match, an encrypted key).
    :raises FileNotFoundError: if ``verify`` names a CA bundle that does not
        exist, or ``cert`` a file that does not exist.

    Redirects are not followed: a 3xx comes back as a :class:`Response`,
    since a signature is bound to one host and path.

    >>> with Client("127.0.0.1:8002", {"login": "root", "key": "toor"}) as c:  # doctest: +SKIP
    ...     c.get("/").body
    """

    def __init__(
        self,
        host: str,
        authenticator: Any = None,
        simultaneous: int = 2,
        timeout: TimeoutSpec = 60.0,
        verify: Verify = True,
        *,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        headers: Optional[Mapping[str, str]] = None,
        retries: Union[int, Retry] = 0,
        retry_backoff: float = 0.0,
        parser: Optional[str] = None,
        transport: Optional[str] = None,
        max_connections: Optional[int] = None,
        keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY,
        trace: Optional[TraceHook] = None,
        connections: Optional[ConnectionManager] = None,
        proxies: Optional[Mapping[str, Optional[str]]] = None,
        trust_env: bool = True,
        cert: Optional[Cert] = None,
    ) -> None:
        if transport is not None:
            warnings.warn("Client(transport=...) is now Client(parser=...)",
                          DeprecationWarning, stacklevel=2)
            if parser is None:
                parser = transport
        scheme, name, port, prefix = parse_host(host)
        self.authenticator: Optional[Authenticator] = (
            None if authenticator is None else coerce_authenticator(authenticator)
        )
        if (not isinstance(simultaneous, int) or isinstance(simultaneous, bool)
                or simultaneous < 1):
            raise ValueError(f"simultaneous must be an int >= 1, got {simultaneous!r}")
        self.timeout = _check_timeout(timeout)
        if (not isinstance(max_body_size, int) or isinstance(max_body_size, bool)
                or max_body_size < 1):
            raise ValueError(f"max_body_size must be a number of bytes >= 1, "
                             f"got {max_body_size!r}")
        # One immutable policy serves every request (after() returns new ones).
        self._status_retry: Optional[StatusRetry] = None
        if isinstance(retries, Retry):
            if retry_backoff != 0.0:
                raise ValueError("retry_backoff goes with an int retries=; a Retry has "
                                 "its own backoff_factor")
            self._status_retry = StatusRetry(retries)
            self._retry = self._status_retry.connection_policy()
        elif not isinstance(retries, int) or isinstance(retries, bool):
            raise ValueError(f"retries must be an int >= 0 or a urllib3.util.Retry, "
                             f"got {retries!r}")
        else:
            self._retry = RetryPolicy(retries, retry_backoff)
        self.retries = retries
        self.retry_backoff = self._retry.backoff_factor
        register_secret_parameters(getattr(self.authenticator, "secret_parameters", ()))
        self.simultaneous = simultaneous
        self.max_body_size = max_body_size
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
        }, check_headers(headers)))
        # Prepared once per host: the fields every request sends, the
        # percent-encoded prefix, the socket timeouts of the default timeout.
        self._fields = field_block(self._headers)
        self._fields_have_length = "Content-Length" in self._headers
        self._quoted_prefix = quote_target(prefix)
        self._timeouts = _socket_timeouts(self.timeout)
        self._parser = http_parser(DEFAULT_PARSER if parser is None else parser)
        if not isinstance(trust_env, bool):
            raise ValueError(f"trust_env must be True or False, got {trust_env!r}")
        # The route is chosen once, here: the proxy (or none) is part of the
        # origin, so connections through it are never mixed with direct ones.
        proxy = choose_proxy(f"{scheme}://{self.host}/", proxies, trust_env)
        #: The proxy requests go through, ``"scheme://host:port"`` (never
        #: its credentials), or ``None`` for a direct connection.
        self.proxy: Optional[str] = None if proxy is None else str(proxy)
        self._origin = Origin(scheme, name,
                              port if port is not None else (443 if scheme == "https" else 80),
                              check_verify(verify), check_cert(cert), proxy)
        if connections is None:
            self._manager = ConnectionManager(max_connections, keepalive_expiry, trace)
            self._owns_manager = True
        elif not isinstance(connections, ConnectionManager):
            raise ValueError(f"connections must be a ConnectionManager, got {connections!r}")
        elif (max_connections is not None or trace is not None
              or keepalive_expiry != DEFAULT_KEEPALIVE_EXPIRY):
            raise ValueError("max_connections, keepalive_expiry and trace belong to the "
                             "shared ConnectionManager given as connections=")
        else:
            self._manager = connections
            self._owns_manager = False
        # Built (and so checked) now, once per TLS configuration; a client
        # certificate is checked even for http, where it is not used.
        if scheme == "https" or self._origin.cert is not None:
            self._manager.dialer.context(self._origin.verify, self._origin.cert)
        if proxy is not None and proxy.scheme == "https":
            self._manager.dialer.context(self._origin.verify)
        self._closed = False

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<Client {self.base_url} simultaneous={self.simultaneous}{state}>"

    # -- building ---------------------------------------------------------

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

        The arguments are those of :meth:`request`.

        :returns: a :class:`PreparedCall` for :meth:`send`.
        :raises ValueError: naming the argument, for a method that is not an
            HTTP token, a URL holding CR, LF, NUL or a ``#`` fragment (see
            :func:`~napixclient.http11.quote_target`), a body of another type
            or that is not JSON, bad headers or a bad timeout.
        :raises RuntimeError: if the client is closed.
        """
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        method = check_method(method)
        if not isinstance(url, str):
            raise ValueError(f"url must be a str path such as '/vm-ip/', "
                             f"got {type(url).__name__}")
        if "://" in url.split("?", 1)[0]:
            raise ValueError(f"url {url!r} must be a path on {self.host}, "
                             "not an absolute URL")
        path = url if url.startswith("/") else "/" + url
        try:
            target = self._quoted_prefix + quote_target(path)
        except ValueError as error:
            raise ValueError(f"url {url!r}: {error}") from None
        if params:
            pairs = params.items() if isinstance(params, Mapping) else params
            query = urlencode(list(pairs), doseq=True)
            target += ("&" if "?" in target else "?") + query
        payload, content_type = encode_body(body)
        extra = check_headers(headers) if headers else {}
        if (content_type and "Content-Type" not in self._headers
                and not any(name.lower() == "content-type" for name in extra)):
            extra["Content-Type"] = content_type
        return PreparedCall(method.upper(), f"{self.scheme}://{self.host}{target}", target,
                            self._headers, extra, payload,
                            self.timeout if timeout is None else _check_timeout(timeout))

    # -- sending ----------------------------------------------------------

    # For signing: the Host field and the lower-case names of the client's
    # headers (which never change), made on the first signed request.
    _signing_base: Optional[Tuple[str, FrozenSet[str]]] = None

    def _authenticate(self, call: PreparedCall) -> requests.PreparedRequest:
        """Run a requests-style authenticator (one without ``sign_request``)
        on a :class:`requests.PreparedRequest` of ``call`` (its public
        contract); the headers are copied once, here."""
        assert self.authenticator is not None
        prepared = requests.PreparedRequest()
        prepared.method = call.method
        prepared.url = call.url
        prepared.headers = call.headers
        prepared.body = call.body
        result = self.authenticator(prepared)
        return prepared if result is None else result

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
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        redacted = [(n, MASK if (n not in before or n in secret) else v)
                    for n, v in pairs]
        query = urlencode(redacted, safe="*")
        target = (parts.path or "/") + ("?" + query if query else "")
        return (RequestRecord(call.method, self.host,
                              urlunsplit(parts._replace(query=query)), target), sent_target)

    def _build(self, call: PreparedCall) -> Tuple[str, bytes, RequestRecord]:
        """The method, the bytes to send and the record of ``call``, signed."""
        if self.authenticator is None:
            fields = self._fields
            has_length = self._fields_have_length
            if call.extra_headers:
                # One field per name: this request's replace the client's.
                merged = merge_fields(call.base_headers, call.extra_headers)
                fields = field_block(merged)
                has_length = any(name.lower() == "content-length" for name in merged)
            return call.method, request_bytes(call.method, call.target, fields, call.body,
                                              has_length), call.record
        sign_request = getattr(self.authenticator, "sign_request", None)
        if sign_request is not None:
            return self._build_signed(call, sign_request)
        prepared = self._authenticate(call)
        record, target = self._record(call, str(prepared.url))
        method = str(prepared.method)
        body = prepared.body
        if isinstance(body, str):
            body = body.encode("utf-8")
        data = request_bytes(method, target, field_block(check_fields(prepared.headers)), body,
                     "Content-Length" in prepared.headers)
        return method, data, record

    def _build_signed(self, call: PreparedCall, sign_request: Callable[..., SignedRequest]
                      ) -> Tuple[str, bytes, RequestRecord]:
        """:meth:`_build` for an authenticator with ``sign_request`` (see
        :class:`~napixclient.authenticators.NativeAuthenticator`): it signs
        the request as it goes on the wire; its fields are added to the
        ones prepared once per host, and the record comes from the redacted
        target it returns, with no URL parsed."""
        extra = call.extra_headers
        known = self._signing_base
        if known is None:
            base = call.base_headers
            known = self._signing_base = (base["Host"], frozenset(name.lower() for name in base))
        if extra:
            headers = call.headers
            host = headers["Host"]
        else:
            headers = call.base_headers
            host = known[0]
        signed = sign_request(call.method, host, call.target, headers, call.body)
        added = _added_fields(signed.headers) if signed.headers else ()
        repeated = bool(extra)
        for _, _, lower in added:
            repeated = repeated or lower in known[1]
        if repeated:
            # One field per name: the authenticator's replace the request's.
            merged = merge_fields(call.base_headers, extra,
                                  {name: value for name, value, _ in added})
            fields = field_block(merged)
            has_length = any(name.lower() == "content-length" for name in merged)
        else:
            fields = self._fields
            has_length = self._fields_have_length
            for name, value, lower in added:
                fields += f"{name}: {value}\r\n"
                has_length = has_length or lower == "content-length"
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
        return call.method, request_bytes(call.method, target, fields, call.body,
                                          has_length), record

    def send(self, call: PreparedCall) -> Response:
        """Sign and send a prepared request, waiting for a turn under
        ``simultaneous`` and ``max_connections``; read the whole answer.

        :param call: from :meth:`prepare`.
        :returns: the :class:`Response` when the status is below 400.
        :raises HTTPError: when the status is 400 or more.
        :raises ConnectionError: when the connection was refused, reset or
            dropped, the name did not resolve, or TLS failed.
        :raises Timeout: when connecting or reading took longer than the timeout.
        :raises BodyTooLarge: when the body is larger than ``max_body_size``.
        :raises RuntimeError: if the client is closed.
        :raises ValueError: if the authenticator set a header that is not a
            valid HTTP field.
        """
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        lease = self._manager.acquire(self._origin, self.simultaneous, _record_of(call))
        try:
            return self.send_on(lease, call)
        finally:
            lease.release()

    def reserve(self, call: PreparedCall, grant: Callable[[Lease], None]) -> None:
        """Ask for a turn for ``call`` without waiting: ``grant(lease)`` is
        called when it comes (at once if it is free), in the greenlet that
        freed it, so it must not block; then :meth:`send_on` sends the call.

        :raises RuntimeError: if the client is closed.
        """
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        self._manager.reserve(self._origin, self.simultaneous, grant, _record_of(call))

    def send_on(self, lease: Lease, call: PreparedCall) -> Response:
        """Sign and send ``call`` on a lease got from :meth:`reserve`, and
        read the whole answer; the caller releases the lease. With
        OpenTelemetry in use, in a span whose context the request's headers
        carry (:mod:`napixclient.otel`).

        :returns: and :raises: as :meth:`send`.
        """
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        otel = _instrumentation()
        if otel is not None:
            return otel.send(self._manager, lease, call, self._send_on)
        return self._send_on(lease, call)

    def _send_on(self, lease: Lease, call: PreparedCall) -> Response:
        method, data, record = self._build(call)
        timeouts, deadline = (self._timeouts if call.timeout is self.timeout
                              else _socket_timeouts(call.timeout))
        guard = gevent.Timeout(deadline)
        guard.start()
        started = time.monotonic()
        try:
            if self._status_retry is not None:
                return self._exchange_retrying(lease, call, method, data, record, timeouts,
                                               started, deadline)
            return self._exchange(lease, method, data, record, timeouts, started)
        except gevent.Timeout as fired:
            if fired is not guard:
                raise
            raise Timeout(record, remote_error=(
                f"the exchange took longer than {deadline:g} s")) from None
        finally:
            guard.close()

    def _exchange(self, lease: Lease, method: str, data: bytes, record: RequestRecord,
                  timeouts: Tuple[float, float], started: float) -> Response:
        return self._respond(self._answer(lease, method, data, record, timeouts, self._retry),
                             record, started)

    def _answer(self, lease: Lease, method: str, data: bytes, record: RequestRecord,
                timeouts: Tuple[float, float], retry: RetryPolicy) -> Answer:
        """One exchange on ``lease``, its connection failures retried as
        ``retry`` says.

        :raises HTTPError: a subclass, for the failure that ended it.
        """
        failure: Optional[HTTPError] = None
        try:
            return self._manager.exchange(
                lease, method, data, record, parser=self._parser, timeout=timeouts,
                max_body_size=self.max_body_size, retry=retry)
        except TransportFailure as transport_failure:
            failure = _failure_error(transport_failure, record)
        # Raised out of the except block, so that no __context__ keeps the
        # failure's cause, whose text may hold the URL and its token.
        raise failure

    def _respond(self, answer: Answer, record: RequestRecord, started: float) -> Response:
        """The :class:`Response` of ``answer``, its body decoded.

        :raises HTTPError: for a status of 400 or more; its subclasses for a
            body that does not decode or is too large once decoded.
        """
        failure: Optional[HTTPError] = None
        try:
            content = self._decoded(answer)
        except TransportFailure as transport_failure:
            failure = _failure_error(transport_failure, record)
            if self._manager.tracing():
                self._manager.emit("request.failed", self._origin, record,
                                   failure=str(transport_failure),
                                   error_class=transport_failure.error_class)
        if failure is not None:
            raise failure
        response = Response(answer.status, answer.reason, answer.headers, content,
                            time.monotonic() - started, record)
        if response.status >= 400:
            raise HTTPError.from_response(response)
        return response

    def _exchange_retrying(self, lease: Lease, call: PreparedCall, method: str, data: bytes,
                           record: RequestRecord, timeouts: Tuple[float, float],
                           started: float, deadline: float) -> Response:
        """:meth:`_exchange` with the status retries of a
        :class:`urllib3.util.Retry` (:class:`~napixclient.retry.StatusRetry`):
        an answer to retry is followed by a wait (``Retry-After``, or the
        backoff) and the request signed anew (a nonce is never sent twice)
        and sent again on the same lease, while the counts allow and the
        wait ends before the deadline; else the last answer is the result.
        """
        schedule = self._status_retry
        assert schedule is not None
        while True:
            spent: List[RetryPolicy] = []
            policy = schedule.connection_policy(spent)
            answer = self._answer(lease, method, data, record, timeouts, policy)
            schedule = schedule.spent(spent[-1] if spent else policy)
            decision = schedule.after_status(method, answer.status,
                                             answer.headers.get("Retry-After"), time.time())
            if decision is None:
                break
            schedule, wait = decision
            if time.monotonic() + wait >= started + deadline:
                break  # the wait would pass the deadline: this answer is the last
            if self._manager.tracing():
                self._manager.emit("request.retry", self._origin, record, status=answer.status,
                                   failure=f"the server answered {answer.status}", wait=wait)
            if wait > 0:
                gevent.sleep(wait)
            method, data, record = self._build(call)
        return self._respond(answer, record, started)

    def _decoded(self, answer: Answer) -> bytes:
        """The body of ``answer`` with its content codings undone
        (:func:`~napixclient.http11.decode_content`), at most
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

    def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        *,
        timeout: Optional[TimeoutSpec] = None,
        params: Any = None,
    ) -> Response:
        """Send one request and return its answer.

        :param method: the HTTP method (``"GET"``, ``"POST"``...), an RFC 9110
            token; it is sent upper case.
        :param url: the path on the host (``"/vm-ip/"``, ``"/a?b=1"``);
            non-ASCII characters are percent-encoded, existing ``%XX`` kept.
        :param body: ``dict`` or ``list`` -> JSON with ``Content-Type:
            application/json``; ``str`` (UTF-8) or ``bytes`` sent as they are;
            ``None`` -> no body.
        :param headers: extra headers for this request (``Mapping[str, str]``).
        :param timeout: overrides the client's timeout for this request
            (seconds, or a ``(connect, read)`` pair).
        :param params: query parameters appended to ``url`` (a mapping or
            pairs; values may be lists).
        :returns: the :class:`Response`, for a status below 400 (3xx
            included: redirects are not followed).
        :raises ValueError: at once, for bad arguments (see :meth:`prepare`).
        :raises HTTPError: for a status of 400 or more, and its subclasses
            :class:`~napixclient.ConnectionError`, :class:`~napixclient.Timeout`
            and :class:`~napixclient.exceptions.BodyTooLarge` for transport
            failures (see :meth:`send`).
        """
        return self.send(self.prepare(method, url, body, headers,
                                      timeout=timeout, params=params))

    def get(self, url: str, **kwargs: Any) -> Response:
        """``request("GET", url, **kwargs)``."""
        return self.request("GET", url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> Response:
        """``request("HEAD", url, **kwargs)``."""
        return self.request("HEAD", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> Response:
        """``request("DELETE", url, **kwargs)``."""
        return self.request("DELETE", url, **kwargs)

    def post(self, url: str, body: Any = None, **kwargs: Any) -> Response:
        """``request("POST", url, body, **kwargs)``."""
        return self.request("POST", url, body, **kwargs)

    def put(self, url: str, body: Any = None, **kwargs: Any) -> Response:
        """``request("PUT", url, body, **kwargs)``."""
        return self.request("PUT", url, body, **kwargs)

    def patch(self, url: str, body: Any = None, **kwargs: Any) -> Response:
        """``request("PATCH", url, body, **kwargs)``."""
        return self.request("PATCH", url, body, **kwargs)

    # -- lifetime ---------------------------------------------------------

    def close(self) -> None:
        """Close every connection to the host; later requests raise
        :class:`RuntimeError`. Closing twice is harmless."""
        self._closed = True
        if self._owns_manager:
            self._manager.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


_ERROR_CLASSES = {"ConnectionError": ConnectionError, "Timeout": Timeout,
                  "BodyTooLarge": BodyTooLarge, "ProxyError": ProxyError}


def _failure_error(failure: TransportFailure, record: RequestRecord) -> HTTPError:
    """The :class:`HTTPError` that stands for a transport failure."""
    text = failure.message
    if (isinstance(failure, ConnectionBroken) and failure.stale
            and record.method not in IDEMPOTENT_METHODS):
        text += f"; not retried, since a {record.method} may not be repeated"
    status = getattr(failure, "status", None)
    return _ERROR_CLASSES[failure.error_class](record, status=status, remote_error=text)


# Names of fields that native authenticators set and that were found valid
# (RFC 9110 tokens), with their lower case: not checked again. Bounded.
_VALID_NAMES: Dict[str, str] = {}


def _added_fields(headers: Mapping[str, Any]) -> List[Tuple[str, str, str]]:
    """The fields a native authenticator adds, checked as
    :func:`~napixclient.http11.check_fields` checks them, as ``(name,
    value, name in lower case)``: a ``str`` value is looked at for CR, LF
    and NUL with ``in`` (a seventh of what the regular expression costs on
    a signature's 180 characters), and a name found valid once is not
    checked again; anything else goes through ``check_fields``, which
    raises its :class:`ValueError`.
    """
    fields = []
    for name, value in headers.items():
        lower = _VALID_NAMES.get(name)
        if (lower is not None and type(value) is str
                and "\r" not in value and "\n" not in value and "\x00" not in value):
            fields.append((name, value, lower))
            continue
        for checked, text in check_fields({name: value}):
            fields.append((checked, text, checked.lower()))
        if len(_VALID_NAMES) < 256:
            _VALID_NAMES[name] = name.lower()
    return fields


def _record_of(call: PreparedCall) -> RequestRecord:
    """The record of ``call`` before it is signed."""
    return call.record


# -- OpenTelemetry (napixclient.otel) ------------------------------------------

# napixclient.otel's hooks once loaded, or False when they could not be.
_otel: Any = None


def _instrumentation() -> Any:
    """napixclient.otel's hooks while the instrumentation is on, else ``None``.

    napixclient never imports OpenTelemetry first: the hooks are loaded at
    the first call after the program has imported ``opentelemetry.trace``
    (until then this costs one dictionary look-up), and never when
    OpenTelemetry cannot be imported. See :mod:`napixclient.otel`.
    """
    global _otel
    hooks = _otel
    if hooks is None:
        if sys.modules.get("opentelemetry.trace") is None:
            return None
        try:
            from napixclient.otel import HOOKS
        except ImportError:
            _log.warning("opentelemetry.trace is loaded but napixclient.otel cannot be: "
                         "no OpenTelemetry instrumentation", exc_info=True)
            _otel = False
            return None
        hooks = _otel = HOOKS
    return hooks if hooks and hooks.enabled else None
