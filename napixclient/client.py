"""Client: requests to one Napix host, from gevent code.

A :class:`Client` is the gevent driver of :class:`~napixclient.core.client.BaseClient`:
the core checks, builds and signs each request and decides between
attempts; the client waits for a turn under its
:class:`~napixclient.connections.ConnectionManager` (its own, or its
pool's), which moves the bytes, and sleeps between attempts
(:func:`gevent.sleep`) under a :class:`gevent.Timeout` for the whole
exchange.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

import gevent
from urllib3.util import Retry

from napixclient.connections import (
    DEFAULT_KEEPALIVE_EXPIRY,
    ConnectionManager,
    Lease,
    TraceHook,
)
from napixclient.core.client import (
    DEFAULT_MAX_BODY_SIZE,
    BaseClient,
    ClientOptions,
    PreparedCall,
    TimeoutSpec,
)
from napixclient.core.exchange import Deadline
from napixclient.core.hosts import base_url, parse_host
from napixclient.core.tls import Cert, Verify
from napixclient.failures import Failure
from napixclient.response import Response

__all__ = ["Client", "PreparedCall", "base_url", "parse_host"]


class Client(BaseClient):
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
        :func:`~napixclient.core.codings.accept_encoding`); whatever it says, an
        answer's content codings that napixclient knows are undone, so
        ``Response.content`` and ``Response.body`` are the decoded body (its
        headers stay as they came), and one it cannot decode raises
        :class:`~napixclient.ConnectionError` (see
        :func:`~napixclient.core.codings.decode_content`).
    :param retries: how many times a connection failure of an idempotent
        request (GET, HEAD, PUT, DELETE, OPTIONS, TRACE) is retried on a new
        connection (``int`` >= 0, default 0): a connection refused or
        unreachable, a name that did not resolve, or a connection reset before
        the first byte of the answer. Never retried: timeouts (a
        retried timeout doubles the wait), TLS failures, malformed answers,
        statuses, POST and PATCH. Whatever ``retries`` says, a kept-alive
        connection that the server closed before answering is retried once
        on a fresh connection, for idempotent methods only. Retries happen
        within the request's timeout, each attempt signed anew. The policy
        of :class:`~napixclient.core.retry.RetryPolicy`.
        Or a :class:`urllib3.util.Retry` (what requests users pass as
        ``HTTPAdapter(max_retries=...)``): then the statuses of its
        ``status_forcelist`` are retried too, for the methods of its
        ``allowed_methods`` (by default the idempotent ones: never POST or
        PATCH unless listed), after the answer's ``Retry-After`` or its
        backoff (in :func:`gevent.sleep`), each attempt signed anew, never
        waiting past the request's deadline, within its ``total``,
        ``status``, ``connect`` and ``read`` counts; when they run out, the
        last answer is the result (an :class:`HTTPError` for a 503). See
        :meth:`~napixclient.core.retry.RetryPolicy.from_option`.
    :param retry_backoff: seconds (``float`` >= 0, default 0): no wait before
        the first retry, then ``retry_backoff * 2 ** (n - 1)`` before the n-th,
        spent in :func:`gevent.sleep`. Only with an ``int`` ``retries``: a
        ``Retry`` has its own ``backoff_factor``.
    :param parser: how answers are parsed: ``"llhttp"`` (in C, through
        httptools, a dependency: the least CPU per request) or ``"h11"``
        (pure Python); ``None`` (the default) means
        :data:`~napixclient.core.client.DEFAULT_PARSER`, which is llhttp
        wherever httptools loads and h11 elsewhere
        (:func:`~napixclient.core.parser.default_parser`). Both serve every
        feature of this class and hold the same limits; see
        :mod:`napixclient.core.parser`. ``"geventhttpclient"`` and
        ``"http.client"``, names of earlier releases, still work with a
        :class:`DeprecationWarning`.
    :param transport: the old name of ``parser``; it still works, with a
        :class:`DeprecationWarning`.
    :param max_connections: the most sockets this client keeps open, idle
        ones included (``int`` >= 1); ``None`` derives it from the soft limit
        on open files (:func:`~napixclient.connections.default_max_connections`).
    :param keepalive_expiry: seconds (``float`` > 0, default 5) an idle
        connection is kept alive before it is closed.
    :param trace: a callable ``trace(event, info)`` receiving the connection
        layer's events (see :mod:`napixclient.core.trace`), or ``None``.
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
        :func:`~napixclient.core.proxies.choose_proxy` and :doc:`/proxies`.
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

    manager_class = ConnectionManager

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
        parsed = parse_host(host)
        options = ClientOptions(authenticator, simultaneous, timeout, verify,
                                max_body_size=max_body_size, headers=headers, retries=retries,
                                retry_backoff=retry_backoff, parser=parser,
                                transport=transport, proxies=proxies, trust_env=trust_env,
                                cert=cert)
        self._attach(parsed, options, connections, max_connections, keepalive_expiry, trace)

    # -- sending ----------------------------------------------------------

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
        manager = self._manager
        lease = manager.acquire(self.origin, self.simultaneous, call.record)
        try:
            return self.send_on(lease, call)
        finally:
            manager.release(lease)

    def reserve(self, call: PreparedCall, grant: Callable[[Lease], None]) -> Callable[[], None]:
        """Ask for a turn for ``call`` without waiting: ``grant(lease)`` is
        called when it comes (at once if it is free), in the greenlet that
        freed it, so it must not block; then :meth:`send_on` sends the call,
        and :meth:`release` gives the turn back.

        :returns: a function that withdraws the call while it still waits.
        :raises RuntimeError: if the client is closed.
        """
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        return self._manager.reserve(self.origin, self.simultaneous, grant, call.record)

    def release(self, lease: Lease) -> None:
        """Give back a turn that :meth:`reserve` granted (harmless twice)."""
        self._manager.release(lease)

    def send_on(self, lease: Lease, call: PreparedCall) -> Response:
        """Sign and send ``call`` on a lease got from :meth:`reserve`, and
        read the whole answer, each attempt signed anew; the caller releases
        the lease.

        :returns: and :raises: as :meth:`send`.
        """
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        manager = self._manager
        attempts = self.attempts(call, manager.tracer)
        guard = gevent.Timeout(attempts.total)
        guard.start()
        try:
            while True:
                method, data, record = attempts.next()
                try:
                    answer = manager.exchange(
                        lease, method, data, record, engine=self.parser,
                        timeouts=attempts.timeouts, deadline=attempts.deadline,
                        max_body_size=self.max_body_size, attempt=attempts.attempt)
                except Failure as failure:
                    wait = attempts.failed(failure)
                else:
                    wait = attempts.answered(answer)
                if wait is None:
                    break
                if wait > 0:
                    gevent.sleep(wait)
        except gevent.Timeout as fired:
            if fired is not guard:
                raise
            raise attempts.expired() from None
        except Deadline:
            raise attempts.expired() from None
        finally:
            guard.close()
            attempts.close()
        return attempts.result()

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

    @property
    def connections(self) -> ConnectionManager:
        """The :class:`~napixclient.connections.ConnectionManager` this
        client sends through (its own, or its pool's)."""
        return self._manager

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
