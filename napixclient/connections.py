"""Keep-alive connections to one host, and the HTTP/1.1 exchange over them.

:class:`~napixclient.Client` sends each request through a
:class:`HostConnections`: it takes an idle connection (or opens one with
urllib3's cooperative connection classes, so connecting, TLS and its
verification are urllib3's), writes the request it was given in one
``sendall``, and reads the answer with a parser of :mod:`napixclient.http11`.

Socket and TLS errors are translated here, where they happen, into
:mod:`napixclient.failures`; the retry policy (:mod:`napixclient.retry`) is
driven here, its waits spent in :func:`gevent.sleep`.
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any, Dict, List, Optional, Tuple

import gevent
from urllib3.exceptions import (
    ConnectTimeoutError,
    NameResolutionError,
    NewConnectionError,
)
from urllib3.util.ssl_match_hostname import CertificateError

from napixclient.failures import (
    ConnectFailed,
    ConnectionBroken,
    ConnectTimedOut,
    NameNotResolved,
    ReadTimedOut,
    TLSFailed,
    TransportFailure,
)
from napixclient.http11 import BROKE, Answer, parser
from napixclient.retry import RetryPolicy
from napixclient.transport import (
    CooperativeHTTPConnection,
    CooperativeHTTPSConnection,
    Verify,
    tls_connection_kwargs,
)

__all__ = ["HostConnections"]

_log = logging.getLogger(__name__)
# Retries nothing but the single stale kept-alive connection.
_NO_RETRY = RetryPolicy()


def _STALE() -> ConnectionBroken:
    """The failure of a kept-alive connection closed before the answer began."""
    return ConnectionBroken(BROKE + "the server closed the kept-alive connection before "
                            "answering", before_answer=True, stale=True)


# -- connections ---------------------------------------------------------------

class HostConnections:
    """Keep-alive connections to one destination, and requests over them.

    Not a pool of its own: the caller runs at most ``maxsize`` exchanges at
    once (a gevent semaphore), so an idle list is enough. A connection goes
    back to it only after an answer was read whole and the server did not
    ask to close; one that failed, timed out or was interrupted (a
    ``gevent.Timeout``, a killed greenlet) is closed, so a half-read
    connection never serves another request.

    :param scheme: ``"http"`` or ``"https"``.
    :param host: the host name or IP address (no brackets for IPv6).
    :param port: the TCP port, or ``None`` for the scheme's default.
    :param maxsize: the most idle connections kept (``int`` >= 1).
    :param verify: TLS verification (see :func:`~napixclient.transport.ssl_context`).
    :param read: a parser, by name (see :data:`napixclient.http11.PARSERS`).
    :raises ValueError: for another scheme or an unknown reader.
    """

    def __init__(self, scheme: str, host: str, port: Optional[int], *, maxsize: int,
                 verify: Verify = True, read: str = "http.client") -> None:
        self._read = parser(read)
        if scheme == "http":
            self._connection_class: Any = CooperativeHTTPConnection
            self._connection_kwargs: Dict[str, Any] = {}
        elif scheme == "https":
            self._connection_class = CooperativeHTTPSConnection
            self._connection_kwargs = tls_connection_kwargs(verify)
        else:
            raise ValueError(f"scheme must be 'http' or 'https', not {scheme!r}")
        self.host = host
        self.port = port if port is not None else (443 if scheme == "https" else 80)
        self.maxsize = maxsize
        self._idle: List[Any] = []
        self._closed = False

    def _open(self, connect_timeout: float) -> Any:
        connection = self._connection_class(self.host, self.port, timeout=connect_timeout,
                                            **self._connection_kwargs)
        try:
            connection.connect()
        except NameResolutionError as error:
            connection.close()
            raise NameNotResolved("the host name did not resolve") from error
        except NewConnectionError as error:
            connection.close()
            raise ConnectFailed(f"could not connect: {_describe(error)}") from error
        except ConnectTimeoutError as error:
            connection.close()
            raise ConnectTimedOut("timed out while connecting") from error
        except (ssl.SSLError, CertificateError) as error:
            connection.close()
            raise TLSFailed(f"TLS failed: {_tls_reason(error)}") from error
        except socket.timeout as error:
            connection.close()
            raise ConnectTimedOut("timed out while connecting") from error
        except BaseException:
            connection.close()
            raise
        return connection

    def _checkout(self, connect_timeout: float) -> Tuple[Any, bool]:
        """A connection, and whether it already carried an answer."""
        while self._idle:
            connection = self._idle.pop()
            # Readable while idle: the server closed it (or sent junk).
            if connection.is_connected:
                return connection, True
            connection.close()
        return self._open(connect_timeout), False

    def _checkin(self, connection: Any, reusable: bool) -> None:
        if reusable and not self._closed and len(self._idle) < self.maxsize:
            self._idle.append(connection)
        else:
            connection.close()

    def _once(self, method: str, data: bytes, timeout: Tuple[float, float],
              max_body_size: int) -> Answer:
        connection, reused = self._checkout(timeout[0])
        reusable = False
        head = False
        try:
            sock = connection.sock
            sock.settimeout(timeout[1])
            try:
                sock.sendall(data)
                response = self._read.begin(sock, method)
                head = True
                answer, keep = self._read.finish(response, max_body_size)
            except socket.timeout as error:
                raise ReadTimedOut("timed out while reading the answer") from error
            except ConnectionBroken as error:
                if reused and error.before_answer:
                    raise _STALE() from error
                raise
            except OSError as error:
                if reused and not head:
                    raise _STALE() from error
                reason = error.strerror.lower() if error.strerror else type(error).__name__
                raise ConnectionBroken(BROKE + reason, before_answer=not head) from error
            reusable = keep
            return answer
        finally:
            self._checkin(connection, reusable)

    def exchange(self, method: str, data: bytes, *,
                 timeout: Tuple[float, float], max_body_size: int,
                 retry: Optional[RetryPolicy] = None, target: str = "") -> Answer:
        """Send one request and read its whole answer.

        :param method: the method, upper case (it tells the parser whether a
            body follows, and the retry policy whether it may be repeated).
        :param data: the request as it goes on the wire: head and body.
        :param timeout: ``(connect, read)`` seconds; ``read`` bounds each
            wait for data.
        :param max_body_size: the most bytes of body read.
        :param retry: which failures are retried, how often, after what
            backoff (default: only the single retry of a stale kept-alive
            connection).
        :param target: the request target with its secrets masked, for
            the log.
        :returns: the :class:`~napixclient.http11.Answer`.
        :raises napixclient.failures.TransportFailure: a subclass, for the
            last failure when it is not retried.
        :raises RuntimeError: once :meth:`close` was called.
        """
        policy = _NO_RETRY if retry is None else retry
        while True:
            if self._closed:
                raise RuntimeError("the connections are closed")
            try:
                return self._once(method, data, timeout, max_body_size)
            except TransportFailure as failure:
                following = policy.after(method, failure)
                if following is None:
                    raise
                policy = following
                _log.debug("Retrying %s %s on a new connection after: %s", method, target,
                           failure)
            wait = policy.backoff()
            if wait > 0:
                gevent.sleep(wait)

    def close(self) -> None:
        """Close every idle connection; a connection in use is closed when its
        exchange ends. Later exchanges raise :class:`RuntimeError`."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def _describe(error: BaseException) -> str:
    """A short, secret-free description of a connect failure."""
    cause: Optional[BaseException] = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
        if cause is error:
            break
    return type(error).__name__


def _tls_reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    detail = getattr(error, "verify_message", None)
    if reason or detail:
        return ", ".join(str(part) for part in (reason, detail) if part)
    return "handshake or certificate verification failed"
