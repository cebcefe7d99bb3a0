"""The ``napix`` command: one request, a probe of many hosts (here, or
spread over the fleet's workers), a demo, and a fleet worker.

::

    napix request HOST METHOD PATH [--data JSON] [--header K:V ...]
                  [--login L --key K | --token T] [--timeout S]
                  [--proxy URL | --no-proxy] [--cert PEM [--cert-key PEM]]
    napix probe HOST... PATH [--hosts-file F] [--simultaneous N] [--timeout S]
                [--json] [--first-where EXPR] [--sort arrival|host] [--broker URL]
                [--proxy URL | --no-proxy] [--cert PEM [--cert-key PEM]]
    napix demo [-v]
    napix worker [--broker URL] [-c N] [--visibility-timeout S] [-n NAME]
                 [--loglevel LEVEL]

Proxies come from the environment (``http_proxy``, ``https_proxy``,
``all_proxy``, ``no_proxy``), as requests reads them, unless ``--proxy``
names one for every host or ``--no-proxy`` connects directly; a proxy's
password is masked like a key in whatever the command prints.

Credentials come from ``--login``/``--key`` or ``--token``, else from the
environment (``NAPIX_LOGIN`` and ``NAPIX_KEY``, or ``NAPIX_TOKEN``). They are
never printed, not even with ``-v``: whatever the command prints or logs
goes through :mod:`napixclient.redact`, which replaces them with ``***``,
also where a server echoes them percent-encoded, and masks signatures in log
lines; urllib3's own debug log (which prints whole URLs, a token parameter
included) stays off.

Output: bodies, table rows and JSON lines on standard output, written as
they come; log records (one line each, never a traceback), error chains,
hints and the progress bar on standard error. On a terminal, a far side's
control characters are shown escaped, and what is printed while the
progress bar runs appears whole above it.

Exit codes follow the usual Unix convention: 0 success, 1 a request failed
(``request``) or not every host answered well (``probe``), 2 bad usage
(argparse's own convention), 130 interrupted (128 + SIGINT), 141 standard
output closed before the command was done writing (128 + SIGPIPE, as for
``napix probe ... | head -1``; nothing is printed, and a probe cancels what
it had pending).

The command runs its requests in the main greenlet and in a
:class:`~napixclient.ClientPool`: nothing is monkey-patched.
"""

from napixclient.cli.arguments import (
    NO_CREDENTIALS_HINT,
    Connection,
    host_argument,
    host_sort_key,
    parse_data,
    parse_header,
    path_argument,
    read_hosts_file,
    resolve_connection,
)
from napixclient.cli.command import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    build_parser,
    main,
    raise_open_files_limit,
)
from napixclient.cli.expressions import ExpressionError, compile_condition
from napixclient.probing import (
    Credentials,
    ProbeRow,
    UsageError,
    resolve_credentials,
    summarize,
)

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "NO_CREDENTIALS_HINT",
    "Connection",
    "Credentials",
    "ExpressionError",
    "ProbeRow",
    "UsageError",
    "build_parser",
    "compile_condition",
    "host_argument",
    "host_sort_key",
    "main",
    "parse_data",
    "parse_header",
    "path_argument",
    "raise_open_files_limit",
    "read_hosts_file",
    "resolve_connection",
    "resolve_credentials",
    "summarize",
]
