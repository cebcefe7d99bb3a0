"""napixclient: call many Napix HTTP hosts at once from gevent code.

The public names are :class:`Client` (one host), :class:`ClientPool` (many
hosts), :class:`Response`, and the exception tree rooted at
:class:`HTTPError`. Authenticators live in :mod:`napixclient.authenticators`.
"""

__version__ = "0.1.0"

from napixclient.client import Client  # noqa: E402
from napixclient.exceptions import (  # noqa: E402
    ConnectionError,
    HTTPError,
    ProxyError,
    Timeout,
)
from napixclient.pool import ClientPool  # noqa: E402
from napixclient.response import RequestRecord, Response  # noqa: E402

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
