"""Where and how the ``napix`` command writes: standard output for data,
standard error for people, a progress bar that other output never writes
over, log records on one line, and the credentials masked in all of it
(through :mod:`napixclient.redact`)."""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
from typing import (
    Any,
    Callable,
    Iterable,
    Iterator,
    Optional,
    Sequence,
    TextIO,
    cast,
)

import gevent
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.text import Text

from napixclient.probing import printable
from napixclient.redact import redact_secrets, redact_signatures

#: Columns of a table written to a pipe or a file when ``COLUMNS`` is not set.
PIPE_WIDTH = 120


def redact(text: str, secrets: Iterable[str]) -> str:
    """What the command prints: ``text`` with the credentials masked, in
    every encoding a server may echo them in (:func:`~napixclient.redact.redact_secrets`)."""
    return redact_secrets(text, secrets)


def redact_bytes(data: bytes, secrets: Sequence[str]) -> bytes:
    """:func:`redact` for a body written as bytes: read as Latin-1 (one
    character per byte, so any bytes go through unchanged), with each
    secret's UTF-8 bytes masked too."""
    as_bytes = [secret.encode("utf-8").decode("latin-1") for secret in secrets]
    return redact(data.decode("latin-1"), [*secrets, *as_bytes]).encode("latin-1")


def redact_log(text: str, secrets: Iterable[str]) -> str:
    """What the command logs: the credentials masked where they stand as
    whole words (``whole_words=True`` of
    :func:`~napixclient.redact.redact_secrets`: a short key ``k`` is masked
    in ``key=k``, never inside ``ok`` or a field's name), in every encoding
    a server may echo them in, and every signature
    (:func:`~napixclient.redact.redact_signatures`).

    :param text: a log message (``str``).
    :param secrets: the credentials (``str`` values).
    :returns: the masked text (``str``).
    """
    return redact_signatures(redact_secrets(text, secrets, whole_words=True))


class _LogHandler(logging.Handler):
    """Writes each log record as one line, ``napix: LOGGER: MESSAGE``, with
    the credentials and signatures masked in the message
    (:func:`redact_log`); ``napix`` and the logger's name, never secret, are
    never masked.

    An exception attached to a record is named on the same line (``(KeyError:
    'x')``), never printed as a traceback: a traceback is not for a user of
    the command, and the servers of ``napix demo`` log their failures with
    one on purpose.
    """

    def __init__(self, write: Callable[[str], None], secrets: Sequence[str]) -> None:
        super().__init__()
        self._write = write
        self._secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            message += f" ({type(error).__name__}: {error})"
        message = redact_log(" ".join(message.splitlines()), self._secrets)
        return printable(f"napix: {record.name}: {message}")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._write(self.format(record))
        except Exception:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        """Drop a record that cannot be written (standard error closed, say):
        logging's default prints a traceback about it on standard error."""


_handler: Optional[logging.Handler] = None


def setup_logging(verbosity: int, secrets: Sequence[str], write: Callable[[str], None]) -> None:
    """Log one line per record, with the secrets masked: warnings by
    default, the command's own steps with ``-v``, napixclient's debug lines
    with ``-vv``.

    :param verbosity: how many ``-v`` (``int``).
    :param secrets: the credentials (``str`` values) to mask.
    :param write: writes one line (``Callable[[str], None]``), such as
        :meth:`Output.log`.

    urllib3 stays at WARNING whatever the verbosity: its debug lines print
    whole URLs, a token parameter included.
    """
    global _handler
    root = logging.getLogger()
    if _handler is not None:  # main() called again in the same process
        root.removeHandler(_handler)
    _handler = _LogHandler(write, secrets)
    root.addHandler(_handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if verbosity >= 1:
        logging.getLogger("napixclient.cli").setLevel(logging.DEBUG)
    if verbosity >= 2:
        logging.getLogger("napixclient").setLevel(logging.DEBUG)


def _same_terminal(first: TextIO, second: TextIO) -> bool:
    """Whether two streams are one terminal (the same device), as standard
    output and standard error are in an interactive shell."""
    try:
        return (first.isatty() and second.isatty()
                and os.fstat(first.fileno()).st_rdev == os.fstat(second.fileno()).st_rdev)
    except (OSError, ValueError, AttributeError):
        return False


def _pipe_width() -> int:
    """Columns for a table written to a pipe or a file: ``COLUMNS`` when set,
    else :data:`PIPE_WIDTH`."""
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else PIPE_WIDTH


class WriteError(Exception):
    """Standard output could not be written: a full disk, a descriptor closed
    before the command started (``napix ... >&-``), an I/O error. The
    command says so on one line and exits 1, as ``cat`` does; a closed
    pipe is :class:`BrokenPipeError`, not this.

    :param error: the :class:`OSError` the write raised.
    :ivar reason: its words, such as ``"No space left on device"`` (``str``).
    """

    def __init__(self, error: OSError) -> None:
        self.reason = error.strerror or str(error)
        super().__init__(self.reason)


@contextlib.contextmanager
def _writing() -> Iterator[None]:
    """Turn an :class:`OSError` of a write to standard output into
    :class:`WriteError`; a :class:`BrokenPipeError` stays one."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as error:
        raise WriteError(error) from None


@contextlib.contextmanager
def _quietly() -> Iterator[None]:
    """Drop what cannot be written to standard error (full, closed): the
    command's work and its exit status do not depend on it."""
    try:
        yield
    except OSError:
        pass


class _ClosedOutput(io.TextIOBase):
    """Standard output when the command was started without one (Python
    sets ``sys.stdout`` to ``None``): writing fails as on a closed
    descriptor."""

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))


