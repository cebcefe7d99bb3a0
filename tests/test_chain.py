"""Reading error chains: real Napix servers relaying failures over loopback,
napixd-style documents, and hostile documents and bodies."""

import ast
import json
import sys
import time
from datetime import timedelta
from http import HTTPStatus
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napixclient import Client, ConnectionError, HTTPError
from napixclient import chain as chain_module
from napixclient.chain import (
    MAX_HOPS,
    MAX_TEXT,
    Chain,
    Hop,
    read_chain,
    split_status_text,
    write_document,
)
from napixclient.response import RequestRecord
from napixclient.wsgi import ExceptionsCatcher
from tests.helpers import AUTH, closed_port

RECORD = RequestRecord("GET", "a", "http://a/x", "/x")
# A hop's text is at most MAX_TEXT characters plus a note of what was cut.
TEXT_BOUND = MAX_TEXT + 100


def error_with(document, status=500):
    return HTTPError(RECORD, status=status, remote_error=document)


# -- relays: the servers of a chain ---------------------------------------------


def catcher_relay(next_host, next_path, show_traceback=False):
    """A napixclient-based server: a WSGI app calling the next server, wrapped
    in ExceptionsCatcher."""
    def app(environ, start_response):
        with Client(next_host, AUTH) as client:
            client.get(next_path)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"the next server answered"]
    return ExceptionsCatcher(app, show_traceback=show_traceback)


def napixd_relay(next_host, next_path):
    """A route handler answering as napixd does when a call it made fails:
    the document carries a traceback, a file name and a line, and no
    remote_status."""
    def handler(request):
        try:
            with Client(next_host, AUTH) as client:
                client.get(next_path)
        except HTTPError as error:
            return 500, {
                "error_class": "HTTPError",
                "error_text": str(error),
                "request": {"method": request.method, "path": request.path},
                "remote_call": error.remote_call,
                "remote_error": error.remote_error,
                "traceback": [{"filename": "/usr/lib/napixd/loader.py", "line": 12,
                               "in": "get_resource", "call": "self.fetch()"}],
                "filename": "/usr/lib/napixd/loader.py",
                "line": 12,
            }
        return 200, "the next server answered"
    return handler


ROOT_TEXT = ("text", 404)
ROOT_NAPIXD = ("napixd", 404)


def build_chain(factory, depth, kinds, root):
    """Start ``depth`` servers, the last failing with ``root``, each other one
    relaying to the next with the relay of ``kinds`` (cycled). Returns the
    servers, first one first, and the relay kind of each (``None`` for the
    last)."""
    last = factory()
    if root == ROOT_TEXT:
        last.route("/slot/10", status=404, body="`10` not found")
    else:
        last.route("/slot/10", status=404, body={
            "error_class": "NotFound", "error_text": "`10` not found",
            "request": {"method": "GET", "path": "/slot/10"},
            "traceback": [{"filename": "/srv/slots.py", "line": 3, "in": "get",
                           "call": "raise NotFound(id)"}],
            "filename": "/srv/slots.py", "line": 3})
    servers = [last]
    relays = [None]
    for level in range(depth - 1):
        kind = kinds[level % len(kinds)]
        below = servers[0]
        if kind == "napixd":
            server = factory()
            server.route("/slot/10", handler=napixd_relay(below.host, "/slot/10"))
        else:
            server = factory(app=catcher_relay(below.host, "/slot/10",
                                               show_traceback=kind == "catcher+tb"))
        servers.insert(0, server)
        relays.insert(0, kind)
    return servers, relays


def test_three_servers_read_hop_by_hop(napix_server_factory):
    (a, b, c), _ = build_chain(napix_server_factory, 3, ["catcher"], ROOT_TEXT)
    with Client(a.host, AUTH) as client:
        with pytest.raises(HTTPError) as caught:
            client.get("/slot/10")
    error = caught.value
    assert error.chain == [
        Hop(f"GET {a.url}/slot/10", 500, "HTTPError", error.chain[0].error_text),
        Hop(f"GET {b.url}/slot/10", 500, "HTTPError", error.chain[1].error_text),
        Hop(f"GET {c.url}/slot/10", 404, None, "`10` not found"),
    ]
    assert error.root == error.chain[-1]
    assert str(error) == (f"GET {a.url}/slot/10 -> 500 (HTTPError) | "
                          f"GET {b.url}/slot/10 -> 500 (HTTPError) | "
                          f"GET {c.url}/slot/10 -> 404 | `10` not found")
    assert error.format_chain() == "\n".join([
        f"hop 0: GET {a.url}/slot/10 -> 500 (HTTPError)",
        f"hop 1: GET {b.url}/slot/10 -> 500 (HTTPError)",
        f"hop 2: GET {c.url}/slot/10 -> 404",
        "root cause: `10` not found",
    ])


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("kinds,root", [
    (["catcher"], ROOT_TEXT),
    (["napixd", "catcher+tb"], ROOT_TEXT),
    (["catcher+tb", "napixd"], ROOT_NAPIXD),
    (["napixd"], ROOT_NAPIXD),
], ids=["catchers-text", "mixed-text", "mixed-napixd", "napixd-napixd"])
def test_chains_of_depth_one_to_five_reach_the_root(napix_server_factory, depth, kinds,
                                                    root):
    servers, relays = build_chain(napix_server_factory, depth, kinds, root)
    with Client(servers[0].host, AUTH) as client:
        with pytest.raises(HTTPError) as caught:
            client.get("/slot/10")
    chain = caught.value.chain
    assert [hop.call for hop in chain] == [f"GET {s.url}/slot/10" for s in servers]
    assert chain.truncated is False
    assert all(hop.error_class == "HTTPError" for hop in chain[:-1])
    # Hop 0's status is our own call's. A later hop's status is known when
    # the server that made that call says it: in the text of a text answer,
    # or in the remote_status an ExceptionsCatcher adds; napixd says neither
    # for a document.
    statuses = [500] + [None if relay == "napixd" else 500 for relay in relays[:-1]]
    # The root answered 404, which its caller's document says unless napixd
    # relayed a document.
    statuses[-1] = 404 if root == ROOT_TEXT or statuses[-1] is not None else None
    assert [hop.status for hop in chain] == statuses
    root_hop = caught.value.root
    assert root_hop.error_text == "`10` not found"
    assert root_hop.error_class == (None if root == ROOT_TEXT else "NotFound")
    line = str(caught.value)
    assert line.endswith(" | `10` not found") and "\n" not in line
    assert "/usr/lib/napixd" not in line


