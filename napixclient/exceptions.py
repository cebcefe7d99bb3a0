"""The exception tree.

Every failure of a request is an :class:`HTTPError`: an answer with a status
of 400 or more, or a transport failure (:class:`ConnectionError`,
:class:`Timeout`) where no answer came. It carries what was sent where
(``remote_call``) and what the far side said (``remote_error``); when the far
side was itself a Napix server relaying a failed call, the error documents
nest, and :attr:`HTTPError.chain` reads them hop by hop (PROTOCOL.md,
"Reading the chain") with :mod:`napixclient.chain`, which holds the reading
and writing of error documents. :class:`~napixclient.chain.Hop`,
:class:`~napixclient.chain.Chain`, :func:`~napixclient.chain.read_chain` and
:func:`~napixclient.chain.split_status_text` can still be imported from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

# Hop, Chain, read_chain, split_status_text, MAX_HOPS and MAX_TEXT lived here
# before napixclient.chain; they are still importable from this module.
from napixclient.chain import (  # noqa: F401
    MAX_HOPS,
    MAX_TEXT,
    Chain,
    Hop,
    printable,
    read_chain,
    split_status_text,
    status_of,
    text_of,
)
from napixclient.redact import redact_document, redact_url_credentials
from napixclient.response import RequestRecord

if TYPE_CHECKING:
    from napixclient.response import Response

__all__ = [
    "BodyTooLarge",
    "ConnectionError",
    "HTTPError",
    "ProxyError",
    "Timeout",
]


class HTTPError(Exception):
    """A request failed: the far side answered with a status of 400 or more,
    or (in the subclasses) no answer came.

    :ivar status: the status (``int``), or ``None`` when no HTTP answer came.
    :ivar request: the :class:`~napixclient.RequestRecord` of the request.
    :ivar response: the :class:`~napixclient.Response`, or ``None``.
    :ivar remote_call: ``"METHOD URL"`` of the request, credentials redacted;
        ``"METHOD URL via the proxy PROXY"`` when the answer came through a
        forwarding proxy (:attr:`proxy`).
    :ivar remote_error: what the far side said: its decoded JSON error
        document (``dict``), or a text such as ``"404 Not Found: `10` not
        found"``; for a transport failure, a description of it. The values
        of secret query parameters (``token``, and those an authenticator
        registers) read ``***`` in it, wherever the far side echoed them
        (:func:`~napixclient.redact.redact_document`).
    :ivar proxy: the forwarding proxy the answer came through
        (``"http://127.0.0.1:3128"``: scheme, host and port, never
        credentials), or ``None`` when it came straight from the origin. A
        proxy answers some statuses itself (502, 504, its own 5xx pages when
        it cannot reach the origin, 407): see :doc:`/proxies`.

    ``str(err)`` reads the :attr:`chain` hop by hop on one line. Like a
    :class:`~napixclient.Response`, it has ``status`` and ``request``, so pool
    code can treat results alike (``if result.status != 200: continue``).
    An error pickles with all of these.

    The client raises these; code of your own seldom builds one, except to
    stand for a failed call in a test:

    :param request: the :class:`~napixclient.RequestRecord` of the failed
        request; ``remote_call`` is made from it.
    :param status: the answer's status (``int``), or ``None`` when no answer
        came.
    :param response: the :class:`~napixclient.Response` when an answer came.
    :param remote_error: what the far side said (a ``dict`` error document,
        a ``str``), or a description of the transport failure; secret query
        parameters are masked in a copy of it.
    :param proxy: ``str``, the forwarding proxy the answer came through
        (``"scheme://host:port"``; credentials in it are masked), or
        ``None``.
    :raises TypeError: if ``proxy`` is neither a ``str`` nor ``None``.
    """

    _remote_error: Any
    _masked: Any
    _chain: Optional[Chain]

    def __init__(
        self,
        request: RequestRecord,
        *,
        status: Optional[int] = None,
        response: Optional["Response"] = None,
        remote_error: Any = None,
        proxy: Optional[str] = None,
    ) -> None:
        if proxy is not None and not isinstance(proxy, str):
            raise TypeError(f"HTTPError: proxy must be a str such as "
                            f"'http://127.0.0.1:3128' or None, got {type(proxy).__name__}")
        super().__init__(request, status)
        self.request = request
        self.status = status
        self.response = response
        self.proxy = None if proxy is None else redact_url_credentials(proxy)
        self.remote_call = request.call if proxy is None \
            else f"{request.call} via the proxy {self.proxy}"
        self.remote_error = remote_error

    @property
    def remote_error(self) -> Any:
        """What the far side said (see the class's description), with the
        values of secret query parameters masked: a copy made when first
        read (its cost grows with the document's size, so :attr:`chain`
        and ``str()``, whose cost does not, never read it whole)."""
        if self._masked is _UNMASKED:
            self._masked = redact_document(self._remote_error)
        return self._masked

    @remote_error.setter
    def remote_error(self, value: Any) -> None:
        self._remote_error = value
        self._masked = _UNMASKED
        self._chain = None

    @classmethod
    def from_response(cls, response: "Response", *, proxy: Optional[str] = None) -> "HTTPError":
        """Build the error for an answer with a status of 400 or more.

        ``remote_error`` is the decoded body when it is a JSON object, otherwise
        ``"<status> <reason>: <text>"`` with the text cut to
        :data:`~napixclient.chain.MAX_TEXT` characters (a body of another
        JSON type is shown in a short rendering); in both, the values of
        secret query parameters read ``***``. Never raises for any body.

        :param response: the :class:`~napixclient.Response` of status 400 or
            more.
        :param proxy: ``str``, the forwarding proxy the answer came through
            (``"http://127.0.0.1:3128"``), or ``None`` when it came from
            the origin directly (or through a ``CONNECT`` tunnel).
        :returns: an instance of the class it is called on, with
            ``status``, ``request`` and ``response`` taken from ``response``.
        :raises TypeError: if ``proxy`` is neither a ``str`` nor ``None``.
        """
        body = response.body
        if isinstance(body, dict):
            remote_error: Any = body
        else:
            remote_error = _status_prefix(response) + (text_of(body) or "")
        return cls(response.request, status=response.status, response=response,
                   remote_error=remote_error, proxy=proxy)

    @property
    def chain(self) -> Chain:
        """The hops from this call to the root cause: a
        :class:`~napixclient.chain.Chain` (a list of
        :class:`~napixclient.chain.Hop`), hop 0 being this call; see
        :func:`~napixclient.chain.read_chain`.
        Read once, then kept; never raises."""
        if self._chain is None:
            self._chain = self._read_chain()
        return self._chain

    def _read_chain(self) -> Chain:
        try:
            # As received: the chain masks each text it keeps, at a cost that
            # does not grow with the document's size.
            document = self._remote_error
            if isinstance(document, str) and self.response is not None:
                # Our own "<status> <reason>: " prefix is not the far side's text.
                prefix = _status_prefix(self.response)
                if document.startswith(prefix):
                    document = document[len(prefix):]
            chain = read_chain(self.remote_call, self.status, document)
            if type(self) is not HTTPError and chain[0].error_class is None:
                chain[0] = chain[0]._replace(error_class=type(self).__name__)
            return chain
        except Exception:
            # Only a broken subclass or attribute gets here.
            fallback = Chain()
            fallback.append(Hop(text_of(getattr(self, "remote_call", None)),
                                status_of(getattr(self, "status", None)),
                                type(self).__name__, None))
            return fallback

    @property
    def root(self) -> Hop:
        """The last hop of :attr:`chain`: where the error really happened
        (unless :attr:`Chain.truncated <napixclient.chain.Chain.truncated>`)."""
        return self.chain[-1]

    def __str__(self) -> str:
        """The chain on one line, safe for a log:
        ``"GET http://a/x -> 500 (HTTPError) | GET http://b/y -> 404 | `10` not
        found"``. Control characters are escaped."""
        hops = self.chain
        parts = [str(hop) for hop in hops]
        if hops.truncated:
            parts.append(f"(cut after {len(hops)} hops)")
        elif hops[-1].error_text:
            parts.append(printable(hops[-1].error_text))
        return " | ".join(parts)

    def format_chain(self) -> str:
        """The chain on several lines, for people (the CLI, examples)::

            hop 0: GET http://a/x -> 500 (HTTPError)
            hop 1: GET http://b/y -> 404
            root cause: `10` not found

        A hop whose document carried a trace id (:attr:`Hop.trace_id
        <napixclient.chain.Hop.trace_id>`, written by servers traced with
        OpenTelemetry, see :doc:`/tracing`) ends with it, to look up in a
        tracing backend::

            hop 0: GET http://a/x -> 500 (HTTPError) [trace 4bf92f3577b34da6a3ce929d0e0e4736]

        A root text on several lines is indented under ``root cause:``.
        Control characters other than newlines are escaped.
        """
        hops = self.chain
        lines = [f"hop {depth}: {hop}" + (f" [trace {hop.trace_id}]" if hop.trace_id else "")
                 for depth, hop in enumerate(hops)]
        if hops.truncated:
            lines.append(f"(more than {len(hops)} hops: the rest was not read)")
        elif hops[-1].error_text:
            text = printable(hops[-1].error_text, keep_newlines=True)
            lines.append("root cause: " + text.replace("\n", "\n    "))
        return "\n".join(lines)

    def __repr__(self) -> str:
        """``<HTTPError 404 GET http://b/y>``: no body, no secrets."""
        try:
            call = printable(text_of(self.remote_call) or "?")
            return f"<{type(self).__name__} {status_of(self.status)} {call}>"
        except Exception:
            return f"<{type(self).__name__}>"

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.request, self.status, self.response,
                           self.remote_error, self.proxy))


