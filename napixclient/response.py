"""What a request produced: :class:`Response`, and the :class:`RequestRecord`
that names the request without its secrets."""

from __future__ import annotations

import json
from typing import Any, Mapping, NamedTuple, Optional

from requests.structures import CaseInsensitiveDict

__all__ = ["RequestRecord", "Response", "decode_body"]

_JSON_SUFFIX = "+json"


class RequestRecord(NamedTuple):
    """A small, secret-free record of one request.

    :ivar method: the HTTP method, upper case (``"GET"``).
    :ivar host: the destination as ``name`` or ``name:port`` (``"127.0.0.1:8002"``).
    :ivar url: the absolute URL, with credentials redacted: a query parameter
        added by the authenticator reads ``***`` (``"http://h/x?token=***"``).
    :ivar path: the request target of ``url``: path plus ``?query``, redacted
        the same way.
    """

    method: str
    host: str
    url: str
    path: str

    @property
    def call(self) -> str:
        """``"METHOD URL"``, the form of ``remote_call`` in the Napix protocol."""
        return f"{self.method} {self.url}"


def media_type(content_type: Optional[str]) -> tuple[str, Optional[str]]:
    """Split a ``Content-Type`` header into its lower-case media type and its
    ``charset`` parameter (RFC 9110, section 8.3).

    :param content_type: the header value, or ``None``.
    :returns: ``(media_type, charset or None)``; ``("", None)`` when absent.
    """
    if not content_type:
        return "", None
    kind, _, params = content_type.partition(";")
    charset = None
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"') or None
    return kind.strip().lower(), charset


def _text(content: bytes, charset: Optional[str]) -> str:
    try:
        return content.decode(charset or "utf-8", errors="replace")
    except LookupError:  # an unknown charset named by the server
        return content.decode("utf-8", errors="replace")


def decode_body(content: bytes, content_type: Optional[str]) -> Any:
    """Decode a response body by its media type; never raises.

    * empty -> ``None``;
    * ``application/json`` or any ``*/*+json`` -> the decoded Python object;
      a body that is not valid JSON (or too deeply nested for the decoder)
      comes back as ``str`` instead;
    * ``text/*`` -> ``str`` (the declared charset, UTF-8 by default, with
      undecodable bytes replaced);
    * anything else -> ``bytes``, unchanged.

    :param content: the raw body.
    :param content_type: the ``Content-Type`` header, or ``None``.
    """
    if not content:
        return None
    kind, charset = media_type(content_type)
    if kind == "application/json" or kind.endswith(_JSON_SUFFIX):
        text = _text(content, charset)
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            return text
    if kind.startswith("text/"):
        return _text(content, charset)
    return content


_UNSET: Any = object()


class Response:
    """The answer to one request.

    :ivar status: the status code (``int``).
    :ivar reason: the reason phrase (``str``, may be empty).
    :ivar headers: the response headers, a case-insensitive mapping.
    :ivar content: the raw body (``bytes``).
    :ivar elapsed: seconds (``float``) from sending the request to the end of
        the body.
    :ivar request: the :class:`RequestRecord` of the request (no secrets).

    ``body`` is decoded on first access, by :func:`decode_body`.
    """

    __slots__ = ("status", "reason", "headers", "content", "elapsed", "request", "_body")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Mapping[str, str],
        content: bytes,
        elapsed: float,
        request: RequestRecord,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(headers)
        self.content = content
        self.elapsed = elapsed
        self.request = request
        self._body: Any = _UNSET

    @property
    def body(self) -> Any:
        """The decoded body: JSON -> Python objects, ``text/*`` -> ``str``,
        anything else -> ``bytes``, empty -> ``None``."""
        if self._body is _UNSET:
            self._body = decode_body(self.content, self.headers.get("Content-Type"))
        return self._body

    @property
    def ok(self) -> bool:
        """``True`` when ``status`` is below 400."""
        return self.status < 400

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.request.call}>"
