"""Test servers in a thread of their own, with a gevent hub of their own.

A gevent server serves from the hub of the thread that started it, and that
hub runs only while that thread waits through gevent. An asyncio program
waits in its event loop instead, and plain blocking code waits in the
kernel: either way a server in the calling thread's hub would never answer.
:class:`HubThread` starts a server in a new thread, which gets a hub of its
own (gevent makes one per thread), and keeps that hub running until
:meth:`HubThread.stop`. Nothing is monkey-patched.

:meth:`NapixTestServer.start(thread=True)
<napixclient.testing.NapixTestServer.start>` and ``async with
NapixTestServer(...)`` use it; so can any other gevent server with a start
and a stop function (the project's own tests run their raw fault server and
their TLS servers this way). Make the server *in* the start function: a
gevent server takes the hub of the thread that makes it, and one made in the
calling thread would accept connections only when that thread's hub runs::

    from gevent.server import StreamServer
    from napixclient.testing.threads import HubThread

    def serve():
        server = StreamServer(("127.0.0.1", 0), handle)    # in the new thread
        server.start()
        return server

    thread = HubThread(serve, lambda timeout: thread.value.stop(timeout=timeout))
    server = thread.start()             # what serve() returned, listening
    ...
    thread.stop()

The server's own code (route handlers, a WSGI ``app``) then runs in that
thread: it may read and write plain Python objects the test shares with it,
but must not touch the caller's event loop other than through
:meth:`asyncio.loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

import gevent

# get_hub_if_exists is not exported by gevent.hub, but it is what gevent's own
# thread pool uses to tell a thread that has a hub from one that has none.
from gevent._hub_local import get_hub_if_exists
from gevent.event import Event

__all__ = ["JOIN_MARGIN", "START_TIMEOUT", "HubThread"]

#: Seconds :meth:`HubThread.start` waits for the server to be listening.
START_TIMEOUT = 10.0

#: Seconds :meth:`HubThread.stop` waits for the thread beyond twice the
#: stop function's own timeout (a server may join, then kill, its handlers).
JOIN_MARGIN = 5.0

#: Seconds between two looks of the serving thread at its stop flag, in case
#: a wake-up from another thread is lost (it is not expected to be).
_POLL = 1.0


class HubThread:
    """One server served from a thread of its own, with its own gevent hub.

    :param start: ``Callable[[], Any]`` called in the new thread to make the
        server and start serving (bind, listen, spawn the acceptor); it must
        return once the server is listening. What it returns is
        :attr:`value`; what it raises, :meth:`start` raises.
    :param stop: ``Callable[[float], Any]`` called in the thread with a
        timeout in seconds, to stop serving and end the connection handlers.
    :param name: the thread's name (``str``), as :mod:`threading` shows it.
    :raises TypeError: if ``start`` or ``stop`` is not callable.

    The thread is a daemon: a program that forgets to stop it still exits.
    """

    def __init__(self, start: Callable[[], Any], stop: Callable[[float], Any],
                 name: str = "napix-test-server") -> None:
        if not callable(start) or not callable(stop):
            raise TypeError("HubThread: start and stop must be callable")
        self._start = start
        self._stop = stop
        self._name = name
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None
        # Guards _loop: a wake-up must not reach a hub being destroyed.
        self._lock = threading.Lock()
        self._loop: Any = None
        self._stop_requested: Optional[Event] = None
        self._stop_timeout = 1.0
        self._stopped = False
        #: What the start function returned (``None`` until it has).
        self.value: Any = None

    def __repr__(self) -> str:
        state = ("new" if self._thread is None else
                 "running" if self._thread.is_alive() else "stopped")
        return f"HubThread({self._name!r}, {state})"

    @property
    def is_current(self) -> bool:
        """Whether the calling code runs in this thread (``bool``): a route
        handler of the server does."""
        return self._thread is not None and threading.current_thread() is self._thread

    @property
    def running(self) -> bool:
        """Whether the thread was started and has not ended (``bool``)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = START_TIMEOUT) -> Any:
        """Start the thread, and return once the server is listening.

        :param timeout: seconds to wait for ``start`` to return in the
            thread.
        :returns: what the start function returned (:attr:`value`).
        :raises RuntimeError: if called twice, or if the server was not
            listening after ``timeout`` seconds.
        :raises BaseException: whatever ``start`` raised in the thread (an
            :class:`OSError` when the port cannot be bound, for instance).
        """
        if self._thread is not None:
            raise RuntimeError("HubThread: already started")
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            try:
                self.stop()
            except RuntimeError:
                pass  # the thread is a daemon; what matters is said below
            raise RuntimeError(f"HubThread: the server was not listening after {timeout:g} s")
        if self._error is not None:
            self._thread.join(JOIN_MARGIN)
            raise self._error
        return self.value

    def stop(self, timeout: float = 1.0) -> None:
        """Ask the thread to call ``stop(timeout)`` in its hub, and wait for
        the thread to end. Calling it again, or before :meth:`start`, does
        nothing more.

        Called from the thread itself (a route handler), it stops the server
        at once and returns without waiting for the thread, which ends once
        the handler returns.

        :param timeout: ``float`` seconds, passed to the stop function.
        :raises RuntimeError: if the thread is still running
            ``2 * timeout +`` :data:`JOIN_MARGIN` seconds later.
        """
        thread = self._thread
        if thread is None:
            return
        if self.is_current:
            self._stop_once(timeout)
            assert self._stop_requested is not None
            self._stop_requested.set()
            return
        with self._lock:
            if self._loop is not None:
                self._stop_timeout = timeout
                # The one thread-safe way into another thread's hub.
                self._loop.run_callback_threadsafe(self._request_stop)
        limit = 2 * timeout + JOIN_MARGIN
        thread.join(limit)
        if thread.is_alive():
            raise RuntimeError(f"HubThread: the server's thread did not end within {limit:g} s")

    def _stop_once(self, timeout: float) -> None:
        """In the thread: call the stop function, unless it was called."""
        if not self._stopped:
            self._stopped = True
            self._stop(timeout)

    def _request_stop(self) -> None:
        """In the thread's hub: wake the thread's main greenlet."""
        if self._stop_requested is not None:
            self._stop_requested.set()

    def _run(self) -> None:
        """The thread: start serving, serve until asked to stop, stop, and
        destroy the hub it made."""
        # A fresh OS thread has no hub yet. A thread that has one is a
        # greenlet of a monkey-patched program's hub: that hub is not ours.
        own_hub = get_hub_if_exists() is None
        hub = gevent.get_hub()
        stop_requested = Event()
        self._stop_requested = stop_requested
        try:
            try:
                self.value = self._start()
            except BaseException as error:
                self._error = error
                return
            with self._lock:
                self._loop = hub.loop
            self._ready.set()
            # A timer keeps the loop alive whatever else it watches.
            while not stop_requested.wait(_POLL):
                pass
            self._stop_once(self._stop_timeout)
        finally:
            with self._lock:
                self._loop = None
            self._ready.set()
            if own_hub:
                hub.destroy(destroy_loop=True)
