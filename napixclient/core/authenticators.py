"""Authenticators: how a request proves who sent it to a Napix server.

Two are built in, one for each protocol a Napix server speaks (see
PROTOCOL.md):

* :class:`LoginAuthenticator`, the secure protocol: every request is signed
  with HMAC-SHA256 in its ``Authorization`` header;
* :class:`TokenIdentifier`, the non-secure protocol: an opaque token travels
  as a query parameter.

Both sign a request from what it already is, with :meth:`~NativeAuthenticator.sign_request`:
the method, the ``Host`` header, the request target, the headers and the
body go in, a :class:`SignedRequest` (the target to send, the header fields
to add, and the target as records show it) comes out. A
:class:`~napixclient.Client` calls that method whenever an authenticator has
it, so signing costs no URL parsing and no :class:`requests.PreparedRequest`;
subclass :class:`NativeAuthenticator` to write another such authenticator.

Any callable that takes a :class:`requests.PreparedRequest` and returns it
(the :class:`requests.auth.AuthBase` protocol) is an authenticator too, and
the built-in ones are such callables as well, so they also work with
requests itself (``requests.get(url, auth=LoginAuthenticator(...))``).

Nothing else in the library knows how a scheme works.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple
from urllib.parse import quote_plus, urlencode, urlsplit, urlunsplit

import requests
import requests.auth

from napixclient.redact import MASK, redact_parameters

__all__ = [
    "Authenticator",
    "LoginAuthenticator",
    "NativeAuthenticator",
    "SignedRequest",
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

# Nonces drawn from the CSPRNG (os.urandom) 256 at a time, so that a
# signature costs no system call of its own; each is taken out once
# (deque.popleft: atomic, so two threads never get the same one), and a
# child process forgets its parent's (os.fork would copy them).
_NONCES: "deque[str]" = deque()
_NONCES_AT_ONCE = 256
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_NONCES.clear)


def _fresh_nonce() -> str:
    """A nonce never given before: :data:`NONCE_BYTES` bytes of the
    operating system's CSPRNG (:func:`os.urandom`), as lower-case hex."""
    while True:
        try:
            return _NONCES.popleft()
        except IndexError:  # (again if other threads took them all meanwhile)
            size = 2 * NONCE_BYTES
            drawn = os.urandom(NONCE_BYTES * _NONCES_AT_ONCE).hex()
            _NONCES.extend([drawn[start:start + size] for start in range(0, len(drawn), size)])

# quote_plus of the values met again and again (a client's Host, the paths
# it polls, the methods, the login), so that most signatures quote nothing:
# at most _QUOTED_MAX values of at most _QUOTED_LONGEST characters, emptied
# when full. None of them is a secret.
_QUOTED: Dict[str, str] = {}
_QUOTED_MAX = 1024
_QUOTED_LONGEST = 512


