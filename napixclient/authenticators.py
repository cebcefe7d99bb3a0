"""Authenticators: how a request proves who sent it to a Napix server.

An authenticator is any callable that takes a :class:`requests.PreparedRequest`
and returns it, changed (the :class:`requests.auth.AuthBase` protocol). Two are
built in, one for each protocol a Napix server speaks (see PROTOCOL.md):

* :class:`LoginAuthenticator`, the secure protocol: every request is signed
  with HMAC-SHA256 in its ``Authorization`` header;
* :class:`TokenIdentifier`, the non-secure protocol: an opaque token travels
  as a query parameter.

Nothing else in the library knows how a scheme works.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from typing import Any, Callable, Optional, Tuple
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests
import requests.auth

__all__ = [
    "Authenticator",
    "LoginAuthenticator",
    "TokenIdentifier",
    "coerce_authenticator",
    "sign",
    "signed_message",
]

#: The type of an authenticator: a callable over a prepared request.
Authenticator = Callable[[requests.PreparedRequest], requests.PreparedRequest]

#: Bytes of CSPRNG output per nonce; 16 bytes give 32 hex characters, twice
#: the 16 the protocol asks for.
NONCE_BYTES = 16


def signed_message(
    login: str, nonce: str, host: str, path: str, method: str, timestamp: int
) -> str:
    """Return the message the secure Napix protocol signs.

    :param login: the user's login.
    :param nonce: a fresh random string, never reused.
    :param host: the ``Host`` header exactly as sent (``name`` or ``name:port``).
    :param path: the request target exactly as sent: percent-encoded path,
        plus ``?`` and the query string when there is one.
    :param method: the HTTP method; it is upper-cased here.
    :param timestamp: Unix time in whole seconds.
    :returns: the six fields URL-encoded in the protocol's order
        (PROTOCOL.md, section 1), as a ``str``.
    """
    return urlencode(
        [
            ("login", login),
            ("nonce", nonce),
            ("host", host),
            ("path", path),
            ("method", method.upper()),
            ("timestamp", str(int(timestamp))),
        ]
    )


def sign(key: str, message: str) -> str:
    """Return ``hex(HMAC-SHA256(key, message))``, both UTF-8 encoded.

    :param key: the secret key of the login.
    :param message: what to sign, usually from :func:`signed_message`.
    :returns: 64 lower-case hex characters.
    """
    return hmac.new(key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


def request_target(url: str) -> str:
    """Return the request target of an absolute URL: its path, ``?query`` when
    there is one, exactly as it goes on the request line.

    :param url: an absolute URL, already percent-encoded.
    """
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return target


def host_header(url: str) -> str:
    """Return the ``Host`` header value that urllib3 sends for ``url``.

    urllib3 leaves the default port out (80 for http, 443 for https) and
    writes the name in lower case, so the signature must do the same.

    :param url: an absolute ``http`` or ``https`` URL.
    """
    parts = urlsplit(url)
    name = parts.hostname or ""
    if ":" in name:
        name = f"[{name}]"
    default_port = 443 if parts.scheme == "https" else 80
    if parts.port is not None and parts.port != default_port:
        return f"{name}:{parts.port}"
    return name


class LoginAuthenticator(requests.auth.AuthBase):
    """Signs each request with the secure Napix protocol (PROTOCOL.md, section 1).

    The ``Authorization`` header carries the message (login, a fresh nonce,
    the host, the request target, the method, a timestamp) and its
    HMAC-SHA256 signature with ``key``. A server refuses a signature made for
    another host, path or method, so a signature cannot be replayed elsewhere.

    :param login: the user's login (``str``, not empty).
    :param key: the user's secret key (``str``, not empty). It never appears in
        ``repr()``, log lines or exceptions.
    :raises ValueError: if ``login`` or ``key`` is not a non-empty ``str``.

    >>> LoginAuthenticator("root", "toor")
    LoginAuthenticator(login='root')
    """

    def __init__(self, login: str, key: str) -> None:
        if not isinstance(login, str) or not login:
            raise ValueError("LoginAuthenticator: login must be a non-empty str")
        if not isinstance(key, str) or not key:
            raise ValueError("LoginAuthenticator: key must be a non-empty str")
        self.login = login
        self._key = key

    def __repr__(self) -> str:
        return f"LoginAuthenticator(login={self.login!r})"

    def authorization(
        self, method: str, host: str, path: str, *, nonce: Optional[str] = None,
        timestamp: Optional[int] = None,
    ) -> str:
        """Return the ``Authorization`` header value for one request.

        :param method: the HTTP method.
        :param host: the ``Host`` header exactly as sent.
        :param path: the request target exactly as sent (path and ``?query``).
        :param nonce: the nonce; by default 32 fresh hex characters from
            :func:`secrets.token_hex` (a CSPRNG). Pass one only to reproduce a
            test vector.
        :param timestamp: Unix time in whole seconds; by default now.
        :returns: ``"<message>:<signature>"``.
        """
        if nonce is None:
            nonce = secrets.token_hex(NONCE_BYTES)
        if timestamp is None:
            timestamp = int(time.time())
        message = signed_message(self.login, nonce, host, path, method, timestamp)
        return f"{message}:{sign(self._key, message)}"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        """Add the signed ``Authorization`` header to ``request`` and return it.

        :raises ValueError: if the request has no absolute URL or no method.
        """
        if not request.url or not request.method:
            raise ValueError("LoginAuthenticator: the request has no URL or no method")
        url = str(request.url)
        host = request.headers.get("Host") or host_header(url)
        request.headers["Authorization"] = self.authorization(
            request.method, host, request_target(url)
        )
        return request


class TokenIdentifier(requests.auth.AuthBase):
    """Sends an opaque token as a query parameter: the non-secure Napix
    protocol (PROTOCOL.md, section 2).

    The parameter is appended to any query string the request already has.
    The value is treated as opaque; a Napix server reads it as
    ``login:signature``. :class:`~napixclient.Client` shows it as ``***`` in
    ``remote_call``, and it never appears in ``repr()`` or exceptions.

    :param token: the token (``str``, not empty).
    :param parameter: the query parameter's name, ``"token"`` by default
        (configurable on the server).
    :raises ValueError: if ``token`` or ``parameter`` is not a non-empty ``str``.
    """

    def __init__(self, token: str, parameter: str = "token") -> None:
        if not isinstance(token, str) or not token:
            raise ValueError("TokenIdentifier: token must be a non-empty str")
        if not isinstance(parameter, str) or not parameter:
            raise ValueError("TokenIdentifier: parameter must be a non-empty str")
        self._token = token
        self.parameter = parameter

    @property
    def secret_parameters(self) -> Tuple[str, ...]:
        """Names of the query parameters whose values are secret."""
        return (self.parameter,)

    def __repr__(self) -> str:
        return f"TokenIdentifier(parameter={self.parameter!r})"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        """Append ``parameter=token`` to the query string of ``request``."""
        parts = urlsplit(str(request.url))
        extra = urlencode([(self.parameter, self._token)])
        query = f"{parts.query}&{extra}" if parts.query else extra
        request.url = urlunsplit(parts._replace(query=query))
        return request


def coerce_authenticator(value: Any) -> Authenticator:
    """Turn what a user passes as ``authenticator`` into a callable one.

    Accepted:

    * any callable taking a :class:`requests.PreparedRequest` and returning it
      (a :class:`LoginAuthenticator`, a :class:`TokenIdentifier`, any
      :class:`requests.auth.AuthBase`), returned as is;
    * a mapping with the keys ``login`` and ``key``, turned into a
      :class:`LoginAuthenticator`.

    :raises ValueError: for anything else (a string, an empty mapping, a
        mapping without ``login`` and ``key``, ``None``), naming what is
        accepted. The message never repeats the value, which may be a secret.
    """
    accepted = (
        "authenticator must be a callable taking a requests.PreparedRequest "
        "(LoginAuthenticator, TokenIdentifier, requests.auth.AuthBase) or a "
        "mapping with 'login' and 'key'"
    )
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{accepted}; got a {type(value).__name__}")
    if isinstance(value, Mapping):
        if not {"login", "key"}.issubset(value):
            keys = sorted(str(k) for k in value)
            raise ValueError(f"{accepted}; got a mapping with keys {keys}")
        return LoginAuthenticator(value["login"], value["key"])
    if callable(value):
        return value
    raise ValueError(f"{accepted}; got {type(value).__name__}")
