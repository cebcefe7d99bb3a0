"""What the two ExceptionsCatchers share: the WSGI one
(:mod:`napixclient.wsgi`) and the ASGI one (:mod:`napixclient.asgi`).

The Napix error document of an exception that escaped an application, its
body and ``Content-Type``, and the log lines of a failure, written once for
both. The document itself is :func:`napixclient.chain.write_document`'s;
what differs between the two (how a request's method and path are read,
how an answer is started) stays in each.
"""

from __future__ import annotations

import json
import logging
import traceback
from typing import Any, Dict, Mapping, Tuple

from napixclient.chain import write_document
from napixclient.core.trace import instrumentation
from napixclient.exceptions import HTTPError

__all__ = [
    "Catcher",
    "MAX_ERROR_TEXT",
    "MAX_FRAMES",
    "STATUS",
    "error_body",
    "error_document",
    "log_failure",
    "request_part",
    "safe_text",
]

#: The most characters of an exception's text put in ``error_text``.
MAX_ERROR_TEXT = 10_000
#: The most frames, innermost last, put in ``traceback`` (``show_traceback``).
MAX_FRAMES = 50
#: The status of the answer to a failed request.
STATUS = 500


def safe_text(value: Any, limit: int = MAX_ERROR_TEXT) -> str:
    """``str(value)``, clipped to ``limit`` characters; never raises, even
    for an exception whose ``__str__`` does.

    :param value: anything (an exception, a path).
    :param limit: the most characters kept (``int``).
    :returns: the text (``str``), saying how many characters were cut.
    """
    try:
        text = str(value)
    except Exception:
        try:
            text = f"<unprintable {type(value).__name__}>"
        except Exception:
            text = "<unprintable>"
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit} more characters)"
    return text


def request_part(method: Any, path: Any) -> Dict[str, str]:
    """The document's ``request``: the method and the path, clipped (32 and
    2000 characters). Never pass the query string or a header: they may
    carry credentials.

    :param method: the request's method (``str``).
    :param path: the request's path, decoded (``str``); ``"/"`` when empty.
    :returns: ``{"method": ..., "path": ...}``.
    """
    return {"method": safe_text(method, 32), "path": safe_text(path or "/", 2000)}


def _traceback_part(error: BaseException) -> Dict[str, Any]:
    """``traceback`` (innermost frame last), ``filename`` and ``line`` of
    where ``error`` was raised. Frame locals never leave the server."""
    frames = traceback.extract_tb(error.__traceback__, limit=-MAX_FRAMES)
    part: Dict[str, Any] = {
        "traceback": [
            {"filename": frame.filename, "line": frame.lineno,
             "in": frame.name, "call": frame.line or ""}
            for frame in frames
        ],
    }
    if frames:
        part["filename"] = frames[-1].filename
        part["line"] = frames[-1].lineno
    return part


def error_document(error: BaseException, request: Mapping[str, str],
                   show_traceback: bool = False) -> Dict[str, Any]:
    """The Napix error document for ``error`` (PROTOCOL.md, section 3, and
    "Writing the chain").

    :param error: the exception that escaped the application.
    :param request: the document's ``request`` (:func:`request_part`).
    :param show_traceback: ``bool``; add ``traceback``, ``filename`` and
        ``line`` (they reveal file paths).
    :returns: a ``dict`` with ``error_class``, ``error_text`` and
        ``request``; ``remote_call``, ``remote_error`` and ``remote_status``
        for an :class:`~napixclient.HTTPError`; ``trace_id`` and ``span_id``
        of the current span with OpenTelemetry in use (written by
        :func:`napixclient.chain.write_document`).
    """
    relayed: Dict[str, Any] = {}
    if isinstance(error, HTTPError):
        relayed = {"remote_call": error.remote_call, "remote_error": error.remote_error,
                   "remote_status": error.status}
    otel = instrumentation()
    if otel is not None:
        relayed["trace_id"], relayed["span_id"] = otel.current_ids()
    document = write_document(type(error).__name__, safe_text(error), request, **relayed)
    if show_traceback:
        document.update(_traceback_part(error))
    return document


def error_body(document: Any, error: BaseException,
               log: logging.Logger) -> Tuple[bytes, str]:
    """The body and ``Content-Type`` of the answer to a failed request.

    :param document: a callable of no argument returning the error
        document (so that its failures are caught here too).
    :param error: the exception that escaped the application.
    :param log: the logger to warn on when the document cannot be encoded.
    :returns: the JSON document (``application/json``), or, when it cannot
        be made or encoded (a ``remote_error`` that is not JSON data, a
        broken ``__str__``), ``"<class>: <text>"`` in ``text/plain``.
    """
    try:
        return json.dumps(document()).encode("utf-8"), "application/json"
    except Exception:
        log.warning("the error document for %s could not be encoded as JSON; "
                    "answering text/plain", type(error).__name__, exc_info=True)
        text = f"{type(error).__name__}: {safe_text(error)}"
        return text.encode("utf-8", "replace"), "text/plain; charset=utf-8"


def log_failure(log: logging.Logger, request: Mapping[str, str], error: BaseException,
                started: bool) -> None:
    """Log ``error``, with its traceback, as an ``ERROR`` of ``log``.

    :param request: the document's ``request`` (method and path only).
    :param started: whether the response had started (the connection is
        then cut) or the error is answered with a 500.
    """
    what = ("failed after its response started; cutting the connection" if started
            else f"failed; answering {STATUS}")
    log.error("%s %s %s", request["method"], request["path"], what, exc_info=error)


class Catcher:
    """What both ExceptionsCatchers hold: the application they wrap, and
    whether tracebacks leave the server.

    :param app: the application (a callable).
    :param show_traceback: ``bool``; whether documents carry ``traceback``,
        ``filename`` and ``line``.
    :raises TypeError: if ``app`` is not callable; the message says what it
        must be (:attr:`expected`).
    """

    #: What ``app`` must be, for the message of the ``TypeError``.
    expected = "a callable"

    def __init__(self, app: Any, show_traceback: bool = False) -> None:
        if not callable(app):
            raise TypeError(f"ExceptionsCatcher: app must be {self.expected}, "
                            f"got {type(app).__name__}")
        self.app = app
        self.show_traceback = bool(show_traceback)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.app!r}, show_traceback={self.show_traceback})"