def test_a_transport_failure_is_its_own_root():
    port = closed_port()
    with Client(f"127.0.0.1:{port}", AUTH, timeout=2) as client:
        with pytest.raises(ConnectionError) as caught:
            client.get("/x")
    assert caught.value.chain == [Hop(f"GET http://127.0.0.1:{port}/x", None,
                                      "ConnectionError", caught.value.root.error_text)]
    assert str(caught.value).startswith(f"GET http://127.0.0.1:{port}/x -> ConnectionError | ")


def test_a_relayed_transport_failure_reads_as_a_hop_without_status(napix_server_factory):
    port = closed_port()
    relay = napix_server_factory(app=catcher_relay(f"127.0.0.1:{port}", "/gone"))
    with Client(relay.host, AUTH) as client:
        with pytest.raises(HTTPError) as caught:
            client.get("/x")
    chain = caught.value.chain
    assert chain[1].call == f"GET http://127.0.0.1:{port}/gone"
    assert chain[1].status is None
    assert chain[1].error_text.startswith("could not connect")


# -- reading documents as napixd writes them, and as it should not ----------------


def test_str_reads_as_the_design_example():
    error = error_with({"error_class": "RemoteError", "error_text": "GET http://b/y failed",
                        "remote_call": "GET http://b/y",
                        "remote_error": "404 Not Found: `10` not found"})
    assert str(error) == ("GET http://a/x -> 500 (RemoteError) | GET http://b/y -> 404"
                          " | `10` not found")


def test_a_text_remote_error_gives_the_status_of_its_hop():
    chain = read_chain("GET http://a/x", 500, {
        "error_class": "HTTPError", "error_text": "...",
        "remote_call": "GET http://b/y", "remote_error": "404 Not Found: `10` not found"})
    assert chain == [Hop("GET http://a/x", 500, "HTTPError", "..."),
                     Hop("GET http://b/y", 404, None, "`10` not found")]


def test_a_text_without_a_status_prefix_is_kept_whole():
    chain = read_chain("GET http://a/x", 500, {
        "remote_call": "GET http://b/y", "remote_error": "disk full: retry later"})
    assert chain[1] == Hop("GET http://b/y", None, None, "disk full: retry later")


def test_remote_status_gives_the_status_of_a_nested_document():
    chain = read_chain("GET http://a/x", 500, {
        "remote_call": "GET http://b/y", "remote_status": 409,
        "remote_error": {"error_class": "Conflict", "error_text": "in use"}})
    assert chain[1] == Hop("GET http://b/y", 409, "Conflict", "in use")


@pytest.mark.parametrize("status", [True, "404", 99, 600, 404.0, None])
def test_a_remote_status_that_is_not_a_status_is_ignored(status):
    chain = read_chain("GET http://a/x", 500, {
        "remote_call": "GET http://b/y", "remote_status": status, "remote_error": "oops"})
    assert chain[1].status is None


def test_extra_keys_are_ignored_and_missing_keys_read_as_none():
    chain = read_chain("GET http://a/x", 500, {
        "traceback": ["frame"], "filename": "/x.py", "line": 1,
        "request": {"method": "GET", "path": "/x"}})
    assert chain == [Hop("GET http://a/x", 500, None, None)]


def test_a_remote_call_without_remote_error_ends_the_chain():
    chain = read_chain("GET http://a/x", 500, {"error_class": "E", "remote_call": "GET b"})
    assert chain == [Hop("GET http://a/x", 500, "E", None)]


@pytest.mark.parametrize("remote_call", [None, 12, ["GET b"], {"GET": "b"}])
def test_a_remote_call_that_is_not_a_text_ends_the_chain(remote_call):
    chain = read_chain("GET http://a/x", 500, {"error_text": "here",
                                               "remote_call": remote_call,
                                               "remote_error": "404 Not Found: x"})
    assert chain == [Hop("GET http://a/x", 500, None, "here")]


@pytest.mark.parametrize("remote_error,text", [
    (None, None),
    (12, "12"),
    ([1, "two"], "[1, 'two']"),
    (True, "True"),
])
def test_a_remote_error_of_another_type_is_a_root_shown_briefly(remote_error, text):
    chain = read_chain("GET http://a/x", 500, {"remote_call": "GET http://b/y",
                                               "remote_error": remote_error})
    assert chain[-1] == Hop("GET http://b/y", None, None, text)