class _StandardOutput:
    """Standard output as :class:`Output` writes to it: a failed write or
    flush raises :class:`WriteError`; everything else is the stream's."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        with _writing():
            return int(self._stream.write(text))

    def flush(self) -> None:
        with _writing():
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class Output:
    """Where the command writes, and how.

    Bodies, table rows and JSON lines go to standard output; log records,
    errors, the progress bar and (with ``--json``) the summary go to
    standard error. Each stream has its rich Console. While the progress
    bar runs on a terminal, log records and (when standard output is that
    same terminal) rows are printed through the bar's console, which draws
    them whole above the bar (rich's live display), so nothing is written
    over.

    A write to standard output that fails raises :class:`WriteError` (a
    closed pipe, :class:`BrokenPipeError`). A standard stream the command
    was started without (``None``): writing to standard output fails, and
    what was for standard error is dropped, as is what fails to be written
    there.

    :param out: standard output (a text stream, or ``None``).
    :param err: standard error (a text stream, or ``None``).
    """

    def __init__(self, out: Optional[TextIO], err: Optional[TextIO]) -> None:
        # A TextIO to every reader: it has what a text stream has.
        self.out = cast(TextIO, _StandardOutput(_ClosedOutput() if out is None else out))
        self.err = open(os.devnull, "w") if err is None else err  # noqa: SIM115
        self.out_is_terminal = _isatty(self.out)
        self.err_console = Console(file=self.err, highlight=False, markup=False, emoji=False,
                                   soft_wrap=True)
        self.out_console = Console(file=self.out, highlight=False, markup=False, emoji=False,
                                   width=None if self.out_is_terminal else _pipe_width())
        self._rows_above_bar = _same_terminal(self.out, self.err)
        self._bar: Optional[Progress] = None

    @property
    def width(self) -> int:
        """Columns of standard output (``int``)."""
        return self.out_console.width

    def row(self, line: Text) -> None:
        """Write one line of output (a table row, a JSON line) on standard
        output, at once: rows appear as results arrive, in a pipe too."""
        if self._bar is not None and self._rows_above_bar:
            self.err_console.print(line)
        elif self.out_is_terminal:
            self.out_console.print(line, soft_wrap=True)
        else:
            self.out.write(line.plain + "\n")
            self.out.flush()

    def body(self, text: str) -> None:
        """Write a body (``str``) and a line end on standard output; on a
        terminal, with its control characters escaped (line ends and tabs
        kept), so that a far side's escape sequences do not drive it."""
        if self.out_is_terminal:
            text = printable(text, keep="\n\t")
        print(text, file=self.out, flush=True)

    def body_bytes(self, data: bytes) -> None:
        """Write a body (``bytes``) on standard output as it came; on a
        terminal, read as UTF-8 and written as :meth:`body` writes text."""
        buffer = getattr(self.out, "buffer", None)
        if self.out_is_terminal or buffer is None:
            self.body(data.decode("utf-8", "backslashreplace"))
            return
        self.out.flush()
        with _writing():
            buffer.write(data)
            buffer.flush()

    def flush(self) -> None:
        """Flush standard output.

        :raises WriteError: when that fails (:class:`BrokenPipeError` for
            a closed pipe).
        """
        self.out.flush()

    def message(self, text: str) -> None:
        """Write a message for people (an error chain, a hint) on standard
        error, its control characters escaped (line ends and tabs kept)."""
        with _quietly():
            print(printable(text, keep="\n\t"), file=self.err, flush=True)

    def log(self, line: str) -> None:
        """Write one log line on standard error (above the bar, if it runs)."""
        with _quietly():
            self.err_console.print(Text(line))

    @contextlib.contextmanager
    def progress(self, total: int) -> Iterator[Callable[[], None]]:
        """A transient progress bar on standard error when it is a terminal
        (else nothing); yields ``advance()``, to call once per result."""
        if not _isatty(self.err):
            yield lambda: None
            return
        bar = Progress(
            "probing", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.err_console, transient=True,
            # rich refreshes from a thread; without monkey-patching that
            # thread cannot run while the hub waits, so refresh by hand.
            auto_refresh=False,
            # Rows go through self.row; standard output is not to be
            # redirected to the bar's stream (standard error).
            redirect_stdout=False,
        )
        task = bar.add_task("probe", total=total)

        def tick() -> None:
            # Keeps the elapsed time moving while no result comes.
            while True:
                gevent.sleep(0.25)
                bar.refresh()

        def advance() -> None:
            bar.advance(task)
            bar.refresh()

        ticker = gevent.spawn(tick)
        try:
            # Started inside the try: a Ctrl-C during start() still stops
            # the bar, or it would stay on screen and keep standard error.
            bar.start()
            self._bar = bar
            yield advance
        finally:
            ticker.kill()
            self._bar = None
            bar.stop()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (ValueError, AttributeError):  # closed, or not a file
        return False

