"""napixclient: call many Napix HTTP hosts at once, from gevent code
(:class:`Client`, :class:`ClientPool`) and from asyncio code
(:mod:`napixclient.aio`).

The public names are :class:`Client` (one host), :class:`ClientPool` (many
hosts), :class:`Response`, and the exception tree rooted at
:class:`HTTPError`. Authenticators live in :mod:`napixclient.authenticators`.

Importing this package loads neither gevent nor asyncio: each name is
imported on first use (PEP 562), so that an asyncio program that uses
:mod:`napixclient.aio` never loads gevent.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that holds it.
_HOMES = {
    "Client": "napixclient.client",
    "ClientPool": "napixclient.pool",
    "ConnectionError": "napixclient.exceptions",
    "HTTPError": "napixclient.exceptions",
    "ProxyError": "napixclient.exceptions",
    "Timeout": "napixclient.exceptions",
    "RequestRecord": "napixclient.response",
    "Response": "napixclient.response",
}

__all__ = [
    "Client",
    "ClientPool",
    "ConnectionError",
    "HTTPError",
    "ProxyError",
    "RequestRecord",
    "Response",
    "Timeout",
    "__version__",
]

if TYPE_CHECKING:
    from napixclient.client import Client
    from napixclient.exceptions import ConnectionError, HTTPError, ProxyError, Timeout
    from napixclient.pool import ClientPool
    from napixclient.response import RequestRecord, Response
else:
    def __getattr__(name: str) -> Any:
        """A public name, imported from its module on first use."""
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        globals()[name] = value
        return value

    def __dir__() -> list:
        return sorted(set(globals()) | set(_HOMES))
