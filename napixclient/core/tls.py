"""TLS configuration: ``verify`` and ``cert`` checked, and one
:class:`ssl.SSLContext` per configuration, without I/O.

Building a context costs tens of milliseconds and most of a megabyte, so a
pool builds one per ``(verify, cert)`` (:class:`TLSContexts`) and every
connection of that configuration shares it. The class of the context is the
driver's: gevent's :class:`gevent.ssl.SSLContext` makes sockets that yield
to the hub, asyncio takes the standard one.
"""

from __future__ import annotations

import os
import ssl
from typing import Any, Callable, Dict, Optional, Tuple, Union

import requests.utils

__all__ = ["Cert", "CertFiles", "TLSContexts", "Verify", "check_cert", "check_verify",
           "ssl_context", "tls_reason"]

#: ``verify``: ``True`` (the CA bundle requests uses), ``False`` (no
#: verification), or the path of a CA bundle file or directory.
Verify = Union[bool, str, "os.PathLike[str]"]

#: ``cert``, a client certificate as requests takes it: the path of one PEM
#: file holding the certificate (and its chain) and the private key, or a
#: ``(certificate path, key path)`` pair.
Cert = Union[str, "os.PathLike[str]", Tuple[Union[str, "os.PathLike[str]"],
                                            Union[str, "os.PathLike[str]"]]]

#: A checked ``cert``: ``(certificate path, key path or None)``.
CertFiles = Tuple[str, Optional[str]]
def check_cert(cert: Any) -> Optional[CertFiles]:
    """Check a ``cert`` argument at once, as requests takes it.

    :param cert: ``None``; the path (``str`` or path-like) of one PEM file
        holding the client certificate (and its chain) and its unencrypted
        private key; or a ``(certificate path, key path)`` pair.
    :returns: ``(certificate path, key path or None)``, or ``None``.
    :raises ValueError: for another type, or a text that is PEM itself
        rather than a path (the message never shows it).
    :raises FileNotFoundError: naming ``cert`` and the path, for a file that
        does not exist.
    """
    if cert is None:
        return None
    if isinstance(cert, (str, os.PathLike)):
        return _cert_path(cert, "cert"), None
    if isinstance(cert, (tuple, list)) and len(cert) == 2 and all(
            isinstance(part, (str, os.PathLike)) for part in cert):
        return _cert_path(cert[0], "cert[0] (the certificate)"), \
            _cert_path(cert[1], "cert[1] (the private key)")
    raise ValueError("cert must be the path of a PEM file holding the client certificate "
                     "and its key, or a (certificate path, key path) pair, got "
                     f"{type(cert).__name__}")


def _cert_path(value: Any, what: str) -> str:
    path = os.fspath(value)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if "-----BEGIN" in path or "\n" in path or len(path) > 4096:
        # PEM text where a path was meant: the key may be in it, never shown.
        raise ValueError(f"{what} must be the path of a PEM file, not the PEM text itself")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: no file at {path!r}")
    return path


def _encrypted_key() -> str:
    # Called by OpenSSL only for an encrypted key: without this callback it
    # would prompt on the terminal, and wait there.
    raise ValueError("cert: the private key is encrypted; give an unencrypted key "
                     "(requests takes no key password either)")


