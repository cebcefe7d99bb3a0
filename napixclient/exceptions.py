"""The exception tree, and how a chain of Napix error documents is read.

Every failure of a request is an :class:`HTTPError`: an answer with a status
of 400 or more, or a transport failure (:class:`ConnectionError`,
:class:`Timeout`) where no answer came. It carries what was sent where
(``remote_call``) and what the far side said (``remote_error``); when the far
side was itself a Napix server relaying a failed call, the error documents
nest, and :attr:`HTTPError.chain` reads them hop by hop (PROTOCOL.md,
"Reading the chain").
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, List, NamedTuple, Optional

from napixclient.response import RequestRecord

if TYPE_CHECKING:
    from napixclient.response import Response

__all__ = [
    "BodyTooLarge",
    "ConnectionError",
    "HTTPError",
    "Hop",
    "Timeout",
    "read_chain",
]

#: The most hops :func:`read_chain` reads; a longer chain ends there.
MAX_HOPS = 32
#: The most characters kept of one hop's call, class or text.
MAX_TEXT = 2000

_STATUS_TEXT = re.compile(r"^(\d{3})(?: [^:\n]{0,80})?: (.*)$", re.S)


def _clip(value: Any) -> Optional[str]:
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    if len(text) > MAX_TEXT:
        return text[:MAX_TEXT] + f"... ({len(text) - MAX_TEXT} more characters)"
    return text


class Hop(NamedTuple):
    """One server on the way from a call to the root cause of its failure.

    :ivar call: ``"METHOD URL"`` of the call made at this hop, or ``None``
        where the document does not say.
    :ivar status: the status that call got (``int``), or ``None`` when unknown
        or when no answer came.
    :ivar error_class: the class of the error at this hop (``"HTTPError"``,
        ``"ValueError"``...), or ``None``.
    :ivar error_text: what the hop said, or ``None``.
    """

    call: Optional[str]
    status: Optional[int]
    error_class: Optional[str]
    error_text: Optional[str]

    def __str__(self) -> str:
        parts = []
        if self.call:
            parts.append(self.call)
        if self.status is not None or self.error_class:
            if self.status is None:
                parts.append(str(self.error_class))
            elif self.error_class:
                parts.append(f"{self.status} ({self.error_class})")
            else:
                parts.append(str(self.status))
        return " -> ".join(parts) if parts else "?"


def _split_status_text(text: str) -> tuple[Optional[int], str]:
    """``"404 Not Found: `10` not found"`` -> ``(404, "`10` not found")``."""
    match = _STATUS_TEXT.match(text[: MAX_TEXT + 100])
    if match:
        return int(match.group(1)), text[match.end(1) :].split(": ", 1)[1]
    return None, text


def read_chain(call: Optional[str], status: Optional[int], remote_error: Any) -> List[Hop]:
    """Read the hops of a failed call, from the call itself to the root cause.

    Hop 0 is ``call`` with ``status``. While the error document (``remote_error``)
    is a mapping with ``remote_call`` and ``remote_error``, the next hop is that
    call, and the reading goes on with the nested ``remote_error``. The last
    hop carries the root cause's ``error_class`` and ``error_text``, or its text.

    Reading is iterative and bounded (:data:`MAX_HOPS` hops, :data:`MAX_TEXT`
    characters a field); a malformed document (wrong types, missing keys, not
    a mapping at all) ends the chain where it stops making sense. It never
    raises.

    :param call: ``"METHOD URL"`` of the call made here, or ``None``.
    :param status: the status it got, or ``None``.
    :param remote_error: the decoded error document (a ``dict``), a text
        (``str``), ``bytes`` or ``None``.
    :returns: a non-empty list of :class:`Hop`.
    """
    hops: List[Hop] = []
    document = remote_error
    while True:
        if isinstance(document, dict):
            error_class = document.get("error_class")
            error_text = document.get("error_text")
            hops.append(
                Hop(
                    _clip(call),
                    status,
                    _clip(error_class) if isinstance(error_class, str) else None,
                    _clip(error_text) if error_text is not None else None,
                )
            )
            next_call = document.get("remote_call")
            if (
                "remote_error" in document
                and isinstance(next_call, str)
                and len(hops) < MAX_HOPS
            ):
                call, status, document = next_call, None, document["remote_error"]
                if isinstance(document, str):
                    status, document = _split_status_text(document)
                continue
            return hops
        if isinstance(document, bytes):
            document = document.decode("utf-8", errors="replace")
        if isinstance(document, str):
            hops.append(Hop(_clip(call), status, None, _clip(document)))
        elif document is None:
            hops.append(Hop(_clip(call), status, None, None))
        else:
            hops.append(Hop(_clip(call), status, None, _clip(document)))
        return hops


class HTTPError(Exception):
    """A request failed: the far side answered with a status of 400 or more,
    or (in the subclasses) no answer came.

    :ivar status: the status (``int``), or ``None`` when no HTTP answer came.
    :ivar request: the :class:`~napixclient.RequestRecord` of the request.
    :ivar response: the :class:`~napixclient.Response`, or ``None``.
    :ivar remote_call: ``"METHOD URL"`` of the request, credentials redacted.
    :ivar remote_error: what the far side said: its decoded JSON error
        document (``dict``), or a text such as ``"404 Not Found: `10` not
        found"``; for a transport failure, a description of it.

    ``str(err)`` reads the :attr:`chain` hop by hop on one line. Like a
    :class:`~napixclient.Response`, it has ``status`` and ``request``, so pool
    code can treat results alike (``if result.status != 200: continue``).
    """

    def __init__(
        self,
        request: RequestRecord,
        *,
        status: Optional[int] = None,
        response: Optional["Response"] = None,
        remote_error: Any = None,
    ) -> None:
        super().__init__(request, status)
        self.request = request
        self.status = status
        self.response = response
        self.remote_call = request.call
        self.remote_error = remote_error
        self._chain: Optional[List[Hop]] = None

    @classmethod
    def from_response(cls, response: "Response") -> "HTTPError":
        """Build the error for an answer with a status of 400 or more.

        ``remote_error`` is the decoded body when it is a JSON object,
        otherwise ``"<status> <reason>: <text>"``.
        """
        body = response.body
        if isinstance(body, dict):
            remote_error: Any = body
        else:
            if isinstance(body, bytes):
                text = body.decode("utf-8", errors="replace")
            elif body is None:
                text = ""
            elif isinstance(body, str):
                text = body
            else:
                text = _clip(body) or ""
            remote_error = f"{response.status} {response.reason}: {_clip(text)}"
        return cls(response.request, status=response.status, response=response,
                   remote_error=remote_error)

    @property
    def chain(self) -> List[Hop]:
        """The hops from this call to the root cause: a list of :class:`Hop`,
        hop 0 being this call (see :func:`read_chain`)."""
        if self._chain is None:
            document = self.remote_error
            if isinstance(document, str) and self.response is not None:
                # Our own "<status> <reason>: " prefix is not the far side's text.
                document = _split_status_text(document)[1]
            self._chain = read_chain(self.remote_call, self.status, document)
            if type(self) is not HTTPError and self._chain[0].error_class is None:
                self._chain[0] = self._chain[0]._replace(error_class=type(self).__name__)
        return self._chain

    @property
    def root(self) -> Hop:
        """The last hop of :attr:`chain`: where the error really happened."""
        return self.chain[-1]

    def __str__(self) -> str:
        hops = self.chain
        text = " | ".join(str(hop) for hop in hops)
        root_text = hops[-1].error_text
        if root_text:
            text = f"{text} | {root_text}"
        return text

    def format_chain(self) -> str:
        """The chain on several lines, one a hop, for people (the CLI, examples)."""
        lines = []
        for depth, hop in enumerate(self.chain):
            lines.append(f"{'  ' * depth}hop {depth}: {hop}")
            if hop.error_text and depth == len(self.chain) - 1:
                lines.append(f"{'  ' * depth}  {hop.error_text}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status} {self.remote_call}>"

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.request, self.status, self.response,
                           self.remote_error))


def _rebuild(cls: type, request: RequestRecord, status: Optional[int],
             response: Optional["Response"], remote_error: Any) -> HTTPError:
    error: HTTPError = cls(request, status=status, response=response, remote_error=remote_error)
    return error


class ConnectionError(HTTPError):
    """No answer came: the connection was refused, reset or dropped, the name
    did not resolve, or TLS failed. ``status`` is ``None``."""


class Timeout(HTTPError):
    """The connection or the answer took longer than the timeout. ``status``
    is ``None``."""


class BodyTooLarge(HTTPError):
    """The answer's body was larger than the client's ``max_body_size``; it
    was not read to the end. ``status`` is the answer's status."""