# What HTTPError._masked holds until remote_error is first read.
_UNMASKED = object()


def _status_prefix(response: "Response") -> str:
    """``"404 Not Found: "``: how :meth:`HTTPError.from_response` starts the
    ``remote_error`` of a text answer (the reason cut to 80 characters)."""
    reason = printable(str(response.reason)[:80]).replace(":", " ")[:80]
    return f"{response.status} {reason}: " if reason else f"{response.status}: "


def _rebuild(cls: type, request: RequestRecord, status: Optional[int],
             response: Optional["Response"], remote_error: Any,
             proxy: Optional[str] = None) -> HTTPError:
    # proxy defaults to None: errors pickled before it existed still load.
    error: HTTPError = cls(request, status=status, response=response, remote_error=remote_error,
                           proxy=proxy)
    return error


class ConnectionError(HTTPError):
    """No answer came: the connection was refused, reset or dropped, the name
    did not resolve, or TLS failed. ``status`` is ``None`` (but for a
    :class:`ProxyError`, the proxy's status when it answered)."""


class ProxyError(ConnectionError):
    """The proxy would not carry the request: it could not be reached, its
    TLS failed, or it refused (a 407 when it wants credentials, a 502 to
    ``CONNECT`` when it could not reach the origin). ``status`` is the
    proxy's status when it answered (``407``), else ``None``; the text
    names the proxy (never its credentials), for example ``the proxy
    http://127.0.0.1:3128 answered 407 Proxy Authentication Required to
    CONNECT``. As requests' ``ProxyError``, a :class:`ConnectionError`."""


class Timeout(HTTPError):
    """The connection or the answer took longer than the timeout. ``status``
    is ``None``."""


class BodyTooLarge(HTTPError):
    """The answer's body was larger than the client's ``max_body_size``; it
    was not read to the end. ``status`` is the answer's status."""
