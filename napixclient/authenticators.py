"""Authenticators: how a request proves who sent it to a Napix server.

The public home of :class:`LoginAuthenticator` and :class:`TokenIdentifier`
(``from napixclient.authenticators import LoginAuthenticator``); they live in
:mod:`napixclient.core.authenticators`, with the rest of the core, which the
gevent and the asyncio drivers share.
"""

from napixclient.core.authenticators import (
    NONCE_BYTES,
    Authenticator,
    LoginAuthenticator,
    NativeAuthenticator,
    SignedRequest,
    TokenIdentifier,
    coerce_authenticator,
    host_header,
    request_target,
    sign,
    signed_message,
)

__all__ = [
    "NONCE_BYTES",
    "Authenticator",
    "LoginAuthenticator",
    "NativeAuthenticator",
    "SignedRequest",
    "TokenIdentifier",
    "coerce_authenticator",
    "host_header",
    "request_target",
    "sign",
    "signed_message",
]