def test_wrong_types_are_dropped_or_shown_briefly():
    chain = read_chain("GET http://a/x", 500, {"error_class": ["E"],
                                               "error_text": {"deep": [[[[["x"]]]]]}})
    assert chain == [Hop("GET http://a/x", 500, None, "{'deep': [[[...]]]}")]


def test_texts_are_cut_to_max_text_characters_and_say_so():
    chain = read_chain("GET http://a/x", 500, {
        "error_text": "e" * 50_000, "remote_call": "c" * 50_000,
        "remote_error": "404 Not Found: " + "t" * 50_000})
    assert chain[0].error_text == "e" * MAX_TEXT + f"... ({50_000 - MAX_TEXT} more characters)"
    assert chain[1].call.startswith("c" * MAX_TEXT + "... (")
    assert chain[1].status == 404
    assert chain[1].error_text.startswith("t" * MAX_TEXT + "... (")


def test_a_chain_longer_than_max_hops_is_cut_and_says_so():
    document = {"error_class": "NotFound", "error_text": "the real root"}
    for level in range(MAX_HOPS * 3):
        document = {"error_class": "HTTPError", "error_text": f"level {level}",
                    "remote_call": f"GET http://h{level}/", "remote_error": document}
    error = error_with(document)
    assert len(error.chain) == MAX_HOPS
    assert error.chain.truncated
    assert str(error).endswith(f" | (cut after {MAX_HOPS} hops)")
    assert error.format_chain().endswith(f"(more than {MAX_HOPS} hops: the rest was not read)")


def test_control_characters_never_break_the_line_or_reach_a_terminal():
    error = error_with({"error_class": "E\x1b[2J", "remote_call": "GET http://b/\r\nX: y",
                        "remote_error": "404 Not Found: two\nlines\u2028\ud800"})
    line = str(error)
    assert line == ("GET http://a/x -> 500 (E\\x1b[2J) | GET http://b/\\r\\nX: y -> 404"
                    " | two\\nlines\\u2028\\ud800")
    assert error.format_chain().splitlines()[-2:] == ["root cause: two",
                                                     "    lines\\u2028\\ud800"]
    line.encode("utf-8")  # lone surrogates would make printing fail


def test_the_far_side_text_of_a_response_loses_only_our_prefix(napix_server_factory):
    server = napix_server_factory()
    server.route("/colon", status=400, body="409 Conflict: not a prefix of ours")
    with Client(server.host, AUTH) as client:
        with pytest.raises(HTTPError) as caught:
            client.get("/colon")
    assert caught.value.remote_error == "400 Bad Request: 409 Conflict: not a prefix of ours"
    assert caught.value.root == Hop(f"GET {server.url}/colon", 400, None,
                                    "409 Conflict: not a prefix of ours")


def test_read_chain_survives_values_that_cannot_be_shown():
    class Hostile:
        def __repr__(self):
            raise RuntimeError("no")

        def __str__(self):
            raise RuntimeError("no")

    error = error_with({"error_text": Hostile(), "remote_call": "GET b",
                        "remote_error": {"error_text": 10 ** 5000}})
    assert error.chain[0].error_text == "<Hostile>"
    assert error.root.error_text == "<int of 16610 bits>"
    assert repr(error) == "<HTTPError 500 GET http://a/x>"


def test_a_chain_is_a_list_and_pickles_with_its_error():
    import pickle

    error = error_with({"remote_call": "GET b", "remote_error": "404 Not Found: x"})
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(error.chain, Chain) and isinstance(error.chain, list)
    assert copy.chain == error.chain and str(copy) == str(error)


# -- napixd 1.9.4 validation documents (PROTOCOL.md, "What a real napixd sends") ---

SIZE_MESSAGE = "Bad type: size has type unicode but should be int"


@pytest.mark.parametrize("document,text", [
    ({"_napix_": "id is world"}, "id is world"),
    ({"size": SIZE_MESSAGE}, f"size: {SIZE_MESSAGE}"),
    ({"size": "too big", "_napix_": "id is world", "name": "empty"},
     "size: too big; id is world; name: empty"),
])
def test_a_validation_document_reads_as_the_text_of_its_hop(document, text):
    assert read_chain("GET http://h/x", 400, document) == [
        Hop("GET http://h/x", 400, None, text)]
    error = error_with(document, status=400)
    assert str(error) == f"GET http://a/x -> 400 | {text}"
    assert error.format_chain() == f"hop 0: GET http://a/x -> 400\nroot cause: {text}"


@pytest.mark.parametrize("document", [
    {},
    {"size": 1},
    {"size": "too big", "count": None},
    {"size": ["too big"]},
    {"request": "GET /x", "size": "too big"},
    {"line": "12", "size": "too big"},
    {f"field{i}": "bad" for i in range(65)},
], ids=["empty", "int", "none", "list", "request-key", "line-key", "65-fields"])
def test_a_document_that_is_not_a_validation_document_gives_no_text(document):
    assert read_chain("GET http://h/x", 400, document) == [Hop("GET http://h/x", 400, None, None)]


def test_a_document_with_error_text_reads_as_before_whatever_else_it_holds():
    chain = read_chain("GET http://h/x", 400, {"error_text": "bad size", "size": "too big"})
    assert chain == [Hop("GET http://h/x", 400, None, "bad size")]


