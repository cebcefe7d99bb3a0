"""What the test server keeps of each request: a :class:`RecordedRequest`,
read from the WSGI environ of the request and its body.

:class:`~napixclient.testing.NapixTestServer` records every request it
receives, before it checks its identity, in
:attr:`NapixTestServer.requests <napixclient.testing.NapixTestServer.requests>`;
the functions below read what a record holds from the environ pywsgi builds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from napixclient.redact import redact_parameters
from napixclient.response import Headers, media_type

__all__ = [
    "MAX_BODY",
    "RecordedRequest",
    "decoded_path",
    "headers_of",
    "json_of",
    "read_body",
]

#: Largest request body, in bytes, the server reads; larger ones get a 413.
MAX_BODY = 64 * 1024 * 1024


@dataclass
class RecordedRequest:
    """One request as the test server received it.

    :param method: the HTTP method (``str``), as sent.
    :param path: the raw request target (``str``): percent-encoded path plus
        ``?query`` when there is one, exactly as on the request line.
    :param headers: the request headers, a case-insensitive mapping
        (:class:`napixclient.response.Headers`, like a response's):
        ``headers["traceparent"]`` and ``headers.get("Traceparent")`` are
        the same field. Names are spelled in ``Title-Case``
        (``"Content-Type"``); repeated fields are joined with ``","``.
    :param body: the request body (``bytes``), empty when there is none.
    :param login: the login the request claims, from its ``Authorization``
        message or a ``login:signature`` token, whether or not it was
        accepted; ``None`` when it claims none (or sends an opaque token).
    :param nonce: the nonce of the ``Authorization`` message, or ``None``.
    :param json: the body decoded as JSON when its ``Content-Type`` is JSON
        (``application/json`` or ``*+json``) and it parses; otherwise ``None``.
    :param secret_parameters: query parameters whose values ``repr()`` hides.

    ``repr()`` shows neither headers nor body, and hides the token in the
    path, so a failing assertion never prints a secret.
    """

    method: str
    path: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    login: Optional[str] = None
    nonce: Optional[str] = None
    json: Any = None
    secret_parameters: Tuple[str, ...] = field(default=("token",), compare=False)

    def __repr__(self) -> str:
        target = redact_parameters(self.path, self.secret_parameters)
        return (
            f"RecordedRequest(method={self.method!r}, path={target!r}, "
            f"login={self.login!r}, body=<{len(self.body)} bytes>)"
        )


def decoded_path(environ: Dict[str, Any]) -> str:
    """The request's percent-decoded path, without query, as a ``str``.

    :param environ: the request's WSGI environ (``dict``).
    """
    # PATH_INFO is the WSGI "bytes as latin-1" str; clients encode UTF-8.
    return str(environ.get("PATH_INFO", "/")).encode("latin-1").decode("utf-8", "replace")


def read_body(environ: Dict[str, Any]) -> Optional[bytes]:
    """Read the whole request body from ``environ["wsgi.input"]``.

    :param environ: the request's WSGI environ (``dict``).
    :returns: the body (``bytes``, empty when there is none), or ``None``
        when it is larger than :data:`MAX_BODY` bytes.
    """
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    data = stream.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        return None
    return bytes(data)


def headers_of(environ: Dict[str, Any]) -> Headers:
    """Rebuild the request headers from a WSGI environ, their names in
    Title-Case.

    :param environ: the request's WSGI environ (``dict``).
    :returns: a :class:`~napixclient.response.Headers`.
    """
    fields: List[Tuple[str, str]] = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:]
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = key
        else:
            continue
        fields.append(("-".join(part.capitalize() for part in name.split("_")), str(value)))
    return Headers(fields)


def json_of(environ: Dict[str, Any], body: bytes) -> Any:
    """Decode ``body`` when the request's ``Content-Type`` says JSON.

    :param environ: the request's WSGI environ (``dict``).
    :param body: the request body (``bytes``).
    :returns: the decoded JSON value; ``None`` when the body is empty, not
        JSON by its ``Content-Type``, or does not parse. Never raises.
    """
    media, _ = media_type(environ.get("CONTENT_TYPE"))
    if not body or not (media == "application/json" or media.endswith("+json")):
        return None
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
