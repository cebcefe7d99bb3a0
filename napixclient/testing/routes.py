"""The test server's routes: what a test declares a path answers (a
:class:`Route`, checked when it is declared), what a route handler may
return, and the answers written to pywsgi (:func:`respond`,
:func:`respond_error`: a Napix JSON error document).
"""

from __future__ import annotations

import http
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from napixclient.testing.recording import RecordedRequest

__all__ = [
    "Body",
    "Handler",
    "HandlerResult",
    "Route",
    "RouteHeaders",
    "check_body",
    "encode",
    "header_list",
    "make_route",
    "respond",
    "respond_error",
    "unpack",
]

#: A route's answer: ``dict``/``list`` (JSON), ``str``, ``bytes`` or ``None``.
Body = Union[None, str, bytes, bytearray, Dict[str, Any], List[Any]]
#: Response headers: a mapping, or ``(name, value)`` pairs.
RouteHeaders = Union[Mapping[str, str], Iterable[Tuple[str, str]]]
#: What a route handler returns: a body, ``(status, body)`` or
#: ``(status, body, headers)``.
HandlerResult = Any
#: A route handler: called with the :class:`~napixclient.testing.RecordedRequest`.
Handler = Callable[[RecordedRequest], HandlerResult]


@dataclass
class Route:
    """What one route answers; see
    :meth:`NapixTestServer.route <napixclient.testing.NapixTestServer.route>`."""

    status: int
    body: Body
    headers: List[Tuple[str, str]]
    latency: float
    hang: bool
    drop: bool
    handler: Optional[Handler]


def make_route(status: int, body: Body, headers: Optional[RouteHeaders], latency: float,
               hang: bool, drop: bool, handler: Optional[Handler]) -> Route:
    """A :class:`Route`, its arguments checked (see
    :meth:`NapixTestServer.route <napixclient.testing.NapixTestServer.route>`
    for what each means).

    :raises ValueError: for a status out of 100 to 599, a negative latency,
        or both ``hang`` and ``drop``.
    :raises TypeError: for a body of another type, or a handler that is not
        callable.
    """
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError("route: status must be an int from 100 to 599")
    if latency < 0:
        raise ValueError("route: latency must be >= 0 seconds")
    if hang and drop:
        raise ValueError("route: hang and drop exclude each other")
    if handler is not None and not callable(handler):
        raise TypeError("route: handler must be callable")
    check_body(body)
    return Route(
        status=status,
        body=body,
        headers=header_list(headers),
        latency=float(latency),
        hang=bool(hang),
        drop=bool(drop),
        handler=handler,
    )


def check_body(body: Any) -> None:
    """Check that ``body`` is a :data:`Body`.

    :raises TypeError: unless ``body`` is a ``dict``, ``list``, ``str``,
        ``bytes``, ``bytearray`` or ``None``.
    """
    if body is not None and not isinstance(body, (str, bytes, bytearray, dict, list)):
        raise TypeError(
            "body must be a dict, list, str, bytes or None; "
            f"got {type(body).__name__}"
        )


def header_list(headers: Optional[RouteHeaders]) -> List[Tuple[str, str]]:
    """Turn headers into a list of ``(name, value)`` pairs of ``str``.

    :param headers: a mapping, ``(name, value)`` pairs, or ``None`` (no
        headers).
    """
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(name), str(value)) for name, value in items]


def unpack(result: HandlerResult, status: int) -> Tuple[int, Body, List[Tuple[str, str]]]:
    """Read a route handler's result: a body, ``(status, body)`` or
    ``(status, body, headers)``.

    :param result: what the handler returned.
    :param status: the route's status (``int``), for a result that names
        none.
    :returns: ``(status, body, headers)``, ``headers`` a list of pairs.
    :raises TypeError: for a tuple of another length or an unsupported body.
    """
    extra: List[Tuple[str, str]] = []
    body = result
    if isinstance(result, tuple):
        if len(result) == 2:
            status, body = result
        elif len(result) == 3:
            status, body, raw_headers = result
            extra = header_list(raw_headers)
        else:
            raise TypeError("handler must return body, (status, body) or (status, body, headers)")
    check_body(body)
    return int(status), body, extra


def encode(body: Body) -> Tuple[bytes, Optional[str]]:
    """The bytes of ``body`` (a :data:`Body`) and its default
    ``Content-Type`` (``None`` for no body): JSON for a ``dict`` or
    ``list``, UTF-8 text for a ``str``, ``application/octet-stream`` for
    bytes."""
    if body is None:
        return b"", None
    if isinstance(body, (dict, list)):
        return json.dumps(body).encode("utf-8"), "application/json"
    if isinstance(body, str):
        return body.encode("utf-8"), "text/plain; charset=utf-8"
    return bytes(body), "application/octet-stream"


def respond(
    start_response: Callable[..., Any],
    method: str,
    status: int,
    body: Body,
    headers: Optional[List[Tuple[str, str]]] = None,
) -> List[bytes]:
    """Start a response through ``start_response`` (WSGI) and return its
    body: no body is sent to a ``HEAD``, but its ``Content-Length``.

    :param method: the request's method (``str``).
    :param status: the status (``int``, 100 to 599); its reason phrase is
        the standard one.
    :param body: a :data:`Body` (see :func:`encode`).
    :param headers: extra ``(name, value)`` pairs; a ``Content-Type`` among
        them replaces the body's default one.
    :returns: the WSGI body, a list of ``bytes``.
    """
    data, content_type = encode(body)
    headers = list(headers or [])
    names = {name.lower() for name, _ in headers}
    if content_type is not None and "content-type" not in names:
        headers.append(("Content-Type", content_type))
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    if method == "HEAD":
        # pywsgi sends whatever the app returns, even to a HEAD; a body here
        # would be read as the start of the next response on the connection.
        if "content-length" not in names and status not in (204, 304):
            headers.append(("Content-Length", str(len(data))))
        data = b""
    start_response(f"{status} {reason}", headers)
    return [data] if data else []


def respond_error(
    start_response: Callable[..., Any],
    method: str,
    path: str,
    status: int,
    error_class: str,
    error_text: str,
) -> List[bytes]:
    """Answer ``status`` with a Napix JSON error document (PROTOCOL.md,
    section 3) naming ``method`` and the decoded ``path``.

    :param error_class: the document's ``error_class`` (``str``).
    :param error_text: its ``error_text`` (``str``).
    :returns: the WSGI body, as :func:`respond` does.
    """
    return respond(start_response, method, status, {
        "error_class": error_class,
        "error_text": error_text,
        "request": {"method": method, "path": path},
    })