def test_a_validation_document_is_cut_to_max_text_characters_and_says_so():
    chain = read_chain("GET http://h/x", 400, {"a": "x" * 50_000, "b": "y" * 10})
    full = len("a: ") + 50_000 + len("; b: ") + 10
    assert chain[0].error_text == (f"a: {'x' * (MAX_TEXT - 3)}"
                                   f"... ({full - MAX_TEXT} more characters)")


def test_a_relayed_validation_document_is_the_text_of_the_last_hop():
    chain = read_chain("GET http://a/x", 500, {
        "error_class": "HTTPError", "error_text": "...", "remote_call": "POST http://b/vm-ip/",
        "remote_status": 400, "remote_error": {"size": SIZE_MESSAGE}})
    assert chain[1] == Hop("POST http://b/vm-ip/", 400, None, f"size: {SIZE_MESSAGE}")


def test_a_napixd_validation_answer_reads_in_str_root_and_format_chain(napix_server_factory):
    server = napix_server_factory()
    server.route("/hello/world", "PUT", status=400, body={"_napix_": "id is world"})
    server.route("/vm-ip/", "POST", status=400, body={"size": SIZE_MESSAGE})
    with Client(server.host, AUTH) as client:
        with pytest.raises(HTTPError) as unbound:
            client.put("/hello/world", {"id": "world"})
        with pytest.raises(HTTPError) as field:
            client.post("/vm-ip/", {"size": "1"})
    assert unbound.value.response.headers["Content-Type"] == "application/json"
    assert str(unbound.value) == f"PUT {server.url}/hello/world -> 400 | id is world"
    assert unbound.value.root.error_text == "id is world"
    assert str(field.value) == f"POST {server.url}/vm-ip/ -> 400 | size: {SIZE_MESSAGE}"
    assert field.value.format_chain().endswith(f"\nroot cause: size: {SIZE_MESSAGE}")


def test_napix_request_prints_the_message_of_a_validation_answer(napix_server_factory):
    import gevent.subprocess

    server = napix_server_factory()
    server.route("/vm-ip/", "POST", status=400, body={"size": SIZE_MESSAGE})
    root = Path(__file__).resolve().parent.parent
    done = gevent.subprocess.run(
        [sys.executable, "-m", "napixclient", "request", server.host, "POST", "/vm-ip/",
         "--data", '{"size": "1"}', "--login", "root", "--key", "toor"],
        capture_output=True, text=True, timeout=30, cwd=str(root),
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"hop 0: POST {server.url}/vm-ip/ -> 400",
                                        f"root cause: size: {SIZE_MESSAGE}"]


# -- napixd 1.9.4 relay documents (PROTOCOL.md, "What a real napixd sends") --------


def napixd_failure(error_class, error_text, method, path):
    """The 500 document napixd answers when one of its handlers raises."""
    return {"error_class": error_class, "error_text": error_text,
            "request": {"method": method, "path": path},
            "traceback": [{"filename": "/usr/lib/napixd/services/broken.py", "line": 7,
                           "in": "get_resource", "call": f"raise {error_class}(...)"}],
            "filename": "/usr/lib/napixd/services/broken.py", "line": 7}


def napixd_remote_error(host, path, remote_error):
    """napixd's own relay document (its RemoteError): a remote_call without a
    scheme, no status of the inner hop, and an error_text that is a Python
    repr."""
    call = f"GET {host}{path}"
    return {"error_class": "RemoteError",
            "error_text": f"RemoteError(u'{call}', {remote_error!r})",
            "request": {"method": "GET", "path": "/relay"},
            "remote_call": call, "remote_error": remote_error,
            "traceback": [{"filename": "/usr/lib/napixd/client.py", "line": 40,
                           "in": "request", "call": "raise RemoteError(call, error)"}],
            "filename": "/usr/lib/napixd/client.py", "line": 40}


def test_split_status_text_reads_a_bare_status_line():
    assert split_status_text("404 Not Found") == (404, "Not Found")
    assert split_status_text("502 bad gateway") == (502, "bad gateway")
    assert split_status_text("422 Unprocessable Entity") == (422, "Unprocessable Entity")
    assert split_status_text("422 Unprocessable Content") == (422, "Unprocessable Content")


@pytest.mark.parametrize("text", ["500 servers down", "404 Gone", "200 OK go", "404",
                                  "404 Not Found\n", "404  Not Found", "600 Not Found"])
def test_split_status_text_keeps_whole_a_text_that_is_not_a_status_line(text):
    assert split_status_text(text) == (None, text)


def test_a_bare_status_line_gives_the_status_of_its_hop():
    chain = read_chain("GET http://a/relay", 500,
                       napixd_remote_error("127.0.0.1:46581", "/broken/boom", "404 Not Found"))
    assert chain[1] == Hop("GET 127.0.0.1:46581/broken/boom", 404, None, "Not Found")


