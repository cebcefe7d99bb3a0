"""AsyncClient: requests to one Napix host, from asyncio code.

The asyncio twin of :class:`napixclient.Client`: the same options, the same
results, the same core (:class:`~napixclient.core.client.BaseClient` checks,
builds and signs each request and decides between attempts); the client
waits for a turn under its
:class:`~napixclient.aio.connections.AsyncConnectionManager` (its own, or its
pool's), which moves the bytes, and sleeps between attempts
(:func:`asyncio.sleep`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Optional

from napixclient.aio.connections import DEFAULT_KEEPALIVE_EXPIRY, AsyncConnectionManager
from napixclient.core.client import (
    DEFAULT_MAX_BODY_SIZE,
    BaseClient,
    ClientOptions,
    PreparedCall,
    TimeoutSpec,
)
from napixclient.core.exchange import Deadline
from napixclient.core.hosts import parse_host
from napixclient.core.leases import Lease
from napixclient.core.trace import TraceHook
from napixclient.failures import Failure
from napixclient.response import Response

__all__ = ["AsyncClient"]


class AsyncClient(BaseClient):
    """Requests to one Napix host, signed, capped and kept alive, from
    asyncio code.

    The arguments are those of :class:`napixclient.Client`, with the same
    meaning and defaults (``connections`` is an
    :class:`~napixclient.aio.connections.AsyncConnectionManager`); see it for
    each. Use it as ``async with AsyncClient(...) as client:`` (or call
    :meth:`aclose`).

    :raises ValueError: at once, naming the argument, for a bad option.
    :raises FileNotFoundError: if ``verify`` or ``cert`` names a missing file.

    ::

        async with AsyncClient("127.0.0.1:8002", {"login": "root", "key": "toor"}) as c:
            managers = (await c.get("/")).body
    """

    manager_class = AsyncConnectionManager

    def __init__(
        self,
        host: str,
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
        max_connections: Optional[int] = None,
        keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY,
        trace: Optional[TraceHook] = None,
        connections: Optional[AsyncConnectionManager] = None,
        proxies: Optional[Mapping[str, Optional[str]]] = None,
        trust_env: bool = True,
        cert: Any = None,
    ) -> None:
        parsed = parse_host(host)
        options = ClientOptions(authenticator, simultaneous, timeout, verify,
                                max_body_size=max_body_size, headers=headers, retries=retries,
                                retry_backoff=retry_backoff, parser=parser,
                                transport=transport, proxies=proxies, trust_env=trust_env,
                                cert=cert)
        self._attach(parsed, options, connections, max_connections, keepalive_expiry, trace)

    @property
    def connections(self) -> AsyncConnectionManager:
        """The connection manager this client sends through."""
        return self._manager

    # -- sending ----------------------------------------------------------

    async def send(self, call: PreparedCall) -> Response:
        """Sign and send a prepared request, waiting for a turn under
        ``simultaneous`` and ``max_connections``; read the whole answer.

        :returns: and :raises: as :meth:`napixclient.Client.send`.
        """
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        manager = self._manager
        lease = await manager.acquire(self.origin, self.simultaneous, call.record)
        try:
            return await self.send_on(lease, call)
        finally:
            manager.release(lease)

    async def send_on(self, lease: Lease, call: PreparedCall) -> Response:
        """Sign and send ``call`` on a lease, and read the whole answer, each
        attempt signed anew; the caller releases the lease.

        :returns: and :raises: as :meth:`napixclient.Client.send`.
        """
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        manager = self._manager
        attempts = self.attempts(call, manager.tracer)
        # The core counts in time.monotonic(); the loop in its own clock.
        deadline = asyncio.get_running_loop().time() + attempts.deadline - time.monotonic()
        try:
            while True:
                method, data, record = attempts.next()
                try:
                    answer = await manager.exchange(
                        lease, method, data, record, engine=self.parser,
                        timeouts=attempts.timeouts, deadline=deadline,
                        max_body_size=self.max_body_size, attempt=attempts.attempt)
                except Failure as failure:
                    wait = attempts.failed(failure)
                else:
                    wait = attempts.answered(answer)
                if wait is None:
                    break
                if wait > 0:
                    await asyncio.sleep(wait)
        except Deadline:
            raise attempts.expired() from None
        finally:
            attempts.close()
        return attempts.result()

    async def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        *,
        timeout: Optional[TimeoutSpec] = None,
        params: Any = None,
    ) -> Response:
        """Send one request and return its answer: the arguments, result and
        failures of :meth:`napixclient.Client.request`.

        :raises ValueError: at once, for bad arguments.
        :raises HTTPError: for a status of 400 or more, and its subclasses
            for failures below HTTP.
        """
        return await self.send(self.prepare(method, url, body, headers,
                                            timeout=timeout, params=params))

    async def get(self, url: str, **kwargs: Any) -> Response:
        """``await request("GET", url, **kwargs)``."""
        return await self.request("GET", url, **kwargs)

    async def head(self, url: str, **kwargs: Any) -> Response:
        """``await request("HEAD", url, **kwargs)``."""
        return await self.request("HEAD", url, **kwargs)

    async def delete(self, url: str, **kwargs: Any) -> Response:
        """``await request("DELETE", url, **kwargs)``."""
        return await self.request("DELETE", url, **kwargs)

    async def post(self, url: str, body: Any = None, **kwargs: Any) -> Response:
        """``await request("POST", url, body, **kwargs)``."""
        return await self.request("POST", url, body, **kwargs)

    async def put(self, url: str, body: Any = None, **kwargs: Any) -> Response:
        """``await request("PUT", url, body, **kwargs)``."""
        return await self.request("PUT", url, body, **kwargs)

    async def patch(self, url: str, body: Any = None, **kwargs: Any) -> Response:
        """``await request("PATCH", url, body, **kwargs)``."""
        return await self.request("PATCH", url, body, **kwargs)

    # -- lifetime ---------------------------------------------------------

    async def aclose(self) -> None:
        """Close every connection to the host; later requests raise
        :class:`RuntimeError`. Closing twice is harmless."""
        self._closed = True
        if self._owns_manager:
            self._manager.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()
