"""The napix command, run as a subprocess against NapixTestServers.

The servers run in this process's gevent hub, so the command runs under
gevent.subprocess: waiting for it yields to the hub and the servers answer.
"""

import fcntl
import json
import os
import pty
import re
import signal
import struct
import sys
import termios
import time
from pathlib import Path
from urllib.parse import quote

import gevent
import gevent.os
import gevent.subprocess
import pytest
from gevent.fileobject import FileObject
from rich.cells import cell_len

from napixclient import Client, cli
from napixclient.authenticators import LoginAuthenticator, TokenIdentifier
from napixclient.testing import hmac_token
from tests.helpers import closed_port

ROOT = Path(__file__).resolve().parent.parent
LOGIN = "ops"
KEY = "k3y-that-must-never-show"
USERS = {LOGIN: KEY}
SIGNED = {"NAPIX_LOGIN": LOGIN, "NAPIX_KEY": KEY}
HEX64 = re.compile(r"\b[0-9a-f]{64}\b")
FREE_SLOTS = "status == 200 and body['free_slots'] > 0"


def napix(*args, env=None, timeout=30):
    """Run ``python -m napixclient ARGS`` with only the NAPIX_* variables in
    ``env``; return the CompletedProcess (text)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NAPIX_")}
    environ.update(env or {}, PYTHONPATH=str(ROOT))
    return gevent.subprocess.run(
        [sys.executable, "-m", "napixclient", *map(str, args)],
        capture_output=True, text=True, env=environ, timeout=timeout, cwd=str(ROOT))


def napix_into_head(*args, env=None, timeout=30):
    """Run ``napix ARGS | head -1``: stdout is a real pipe whose reader
    takes the first line, then closes its end. Return ``(first line,
    exit code, stderr, seconds the command took)``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NAPIX_")}
    environ.update(env or {}, PYTHONPATH=str(ROOT))
    read_end, write_end = os.pipe()
    started = time.monotonic()
    process = gevent.subprocess.Popen(
        [sys.executable, "-m", "napixclient", *map(str, args)], stdout=write_end,
        stderr=gevent.subprocess.PIPE, text=True, env=environ, cwd=str(ROOT))
    os.close(write_end)
    with FileObject(read_end, "rb") as reader:  # cooperative: the servers keep serving
        first = reader.readline().decode()
    _, stderr = process.communicate(timeout=timeout)
    return first, process.returncode, stderr, time.monotonic() - started


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def napix_in_terminal(*args, env=None, columns=80, interrupt_at=None, timeout=30):
    """Run ``napix ARGS`` in a pseudo-terminal of ``columns`` columns (stdin,
    stdout and stderr on it), as a person would; with ``interrupt_at``,
    send SIGINT (what Ctrl-C sends) once that text has been shown. Return
    ``(exit code, everything written to the terminal)``; :func:`screen`
    tells what a person sees of it."""
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("NAPIX_") and k not in ("NO_COLOR", "FORCE_COLOR")}
    environ.update(env or {}, PYTHONPATH=str(ROOT), TERM="xterm-256color",
                   COLUMNS=str(columns), LINES="24")
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    process = gevent.subprocess.Popen(
        [sys.executable, "-m", "napixclient", *map(str, args)], stdin=terminal,
        stdout=terminal, stderr=terminal, env=environ, cwd=str(ROOT))
    os.close(terminal)
    gevent.os.make_nonblocking(controller)
    shown = b""
    try:
        with gevent.Timeout(timeout):
            while True:
                try:
                    data = gevent.os.nb_read(controller, 65536)
                except OSError:  # EIO: the terminal's last writer has gone
                    break
                if not data:
                    break
                shown += data
                if interrupt_at is not None and interrupt_at.encode() in shown:
                    process.send_signal(signal.SIGINT)
                    interrupt_at = None
            code = process.wait()
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
    return code, shown.decode("utf-8", "replace")


_TERMINAL_OUTPUT = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\r|\n|[^\x1b\r\n]")


def screen(shown, columns=80):
    """The lines a terminal of ``columns`` columns shows once ``shown`` is
    written to it: what rich writes is carriage returns, line feeds, erase
    line (ESC [2K), cursor up (ESC [nA) and colours (ignored here); long
    lines wrap."""
    lines, row, col = [[]], 0, 0
    for match in _TERMINAL_OUTPUT.finditer(shown):
        token, code = match.group(0), match.group(2)
        if token == "\r":
            col = 0
        elif token == "\n" or (not code and col >= columns):
            row, col = row + 1, 0
            lines.extend([] for _ in range(row + 1 - len(lines)))
        if code == "K":
            lines[row] = lines[row][:col] if match.group(1) in ("", "0") else []
        elif code == "A":
            row = max(row - int(match.group(1) or 1), 0)
        if code or token in "\r\n":
            continue
        line = lines[row]
        line.extend(" " * (col + 1 - len(line)))
        line[col] = token
        col += 1
    return ["".join(line).rstrip() for line in lines]


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def server(napix_server_factory):
    return napix_server_factory(users=USERS)


# -- napix request -----------------------------------------------------------


def test_request_prints_the_json_body_pretty_printed_and_exits_0(server):
    server.route("/vm-ip/", "POST", handler=lambda req: (201, {"ip": "10.0.0.7", **req.json}))
    done = napix("request", server.host, "post", "/vm-ip/", "--data", '{"size": 1}',
                 "--header", "X-Trace: abc", env=SIGNED)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"ip": "10.0.0.7", "size": 1}
    assert '\n  "ip": "10.0.0.7"' in done.stdout
    sent = server.requests[-1]
    assert (sent.method, sent.login, sent.json) == ("POST", LOGIN, {"size": 1})
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["X-Trace"] == "abc"