def test_a_napixd_relay_reads_over_loopback_as_two_hops(napix_server_factory):
    far = napix_server_factory()
    far.route("/broken/boom", status=500,
              body=napixd_failure("ValueError", "boom", "GET", "/broken/boom"))
    far.route("/broken/missing", status=404, body="`missing` not found")
    near = napix_server_factory()

    def relay(request):
        with Client(far.host, AUTH) as client:
            try:
                client.get(request.path.replace("/relay", "/broken"))
            except HTTPError as error:
                inner = error.remote_error if error.status == 500 else "404 Not Found"
                return 500, napixd_remote_error(far.host, error.request.path, inner)
        return 200, "unreachable"

    near.route("/relay/boom", handler=relay)
    near.route("/relay/missing", handler=relay)
    with Client(near.host, AUTH) as client:
        with pytest.raises(HTTPError) as boom:
            client.get("/relay/boom")
        with pytest.raises(HTTPError) as missing:
            client.get("/relay/missing")

    far_call = f"GET {far.host}/broken/boom"
    assert boom.value.chain == [
        Hop(f"GET {near.url}/relay/boom", 500, "RemoteError",
            boom.value.remote_error["error_text"]),
        Hop(far_call, None, "ValueError", "boom")]
    assert boom.value.chain[0].error_text.startswith(f"RemoteError(u'{far_call}', {{")
    assert str(boom.value) == (f"GET {near.url}/relay/boom -> 500 (RemoteError) | "
                               f"{far_call} -> ValueError | boom")
    assert missing.value.root == Hop(f"GET {far.host}/broken/missing", 404, None, "Not Found")
    assert str(missing.value).endswith(f" | GET {far.host}/broken/missing -> 404 | Not Found")
    assert missing.value.format_chain().splitlines()[-2:] == [
        f"hop 1: GET {far.host}/broken/missing -> 404", "root cause: Not Found"]


# -- the module: values only, and the old import path ------------------------------


def test_the_chain_module_imports_nothing_above_the_values_layer():
    tree = ast.parse(Path(chain_module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    ours = {name for name in imported if name.split(".")[0] == "napixclient"}
    assert ours <= {"napixclient.response", "napixclient.redact"}


def test_the_names_of_the_chain_are_still_importable_from_exceptions():
    from napixclient import exceptions

    for name in ("Hop", "Chain", "read_chain", "split_status_text", "MAX_HOPS", "MAX_TEXT"):
        assert getattr(exceptions, name) is getattr(chain_module, name)


def test_a_written_document_reads_back_as_one_more_hop():
    document = write_document(
        "HTTPError", "GET http://b/y -> 404 | `10` not found",
        {"method": "GET", "path": "/x"},
        remote_call="GET http://b/y", remote_error="404 Not Found: `10` not found",
        remote_status=404)
    assert document == {
        "error_class": "HTTPError", "error_text": "GET http://b/y -> 404 | `10` not found",
        "request": {"method": "GET", "path": "/x"}, "remote_call": "GET http://b/y",
        "remote_error": "404 Not Found: `10` not found", "remote_status": 404}
    assert read_chain("GET http://a/x", 500, json.loads(json.dumps(document))) == [
        Hop("GET http://a/x", 500, "HTTPError", "GET http://b/y -> 404 | `10` not found"),
        Hop("GET http://b/y", 404, None, "`10` not found")]


@pytest.mark.parametrize("remote_status", [None, True, 99, 600, "404"])
def test_a_written_document_leaves_out_a_status_that_is_not_one(remote_status):
    document = write_document("ConnectionError", "refused", remote_call="GET http://b/y",
                              remote_error="could not connect", remote_status=remote_status)
    assert "remote_status" not in document and "request" not in document
    assert document["remote_error"] == "could not connect"


def test_a_written_document_cuts_a_long_call_and_says_so():
    document = write_document("HTTPError", "x", remote_call="GET http://b/" + "p" * 5000)
    assert document["remote_call"].startswith("GET http://b/ppp")
    assert document["remote_call"].endswith(f"... ({5000 + 13 - MAX_TEXT} more characters)")


# -- hostile documents, generated -----------------------------------------------

# Texts napixd and napixclient put in remote_error: "404 Not Found", "404 Not
# Found: `x` not found", and near misses.
reasons = st.one_of(st.sampled_from([s.phrase for s in HTTPStatus] + ["not found", "Gone"]),
                    st.text(max_size=30))
status_texts = st.builds(lambda code, sep, reason, rest: f"{code}{sep}{reason}{rest}",
                         st.integers(0, 999), st.sampled_from([" ", "  ", ""]), reasons,
                         st.one_of(st.just(""), st.text(max_size=20).map(": ".__add__)))
# napixd writes remote_call without a scheme: "GET 127.0.0.1:46581/broken/boom".
calls = st.one_of(
    st.text(max_size=30),
    st.builds(lambda method, host, path: f"{method} {host}{path}",
              st.sampled_from(["GET", "POST", "DELETE", "get", ""]),
              st.sampled_from(["127.0.0.1:46581", "http://b", "[::1]:8002", "", "h"]),
              st.text(max_size=20).map("/".__add__)))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                    st.text(max_size=50), st.binary(max_size=20), status_texts)
napix_keys = st.sampled_from(["error_class", "error_text", "remote_call", "remote_error",
                              "remote_status", "traceback", "filename", "line", "request"])
# napixd's answer to an invalid request, and dicts a little off that shape.
validations = st.dictionaries(st.one_of(st.just("_napix_"), st.text(max_size=8), napix_keys),
                              st.one_of(st.text(max_size=60), scalars), max_size=70)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(st.one_of(napix_keys, st.text(max_size=8)), children, max_size=8),
        validations,
        st.fixed_dictionaries({"remote_call": st.one_of(calls, scalars),
                               "remote_error": children},
                              optional={"error_class": scalars, "error_text": scalars,
                                        "remote_status": scalars}),
        # napixd's relay: a Python repr for error_text, no remote_status.
        st.builds(lambda call, inner: napixd_remote_error("", call, inner), calls, children),
    ),
    max_leaves=40,
)