def ssl_context(verify: Verify = True, cert: Optional[CertFiles] = None,
                context_class: Callable[[int], ssl.SSLContext] = ssl.SSLContext
                ) -> ssl.SSLContext:
    """Return an SSL context for client connections (TLS 1.2 at least, host
    names checked when verifying).

    :param verify: ``True`` verifies the server's certificate and host name
        against the CA bundle requests uses (certifi); a path (``str`` or
        path-like) verifies against that CA bundle file or directory;
        ``False`` verifies nothing (tests only).
    :param cert: the client certificate presented to servers that ask for
        one (mutual TLS): ``(certificate path, key path or None)`` as
        :func:`check_cert` returns it, or ``None``.
    :raises FileNotFoundError: if ``verify`` names a path that does not exist.
    :raises ValueError: if the client certificate or its key cannot be
        loaded (not PEM, a key that does not match, an encrypted key), naming
        ``cert`` and never the key's content.
    :param context_class: the driver's :class:`ssl.SSLContext` class
        (gevent's, for sockets that yield to the hub).
    :raises ssl.SSLError: if the CA bundle cannot be read.
    """
    context = context_class(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        try:
            context.load_cert_chain(cert[0], cert[1], password=_encrypted_key)
        except ssl.SSLError as error:
            if error.reason == "KEY_VALUES_MISMATCH":
                detail = "the key does not match the certificate"
            else:
                detail = f"{error.reason or 'PEM lib'}, are they PEM?"
                if cert[1] is None:
                    detail += " If the key is in another file, give cert=(certificate, key)"
            raise ValueError(f"cert: the client certificate and its key could not be "
                             f"loaded: {detail}") from None
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if verify is True:
        bundle: str = requests.utils.DEFAULT_CA_BUNDLE_PATH
    else:
        bundle = os.fspath(verify)
    if os.path.isdir(bundle):
        context.load_verify_locations(capath=bundle)
    elif os.path.exists(bundle):
        context.load_verify_locations(cafile=bundle)
    else:
        raise FileNotFoundError(f"verify: no CA bundle at {bundle!r}")
    return context


def check_verify(verify: Any) -> Verify:
    """Check a ``verify`` argument at once.

    :raises ValueError: when it is neither a ``bool`` nor a path.
    :raises FileNotFoundError: when it names a path that does not exist.
    """
    if isinstance(verify, bool):
        return verify
    if isinstance(verify, (str, os.PathLike)):
        if not os.path.exists(os.fspath(verify)):
            raise FileNotFoundError(f"verify: no CA bundle at {os.fspath(verify)!r}")
        return verify
    raise ValueError(f"verify must be True, False or the path of a CA bundle, got {verify!r}")


# TLS alerts that say what the server thought of the client's certificate.
_CLIENT_CERTIFICATE_ALERTS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server asks for a client certificate (cert=)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the server refused the client certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "the server does not trust the client certificate's issuer",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the server says a certificate has expired",
}


def tls_reason(error: ssl.SSLError) -> str:
    """What a TLS error says, for a person: OpenSSL's reason
    (``"CERTIFICATE_VERIFY_FAILED"``), and what an alert about the client
    certificate means (``"TLSV13_ALERT_CERTIFICATE_REQUIRED: the server
    asks for a client certificate (cert=)"``).

    :param error: the :class:`ssl.SSLError`.
    """
    reason = error.reason or type(error).__name__
    meaning = _CLIENT_CERTIFICATE_ALERTS.get(reason)
    return f"{reason}: {meaning}" if meaning else reason



class TLSContexts:
    """One shared context per TLS configuration, built on first use.

    :param context_class: the driver's :class:`ssl.SSLContext` class.
    """

    def __init__(self, context_class: Callable[[int], ssl.SSLContext] = ssl.SSLContext
                 ) -> None:
        self._class = context_class
        self._contexts: Dict[Tuple[Any, Optional[CertFiles]], ssl.SSLContext] = {}

    def get(self, verify: Verify, cert: Optional[CertFiles] = None) -> ssl.SSLContext:
        """The context for ``verify`` and ``cert`` (see :func:`ssl_context`).

        :raises FileNotFoundError: if ``verify`` names a missing CA bundle.
        :raises ValueError: if ``cert`` cannot be loaded.
        """
        key = (verify if isinstance(verify, bool) else os.fspath(verify), cert)
        context = self._contexts.get(key)
        if context is None:
            context = self._contexts[key] = ssl_context(verify, cert, self._class)
        return context

    def __len__(self) -> int:
        """How many contexts were built."""
        return len(self._contexts)
