"""The test server's log: pywsgi's access and error lines, written to the
``napixclient.testing`` logger one line of ASCII each, with tokens and
signatures hidden (:class:`RedactingLog`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from napixclient.redact import redact_parameters, redact_secrets, redact_signatures

__all__ = ["LOG", "MAX_LOG_LINE", "RedactingLog", "address_text", "one_line"]

#: The logger the server has always logged on, whatever module holds it.
LOG = logging.getLogger("napixclient.testing")

#: The most characters of one line of the server's log (a request line
#: can be 8 KiB of anything).
MAX_LOG_LINE = 500


class RedactingLog:
    """A file-like sink for pywsgi's logs that writes to :mod:`logging` after
    hiding token values and signatures.

    pywsgi's access log line holds the request line, query string included,
    and the query may carry a token.

    :param level: the :mod:`logging` level of its records (``int``).
    :param parameter: the name of the token query parameter (``str``),
        whose values are hidden.
    :param tokens: the tokens (``str``) to hide wherever they appear,
        percent-encoded forms too.
    """

    def __init__(self, level: int, parameter: str, tokens: Iterable[str]) -> None:
        self._level = level
        self._parameter = parameter
        # Longest first, so a token that contains another is hidden whole.
        self._tokens = sorted((t for t in tokens if t), key=len, reverse=True)

    def redact(self, text: str) -> str:
        """Return ``text`` with tokens (encoded forms too), the token
        parameter's value and 64-hex-digit signatures hidden."""
        return redact_signatures(redact_parameters(redact_secrets(text, self._tokens),
                                                   [self._parameter]))

    def write(self, data: str) -> None:
        """Log one message (trailing newline removed) on one line of ASCII:
        control characters, line breaks and non-ASCII characters escaped
        (``\\x1b``, ``\\n``, ``\\xe9``), and cut to :data:`MAX_LOG_LINE`
        characters. A request line can hold any byte a client sent."""
        message = data.rstrip("\r\n")
        if message and LOG.isEnabledFor(self._level):
            LOG.log(self._level, "%s", one_line(self.redact(message)))

    def writelines(self, lines: Iterable[str]) -> None:
        """Log each line of ``lines``."""
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Nothing to flush: :mod:`logging` handlers flush themselves."""


def one_line(text: str) -> str:
    """``text`` (``str``) as one line of ASCII: control characters, line
    breaks and non-ASCII characters escaped, at most :data:`MAX_LOG_LINE`
    characters of it kept (plus a note of how many were left out)."""
    rest = len(text) - MAX_LOG_LINE
    if rest > 0:
        text = text[:MAX_LOG_LINE]
    line = text.encode("unicode_escape").decode("ascii")
    return f"{line}... ({rest} more characters)" if rest > 0 else line


def address_text(address: Any) -> str:
    """``"127.0.0.1:41234"`` (``"[::1]:41234"``) for a socket address (a
    tuple whose first two items are the host and the port); ``str()`` of
    anything else. Never raises."""
    try:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    except (TypeError, IndexError):
        return str(address)