@st.composite
def deep_documents(draw):
    """Chains up to 100,000 hops deep, built without recursion, from a short
    repeated pattern of levels (relay documents, lists, junk)."""
    depth = draw(st.integers(min_value=0, max_value=100_000))
    pattern = draw(st.lists(st.sampled_from(["relay", "relay", "status", "list", "junk"]),
                            min_size=1, max_size=4))
    leaf = draw(documents)
    document = leaf
    for level in range(depth):
        shape = pattern[level % len(pattern)]
        if shape == "list":
            document = [document]
        elif shape == "junk":
            document = {"remote_call": "GET x", "remote_error": document, "line": [level]}
        else:
            document = {"error_class": "HTTPError", "error_text": "x" * 3,
                        "remote_call": f"GET http://h{level % 7}/",
                        "remote_error": document,
                        **({"remote_status": 502} if shape == "status" else {})}
    return document


def check_bounded(error):
    chain = error.chain
    assert 1 <= len(chain) <= MAX_HOPS
    for hop in chain:
        assert isinstance(hop, Hop)
        for text in (hop.call, hop.error_class, hop.error_text):
            assert text is None or (isinstance(text, str) and len(text) <= TEXT_BOUND)
        assert hop.status is None or 100 <= hop.status <= 599
    line = str(error)
    assert "\n" not in line and "\r" not in line
    assert len(line) <= MAX_HOPS * (3 * TEXT_BOUND + 20)
    line.encode("utf-8")
    error.format_chain().encode("utf-8")
    assert error.root == chain[-1]
    assert repr(error).startswith("<HTTPError ")


GENERATED = settings(max_examples=100, deadline=timedelta(seconds=2),
                     suppress_health_check=[HealthCheck.too_slow])


@GENERATED
@given(documents, st.one_of(st.none(), st.integers(100, 599)))
def test_generated_documents_never_make_reading_fail(document, status):
    check_bounded(error_with(document, status))


@GENERATED
@given(st.one_of(status_texts, st.text(max_size=200)))
def test_generated_status_texts_split_without_raising(text):
    status, rest = split_status_text(text)
    assert status is None or (100 <= status <= 599 and text.startswith(str(status)))
    assert isinstance(rest, str) and len(rest) <= TEXT_BOUND
    if status is None:
        assert rest == text
    else:
        assert text.endswith(rest)


