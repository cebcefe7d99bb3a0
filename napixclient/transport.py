"""Deprecated: what this module held has moved, each concept to its module.

* :mod:`napixclient.adapter`: ``CooperativeAdapter``, its pool and
  connection classes, ``HubSleepRetry``, ``hub_sleeping``;
* :mod:`napixclient.dialing`: ``ssl_context`` and ``Verify``;
* :mod:`napixclient.redact`: ``register_secret_parameters``,
  ``redact_secret_parameters``, ``SecretParameterFilter``,
  ``URLLIB3_LOGGERS``.

The old names still work from here, with a :class:`DeprecationWarning`
naming their new place; type checkers no longer see them.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any, Dict

__all__: list = []

#: Old name -> the module that holds it now.
MOVED: Dict[str, str] = {
    "CooperativeAdapter": "napixclient.adapter",
    "CooperativeHTTPConnectionPool": "napixclient.adapter",
    "CooperativeHTTPSConnectionPool": "napixclient.adapter",
    "CooperativeHTTPConnection": "napixclient.adapter",
    "CooperativeHTTPSConnection": "napixclient.adapter",
    "HubSleepRetry": "napixclient.adapter",
    "hub_sleeping": "napixclient.adapter",
    "ssl_context": "napixclient.dialing",
    "Verify": "napixclient.dialing",
    "register_secret_parameters": "napixclient.redact",
    "redact_secret_parameters": "napixclient.redact",
    "SecretParameterFilter": "napixclient.redact",
    "URLLIB3_LOGGERS": "napixclient.redact",
}

if not TYPE_CHECKING:  # for type checkers, the old names are gone
    def __getattr__(name: str) -> Any:
        """An old name, from its new module, with a DeprecationWarning."""
        module = MOVED.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        warnings.warn(f"napixclient.transport.{name} moved to {module}.{name}",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(module), name)
