"""The core of napixclient: everything that decides, and nothing that waits.

The modules of this package take bytes and events and return bytes, events
and actions; none reads a socket, sleeps or spawns, and importing them loads
neither gevent nor asyncio. The gevent driver (:mod:`napixclient.client`,
:mod:`napixclient.pool`, :mod:`napixclient.connections`) and the asyncio
driver (:mod:`napixclient.aio`) stand on it and differ only in how they move
bytes, wait and schedule.
"""
