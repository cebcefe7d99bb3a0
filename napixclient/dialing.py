"""The gevent driver's sockets: names resolved, TCP connected, TLS negotiated,
directly or through a proxy, and answers read.

The connection manager (:mod:`napixclient.connections`) calls
:meth:`Dialer.dial` whenever it needs a new socket, and :func:`receive` to
read an answer. Everything here yields to the gevent hub while it waits
(gevent's socket, its resolver and its SSL module), whether or not the
program monkey-patched, and translates what goes wrong into
:mod:`napixclient.failures` where it happens. What is decided (which proxy,
which TLS context, the bytes of a ``CONNECT``, how an answer is parsed) is
the core's (:mod:`napixclient.core`).

* Names are resolved through gevent's resolver (by default a thread pool, so
  a slow DNS server never blocks the hub), once per :class:`Dialer` for
  :data:`DNS_TTL` seconds; lookups of one name at the same time share one
  query, which runs in a greenlet of its own, so that a request killed
  while it waits fails no other. IP addresses are never sent to the resolver.
* TLS: one :class:`gevent.ssl.SSLContext` per configuration
  (:class:`~napixclient.core.tls.TLSContexts`).
* Proxies: an ``http`` origin is reached through the proxy's own connection
  (the request target in absolute form, RFC 9112 section 3.2.2); an
  ``https`` origin through a ``CONNECT`` tunnel (RFC 9110, section 9.3.6),
  inside which TLS is negotiated with the origin and the *origin's*
  certificate verified. An ``https://`` proxy is itself reached over TLS;
  a tunnel through it is TLS inside TLS (urllib3's
  :class:`~urllib3.util.ssltransport.SSLTransport`).
* :func:`receive` reads from a socket into a
  :class:`~napixclient.core.parser.Reading`, checks the deadline after each
  read, and yields to the hub after :data:`YIELD_AFTER` seconds of reading
  in a row: in gevent, ``recv`` only yields when no data is ready, so a
  server that sends faster than the client parses would otherwise hold
  every greenlet of the process.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections import OrderedDict
from typing import Any, List, Optional, Tuple

import gevent
import gevent.socket
import gevent.ssl
from urllib3.util.ssltransport import SSLTransport

from napixclient.core.origin import Origin, ip_family
from napixclient.core.parser import Reading
from napixclient.core.proxies import Proxy, connect_request
from napixclient.core.tls import TLSContexts, tls_reason
from napixclient.failures import (
    ConnectFailed,
    ConnectionBroken,
    ConnectTimedOut,
    MalformedAnswer,
    NameNotResolved,
    ProxyFailed,
    ProxyUnreachable,
    TLSFailed,
    os_reason,
    status_text,
)

__all__ = ["DNS_TTL", "RECV_SIZE", "YIELD_AFTER", "Deadline", "Dialer", "receive"]

#: How long a resolved name is reused, in seconds.
DNS_TTL = 10.0
#: Bytes asked of a socket at once.
RECV_SIZE = 64 * 1024
#: Seconds of reading in a row after which :func:`receive` yields to the hub.
YIELD_AFTER = 0.005
# How long it then sleeps: a timer, so that the hub runs a whole turn of its
# loop, timers included (gevent.sleep(0) only runs the callbacks queued, and
# a greenlet that sleeps(0) again and again keeps the hub from its timers).
_PAUSE = 1e-6

Address = Tuple[int, Any]  # (family, sockaddr)


class Deadline(Exception):
    """The deadline of an exchange passed while its answer was read."""


def receive(sock: Any, reading: Reading, deadline: float, head_only: bool = False) -> None:
    """Read an answer from ``sock`` into ``reading`` until it is whole (or,
    with ``head_only``, until its head is read).

    After each read it checks the deadline, and after :data:`YIELD_AFTER`
    seconds of reads in a row it yields to the hub, so that a host that
    floods never holds the other greenlets, whatever it sends.

    :param sock: a connected gevent socket, with its read timeout set.
    :param reading: the :class:`~napixclient.core.parser.Reading`.
    :param deadline: :func:`time.monotonic` seconds past which to stop.
    :raises Deadline: when the deadline passed.
    :raises OSError: as the socket raises it (``TimeoutError`` included).
    :raises napixclient.failures.Failure: as the parser raises it.
    """
    recv = sock.recv
    monotonic = time.monotonic
    resumed = monotonic()
    while True:
        data = recv(RECV_SIZE)
        if not data:
            reading.feed_eof()
            return
        if reading.feed(data) or (head_only and reading.head is not None):
            return
        now = monotonic()
        if now >= deadline:
            raise Deadline()
        if now - resumed >= YIELD_AFTER:
            gevent.sleep(_PAUSE)
            resumed = monotonic()


class _TunnelledTLS(SSLTransport):
    """TLS with the origin inside TLS with an https proxy: urllib3's
    :class:`~urllib3.util.ssltransport.SSLTransport` over the proxy's TLS
    socket (the standard library cannot wrap an SSL socket again), with
    ``pending()``, which the idle check asks for: whether bytes already
    read wait to be decrypted or taken."""

    def pending(self) -> int:
        """Bytes decrypted, or received and not yet decrypted, not yet read."""
        outer = getattr(self.socket, "pending", None)
        return int(self.sslobj.pending() or self.incoming.pending
                   or (outer() if outer is not None else 0))


class Dialer:
    """Opens sockets to origins, directly or through proxies, sharing name
    look-ups and TLS contexts.

    Not thread-safe: one hub (one thread) uses it, as gevent programs do.

    :ivar contexts: the :class:`~napixclient.core.tls.TLSContexts` of gevent
        SSL contexts, one per ``(verify, cert)``.
    """

    def __init__(self) -> None:
        # (host, port) -> (expiry, addresses), oldest first: expired entries
        # are dropped from the front, so a pool that meets a million names a
        # day keeps only those of the last DNS_TTL seconds.
        self._names: "OrderedDict[Tuple[str, int], Tuple[float, List[Address]]]" = \
            OrderedDict()
        self._lookups: dict = {}
        self.contexts = TLSContexts(gevent.ssl.SSLContext)

    def resolve(self, host: str, port: int) -> List[Address]:
        """The addresses of ``host`` (kept for :data:`DNS_TTL` seconds).

        :raises NameNotResolved: when the name does not resolve.
        """
        family = ip_family(host)
        if family is not None:
            return [(family, (host, port))]
        key = (host, port)
        now = time.monotonic()
        names = self._names
        while names:
            oldest = next(iter(names.values()))
            if oldest[0] > now:
                break
            names.popitem(last=False)
        cached = names.get(key)
        if cached is not None:
            return cached[1]
        try:
            # What getaddrinfo would refuse (a label over 63 characters):
            # refused here, before gevent's resolver thread prints it.
            host.encode("idna")
        except UnicodeError as error:
            raise NameNotResolved("the host name did not resolve") from error
        lookup = self._lookups.get(key)
        if lookup is None:
            # In a greenlet of its own: killing one waiter (a cancelled
            # request, a caller's gevent.Timeout) interrupts that waiter only.
            lookup = self._lookups[key] = gevent.spawn(self._lookup, key)
        found = lookup.get()
        if isinstance(found, NameNotResolved):
            # The lookup's failure is its value: gevent prints a traceback
            # for a greenlet that ends with an exception.
            raise NameNotResolved(found.message) from found.__cause__
        return found  # type: ignore[no-any-return]

    def _lookup(self, key: Tuple[str, int]) -> Any:
        """The addresses of ``key`` (``List[Address]``), or the
        :class:`NameNotResolved` to raise in each waiter."""
        try:
            try:
                infos = gevent.socket.getaddrinfo(key[0], key[1], 0, socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError) as error:
                failure = NameNotResolved("the host name did not resolve")
                failure.__cause__ = error
                return failure
            addresses = [(info[0], info[4]) for info in infos]
            if not addresses:
                return NameNotResolved("the host name did not resolve")
            self._names[key] = (time.monotonic() + DNS_TTL, addresses)
            return addresses
        finally:
            del self._lookups[key]

    def dial(self, origin: Origin, timeout: float, deadline: float,
             engine: str) -> Tuple[Any, Any]:
        """Open a socket to ``origin``: TCP, then TLS for https; through
        ``origin.proxy`` when there is one (TLS to an https proxy, then for
        an https origin a ``CONNECT`` tunnel and TLS with the origin inside
        it, verifying the origin's certificate and name).

        :param timeout: seconds for the TCP connect, and again for each TLS
            handshake and each wait for the proxy's answer to ``CONNECT``.
        :param deadline: :func:`time.monotonic` seconds past which reading
            the proxy's answer stops (:class:`Deadline`).
        :param engine: the parser engine that reads the proxy's answer.
        :returns: ``(socket, peer address)``; the socket is a gevent socket
            (or gevent SSL socket, or TLS inside TLS) with ``TCP_NODELAY``
            set; the peer is the proxy when there is one.
        :raises NameNotResolved: the name did not resolve.
        :raises ConnectFailed: every address refused or was unreachable.
        :raises ConnectTimedOut: connecting, a TLS handshake or a wait for
            the proxy's answer to ``CONNECT`` took longer than ``timeout``.
        :raises TLSFailed: the handshake with the origin failed or its
            certificate was refused.
        :raises ProxyUnreachable: the proxy's name did not resolve, or it
            refused the connection.
        :raises ProxyFailed: TLS with an https proxy failed, or the proxy
            answered ``CONNECT`` with anything but 2xx, not in HTTP, or
            beyond the parser's limits.
        """
        proxy = origin.proxy
        if proxy is None:
            sock, address = self._connect(origin.host, origin.port, timeout)
            if origin.scheme != "https":
                return sock, address
            context = self.contexts.get(origin.verify, origin.cert)
            return self._tls(sock, context, origin.host, timeout), address
        try:
            sock, address = self._connect(proxy.host, proxy.port, timeout)
        except (ConnectFailed, NameNotResolved) as failure:
            raise ProxyUnreachable(f"could not connect to the proxy {proxy}: "
                                   f"{failure.message.split(': ', 1)[-1]}", proxy) from failure
        except ConnectTimedOut as failure:
            raise ConnectTimedOut(f"timed out while connecting to the proxy {proxy}") \
                from failure
        try:
            if proxy.scheme == "https":
                sock = self._tls(sock, self.contexts.get(origin.verify), proxy.host, timeout,
                                 proxy=proxy)
            if origin.scheme == "https":
                self._tunnel(sock, origin, proxy, timeout, deadline, engine)
                context = self.contexts.get(origin.verify, origin.cert)
                sock = self._tls(sock, context, origin.host, timeout,
                                 nested=proxy.scheme == "https")
        except BaseException:
            sock.close()
            raise
        return sock, address

    def _tls(self, sock: Any, context: ssl.SSLContext, server_hostname: str, timeout: float,
             *, proxy: Optional[Proxy] = None, nested: bool = False) -> Any:
        """TLS over ``sock`` (closed on failure), verifying ``server_hostname``.

        :param proxy: the proxy when the handshake is with it (failures are
            then :class:`ProxyFailed`).
        :param nested: ``sock`` is itself TLS (an https proxy's).
        """
        def failed(detail: str) -> Exception:
            if proxy is not None:
                return ProxyFailed(f"TLS with the proxy {proxy} failed: {detail}", proxy)
            return TLSFailed(f"TLS failed: {detail}")

        try:
            sock.settimeout(timeout)
            if nested:
                return _TunnelledTLS(sock, context, server_hostname=server_hostname)
            tls = context.wrap_socket(sock, server_hostname=server_hostname,
                                      do_handshake_on_connect=False)
            tls.settimeout(timeout)
            tls.do_handshake()
            return tls
        except ssl.SSLCertVerificationError as error:
            sock.close()
            detail = ", ".join(str(part) for part in (error.reason, error.verify_message)
                               if part)
            raise failed(detail or "the certificate was refused") from error
        except ssl.SSLError as error:
            sock.close()
            raise failed(tls_reason(error) if error.reason else "the handshake failed") \
                from error
        except socket.timeout as error:
            sock.close()
            where = f" with the proxy {proxy}" if proxy is not None else ""
            raise ConnectTimedOut(f"timed out while connecting (TLS handshake{where})") \
                from error
        except OSError as error:
            sock.close()
            raise failed(os_reason(error)) from error
        except BaseException:
            sock.close()
            raise

    def _tunnel(self, sock: Any, origin: Origin, proxy: Proxy, timeout: float,
                deadline: float, engine: str) -> None:
        """Ask ``proxy`` for a tunnel to ``origin`` and read its answer's
        head with the core's parser (its limits hold), and nothing more.

        :raises ProxyFailed: for an answer other than 2xx, none in HTTP, or
            one beyond the parser's limits.
        :raises ConnectTimedOut: when a wait for the answer takes longer
            than ``timeout``.
        """
        reading = Reading("CONNECT", 1 << 20, engine)
        try:
            sock.settimeout(timeout)
            sock.sendall(connect_request(origin.host, origin.port, proxy))
            receive(sock, reading, deadline, head_only=True)
        except socket.timeout as error:
            raise ConnectTimedOut(f"timed out while waiting for the proxy {proxy} to answer "
                                  "CONNECT") from error
        except Deadline:
            raise ConnectTimedOut(f"timed out while waiting for the proxy {proxy} to answer "
                                  "CONNECT") from None
        except ConnectionBroken as failure:
            raise ProxyFailed(f"the proxy {proxy} closed the connection when asked to "
                              "CONNECT", proxy) from failure
        except MalformedAnswer as failure:
            detail = failure.message.split(": ", 1)[-1]
            raise ProxyFailed(f"the proxy {proxy} did not answer CONNECT in HTTP ({detail})",
                              proxy) from failure
        except OSError as error:
            raise ProxyFailed(f"the proxy {proxy} closed the connection when asked to "
                              "CONNECT", proxy) from error
        assert reading.head is not None
        status = reading.head.status
        if not 200 <= status < 300:
            raise ProxyFailed(f"the proxy {proxy} answered {status_text(status)} to CONNECT",
                              proxy, status=status)
        if reading.end is not None and reading.end.rest:
            raise ProxyFailed(f"the proxy {proxy} sent bytes after its answer to CONNECT",
                              proxy)

    def _connect(self, host: str, port: int, timeout: float) -> Tuple[Any, Any]:
        addresses = self.resolve(host, port)
        last: Optional[OSError] = None
        for family, address in addresses:
            try:
                sock = gevent.socket.socket(family, socket.SOCK_STREAM)
            except OSError as error:  # no file descriptor left, for one
                raise ConnectFailed(f"could not connect: {os_reason(error)}") from error
            try:
                sock.settimeout(timeout)
                sock.connect(address)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except socket.timeout as error:
                sock.close()
                raise ConnectTimedOut("timed out while connecting") from error
            except OSError as error:
                sock.close()
                last = error
                continue
            except BaseException:
                sock.close()
                raise
            return sock, address
        assert last is not None
        raise ConnectFailed(f"could not connect: {os_reason(last)}") from last

