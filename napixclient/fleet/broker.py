"""The fleet's broker: its URL, checked before anything is sent, and how
messages name it (its credentials masked)."""

from __future__ import annotations

from typing import Any, Tuple
from urllib.parse import unquote, urlsplit

from napixclient.redact import MASK, redact_secrets, redact_url_credentials

__all__ = [
    "CONNECT_TIMEOUT",
    "DEFAULT_BROKER",
    "ENV_BROKER",
    "FleetError",
    "broker_name",
    "check_broker_url",
    "unreachable",
]

#: The broker (and result backend) when neither ``broker=`` nor
#: ``NAPIX_BROKER`` says otherwise.
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
#: The environment variable naming the broker, for workers and callers.
ENV_BROKER = "NAPIX_BROKER"
#: Seconds to connect to the broker before giving up: a broker that is down
#: or unreachable is an error within this, not a hang.
CONNECT_TIMEOUT = 3.0

#: Characters that end a URL's authority (RFC 3986, section 3.2): in a
#: password they must be percent-encoded.
_AUTHORITY_ENDS = "/?#"


class FleetError(Exception):
    """The fleet cannot run the probe: the ``fleet`` extra is not installed,
    the broker is unreachable, no worker answers, or a shard failed on a
    worker. The message names the broker without its credentials."""


def broker_name(url: str) -> str:
    """``url`` as messages name it: its user information masked
    (:func:`napixclient.redact.redact_url_credentials`), and everything
    before its last ``@`` when that ``@`` stands where no user information
    can (after a password's unencoded ``/``, ``?`` or ``#``, or in a text
    without a scheme).

    :param url: a broker URL such as ``redis://:pw@127.0.0.1:6379/0``
        (``str``).
    :returns: ``str``, e.g. ``redis://***@127.0.0.1:6379/0``.
    """
    masked = redact_url_credentials(url)
    if "@" not in masked.replace(f"{MASK}@", ""):
        return masked
    scheme, sep, _ = url.partition("://")
    where = url.rpartition("@")[2]
    return f"{scheme}://{MASK}@{where}" if sep else f"{MASK}@{where}"


def check_broker_url(url: Any) -> str:
    """Check a broker URL before anything uses it, so that a mistake in it is
    a clear :class:`ValueError` rather than a traceback from Celery or kombu
    (or a connection to the wrong host).

    :param url: ``scheme://[user:password@]host[:port][/path]`` (``str``):
        a scheme kombu knows (``redis``, ``rediss``, ``amqp``...), a port
        from 1 to 65535 if any, a Redis database number if any, and the
        password's ``/``, ``?``, ``#`` percent-encoded (``%2F``, ``%3F``,
        ``%23``).
    :returns: ``url``.
    :raises ValueError: naming what is wrong, and never the URL's
        credentials.
    """
    example = f"such as {DEFAULT_BROKER}"
    if not isinstance(url, str):
        raise ValueError(f"the broker must be a URL {example}, got {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme or any(c.isspace() for c in url):
        raise ValueError(f"the broker must be a URL {example}, got {broker_name(url)!r}")
    authority = rest
    for end in _AUTHORITY_ENDS:
        authority = authority.partition(end)[0]
    if "@" in rest[len(authority):]:
        raise ValueError(f"the broker URL {broker_name(url)!r} has an '@' after its host: "
                         "percent-encode the '/', '?' and '#' of its password (%2F, %3F, "
                         "%23)")
    known = _broker_schemes()
    if known is not None and scheme not in known:
        raise ValueError(f"the broker URL {broker_name(url)!r}: {scheme!r} is not a scheme "
                         "of a broker Celery knows, such as redis, rediss or amqp")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"the broker URL {broker_name(url)!r}: the port must be a number "
                         "from 1 to 65535")
    database = parts.path.strip("/")
    if scheme in ("redis", "rediss") and database and not database.isdigit():
        raise ValueError(f"the broker URL {broker_name(url)!r}: a Redis database is a "
                         f"number, {example}")
    return url


def _broker_schemes() -> Any:
    """The URL schemes kombu knows, or ``None`` without kombu (then the
    fleet says which extra to install, when it needs Celery)."""
    try:
        from kombu.transport import TRANSPORT_ALIASES
    except ImportError:
        return None
    return set(TRANSPORT_ALIASES)


def _passwords(url: str) -> Tuple[str, ...]:
    """The password of ``url`` as written and decoded, to mask where a
    library's message repeats it (``()`` for none)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return ()
    return (password, unquote(password)) if password else ()


def unreachable(url: str, error: BaseException) -> FleetError:
    """The :class:`FleetError` for a broker that did not answer.

    :param url: the broker URL (``str``).
    :param error: what the broker's client raised.
    :returns: a :class:`FleetError` naming the broker (:func:`broker_name`)
        and the reason on one line, the password masked in it too.
    """
    reason = " ".join(str(error).split()) or type(error).__name__
    return FleetError(f"cannot reach the broker {broker_name(url)} within "
                      f"{CONNECT_TIMEOUT:g} s: {redact_secrets(reason, _passwords(url))}")