def _form(value: str) -> str:
    """``value`` as :func:`urllib.parse.urlencode` writes it (``quote_plus``)."""
    quoted = _QUOTED.get(value)
    if quoted is None:
        quoted = quote_plus(value)
        if len(value) <= _QUOTED_LONGEST:
            if len(_QUOTED) >= _QUOTED_MAX:
                _QUOTED.clear()
            _QUOTED[value] = quoted
    return quoted


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
        (PROTOCOL.md, section 1), as a ``str``: what
        :func:`urllib.parse.urlencode` gives for them, written without it
        (the quoted host, path, method and login of recent requests are
        kept, since they come again and again).
    """
    if not (nonce.isascii() and nonce.isalnum()):
        nonce = quote_plus(nonce)  # hex nonces, ours, need no quoting
    return (f"login={_form(login)}&nonce={nonce}&host={_form(host)}&path={_form(path)}"
            f"&method={_form(method.upper())}&timestamp={int(timestamp)}")


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


class SignedRequest(NamedTuple):
    """What :meth:`NativeAuthenticator.sign_request` made of a request.

    :ivar target: the request target to send (``str``): percent-encoded
        path, plus ``?`` and the query string; the target it was given when
        the authenticator changes none.
    :ivar headers: header fields to add to the request
        (``Mapping[str, str]``), each replacing any field of the same name
        whatever its case; may be empty.
    :ivar redacted_target: ``target`` as records, logs and ``remote_call``
        show it (``str``): every secret the authenticator put in it reads
        ``***`` (:data:`napixclient.redact.MASK`). The client builds the
        request's :class:`~napixclient.RequestRecord` from it, without
        parsing ``target`` back. Header values never reach a record.
    """

    target: str
    headers: Mapping[str, str]
    redacted_target: str


class NativeAuthenticator(requests.auth.AuthBase):
    """An authenticator that signs a request from what it already is.

    Subclasses implement :meth:`sign_request`; a
    :class:`~napixclient.Client` calls it for each request, with the request
    as it goes on the wire, and sends what it returns. Calling the
    authenticator on a :class:`requests.PreparedRequest` (the
    :class:`requests.auth.AuthBase` protocol, for requests' own users) runs
    the same :meth:`sign_request` on the prepared request's URL and headers.
    """

    def sign_request(self, method: str, host: str, target: str,
                     headers: Mapping[str, str], body: Optional[bytes]) -> SignedRequest:
        """Sign one request.

        :param method: the HTTP method, upper case (``str``).
        :param host: the ``Host`` header exactly as sent (``name`` or
            ``name:port``, ``str``).
        :param target: the request target exactly as sent: percent-encoded
            path, plus ``?`` and the query string when there is one (``str``).
        :param headers: the request's header fields, ``Host`` included: a
            read-only, case-insensitive ``Mapping[str, str]``. Do not change
            it: it may be shared by every request of a client.
        :param body: the body (``bytes``), or ``None`` when there is none or
            it is a stream.
        :returns: a :class:`SignedRequest`. The client checks its header
            fields and target, and raises :class:`ValueError` for one that
            is not valid HTTP.
        :raises NotImplementedError: here; subclasses implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement sign_request")

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        """Sign ``request`` in place with :meth:`sign_request` and return it.

        The ``Host`` signed is the request's ``Host`` header, or the one
        urllib3 will send for its URL (:func:`host_header`).

        :raises ValueError: if the request has no URL or no method.
        """
        if not request.url or not request.method:
            raise ValueError(f"{type(self).__name__}: the request has no URL or no method")
        url = str(request.url)
        parts = urlsplit(url)
        target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        host = request.headers.get("Host") or host_header(url)
        body = request.body
        if isinstance(body, str):
            body = body.encode("utf-8")
        signed = self.sign_request(str(request.method).upper(), host, target, request.headers,
                                   body if isinstance(body, bytes) else None)
        if signed.target != target:
            path, _, query = signed.target.partition("?")
            request.url = urlunsplit((parts.scheme, parts.netloc, path, query, parts.fragment))
        request.headers.update(signed.headers)
        return request


class LoginAuthenticator(NativeAuthenticator):
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
        self._login_field = f"login={quote_plus(login)}"
        # The key's HMAC state, made once; each signature starts from a copy.
        self._mac = hmac.new(key.encode("utf-8"), digestmod=hashlib.sha256)

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
            the operating system's CSPRNG (:func:`os.urandom`). Pass one
            only to reproduce a test vector.
        :param timestamp: Unix time in whole seconds; by default now.
        :returns: ``"<message>:<signature>"``.
        """
        # signed_message's message, written here with the login quoted once
        # (the test vectors hold the two equal).
        if nonce is None:
            nonce = _fresh_nonce()  # hex: nothing to quote
        elif not (nonce.isascii() and nonce.isalnum()):
            nonce = quote_plus(nonce)
        message = (f"{self._login_field}&nonce={nonce}&host={_form(host)}&path={_form(path)}"
                   f"&method={_form(method.upper())}"
                   f"&timestamp={int(time.time()) if timestamp is None else int(timestamp)}")
        mac = self._mac.copy()
        mac.update(message.encode("utf-8"))
        return f"{message}:{mac.hexdigest()}"

    def sign_request(self, method: str, host: str, target: str,
                     headers: Optional[Mapping[str, str]] = None,
                     body: Optional[bytes] = None) -> SignedRequest:
        """The request with its ``Authorization`` header (see
        :meth:`NativeAuthenticator.sign_request`); the target is unchanged,
        and holds no secret."""
        return SignedRequest(target, {"Authorization": self.authorization(method, host, target)},
                             target)


class TokenIdentifier(NativeAuthenticator):
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
        self.parameter = parameter
        # What is appended, and what records show instead: made once.
        self._pair = urlencode([(parameter, token)])
        self._masked = f"{quote_plus(parameter)}={MASK}"
        self._names = (f"{parameter}=", f"{quote_plus(parameter)}=")

    @property
    def secret_parameters(self) -> Tuple[str, ...]:
        """Names of the query parameters whose values are secret."""
        return (self.parameter,)

    def __repr__(self) -> str:
        return f"TokenIdentifier(parameter={self.parameter!r})"

    def sign_request(self, method: str, host: str, target: str,
                     headers: Optional[Mapping[str, str]] = None,
                     body: Optional[bytes] = None) -> SignedRequest:
        """The request with ``parameter=token`` appended to its query string
        (see :meth:`NativeAuthenticator.sign_request`); no header. In the
        redacted target the token reads ``***``, and so does the value of a
        parameter of the same name that the target already had."""
        if "?" not in target:
            separator = "?"
        elif target.endswith(("?", "&")):
            separator = ""
        else:
            separator = "&"
        shown = target
        if self._names[0] in target or self._names[1] in target:
            shown = redact_parameters(target, (self.parameter,))
        return SignedRequest(target + separator + self._pair, {},
                             shown + separator + self._masked)


def coerce_authenticator(value: Any) -> Authenticator:
    """Turn what a user passes as ``authenticator`` into a callable one.

    Accepted:

    * any callable taking a :class:`requests.PreparedRequest` and returning it
      (a :class:`LoginAuthenticator`, a :class:`TokenIdentifier`, any
      :class:`NativeAuthenticator` or :class:`requests.auth.AuthBase`),
      returned as is;
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