@settings(max_examples=25, deadline=timedelta(seconds=2),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(deep_documents())
def test_generated_deep_documents_never_make_reading_fail(document):
    check_bounded(error_with(document))


@settings(max_examples=50, deadline=timedelta(seconds=2))
@given(st.integers(min_value=1, max_value=2000), st.integers(min_value=1, max_value=5000))
def test_wide_documents_never_make_reading_fail(keys, length):
    document = {f"k{i}": "v" * (i % 10) for i in range(keys)}
    document.update(error_text=["x" * length] * keys, error_class={"a": keys},
                    remote_call="GET http://b/" + "p" * length,
                    remote_error={str(i): [i] for i in range(keys)})
    check_bounded(error_with(document))


def best_of(repeats, action):
    """The shortest of ``repeats`` timings of ``action()``, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best


def test_reading_takes_no_longer_for_huge_documents_than_for_small_ones():
    def nest(depth, text, width):
        document = {"error_text": text, **{f"k{i}": i for i in range(width)}}
        for _ in range(depth):
            document = {"remote_call": "GET x", "remote_error": document,
                        "error_text": text}
        return document

    small = nest(40, "x" * 10, 2)
    huge = nest(100_000, "x" * 5_000_000, 200_000)

    def read_all(document):
        def action():
            for _ in range(20):
                error = error_with(document)
                str(error), repr(error), error.format_chain()
        return action

    ratio = best_of(5, read_all(huge)) / best_of(5, read_all(small))
    # Work is capped by MAX_HOPS and MAX_TEXT: the 10,000 times larger
    # document costs about the same; a wide margin keeps this steady.
    assert ratio < 20


# -- hostile bodies, read into a chain --------------------------------------------

DEEP_JSON = b"[" * 100_000 + b"]" * 100_000


def test_a_50_mb_string_body_is_read_and_cut_in_the_chain(napix_server_factory):
    server = napix_server_factory()
    huge = json.dumps({"error_class": "Huge", "error_text": "z" * 50_000_000,
                       "remote_call": "GET http://b/", "remote_error": "y" * 1000})
    server.route("/huge", status=500, body=huge.encode(),
                 headers={"Content-Type": "application/json"})
    server.route("/deep", status=500, body=DEEP_JSON,
                 headers={"Content-Type": "application/json"})
    server.route("/bad", status=502, body=b"\xff\xfe bad \xc3",
                 headers={"Content-Type": "text/plain; charset=utf-8"})
    with Client(server.host, AUTH, timeout=20) as client:
        errors = []
        for path in ("/huge", "/deep", "/bad"):
            with pytest.raises(HTTPError) as caught:
                client.get(path)
            errors.append(caught.value)
    huge_error, deep_error, bad_error = errors
    assert huge_error.chain[0].error_text.startswith("z" * MAX_TEXT + "... (")
    assert huge_error.root == Hop("GET http://b/", None, None, "y" * 1000)
    assert len(str(huge_error)) < 3 * TEXT_BOUND
    assert deep_error.chain == [Hop(f"GET {server.url}/deep", 500, None,
                                    deep_error.root.error_text)]
    assert deep_error.root.error_text.startswith("[[[[") and len(
        deep_error.root.error_text) <= TEXT_BOUND
    assert bad_error.root.error_text == "\ufffd\ufffd bad \ufffd"


# -- issue 19: bidi and other format characters (item 9) -----------------------------


def test_bidi_controls_and_format_characters_from_the_far_side_are_escaped():
    # U+202E (right-to-left override) would show "txt.exe" as "exe.txt";
    # U+2066 isolates, U+200B and U+FEFF are invisible, U+E0001 a tag.
    error = error_with({"error_class": "E\u202eRROR", "remote_call": "GET http://b/\u2066x",
                        "remote_error": "404 Not Found: evil\u202etxt.exe\u200b\ufeff"
                                        "\U000e0001 café 中文"})
    escaped = "evil\\u202etxt.exe\\u200b\\ufeff\\U000e0001 café 中文"
    assert str(error) == ("GET http://a/x -> 500 (E\\u202eRROR) | GET http://b/\\u2066x -> 404"
                          f" | {escaped}")
    assert error.format_chain().splitlines()[-1] == f"root cause: {escaped}"
    assert str(error.chain[0]) == "GET http://a/x -> 500 (E\\u202eRROR)"
    shown = HTTPError(RequestRecord("GET", "a", "http://a/\u202ex", "/\u202ex"), status=404)
    assert repr(shown) == "<HTTPError 404 GET http://a/\\u202ex>"
    # The hop keeps what the far side sent; only showing it escapes.
    assert error.root.error_text.startswith("evil\u202etxt")


# -- issue 19: a hop is still the tuple of four fields (item 13) ----------------------

TRACE_ID, SPAN_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def test_a_hop_with_trace_ids_is_still_a_tuple_of_four_fields():
    document = {"error_class": "E", "error_text": "boom", "trace_id": TRACE_ID,
                "span_id": SPAN_ID}
    (hop,) = read_chain("GET http://b/y", 500, document)
    assert (hop.trace_id, hop.span_id) == (TRACE_ID, SPAN_ID)
    # Code written against the four fields: compare, unpack, count, hash.
    assert hop == ("GET http://b/y", 500, "E", "boom")
    assert hop == Hop("GET http://b/y", 500, "E", "boom")
    call, status, error_class, error_text = hop
    assert (call, status, error_class, error_text) == ("GET http://b/y", 500, "E", "boom")
    assert len(hop) == 4 and hop[-1] == "boom"
    assert {hop: 1}[("GET http://b/y", 500, "E", "boom")] == 1
    assert hop._asdict() == {"call": "GET http://b/y", "status": 500, "error_class": "E",
                             "error_text": "boom"}


def test_a_hop_keeps_its_trace_ids_through_replace_pickle_and_copy():
    import copy
    import pickle

    hop = Hop("GET http://b/y", 500, "E", "boom", TRACE_ID, span_id=SPAN_ID)
    for other in (hop._replace(status=502), pickle.loads(pickle.dumps(hop)),
                  pickle.loads(pickle.dumps(hop, 0)), copy.deepcopy(hop)):
        assert (other.trace_id, other.span_id) == (TRACE_ID, SPAN_ID)
        assert type(other) is Hop
    assert hop._replace(status=502).status == 502
    assert hop._replace(trace_id=None).trace_id is None
    assert "trace_id='4bf92f35" in repr(hop)
    plain = Hop("GET http://b/y", 500, "E", "boom")
    assert repr(plain) == ("Hop(call='GET http://b/y', status=500, error_class='E', "
                           "error_text='boom')")
    assert pickle.loads(pickle.dumps(plain)) == plain
    # As a named tuple's _replace: ValueError, TypeError from Python 3.13.
    with pytest.raises((ValueError, TypeError)):
        hop._replace(bogus=1)


# -- issue 19: an answer that came through a proxy says so (item 14) ------------------

PROXY_PAGE = (b"<html><head><title>502 Bad Gateway</title></head>"
              b"<body><h1>Unable to connect</h1></body></html>")


def proxy_answer(status=502, reason="Bad Gateway"):
    from napixclient import Response

    record = RequestRecord("GET", "origin:8002", "http://origin:8002/x", "/x")
    return Response(status, reason, {"Content-Type": "text/html", "Server": "tinyproxy"},
                    PROXY_PAGE, 0.01, record)


def test_an_answer_through_a_proxy_names_the_proxy_in_remote_call_str_and_chain():
    import pickle

    error = HTTPError.from_response(proxy_answer(), proxy="http://127.0.0.1:3128")
    assert error.proxy == "http://127.0.0.1:3128"
    assert error.remote_call == "GET http://origin:8002/x via the proxy http://127.0.0.1:3128"
    assert str(error).startswith(
        "GET http://origin:8002/x via the proxy http://127.0.0.1:3128 -> 502 | <html>")
    assert error.format_chain().splitlines()[0] == (
        "hop 0: GET http://origin:8002/x via the proxy http://127.0.0.1:3128 -> 502")
    assert error.request.url == "http://origin:8002/x"  # the record is the origin's
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.proxy, copy.remote_call, str(copy)) == (error.proxy, error.remote_call,
                                                         str(error))
    # Straight from the origin: as before.
    direct = HTTPError.from_response(proxy_answer())
    assert direct.proxy is None and direct.remote_call == "GET http://origin:8002/x"
    # An ExceptionsCatcher relaying it writes the proxy in remote_call.
    document = write_document("HTTPError", str(error), remote_call=error.remote_call,
                              remote_error=error.remote_error, remote_status=error.status)
    assert read_chain("GET http://a/y", 500, document)[1].call == error.remote_call


def test_the_proxy_of_an_error_never_shows_credentials_and_must_be_a_str():
    error = HTTPError.from_response(proxy_answer(), proxy="http://ops:s3cr#t@127.0.0.1:3128")
    assert error.proxy == "http://***@127.0.0.1:3128"
    assert "s3cr" not in str(error) + repr(error) + error.format_chain() + error.remote_call
    with pytest.raises(TypeError, match="proxy must be a str"):
        HTTPError(proxy_answer().request, status=502, proxy=3128)


def test_a_dead_origin_through_a_forwarding_proxy_reads_as_the_proxys_answer(tmp_path):
    from tests import proxyserver

    if proxyserver.tinyproxy_path() is None:
        pytest.skip("tinyproxy is not installed")
    import socket

    # A port bound and never listening: the origin refuses, whatever else runs.
    with socket.socket() as dead, proxyserver.running_tinyproxy(tmp_path) as proxy:
        dead.bind(("127.0.0.1", 0))
        port = dead.getsockname()[1]
        with Client(f"127.0.0.1:{port}", AUTH, proxies={"http": proxy.url},
                    timeout=10) as client:
            with pytest.raises(HTTPError) as caught:
                client.get("/x")
    error = caught.value
    assert error.status == 500  # tinyproxy's "Unable to connect" page
    assert "Via" not in error.response.headers  # not forwarded: the proxy's own page
    assert error.proxy == proxy.url
    assert error.remote_call == f"GET http://127.0.0.1:{port}/x via the proxy {proxy.url}"
    assert str(error).startswith(error.remote_call + " -> 500 | ")


# -- issue 19: what docs/errors.rst tells readers to catch around wait() (item 18) ----


def test_pool_wait_timeout_raises_the_builtin_timeout_error_the_errors_page_names(
        napix_server_factory):
    from napixclient import ClientPool, Timeout

    page = (Path(__file__).resolve().parent.parent / "docs" / "errors.rst").read_text()
    advice = page[page.index("\nWaiting on a pool\n"):page.index("\nRetries\n")]
    assert "except TimeoutError:" in advice and "pool.wait(timeout=" in advice
    server = napix_server_factory()
    server.route("/slow", latency=5.0)
    server.route("/fast", body={"ok": True})
    with ClientPool(AUTH, timeout=10) as pool:
        pool.request(server.host, "GET", "/fast")
        pool.request(server.host, "GET", "/slow")
        started = time.monotonic()
        with pytest.raises(TimeoutError) as caught:
            pool.wait(timeout=0.3)
        assert time.monotonic() - started < 3
        assert not isinstance(caught.value, (Timeout, HTTPError))
        assert type(caught.value) is TimeoutError
        assert pool.pending == 2  # nothing collected: a later wait() gets both
        pool.cancel()


# -- issue 19: secret parameters the far side echoed (item 8) --------------------------


def test_remote_error_and_the_chain_mask_secret_parameters_the_far_side_echoed():
    from napixclient.redact import register_secret_parameters

    register_secret_parameters(["api_key"])
    document = {"error_class": "NotFound", "error_text": "/v?api_key=k3y-1 not found",
                "remote_call": "GET 127.0.0.1:8002/v?token=root%3Aab12",
                "remote_error": ["`/v?token=root:ab12&n=1` not found"]}
    error = error_with(document, status=404)
    assert error.remote_error == {
        "error_class": "NotFound", "error_text": "/v?api_key=*** not found",
        "remote_call": "GET 127.0.0.1:8002/v?token=***",
        "remote_error": ["`/v?token=***&n=1` not found"]}
    assert document["error_text"] == "/v?api_key=k3y-1 not found"  # the caller's, untouched
    assert [hop.call for hop in error.chain] == ["GET http://a/x",
                                                 "GET 127.0.0.1:8002/v?token=***"]
    shown = str(error) + error.format_chain() + repr(error.chain)
    assert "k3y-1" not in shown and "ab12" not in shown
    text = HTTPError(RECORD, status=404, remote_error="404 Not Found: `/x?token=s3cret`")
    assert text.remote_error == "404 Not Found: `/x?token=***`"
    assert "s3cret" not in str(text)


def test_a_written_document_masks_secret_parameters():
    document = write_document("ValueError", "bad http://c/x?token=s3cret",
                              remote_call="GET http://c/y?token=s3cret",
                              remote_error={"error_text": "`/y?token=s3cret` not found"})
    assert "s3cret" not in json.dumps(document)
    assert document["error_text"] == "bad http://c/x?token=***"
    assert document["remote_error"] == {"error_text": "`/y?token=***` not found"}
