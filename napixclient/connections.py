"""Keep-alive connections to one host, and the HTTP/1.1 exchange over them.

:class:`~napixclient.Client` sends each request through a
:class:`HostConnections`: it takes an idle connection (or opens one with
urllib3's cooperative connection classes, so connecting, TLS and its
verification are urllib3's), writes the request head it was given in one
``sendall``, and reads the answer with a response reader:

* ``"http.client"`` (the default): the standard library's
  :class:`http.client.HTTPResponse`, the parser urllib3 itself uses;
* ``"geventhttpclient"`` (the ``fast`` extra): geventhttpclient's response
  class, whose parser is C (llhttp), for the lowest CPU per request.

Both serve every feature (TLS, chunked bodies, timeouts, ``max_body_size``,
retries); :data:`READERS` lists them.

Going below :meth:`urllib3.HTTPConnectionPool.urlopen` saves most of the
per-request cost measured in BENCHMARKS.md (urlopen's retries object, its
timeout objects, its header validation and its response wrapper). The
retry policy, a :class:`~napixclient.transport.CooperativeRetry`, is driven
here as urlopen drives it: ``increment()`` after a failure, ``sleep()``
before the next attempt.

Failures are raised as urllib3's exceptions (``NewConnectionError``,
``ConnectTimeoutError``, ``ReadTimeoutError``, ``ProtocolError``,
``SSLError``, ``MaxRetryError``), as :meth:`~urllib3.HTTPConnectionPool.urlopen`
would, or as :class:`BodyLimitExceeded`.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Type

from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util.ssl_match_hostname import CertificateError

from napixclient.transport import (
    CooperativeHTTPConnection,
    CooperativeHTTPSConnection,
    CooperativeRetry,
    StaleConnectionError,
    Verify,
    tls_connection_kwargs,
)

__all__ = ["READERS", "Answer", "BodyLimitExceeded", "HostConnections", "available_transports",
           "reader"]

_READ_CHUNK = 256 * 1024
_BROKEN = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)
_log = logging.getLogger(__name__)
# Retries nothing but the single stale kept-alive connection.
_NO_RETRY = CooperativeRetry.policy()


class BodyLimitExceeded(Exception):
    """The answer's body is larger than ``max_body_size``.

    :ivar length: the announced ``Content-Length`` (``int``), or ``None``
        when the body had no length and grew past the limit.
    :ivar status: the answer's status (``int``).
    """

    def __init__(self, length: Optional[int], status: int) -> None:
        super().__init__(length, status)
        self.length = length
        self.status = status


class Answer(NamedTuple):
    """What came back: ``status`` (``int``), ``reason`` (``str``), ``headers``
    (case-insensitive; repeated fields joined with ``", "``), ``content``
    (the whole body, ``bytes``)."""

    status: int
    reason: str
    headers: CaseInsensitiveDict[str]
    content: bytes


# -- response readers ----------------------------------------------------------
#
# A reader reads an answer in two steps, so that a failure before its head
# (a stale kept-alive connection) can be told from one in its body:
# ``begin(sock, method)`` reads the status line and fields and returns the
# reader's response object; ``finish(response, max_body_size)`` reads the
# body and returns the Answer and whether the connection may carry another
# request. Both raise socket.timeout, OSError, a parse error (listed in
# _PARSE_ERRORS) or, for finish, BodyLimitExceeded.


class Reader(NamedTuple):
    """A response reader: its two steps (see above)."""

    begin: Callable[[Any, str], Any]
    finish: Callable[[Any, int], Tuple[Answer, bool]]


def _join_fields(fields: Any) -> CaseInsensitiveDict[str]:
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
    for name, value in fields:
        previous = headers.get(name)
        headers[name] = value if previous is None else f"{previous}, {value}"
    return headers


def _read_limited(read: Callable[[int], bytes], max_body_size: int, status: int) -> bytes:
    chunks: List[bytes] = []
    total = 0
    while True:
        chunk = read(_READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_body_size:
            raise BodyLimitExceeded(None, status)
        chunks.append(chunk)


def _check_framing(message: Any) -> None:
    """Refuse ambiguous framing, as RFC 9112 (section 6.3, rules 3 and 5)
    advises and as geventhttpclient's parser does, where http.client alone
    would guess: ``Transfer-Encoding`` with ``Content-Length``, a repeated
    ``Content-Length``, or one that is not a non-negative number.

    :raises http.client.HTTPException: for such an answer.
    """
    lengths = message.get_all("Content-Length") or ()
    if lengths and (len(lengths) > 1 or "Transfer-Encoding" in message
                    or not (lengths[0].strip().isascii() and lengths[0].strip().isdigit())):
        raise http.client.HTTPException("ambiguous or invalid Content-Length")


def _begin_http_client(sock: Any, method: str) -> http.client.HTTPResponse:
    response = http.client.HTTPResponse(sock, method=method)
    try:
        response.begin()
        _check_framing(response.msg)
    except BaseException:
        response.close()
        raise
    return response


def _finish_http_client(response: http.client.HTTPResponse,
                        max_body_size: int) -> Tuple[Answer, bool]:
    try:
        length = response.length
        if length is not None and length > max_body_size:
            raise BodyLimitExceeded(length, response.status)
        content = (response.read() if length is not None
                   else _read_limited(response.read, max_body_size, response.status))
        headers = _join_fields(response.msg.items())
        return (Answer(response.status, response.reason or "", headers, content),
                not response.will_close)
    finally:
        response.close()


#: :class:`http.client.HTTPResponse`, the parser urllib3 uses (RFC 9112:
#: ``Content-Length``, chunked or close-delimited bodies, no body for HEAD,
#: 1xx, 204 and 304).
HTTP_CLIENT = Reader(_begin_http_client, _finish_http_client)

# What a reader raises for a broken answer, besides what it maps to
# http.client's exceptions (geventhttpclient's HTTPParseError is an
# http.client.HTTPException too).
_READ_ERRORS: Tuple[Type[BaseException], ...] = (OSError, http.client.HTTPException)


def _incomplete(response: Any) -> http.client.IncompleteRead:
    """What http.client raises for a body cut short or badly chunked."""
    partial = bytes(response._body_buffer)
    length = response.content_length
    return http.client.IncompleteRead(
        partial, None if length is None else max(0, length - len(partial)))


def _load_gevent() -> Reader:
    """geventhttpclient's reader, imported on first use (the ``fast`` extra),
    so that importing napixclient never imports geventhttpclient.

    :raises ImportError: when geventhttpclient is not installed.
    """
    from geventhttpclient.response import (
        HTTPConnectionClosed,
        HTTPParseError,
        HTTPSocketResponse,
    )

    def begin(sock: Any, method: str) -> Any:
        # The constructor reads and parses until the end of the fields; its
        # errors are told apart as http.client's would be, so that a failure
        # reads the same whatever the transport.
        response = HTTPSocketResponse.__new__(HTTPSocketResponse)
        try:
            HTTPSocketResponse.__init__(response, sock, method=method)
        except HTTPConnectionClosed as error:
            # Closed or reset before a byte of the answer: a stale connection.
            raise http.client.RemoteDisconnected(str(error)) from error
        except HTTPParseError as error:
            if response.headers_complete:  # the body's first bytes were malformed
                raise _incomplete(response) from error
            if response.status_message is None:
                raise http.client.BadStatusLine("not HTTP") from error
            raise http.client.HTTPException("malformed header") from error
        return response

    def finish(response: Any, max_body_size: int) -> Tuple[Answer, bool]:
        try:
            length = response.content_length
            if length is not None and length > max_body_size:
                raise BodyLimitExceeded(length, response.status_code)
            try:
                content = (response.read() if length is not None else
                           _read_limited(response.read, max_body_size, response.status_code))
            except HTTPParseError as error:
                raise _incomplete(response) from error
            if not response.message_complete:
                raise http.client.IncompleteRead(content, None if length is None
                                                 else max(0, length - len(content)))
            headers = _join_fields(response.items())
            return (Answer(response.status_code, response.status_message or "", headers,
                           content), response.should_keep_alive())
        finally:
            # The socket is ours: geventhttpclient's release() would not reuse it.
            response._sock = None

    return Reader(begin, finish)


#: The response readers loaded so far, by the name :class:`~napixclient.Client`
#: takes; see :func:`available_transports` for all that can load.
READERS: Dict[str, Reader] = {"http.client": HTTP_CLIENT}
#: Optional readers: name -> (loader, the extra that installs it).
_OPTIONAL: Dict[str, Tuple[Callable[[], Reader], str]] = {
    "geventhttpclient": (_load_gevent, "fast"),
}


def reader(name: str) -> Reader:
    """Return the response reader called ``name``, loading an optional one
    on first use.

    :raises ValueError: for an unknown name, or ``"geventhttpclient"`` when
        the ``fast`` extra (geventhttpclient) is not installed.
    """
    if not isinstance(name, str):
        raise ValueError(f"transport must be a str such as 'http.client', got {name!r}")
    if name not in READERS and name in _OPTIONAL:
        load, extra = _OPTIONAL[name]
        try:
            READERS[name] = load()
        except ImportError:
            raise ValueError(f"transport {name!r} needs the {extra} extra: "
                             f"pip install 'napixclient[{extra}]'") from None
    if name not in READERS:
        names = sorted(set(READERS) | set(_OPTIONAL))
        raise ValueError(f"transport must be one of {names}, got {name!r}")
    return READERS[name]


def available_transports() -> List[str]:
    """The names of the transports that can be used here (``http.client``,
    and ``geventhttpclient`` when the ``fast`` extra is installed), sorted."""
    names = []
    for name in sorted(set(READERS) | set(_OPTIONAL)):
        try:
            reader(name)
        except ValueError:
            continue
        names.append(name)
    return names


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
    :param read: a response reader, by name (see :data:`READERS`).
    :raises ValueError: for another scheme or an unknown reader.
    """

    def __init__(self, scheme: str, host: str, port: Optional[int], *, maxsize: int,
                 verify: Verify = True, read: str = "http.client") -> None:
        self._read = reader(read)
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
        except (ssl.SSLError, CertificateError) as error:
            connection.close()
            raise SSLError(error) from error
        except socket.timeout as error:
            connection.close()
            raise ConnectTimeoutError(connection, "TLS handshake timed out") from error
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

    def _once(self, method: str, target: str, data: bytes, timeout: Tuple[float, float],
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
                raise ReadTimeoutError(None, target,  # type: ignore[arg-type]
                                       f"Read timed out. (read timeout={timeout[1]})"
                                       ) from error
            except _BROKEN as error:
                if reused and not head:
                    # The server closed a kept-alive connection as this
                    # request arrived (the keep-alive race).
                    raise ProtocolError("Connection aborted.", StaleConnectionError()) from error
                raise ProtocolError("Connection aborted." if not head else "Connection broken.",
                                    error) from error
            except _READ_ERRORS as error:
                raise ProtocolError("Connection aborted.", error) from error
            reusable = keep
            return answer
        finally:
            self._checkin(connection, reusable)

    def exchange(self, method: str, target: str, data: bytes, *,
                 timeout: Tuple[float, float], max_body_size: int,
                 retry: Optional[CooperativeRetry] = None) -> Answer:
        """Send one request and read its whole answer.

        :param method: the method, upper case (it tells the reader whether a
            body follows, and the retry policy whether it may be repeated).
        :param target: the request target (for error messages and the retry
            history).
        :param data: the request as it goes on the wire: head and body.
        :param timeout: ``(connect, read)`` seconds; ``read`` bounds each
            wait for data.
        :param max_body_size: the most bytes of body read.
        :param retry: which failures are retried, how often, after what
            backoff: a :class:`~napixclient.transport.CooperativeRetry`
            (default: ``CooperativeRetry.policy()``, only the single retry of
            a stale kept-alive connection).
        :returns: the :class:`Answer`.
        :raises urllib3.exceptions.HTTPError: a subclass, for a failure
            (``NewConnectionError``, ``ConnectTimeoutError``,
            ``ReadTimeoutError``, ``ProtocolError``, ``SSLError``), or
            ``MaxRetryError`` when the retries ran out (its ``reason`` is the
            last failure).
        :raises BodyLimitExceeded: for a body over ``max_body_size``.
        :raises RuntimeError: once :meth:`close` was called.
        """
        if retry is None:
            retry = _NO_RETRY
        while True:
            if self._closed:
                raise RuntimeError("the connections are closed")
            try:
                return self._once(method, target, data, timeout, max_body_size)
            except (NewConnectionError, ProtocolError) as error:
                # Raises the error itself, or MaxRetryError, when it is not
                # to be retried.
                retry = retry.increment(method, target, error=error,
                                        _stacktrace=error.__traceback__)
                # target is the record's path: secret parameters already read ***.
                _log.debug("Retrying %s %s on a new connection after %s", method, target,
                           _reason(error))
            retry.sleep()

    def close(self) -> None:
        """Close every idle connection; a connection in use is closed when its
        exchange ends. Later exchanges raise :class:`RuntimeError`."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def _reason(error: BaseException) -> str:
    cause = error.args[1] if isinstance(error, ProtocolError) else error
    return type(cause).__name__
