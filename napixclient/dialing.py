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
  :data:`~napixclient.core.dial.DNS_TTL` seconds; lookups of one name at the same time share one
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
import time
from typing import Any, Dict, List, Optional, Tuple

import gevent
import gevent.socket
import gevent.ssl
from urllib3.util.ssltransport import SSLTransport

from napixclient.core.dial import (
    Address,
    Connect,
    Handshake,
    NameCache,
    Tunnel,
    connect_timed_out,
    handshake_timed_out,
    refused,
    steps,
    tls_failed,
    tunnel_broken,
    tunnel_result,
    unresolved,
)
from napixclient.core.exchange import Deadline
from napixclient.core.origin import Origin, ip_family
from napixclient.core.parser import Reading
from napixclient.core.tls import TLSContexts
from napixclient.failures import (
    ConnectionBroken,
    MalformedAnswer,
    NameNotResolved,
    os_reason,
)

__all__ = ["RECV_SIZE", "YIELD_AFTER", "Dialer", "receive"]
#: Bytes asked of a socket at once.
RECV_SIZE = 64 * 1024
#: Seconds of reading in a row after which :func:`receive` yields to the hub.
YIELD_AFTER = 0.005
# How long it then sleeps: a timer, so that the hub runs a whole turn of its
# loop, timers included (gevent.sleep(0) only runs the callbacks queued, and
# a greenlet that sleeps(0) again and again keeps the hub from its timers).
_PAUSE = 1e-6



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
    look-ups and TLS contexts: carries out the steps of
    :func:`napixclient.core.dial.steps` with gevent's sockets.

    Not thread-safe: one hub (one thread) uses it, as gevent programs do.

    :ivar contexts: the :class:`~napixclient.core.tls.TLSContexts` of gevent
        SSL contexts, one per ``(verify, cert)``.
    """

    def __init__(self) -> None:
        self._names = NameCache()
        self._lookups: Dict[Tuple[str, int], gevent.Greenlet] = {}
        self.contexts = TLSContexts(gevent.ssl.SSLContext)

    def resolve(self, host: str, port: int) -> List[Address]:
        """The addresses of ``host`` (kept for :data:`~napixclient.core.dial.DNS_TTL`
        seconds).

        :raises NameNotResolved: when the name does not resolve.
        """
        family = ip_family(host)
        if family is not None:
            return [(family, (host, port))]
        cached = self._names.get(host, port, time.monotonic())
        if cached is not None:
            return cached
        try:
            # What getaddrinfo would refuse (a label over 63 characters):
            # refused here, before gevent's resolver thread prints it.
            host.encode("idna")
        except UnicodeError as error:
            raise NameNotResolved("the host name did not resolve") from error
        key = (host, port)
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
            try:
                return self._names.put(key[0], key[1], infos, time.monotonic())
            except NameNotResolved as failure:
                return failure
        finally:
            del self._lookups[key]

    def dial(self, origin: Origin, timeout: float, deadline: float,
             engine: str) -> Tuple[Any, Any]:
        """Open a socket to ``origin``, carrying out
        :func:`~napixclient.core.dial.steps`: TCP, then TLS for https;
        through ``origin.proxy`` when there is one (TLS to an https proxy,
        then for an https origin a ``CONNECT`` tunnel and TLS with the
        origin inside it, verifying the origin's certificate and name).

        :param timeout: seconds for the TCP connect, and again for each TLS
            handshake and each wait for the proxy's answer to ``CONNECT``.
        :param deadline: :func:`time.monotonic` seconds past which reading
            the proxy's answer stops.
        :param engine: the parser engine that reads the proxy's answer.
        :returns: ``(socket, peer address)``; the socket is a gevent socket
            (or gevent SSL socket, or TLS inside TLS) with ``TCP_NODELAY``
            set; the peer is the proxy when there is one.
        :raises napixclient.failures.Failure: the kind each step's failure
            is (see :mod:`napixclient.core.dial`): ``NameNotResolved``,
            ``ConnectFailed``, ``ConnectTimedOut``, ``TLSFailed``,
            ``ProxyUnreachable``, ``ProxyFailed``.
        """
        sock: Any = None
        address: Any = None
        try:
            for step in steps(origin):
                if type(step) is Connect:
                    sock, address = self._connect(step, timeout)
                elif type(step) is Handshake:
                    sock = self._tls(sock, step, timeout)
                else:
                    self._tunnel(sock, step, timeout, deadline, engine)  # type: ignore[arg-type]
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        return sock, address

    def _tls(self, sock: Any, step: Handshake, timeout: float) -> Any:
        """TLS over ``sock``, verifying ``step.server_hostname``."""
        context = self.contexts.get(step.verify, step.cert)
        try:
            sock.settimeout(timeout)
            if step.nested:
                return _TunnelledTLS(sock, context, server_hostname=step.server_hostname)
            tls = context.wrap_socket(sock, server_hostname=step.server_hostname,
                                      do_handshake_on_connect=False)
            tls.settimeout(timeout)
            tls.do_handshake()
            return tls
        except socket.timeout as error:
            raise handshake_timed_out(step) from error
        except OSError as error:  # ssl.SSLError among them
            raise tls_failed(step, error) from error

    def _tunnel(self, sock: Any, step: Tunnel, timeout: float, deadline: float,
                engine: str) -> None:
        """Ask the proxy for a tunnel to the origin and read its answer's
        head with the core's parser (its limits hold), and nothing more."""
        reading = Reading("CONNECT", 1 << 20, engine)
        try:
            sock.settimeout(timeout)
            sock.sendall(step.request)
            receive(sock, reading, deadline, head_only=True)
        except (OSError, Deadline, ConnectionBroken, MalformedAnswer) as error:
            raise tunnel_broken(step, TimeoutError() if isinstance(error, Deadline)
                                else error) from error
        failure = tunnel_result(step, reading)
        if failure is not None:
            raise failure

    def _connect(self, step: Connect, timeout: float) -> Tuple[Any, Any]:
        try:
            addresses = self.resolve(step.host, step.port)
        except NameNotResolved as failure:
            raise unresolved(step) from failure
        last: Optional[OSError] = None
        for family, address in addresses:
            try:
                sock = gevent.socket.socket(family, socket.SOCK_STREAM)
            except OSError as error:  # no file descriptor left, for one
                raise refused(step, os_reason(error)) from error
            try:
                sock.settimeout(timeout)
                sock.connect(address)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except socket.timeout as error:
                sock.close()
                raise connect_timed_out(step) from error
            except OSError as error:
                sock.close()
                last = error
                continue
            except BaseException:
                sock.close()
                raise
            return sock, address
        assert last is not None
        raise refused(step, os_reason(last)) from last
