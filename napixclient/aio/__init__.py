"""napixclient for asyncio code: :class:`AsyncClient` (one host) and
:class:`AsyncClientPool` (many hosts), the twins of
:class:`napixclient.Client` and :class:`napixclient.ClientPool`.

The same options, caps, orders, deadlines, results (the very same
:class:`~napixclient.Response` and :class:`~napixclient.HTTPError` classes),
trace events and OpenTelemetry spans, on the same core
(:mod:`napixclient.core`); only moving bytes, waiting and scheduling are
asyncio's. A program that uses this package never imports gevent.

::

    from napixclient.aio import AsyncClient, AsyncClientPool

    async with AsyncClientPool({"login": "root", "key": "toor"}) as pool:
        pool.request("ip.example:8002", "POST", "/vm-ip/", {"size": 1})
        pool.request("filer.example:8002", "GET", "/volumes/")
        ip, volumes = await pool.wait()
"""

from napixclient.aio.client import AsyncClient
from napixclient.aio.connections import AsyncConnectionManager
from napixclient.aio.pool import AsyncClientPool, Result

__all__ = ["AsyncClient", "AsyncClientPool", "AsyncConnectionManager", "Result"]