def test_request_into_a_pipe_closed_early_ends_quietly(server):
    # 20,000 lines: more than a pipe holds, so napix is still writing when
    # the reader goes away.
    server.route("/big", body="".join(f"line {n}\n" for n in range(20_000)))
    first, code, stderr, _ = napix_into_head("request", server.host, "GET", "/big", env=SIGNED)
    assert first == "line 0\n"
    assert (code, stderr) == (cli.EXIT_BROKEN_PIPE, "")


def napix_redirected(*args, redirect, env=None, timeout=30):
    """Run ``napix ARGS`` under ``sh`` with ``redirect`` (such as ``>&-`` or
    ``>/dev/full``) applied to it; return the CompletedProcess (text)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NAPIX_")}
    environ.update(env or {}, PYTHONPATH=str(ROOT))
    return gevent.subprocess.run(
        ["sh", "-c", f'exec "$@" {redirect}', "sh", sys.executable, "-m", "napixclient",
         *map(str, args)], capture_output=True, text=True, env=environ, timeout=timeout,
        cwd=str(ROOT))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_standard_output_full_or_closed_is_one_line_and_exit_1(server):
    # A traceback ended napix ... >/dev/full and napix ... >&-.
    server.route("/capacity", body={"free_slots": 1})
    for args in (("request", server.host, "GET", "/capacity"),
                 ("probe", server.host, "/capacity"),
                 ("probe", "--json", server.host, "/capacity")):
        for redirect, reason in ((">/dev/full", "No space left on device"),
                                 (">&-", "Bad file descriptor")):
            done = napix_redirected(*args, redirect=redirect, env=SIGNED)
            assert (done.returncode, done.stderr) == (
                1, f"napix: cannot write to standard output: {reason}\n"), (args, redirect)
    # What cannot be written to standard error is dropped: the exit status
    # is the probe's own.
    for redirect in ("2>/dev/full", "2>&-"):
        done = napix_redirected("probe", "--json", "-v", server.host, "/capacity",
                                redirect=redirect, env=SIGNED)
        assert done.returncode == 0, (redirect, done.stderr)
        assert json_lines(done.stdout)[0]["status"] == 200


def test_request_escapes_a_body_s_control_characters_on_a_terminal_only(server):
    red = "hello \x1b[31mred\x1b[0m\ttext\nline 2\x07"
    server.route("/red", body=red)
    server.route("/red-bytes", body=red.encode())
    server.route("/red-error", status=500, body=red)
    for path in ("/red", "/red-bytes"):
        code, shown = napix_in_terminal("request", server.host, "GET", path, env=SIGNED)
        assert code == 0, shown
        assert "\x1b[31m" not in shown and "\x07" not in shown
        # Escaped, not dropped; line ends and tabs kept.
        assert "hello \\x1b[31mred\\x1b[0m\ttext\r\nline 2\\x07" in shown, shown
    code, shown = napix_in_terminal("request", server.host, "GET", "/red-error", env=SIGNED)
    assert code == 1 and "\x1b[31m" not in shown and "\\x1b[31m" in shown, shown
    # Into a pipe or a file, a body is data: it goes out as it came.
    assert napix("request", server.host, "GET", "/red", env=SIGNED).stdout == red + "\n"
    done = gevent.subprocess.run(
        [sys.executable, "-m", "napixclient", "request", server.host, "GET", "/red-bytes"],
        capture_output=True, env={**os.environ, **SIGNED, "PYTHONPATH": str(ROOT)})
    assert done.stdout == red.encode()


def test_request_on_a_redirect_exits_0_without_following_it(server):
    server.route("/old", status=302, headers={"Location": "/new"}, body="moved")
    done = napix("request", server.host, "GET", "/old", env=SIGNED)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "moved"
    assert [r.path for r in server.requests] == ["/old"]


def test_request_on_a_404_exits_1_with_the_chain_on_stderr(server):
    done = napix("request", server.host, "GET", "/nope", env=SIGNED)
    assert done.returncode == 1
    assert done.stdout == ""
    assert f"hop 0: GET http://{server.host}/nope -> 404" in done.stderr
    assert "`/nope` not found" in done.stderr
    assert "Traceback" not in done.stderr


def test_request_without_credentials_shows_the_401_and_exits_1_with_a_hint(server):
    server.route("/", body=["/vm-ip"])
    done = napix("request", server.host, "GET", "/")
    assert done.returncode == 1
    assert "-> 401" in done.stderr
    assert "authentication required" in done.stderr
    assert done.stderr.splitlines()[-1] == cli.NO_CREDENTIALS_HINT
    for name in ("NAPIX_LOGIN", "NAPIX_KEY", "NAPIX_TOKEN", "--login", "--key", "--token"):
        assert name in cli.NO_CREDENTIALS_HINT
    probe = napix("probe", server.host, "/", "--json")
    assert probe.returncode == 1 and json_lines(probe.stdout)[0]["status"] == 401
    assert probe.stderr.splitlines()[-1] == cli.NO_CREDENTIALS_HINT
    # With credentials, a 401 (a wrong key) is not about missing ones.
    wrong = napix("request", server.host, "GET", "/", "--login", LOGIN, "--key", "nope")
    assert wrong.returncode == 1 and "NAPIX_KEY" not in wrong.stderr


def test_a_header_repeated_on_the_command_line_is_sent_with_every_value(server):
    server.route("/", body="ok")
    done = napix("request", server.host, "GET", "/", "--header", "X-Tag: a",
                 "--header", "x-tag: b", "--header", "X-Other: c", env=SIGNED)
    assert done.returncode == 0, done.stderr
    sent = server.requests[-1].headers
    assert [v.strip() for v in sent["X-Tag"].split(",")] == ["a", "b"]
    assert sent["X-Other"] == "c"


def test_an_unknown_option_shows_the_subcommand_s_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["request", "127.0.0.1:1", "GET", "/", "--bogus"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: napix request ")
    assert "napix request: error: unrecognized arguments: --bogus" in err


def test_a_bare_ipv6_address_is_a_host_on_the_default_port():
    assert cli.host_argument("::1") == "[::1]"
    assert cli.host_argument("fe80::1") == "[fe80::1]"
    assert cli.host_argument("[::1]:8002") == "[::1]:8002"
    assert cli.host_argument("127.0.0.1:8002") == "127.0.0.1:8002"
    # What a user sees: a request to [::1]:80, not a complaint about a port.
    done = napix("request", "::1", "GET", "/", "--timeout", "2")
    assert done.returncode == 1, done.stderr
    assert "hop 0: GET http://[::1]/ -> " in done.stderr and "Port" not in done.stderr


def test_request_and_probe_refuse_a_path_without_a_slash_with_the_same_words(server):
    # napix request used to send /capacity, where napix probe refused it.
    words = "url 'capacity' must be a path starting with '/', such as '/capacity'"
    for argv in (["request", server.host, "GET", "capacity"],
                 ["probe", server.host, "capacity"]):
        done = napix(*argv, env=SIGNED)
        assert done.returncode == 2, done.stderr
        assert words in done.stderr and "Traceback" not in done.stderr
    assert server.requests == []


def test_the_command_reads_hosts_with_the_library_s_parser_and_words():
    # One parser: what the command says of a host is what Client says of it.
    for host in ("::1:8002", "h:notaport", "ftp://h"):
        with pytest.raises(ValueError) as caught:
            Client(host)
        with pytest.raises(cli.UsageError) as refused:
            cli.host_argument(host)
        assert str(refused.value) == str(caught.value)


def test_request_to_a_dead_host_exits_1_with_a_connection_error(server):
    done = napix("request", f"127.0.0.1:{closed_port()}", "GET", "/", "--timeout", "5")
    assert done.returncode == 1
    assert "ConnectionError" in done.stderr
    assert "Traceback" not in done.stderr


#: A name that cannot resolve, known without asking any name server: a label
#: longer than 63 characters fails IDNA encoding before a lookup is sent.
UNRESOLVABLE = "x" * 64 + ".test"


def test_a_name_that_does_not_resolve_is_a_row_and_a_chain_never_a_traceback(server):
    # gevent printed a traceback for the failed lookup's greenlet (and one
    # for its resolver thread), though the command's answer was right.
    done = napix("request", f"{UNRESOLVABLE}:8", "GET", "/", "--timeout", "5")
    assert done.returncode == 1
    assert done.stderr.endswith("root cause: the host name did not resolve\n"), done.stderr
    assert "Traceback" not in done.stderr
    done = napix("request", server.host, "GET", "/", "--proxy", f"http://{UNRESOLVABLE}:8")
    assert done.returncode == 1 and "ProxyError" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    done = napix("probe", "--json", f"{UNRESOLVABLE}:8", f"{UNRESOLVABLE}:9", "/")
    assert done.returncode == 1
    assert [row["summary"] for row in json_lines(done.stdout)] == [
        "the host name did not resolve"] * 2
    assert done.stderr.startswith("2 hosts: 0 ok, 2 failed"), done.stderr


def test_malformed_data_is_bad_usage_exit_2(server):
    done = napix("request", server.host, "POST", "/vm-ip/", "--data", "{size: 1}", env=SIGNED)
    assert done.returncode == 2
    assert "--data is not valid JSON" in done.stderr
    assert server.requests == []


@pytest.mark.parametrize("argv, message", [
    (["request", "bad host!", "GET", "/"], "not a valid host name"),
    (["request", "127.0.0.1:1", "GET", "/", "--header", "no-colon"], "NAME:VALUE"),
    (["request", "127.0.0.1:1", "GET", "/", "--header", "Bad Name: x"], "not a valid token"),
    (["request", "127.0.0.1:1", "GE T", "/"], "method must be an HTTP token"),
    (["request", "127.0.0.1:1", "GET", "/", "--timeout", "0"], "seconds must be"),
    (["request", "127.0.0.1:1", "GET", "/", "--login", "ops"], "--key"),
    (["request", "127.0.0.1:1", "GET", "/", "--token", "t", "--key", "k"], "not both"),
    (["probe", "/capacity"], "no host to probe"),
    (["probe", "/capacity", "127.0.0.1:1"], "the PATH comes last"),
    (["probe", "127.0.0.1:1", "/c", "--first-where", "body.keys()"], "not allowed"),
    (["probe", "127.0.0.1:1", "/c", "--first-where", ""], "--first-where needs an expression"),
    (["probe", "127.0.0.1:1", "/c", "--first-where", "  "], "--first-where needs an expression"),
    (["request", "127.0.0.1:1", "POST", "/", "--data", "NaN"], "NaN is not a JSON number"),
    (["request", "127.0.0.1:1", "POST", "/", "--data", '{"size": -Infinity}'],
     "-Infinity is not a JSON number"),
    (["request", "::1:8002", "GET", "/"], "ambiguous: write [::1]:8002 for port 8002"),
    (["request", "1::2::3", "GET", "/"], "in brackets with a port ([::1]:8002)"),
    (["probe", "::1:8002", "/c"], "ambiguous"),
])
def test_bad_usage_exits_2_naming_the_problem(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# -- Ctrl-C --------------------------------------------------------------------


def test_ctrl_c_during_a_probe_on_a_terminal_shows_only_napix_interrupted(
        napix_server_factory):
    # Pressed while the progress bar has been showing for a second.
    hanging = napix_server_factory(users=USERS).route("/capacity", hang=True)
    code, shown = napix_in_terminal("probe", hanging.host, "/capacity", "--timeout", "30",
                                    env=SIGNED, interrupt_at="0:00:01")
    assert code == cli.EXIT_INTERRUPTED
    lines = [line for line in screen(shown) if line]
    # The table's title and rule, then only this: gevent's hub printed
    # "KeyboardInterrupt" and a timestamp before.
    assert lines[0].split() == ["host", "status", "latency", "ms", "body"]
    assert lines[2:] == ["napix: interrupted"], shown


def test_ctrl_c_during_a_request_shows_only_napix_interrupted(napix_server_factory):
    hanging = napix_server_factory(users=USERS).route("/slow", hang=True)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NAPIX_")}
    environ.update(SIGNED, PYTHONPATH=str(ROOT))
    process = gevent.subprocess.Popen(
        [sys.executable, "-m", "napixclient", "request", hanging.host, "GET", "/slow", "-v"],
        stdout=gevent.subprocess.PIPE, stderr=gevent.subprocess.PIPE, text=True, env=environ)
    with gevent.Timeout(20):  # bounded: the request is in flight when the server sees it
        while hanging.in_flight == 0:
            gevent.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=20)
    assert process.returncode == cli.EXIT_INTERRUPTED
    assert out == ""
    assert err.splitlines()[-1] == "napix: interrupted"
    assert "KeyboardInterrupt" not in err and "Traceback" not in err, err


def test_napix_demo_verbose_logs_one_line_per_record_of_its_servers():
    done = napix("demo", "-v", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    # The chain's servers A and B each log the failure they answer 500 for.
    failures = [line for line in lines if "napixclient.wsgi" in line]
    assert len(failures) == 2, done.stderr
    assert all(line.startswith("napix: ") for line in lines), done.stderr
    assert "Traceback" not in done.stderr and '  File "' not in done.stderr
    assert "`/slots/42` not found" in failures[0]


# -- open files ------------------------------------------------------------------


def test_napix_raises_its_open_files_limit_to_the_hard_limit_and_says_so_at_v(server):
    resource = pytest.importorskip("resource")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    server.route("/", body="ok")

    def low_limit():  # in the child, before napix starts: a soft limit of 256
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    environ = {k: v for k, v in os.environ.items() if not k.startswith("NAPIX_")}
    environ.update(SIGNED, PYTHONPATH=str(ROOT))
    runs = [gevent.subprocess.run(
        [sys.executable, "-m", "napixclient", "request", server.host, "GET", "/", *flags],
        capture_output=True, text=True, env=environ, preexec_fn=low_limit, timeout=30)
        for flags in (["-v"], [])]
    assert [run.returncode for run in runs] == [0, 0], runs[0].stderr
    expected = hard if hard != resource.RLIM_INFINITY else None
    said = re.search(r"open files limit raised from 256 to (\d+)", runs[0].stderr)
    assert said, runs[0].stderr
    assert expected is None or int(said.group(1)) == expected
    assert runs[1].stderr == ""  # said at -v only


def test_without_the_resource_module_napix_leaves_the_limit_alone(monkeypatch):
    monkeypatch.setitem(sys.modules, "resource", None)  # import resource: ImportError
    assert cli.raise_open_files_limit() is None


# -- credentials -------------------------------------------------------------


def test_credentials_never_appear_in_any_output_even_verbose(server):
    token = hmac_token(LOGIN, KEY)
    signature = token.split(":", 1)[1]
    server.route("/capacity", body={"free_slots": 1})
    calls = [
        (("request", server.host, "GET", "/missing?x=1", "-vv"), SIGNED),
        (("request", server.host, "GET", "/capacity", "-vv", "--token", token), {}),
        (("probe", server.host, f"127.0.0.1:{closed_port()}", "/capacity", "-vv", "--json"),
         {"NAPIX_TOKEN": token}),
        (("probe", server.host, "/capacity", "-vv", "--login", LOGIN, "--key", KEY + "-x"), {}),
    ]
    # Run together: they are independent, and the servers answer them all.
    jobs = [gevent.spawn(napix, *args, env=env) for args, env in calls]
    gevent.joinall(jobs, raise_error=True)
    runs = [job.value for job in jobs]
    assert [run.returncode for run in runs] == [1, 0, 1, 1]
    assert '{"free_slots":1}' in runs[2].stdout.replace(" ", "")  # the token was accepted
    assert "403" in runs[3].stdout  # the wrong key was refused
    signatures = {r.headers["Authorization"].rsplit(":", 1)[1]
                  for r in server.requests if "Authorization" in r.headers}
    assert len(signatures) == 2
    for run in runs:
        output = run.stdout + run.stderr
        assert "napix: napixclient.cli: auth:" in run.stderr  # verbose did log
        assert KEY not in output
        assert token not in output and signature not in output
        assert not HEX64.search(output), output
        for sig in signatures:
            assert sig not in output


def test_a_token_the_server_echoes_percent_encoded_is_never_printed(server):
    token = hmac_token(LOGIN, KEY)
    encoded = quote(token, safe="")
    # The server echoes the request target, where the token is encoded
    # ("root%3A<signature>"), in a body, in an error and in a long body
    # that the table's summary cuts.
    server.route("/echo", handler=lambda req: {"you_sent": req.path})
    server.route("/fail", handler=lambda req: (500, f"refused {req.path}"))
    server.route("/long", handler=lambda req: {"padding": "x" * 20, "you_sent": req.path})
    calls = [
        ("request", server.host, "GET", "/echo", "-vv"),
        ("request", server.host, "GET", "/fail", "-vv"),
        ("probe", server.host, "/echo", "-vv"),
        ("probe", server.host, "/long", "-vv"),
        ("probe", server.host, "/long", "--json", "-vv"),
        ("probe", server.host, "/fail", "--json", "-vv"),
    ]
    jobs = [gevent.spawn(napix, *args, env={"NAPIX_TOKEN": token}) for args in calls]
    gevent.joinall(jobs, raise_error=True)
    signature = token.split(":", 1)[1]
    for args, job in zip(calls, jobs, strict=True):
        run = job.value
        output = run.stdout + run.stderr
        assert "Traceback" not in output, output
        assert "token=***" in output, (args, output)  # it was echoed, and masked
        for shown in (token, encoded, signature, signature[:16]):
            assert shown not in output, (args, output)
    assert all(r.path.endswith(f"?token={encoded}") for r in server.requests)


# -- napix probe -------------------------------------------------------------


def test_probe_table_has_a_row_for_every_host_dead_and_hanging_included(
        napix_server_factory):
    up = [napix_server_factory(users=USERS).route("/capacity", body={"free_slots": n})
          for n in (0, 3)]
    hanging = napix_server_factory(users=USERS).route("/capacity", hang=True)
    dead = f"127.0.0.1:{closed_port()}"
    done = napix("probe", up[0].host, up[1].host, dead, hanging.host, "/capacity",
                 "--timeout", "0.5", env=SIGNED)
    assert done.returncode == 1  # not every host answered
    assert "Traceback" not in done.stderr
    rows = {line.split()[0]: line.split()[1:]
            for line in done.stdout.splitlines() if line.strip().startswith("127.0.0.1:")}
    assert rows[up[0].host][0] == "200" and '{"free_slots":0}' in rows[up[0].host]
    assert rows[up[1].host][0] == "200" and '{"free_slots":3}' in rows[up[1].host]
    assert rows[dead][0] == "ConnectionError"
    assert rows[hanging.host][0] == "Timeout"
    assert "4 hosts: 2 ok, 1 failed, 1 timed out" in done.stdout


def test_probe_json_prints_one_object_per_host_and_the_summary_on_stderr(server):
    server.route("/capacity", body={"free_slots": 2})
    server.route("/broken", status=500, body={"error_class": "KeyError", "error_text": "x"})
    dead = f"127.0.0.1:{closed_port()}"
    done = napix("probe", server.host, dead, "/capacity", "--json", env=SIGNED)
    lines = json_lines(done.stdout)
    assert done.returncode == 1
    assert {line["host"] for line in lines} == {server.host, dead}
    by_host = {line["host"]: line for line in lines}
    ok, failed = by_host[server.host], by_host[dead]
    assert set(ok) == {"host", "status", "error", "latency_ms", "queued_ms", "outcome", "body",
                       "summary", "chain", "match"}
    assert (ok["status"], ok["error"], ok["outcome"], ok["body"]) == (
        200, None, "ok", {"free_slots": 2})
    assert isinstance(ok["latency_ms"], float) and ok["latency_ms"] >= 0
    assert (failed["status"], failed["error"], failed["outcome"]) == (
        None, "ConnectionError", "failed")
    assert failed["chain"].startswith(f"GET http://{dead}/capacity -> ConnectionError")
    assert "2 hosts: 1 ok, 1 failed, 0 timed out" in done.stderr

    done = napix("probe", server.host, "/broken", "--json", env=SIGNED)
    (line,) = json_lines(done.stdout)
    assert (line["status"], line["error"], line["outcome"]) == (500, "HTTPError", "failed")
    assert "1 host: 0 ok, 1 failed, 0 timed out" in done.stderr


def test_probe_json_into_a_pipe_closed_early_ends_quietly_and_cancels_the_rest(
        napix_server_factory):
    fast = napix_server_factory(users=USERS).route("/capacity", body={"free_slots": 1})
    later = napix_server_factory(users=USERS).route(
        "/capacity", body={"free_slots": 2}, latency=0.5)
    hanging = napix_server_factory(users=USERS).route("/capacity", hang=True)
    first, code, stderr, took = napix_into_head(
        "probe", fast.host, later.host, hanging.host, "/capacity", "--json", "--timeout", "30",
        env=SIGNED)
    assert json.loads(first)["host"] == fast.host
    assert (code, stderr) == (cli.EXIT_BROKEN_PIPE, "")
    # The second row found the pipe closed: the hanging request was
    # cancelled then, not waited for until its 30 s timeout.
    assert took < 15


def test_progress_bar_on_a_terminal_never_writes_over_json_lines_or_log_records(
        napix_server_factory):
    servers = [napix_server_factory(users=USERS).route(
        "/capacity", body={"free_slots": n}, latency=0.3 * n) for n in range(3)]
    code, shown = napix_in_terminal("probe", *(s.host for s in servers), "/capacity", "--json",
                                    "-v", env=SIGNED, columns=250)
    assert code == 0, shown
    assert "probing" in shown  # the bar was drawn, between the rows
    lines = [line for line in screen(shown, columns=250) if line]
    rows = [json.loads(line) for line in lines if line.startswith("{")]
    assert sorted(row["host"] for row in rows) == sorted(s.host for s in servers)
    logs = [line for line in lines if line.startswith("napix: napixclient.cli: ")]
    assert len(logs) == 2 + len(servers)  # auth, probing, one per result
    assert lines[-1].startswith("3 hosts: 3 ok, 0 failed, 0 timed out in ")
    assert len(rows) + len(logs) + 1 == len(lines), lines  # nothing else, nothing glued


def test_probe_table_rows_appear_as_results_arrive(napix_server_factory):
    fast = napix_server_factory(users=USERS).route("/capacity", body={"free_slots": 1})
    slow = napix_server_factory(users=USERS).route(
        "/capacity", body={"free_slots": 2}, latency=3)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NAPIX_")}
    environ.update(SIGNED, PYTHONPATH=str(ROOT))
    process = gevent.subprocess.Popen(
        [sys.executable, "-m", "napixclient", "probe", slow.host, fast.host, "/capacity"],
        stdout=gevent.subprocess.PIPE, env=environ)
    seen = {}
    with gevent.Timeout(30):
        for line in process.stdout:  # a pipe: not a terminal
            for host in (fast.host, slow.host):
                if line.decode().startswith(host):
                    seen[host] = time.monotonic()
    assert process.wait() == 0
    assert seen[slow.host] - seen[fast.host] > 2  # the fast row came 3 s before the end


def test_probe_table_fits_80_columns_and_wraps_a_long_host_whole(napix_server_factory):
    prefix = "/" + "-".join(["a-rather-long-napix-prefix"] * 3)
    server = napix_server_factory(users=USERS)
    server.route(prefix + "/capacity", body={"free_slots": 1, "note": "x" * 100})
    server.route("/capacity", body={"free_slots": 2})
    long_host = f"http://{server.host}{prefix}"
    code, shown = napix_in_terminal("probe", long_host, server.host, "/capacity", env=SIGNED)
    assert code == 0, shown
    # Read on an unbounded screen, nothing is wider than the terminal.
    lines = [line for line in screen(shown, columns=10_000) if line]
    assert max(cell_len(line) for line in lines) <= 80, lines
    first = next(n for n, line in enumerate(lines) if line.startswith("http://"))
    # The host column is as wide as the terminal allows; the long host goes
    # on over the next lines, where the other columns are empty.
    wrapped = [lines[first]] + [line for line in lines[first + 1:first + 4]
                                 if not line.startswith(("127.", "  "))]
    host_width = len(wrapped[0].split()[0])
    assert "".join(line[:host_width] for line in wrapped) == long_host
    assert wrapped[0].split()[1] == "200" and '{"free_slots":1' in wrapped[0]
    short = next(line for line in lines if line.startswith(server.host))
    assert short.split()[1:3] == ["200", short.split()[2]] and '{"free_slots":2}' in short


def test_probe_latency_is_the_exchange_s_own_time_and_json_gives_the_queue_wait_apart(server):
    server.route("/capacity", body={"free_slots": 1}, latency=0.5)
    # One host three times, one at a time: the second and third requests
    # wait for their turn, 0.5 and 1 s.
    done = napix("probe", server.host, server.host, server.host, "/capacity", "--json",
                 "--simultaneous", "1", env=SIGNED)
    assert done.returncode == 0, done.stderr
    rows = json_lines(done.stdout)
    assert len(rows) == 3 and server.max_in_flight == 1
    assert all(450 <= row["latency_ms"] < 900 for row in rows), rows
    queued = sorted(row["queued_ms"] for row in rows)
    assert queued[0] < 100 and 400 < queued[1] < 900 and 900 < queued[2] < 1400, rows
    table = napix("probe", server.host, server.host, "/capacity", "--simultaneous", "1",
                  env=SIGNED).stdout
    latencies = [int(line.split()[2]) for line in table.splitlines()
                 if line.startswith(server.host)]
    assert len(latencies) == 2 and all(450 <= ms < 900 for ms in latencies), table


def test_probe_sort_host_orders_names_naturally_and_ports_as_numbers():
    # Nothing listens on these loopback ports: every row is a quick
    # ConnectionError, in an order that text sorting gets wrong.
    port = closed_port()
    hosts = [f"127.0.0.10:{port}", "127.0.0.9:100", "127.0.0.9:9", "127.0.0.9:10",
             f"127.0.0.9:{port}"]
    expected = ["127.0.0.9:9", "127.0.0.9:10", "127.0.0.9:100", f"127.0.0.9:{port}",
                f"127.0.0.10:{port}"]
    assert sorted(hosts, key=cli.host_sort_key) == expected
    table = napix("probe", *hosts, "/c", "--sort", "host", "--timeout", "5")
    assert [line.split()[0] for line in table.stdout.splitlines()
            if line.startswith("127.")] == expected, table.stdout
    lines = napix("probe", *hosts, "/c", "--sort", "host", "--json", "--timeout", "5")
    assert [row["host"] for row in json_lines(lines.stdout)] == expected
    assert cli.host_sort_key("hv-2.example") < cli.host_sort_key("hv-10.example")
    assert cli.host_sort_key("https://a.example") > cli.host_sort_key("a.example:442")


def test_probe_reads_hosts_from_a_file_skipping_comments_and_blank_lines(
        napix_server_factory, tmp_path):
    servers = [napix_server_factory(users=USERS).route("/capacity", body={"free_slots": n})
               for n in range(3)]
    hosts_file = tmp_path / "fleet.txt"
    hosts_file.write_text(
        "# the fleet\n"
        f"{servers[0].host}\n"
        "\n"
        f"   {servers[1].host}   # rack 2\n"
        f"# {closed_port()} retired\n"
        "   \n")
    done = napix("probe", "--hosts-file", hosts_file, servers[2].host, "/capacity", "--json",
                 env=SIGNED)
    assert done.returncode == 0, done.stderr
    lines = json_lines(done.stdout)
    assert sorted(line["host"] for line in lines) == sorted(s.host for s in servers)
    assert all(line["status"] == 200 for line in lines)
    assert all(len(s.requests) == 1 for s in servers)


def test_an_empty_hosts_file_is_named_as_holding_no_host(tmp_path):
    # It said "give HOST... PATH or --hosts-file F PATH", though F was given.
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here yet\n\n")
    done = napix("probe", "--hosts-file", empty, "/capacity")
    assert done.returncode == 2
    assert f"no host to probe: --hosts-file {empty} holds none" in done.stderr


def test_probe_speaks_of_one_host_in_the_singular_and_cuts_rows_with_three_dots(server):
    server.route("/capacity", body={"note": "a rather long answer " * 5})
    done = napix("probe", "-v", server.host, "/capacity", env={**SIGNED, "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    assert "probing 1 host for GET /capacity" in done.stderr
    [row] = [line for line in done.stdout.splitlines() if line.startswith(server.host)]
    # The summary is cut with "...", and the table cuts it again the same way.
    assert row.endswith("...") and "\u2026" not in done.stdout
    assert len(row) <= 80


def test_read_hosts_file_names_the_line_of_a_malformed_entry(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("a.example:8002\n#c\n\nhttps://b.example/napix # tls\n")
    assert cli.read_hosts_file(str(good)) == ["a.example:8002", "https://b.example/napix"]
    bad = tmp_path / "bad.txt"
    bad.write_text("a.example\nb.example c.example\n")
    with pytest.raises(cli.UsageError, match=r"bad.txt:2: one host per line"):
        cli.read_hosts_file(str(bad))
    bad.write_text("\n\nftp://x\n")
    with pytest.raises(cli.UsageError, match=r"bad.txt:3: .*scheme"):
        cli.read_hosts_file(str(bad))
    with pytest.raises(cli.UsageError, match="missing.txt"):
        cli.read_hosts_file(str(tmp_path / "missing.txt"))


def test_probe_first_where_stops_at_the_first_match_and_cancels_the_rest(
        napix_server_factory):
    full = napix_server_factory(users=USERS).route("/capacity", body={"free_slots": 0})
    room = napix_server_factory(users=USERS).route(
        "/capacity", body={"free_slots": 3}, latency=0.2)
    slow = napix_server_factory(users=USERS).route(
        "/capacity", body={"free_slots": 9}, latency=10)
    hanging = napix_server_factory(users=USERS).route("/capacity", hang=True)
    done = napix("probe", full.host, room.host, slow.host, hanging.host, "/capacity",
                 "--json", "--timeout", "20", "--first-where", FREE_SLOTS, env=SIGNED)
    assert done.returncode == 0, done.stderr
    by_host = {line["host"]: line for line in json_lines(done.stdout)}
    assert len(by_host) == 4
    assert by_host[room.host]["match"] is True
    assert by_host[full.host]["match"] is False and by_host[full.host]["status"] == 200
    for host in (slow.host, hanging.host):
        assert (by_host[host]["outcome"], by_host[host]["error"]) == ("cancelled", "Cancelled")
    assert f"first match: {room.host} (2 still pending, cancelled)" in done.stderr


def test_probe_first_where_without_a_match_exits_1(server):
    server.route("/capacity", body={"free_slots": 0})
    done = napix("probe", server.host, "/capacity", "--first-where", FREE_SLOTS, env=SIGNED)
    assert done.returncode == 1
    assert "no match" in done.stdout


@pytest.mark.parametrize("expression, values, expected", [
    (FREE_SLOTS, {"status": 200, "body": {"free_slots": 2}}, True),
    (FREE_SLOTS, {"status": 200, "body": {"free_slots": 0}}, False),
    (FREE_SLOTS, {"status": 200, "body": {}}, False),              # missing key
    (FREE_SLOTS, {"status": None, "body": None}, False),           # an error
    ("body['free_slots'] > 0", {"body": {"free_slots": "x"}}, False),  # str > int
    ("status in (200, 201) or host == 'h'", {"status": 404, "host": "h"}, True),
    ("not status >= 400", {"status": 302}, True),
    ("body['a'][0]['b'] == -1", {"body": {"a": [{"b": -1}]}}, True),
    ("1 < status < 300", {"status": 200}, True),
    ("body is None", {"body": None}, True),
])
def test_first_where_expressions_evaluate_safely(expression, values, expected):
    assert cli.compile_condition(expression)(values) is expected


@pytest.mark.parametrize("expression, words", [
    ("__import__('os').system('true')", "calling functions is not allowed"),
    ("body.get('x')", "calling functions is not allowed"),
    ("body.x == 1", "attributes (x.y) are not allowed"),
    ("status + 1 > 2", "arithmetic is not allowed"),
    ("status == 9 ** 9 ** 9", "arithmetic is not allowed"),
    ("x == 1", "unknown name 'x'"),
    ("[c for c in body]", "comprehensions are not allowed"),
    ("lambda: 1", "lambda is not allowed"),
    ("status ==", "invalid syntax"),
    ("body[1:2]", "slices (x[1:2]) are not allowed"),
    ("~status", "unary + and ~ are not allowed"),
    ("a" * 1001, "longer than 1000 characters"),
])
def test_first_where_refuses_anything_but_comparisons_over_status_body_host(expression, words):
    with pytest.raises(cli.ExpressionError) as error:
        cli.compile_condition(expression)
    assert words in str(error.value)
    assert not re.search(r"\b(BinOp|Call|Attribute|Slice|ListComp|Lambda|UnaryOp)\b",
                         str(error.value))


@pytest.mark.parametrize("flags, environ, expected", [
    ((None, None, None), {}, None),
    ((None, None, None), {"NAPIX_LOGIN": "a", "NAPIX_KEY": "key-123"}, ("login", "a")),
    ((None, None, None), {"NAPIX_TOKEN": "tok-456"}, ("token", "token")),
    # The signed protocol wins over a token in the environment...
    ((None, None, None), {"NAPIX_LOGIN": "a", "NAPIX_KEY": "key-123", "NAPIX_TOKEN": "tok-456"},
     ("login", "a")),
    # ...and flags win over the environment; a half given by flag is
    # completed from it.
    ((None, None, "tok-456"), {"NAPIX_LOGIN": "a", "NAPIX_KEY": "key-123"}, ("token", "token")),
    (("b", None, None), {"NAPIX_LOGIN": "a", "NAPIX_KEY": "key-123"}, ("login", "b")),
    ((None, None, None), {"NAPIX_LOGIN": "", "NAPIX_KEY": "", "NAPIX_TOKEN": ""}, None),
])
def test_credentials_come_from_flags_then_environment(flags, environ, expected):
    credentials = cli.resolve_credentials(*flags, environ)
    auth = credentials.authenticator
    if expected is None:
        assert auth is None
    elif expected[0] == "login":
        assert isinstance(auth, LoginAuthenticator) and auth.login == expected[1]
    else:
        assert isinstance(auth, TokenIdentifier) and auth.parameter == expected[1]
    assert all(secret not in credentials.source + repr(credentials)
               for secret in credentials.secrets)


@pytest.mark.parametrize("flags, environ, message", [
    (("a", None, None), {}, "--key (or NAPIX_KEY)"),
    ((None, "key-123", None), {}, "--login (or NAPIX_LOGIN)"),
    ((None, None, None), {"NAPIX_KEY": "key-123"}, "NAPIX_KEY is set but NAPIX_LOGIN is not"),
    (("a", "key-123", "tok-456"), {}, "not both"),
])
def test_incomplete_credentials_are_a_usage_error_that_shows_no_value(flags, environ, message):
    with pytest.raises(cli.UsageError, match=re.escape(message)) as error:
        cli.resolve_credentials(*flags, environ)
    assert "key-123" not in str(error.value) and "tok-456" not in str(error.value)


def test_a_short_key_is_masked_in_the_far_side_s_words_never_in_the_row_s_own(
        napix_server_factory):
    # With NAPIX_KEY=k, a row's outcome "ok" was printed as "o***".
    server = napix_server_factory(users={LOGIN: "k"})
    server.route("/capacity", body={"kind": "kvm"})
    done = napix("probe", "--json", server.host, "/capacity",
                 env={"NAPIX_LOGIN": LOGIN, "NAPIX_KEY": "k"})
    assert done.returncode == 0, done.stderr
    [row] = json_lines(done.stdout)
    assert set(row) == {"host", "status", "error", "latency_ms", "queued_ms", "outcome",
                        "body", "summary", "chain", "match"}
    assert row["outcome"] == "ok" and row["status"] == 200
    assert row["body"] == {"***ind": "***vm"}


def test_a_short_key_is_masked_in_log_lines_as_a_whole_word_only(napix_server_factory):
    # With NAPIX_KEY=k, -v printed "napixcli***nt"-like lines: "login and
    # ***ey from NAPIX_LOGIN", "o***" for ok.
    server = napix_server_factory(users={LOGIN: "k"})
    server.route("/capacity", body={"kind": "kvm"})
    env = {"NAPIX_LOGIN": LOGIN, "NAPIX_KEY": "k"}
    for args in (("probe", server.host, "/capacity", "-vv", "--json"),
                 ("request", server.host, "GET", "/capacity", "-vv")):
        done = napix(*args, env=env)
        assert done.returncode == 0, done.stderr
        lines = done.stderr.splitlines()
        assert "napix: napixclient.cli: auth: login and key from NAPIX_LOGIN, NAPIX_KEY" in lines
        assert any(line.startswith("napix: napixclient.connections: ") for line in lines)
        assert "***" not in done.stderr, done.stderr  # no line holds the key as a word
    # Where the key stands as a word of its own, it is masked.
    import logging

    from napixclient.cli import output

    lines = []
    output.setup_logging(1, ("k",), lines.append)
    try:
        logging.getLogger("napixclient.cli").debug("ok: kvm %s said key=%s", "k", "k")
    finally:
        logging.getLogger().removeHandler(output._handler)
        logging.getLogger("napixclient.cli").setLevel(logging.NOTSET)
    assert lines == ["napix: napixclient.cli: ok: kvm *** said key=***"]


def test_probe_json_lines_escape_what_json_leaves_raw_and_read_back_the_same(server):
    note = "csi \x9b31m, line\u2028separator, esc \x1b[2J"
    server.route("/json", body={"note": note})
    done = napix("probe", server.host, "/json", "--json", env=SIGNED)
    assert done.returncode == 0, done.stderr
    assert "\\u009b" in done.stdout and "\\u2028" in done.stdout
    assert not any(c in done.stdout for c in "\x9b\u2028\x1b")
    (row,) = json_lines(done.stdout)
    assert row["body"] == {"note": note}


def test_probe_table_shows_hostile_bodies_literally(server):
    # rich markup and a terminal escape sequence, as JSON and as text.
    server.route("/json", body={"note": "[/bold] [red]x\x1b[2J"})
    server.route("/text", body="[/bold] [red]x\x1b[2J")
    for path, shown in (("/json", '{"note":"[/bold] [red]x\\u001b[2J"}'),
                        ("/text", "[/bold] [red]x\\x1b[2J")):
        done = napix("probe", server.host, path, env=SIGNED)
        assert done.returncode == 0, done.stderr
        assert "\x1b" not in done.stdout
        assert shown in done.stdout


