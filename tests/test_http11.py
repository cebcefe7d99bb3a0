"""napixclient.http11 on its own: request bytes, field checks, body encoding
(no I/O), and the parsers on a ``socket.socketpair()``: real sockets, canned
answers, no server."""

import json
import math
import socket

import pytest

import napixclient.connections
from napixclient import Client
from napixclient.failures import BodyLimitExceeded, ConnectionBroken, MalformedAnswer
from napixclient.http11 import (
    MAX_HEADER_FIELDS,
    MAX_LINE,
    available_parsers,
    check_headers,
    check_method,
    encode_body,
    field_block,
    merge_fields,
    parser,
    quote_target,
    request_bytes,
)
from napixclient.response import Headers

# -- encode_body ------------------------------------------------------------------


@pytest.mark.parametrize("body, sent, content_type", [
    (None, None, None),
    ({"size": 1, "zone": "é"}, '{"size":1,"zone":"é"}'.encode(), "application/json"),
    ([1, "a", None, True], b'[1,"a",null,true]', "application/json"),
    ("text é", "text é".encode(), None),
    (b"\x00raw", b"\x00raw", None),
    (bytearray(b"ba"), b"ba", None),
    (memoryview(b"mv"), b"mv", None),
])
def test_encode_body_gives_the_bytes_and_the_content_type_they_imply(body, sent,
                                                                      content_type):
    assert encode_body(body) == (sent, content_type)


def _cycle():
    looped = []
    looped.append(looped)
    return looped


@pytest.mark.parametrize("body, words", [
    ({"hosts": {"a", "b"}}, "Object of type set is not JSON serializable"),
    ({"blob": b"x"}, "Object of type bytes is not JSON serializable"),
    ({"ratio": float("nan")}, "Out of range float values are not JSON compliant"),
    ([math.inf], "Out of range float values are not JSON compliant"),
    ({"a": [-math.inf]}, "Out of range float values are not JSON compliant"),
    ({(1, 2): "tuple key"}, "keys must be str, int, float, bool or None"),
    (_cycle(), "Circular reference detected"),
])
def test_a_body_that_is_not_json_is_a_value_error_naming_the_problem(body, words):
    with pytest.raises(ValueError, match="body cannot be sent as JSON") as caught:
        encode_body(body)
    assert type(caught.value) is ValueError
    assert words in str(caught.value)


@pytest.mark.parametrize("body", [3, 1.5, {1, 2}, (1, 2), object()])
def test_a_body_of_another_type_is_a_value_error_naming_the_type(body):
    with pytest.raises(ValueError, match=type(body).__name__):
        encode_body(body)


def test_a_client_refuses_a_body_with_a_set_before_sending_anything():
    # Port 1 on loopback: nothing listens, and nothing is ever sent.
    with Client("127.0.0.1:1") as client:
        with pytest.raises(ValueError, match="set is not JSON serializable"):
            client.post("/vm-ip/", {"hosts": {"a"}})
        with pytest.raises(ValueError, match="Out of range float"):
            client.prepare("PUT", "/x", {"ratio": float("nan")})


def test_a_json_body_round_trips_through_json_loads():
    body = {"n": [1, 2.5, "é", None], "nested": {"ok": False}}
    data, _ = encode_body(body)
    assert json.loads(data.decode("utf-8")) == body


# -- quote_target -----------------------------------------------------------------

@pytest.mark.parametrize("path, sent", [
    ("/vm-ip/?size=1&zone=eu", "/vm-ip/?size=1&zone=eu"),
    ("/100%.txt", "/100%25.txt"),
    ("/%", "/%25"),
    ("/50%/x?q=5%", "/50%25/x?q=5%25"),
    ("/%zz", "/%25zz"),
    ("/%4", "/%254"),
    ("/a b.txt", "/a%20b.txt"),
    ("/x?zone=eu west", "/x?zone=eu%20west"),
    ("/tab\there", "/tab%09here"),
    ("/caf\u00e9/", "/caf%C3%A9/"),
    ("/caf%C3%A9/", "/caf%C3%A9/"),
    ("/eu%20west", "/eu%20west"),
    ("/%7Euser", "/~user"),
    # Only the lone "%" is encoded: the escape beside it is kept.
    ("/%zz%41%2F", "/%25zzA%2F"),
    ("/a%2fb", "/a%2fb"),
])
def test_quote_target_encodes_spaces_and_lone_percents_as_requests_does(path, sent):
    assert quote_target(path) == sent


@pytest.mark.parametrize("path", ["/a\r\nHost: evil", "/a\nb", "/a\rb", "/a\x00b"])
def test_quote_target_refuses_cr_lf_and_nul(path):
    with pytest.raises(ValueError, match="CR, LF and NUL are not allowed"):
        quote_target(path)


@pytest.mark.parametrize("path", ["/a#frag", "/#", "/a b#c", "/x?q=1#top"])
def test_quote_target_refuses_a_fragment(path):
    with pytest.raises(ValueError, match="fragment"):
        quote_target(path)


# -- request_bytes, field_block ------------------------------------------------------

def test_request_bytes_frames_a_get_without_a_length():
    fields = field_block({"Host": "h:8002", "Accept": "application/json"})
    assert request_bytes("GET", "/x?a=1", fields, None, False) == (
        b"GET /x?a=1 HTTP/1.1\r\nHost: h:8002\r\nAccept: application/json\r\n\r\n")


def test_request_bytes_adds_the_length_of_a_body():
    data = request_bytes("DELETE", "/x", "Host: h\r\n", b"{}", False)
    assert data == b"DELETE /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_request_bytes_says_content_length_0_for_a_method_that_expects_a_body(method):
    assert request_bytes(method, "/", "Host: h\r\n", None, False) == (
        f"{method} / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n".encode())


def test_request_bytes_keeps_a_length_the_fields_already_have():
    fields = field_block([("Host", "h"), ("Content-Length", "3")])
    assert request_bytes("POST", "/", fields, b"abc", True) == (
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")


def test_field_block_writes_pairs_in_order_and_mappings_by_item():
    assert field_block([("B", "2"), ("A", "1"), ("B", "3")]) == "B: 2\r\nA: 1\r\nB: 3\r\n"
    assert field_block({"X": "y"}) == "X: y\r\n"
    assert field_block([]) == ""


# -- merge_fields ----------------------------------------------------------------------

def test_merge_fields_keeps_one_field_per_name_the_last_layer_winning_whatever_the_case():
    defaults = {"Host": "h", "User-Agent": "napixclient/1", "Accept": "application/json"}
    client = {"user-agent": "probe/1", "X-Team": "a"}
    request = {"ACCEPT": "text/plain", "x-team": "b", "host": "alias"}
    merged = merge_fields(defaults, client, request)
    assert merged == {"host": "alias", "user-agent": "probe/1", "ACCEPT": "text/plain",
                      "x-team": "b"}
    assert list(merged) == ["host", "user-agent", "ACCEPT", "x-team"]  # first seen order
    assert defaults["Host"] == "h" and client["X-Team"] == "a"  # the layers are not changed


def test_merge_fields_of_nothing_is_empty_and_new():
    layer = {"A": "1"}
    merged = merge_fields(layer)
    assert merged == layer and merged is not layer
    assert merge_fields() == {}


# -- check_headers, check_method -------------------------------------------------------

def test_check_headers_gives_a_new_dict_and_reads_bytes_values_as_latin_1():
    given = {"X-A": "1", "X-B": b"caf\xe9"}
    checked = check_headers(given)
    assert checked == {"X-A": "1", "X-B": "caf\u00e9"} and checked is not given
    assert check_headers(None) == {}


@pytest.mark.parametrize("headers, words", [
    ({"X A": "1"}, "header name 'X A' is not a valid token"),
    ({"": "1"}, "is not a valid token"),
    ({"X-A\n": "1"}, "is not a valid token"),
    ({"X:A": "1"}, "is not a valid token"),
    ({1: "1"}, "is not a valid token"),
    ({"X-A": "1\r\nX-B: 2"}, "header 'X-A': the value contains CR, LF or NUL"),
    ({"X-A": "1\x00"}, "contains CR, LF or NUL"),
    ({"X-A": b"1\n"}, "contains CR, LF or NUL"),
    ({"X-A": 1}, "the value must be a str, got int"),
    ([("X-A", "1")], "headers must be a mapping of str to str, got list"),
    ("X-A: 1", "got str"),
])
def test_check_headers_refuses_what_would_split_or_garble_the_request(headers, words):
    with pytest.raises(ValueError) as caught:
        check_headers(headers)
    assert words in str(caught.value)


@pytest.mark.parametrize("method, checked", [("get", "GET"), ("M-SEARCH", "M-SEARCH"),
                                             ("PATCH", "PATCH")])
def test_check_method_upper_cases_a_token(method, checked):
    assert check_method(method) == checked


@pytest.mark.parametrize("method", ["", "GE T", "GET\r\n", "GET\n", "G(ET", None, b"GET"])
def test_check_method_refuses_what_is_not_a_token(method):
    with pytest.raises(ValueError, match="method must be an HTTP token"):
        check_method(method)


# -- the parsers, on a socketpair ---------------------------------------------------

PARSERS = available_parsers()


def read_answer(name, raw, method="GET", max_body_size=1_000_000, close=False, timeout=2):
    """Read ``raw`` with the parser ``name`` from one end of a socketpair;
    ``close``: the far end closes after ``raw``."""
    ours, theirs = socket.socketpair()
    ours.settimeout(timeout)
    try:
        theirs.sendall(raw)
        if close:
            theirs.shutdown(socket.SHUT_WR)
        read = parser(name)
        return read.finish(read.begin(ours, method), max_body_size)
    finally:
        ours.close()
        theirs.close()


ANSWERS = {
    "length": (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
               b"hello", "GET", (200, "OK", b"hello"), True),
    "chunked": (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", "POST", (201, "Created", b"abcde"), True),
    "no-reason": (b"HTTP/1.1 204 \r\n\r\n", "DELETE", (204, "", b""), True),
    "not-modified": (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", "GET",
                     (304, "Not Modified", b""), True),
    "head": (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", "HEAD",
             (200, "OK", b""), True),
    "head-chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HEAD",
                     (200, "OK", b""), True),
    "interim": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "POST", (200, "OK", b"ok"),
                True),
    "asks-to-close": (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
                      "GET", (200, "OK", b"ok"), False),
    "http-1.0": (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", "GET", (200, "OK", b"ok"),
                 False),
    "bytes-after": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
                    "GET", (200, "OK", b"ok"), False),
    "no-content-chunked": (b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
                           "GET", (204, "No Content", b""), False),
    "no-content-and-terminator": (b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked"
                                  b"\r\n\r\n0\r\n\r\n", "GET", (204, "No Content", b""), False),
    "head-and-a-body": (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody", "HEAD",
                        (200, "OK", b""), False),
}


@pytest.mark.parametrize("name", PARSERS)
@pytest.mark.parametrize("case", sorted(ANSWERS))
def test_a_parser_reads_an_answer_and_says_whether_the_connection_may_serve_again(name,
                                                                                  case):
    raw, method, (status, reason, content), reusable = ANSWERS[case]
    answer, may_reuse = read_answer(name, raw, method)
    assert (answer.status, answer.reason, answer.content) == (status, reason, content)
    assert isinstance(answer.headers, Headers)
    assert may_reuse is reusable


@pytest.mark.parametrize("name", PARSERS)
def test_a_parser_reads_a_body_until_the_close_and_never_reuses_that_connection(name):
    answer, reusable = read_answer(name, b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close=True)
    assert answer.content == b"until the end" and reusable is False


@pytest.mark.parametrize("name", PARSERS)
def test_a_connection_closed_after_a_whole_answer_is_seen_before_it_is_reused(name):
    """The parser reads the answer whole; the server's close that follows is
    the connection manager's to see (it checks an idle socket before each
    reuse), so the parser spends no system call on it."""
    ours, theirs = socket.socketpair()
    ours.settimeout(2)
    try:
        theirs.sendall(ANSWERS["length"][0])
        theirs.shutdown(socket.SHUT_WR)
        read = parser(name)
        answer, _ = read.finish(read.begin(ours, "GET"), 1_000_000)
        assert answer.content == b"hello"
        assert napixclient.connections._dropped(ours) is True
    finally:
        ours.close()
        theirs.close()


@pytest.mark.parametrize("name", PARSERS)
def test_a_parser_keeps_every_field_in_order(name):
    raw = (b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-A: x\r\nset-cookie: b=2\r\n"
           b"Empty:\r\nContent-Length: 0\r\n\r\n")
    answer, _ = read_answer(name, raw)
    assert answer.headers.fields == [("Set-Cookie", "a=1"), ("X-A", "x"),
                                     ("set-cookie", "b=2"), ("Empty", ""),
                                     ("Content-Length", "0")]


FAILURES = {
    "nothing": (b"", ConnectionBroken, "closed the connection without answering"),
    "head-cut": (b"HTTP/1.1 200 OK\r\nX-A: 1\r\n", ConnectionBroken,
                 "ended before the end of its head"),
    "body-cut": (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", ConnectionBroken,
                 "the body ended after 3 bytes, 7 fewer than announced"),
    "chunk-cut": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                  ConnectionBroken, "its chunked encoding is malformed"),
    "not-http": (b"SSH-2.0-OpenSSH_9.6\r\n", MalformedAnswer, "the answer is not HTTP"),
    "two-lengths": (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                    MalformedAnswer, "broke during the exchange"),
    "switching": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
                  b"Connection: upgrade\r\n\r\n", MalformedAnswer,
                  "switched protocols (101) without being asked to"),
    "fields": (b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * (MAX_HEADER_FIELDS + 1) + b"\r\n",
               MalformedAnswer, f"too many header fields (more than {MAX_HEADER_FIELDS})"),
    "line": (b"HTTP/1.1 200 OK\r\nX: " + b"v" * MAX_LINE + b"\r\n\r\n", MalformedAnswer,
             f"a header line longer than {MAX_LINE} bytes"),
}


@pytest.mark.parametrize("name", PARSERS)
@pytest.mark.parametrize("case", sorted(FAILURES))
def test_a_parser_names_what_is_wrong_with_an_answer(name, case):
    raw, failure, words = FAILURES[case]
    with pytest.raises(failure) as caught:
        read_answer(name, raw, close=True)
    assert words in str(caught.value)
    if isinstance(caught.value, ConnectionBroken):
        assert caught.value.before_answer is (case == "nothing")


@pytest.mark.parametrize("name", PARSERS)
@pytest.mark.parametrize("raw, length", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1001\r\n\r\n", 1001),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n" + b"x" * 1001
     + b"\r\n0\r\n\r\n", None),
    (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 1001, None),
])
def test_a_body_above_max_body_size_is_refused_with_its_length(name, raw, length):
    with pytest.raises(BodyLimitExceeded) as caught:
        read_answer(name, raw, max_body_size=1000, close=True)
    assert (caught.value.length, caught.value.status, caught.value.limit) == (length, 200,
                                                                              1000)


@pytest.mark.parametrize("name", PARSERS)
def test_a_body_at_max_body_size_is_read(name):
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000
    answer, _ = read_answer(name, raw, max_body_size=1000)
    assert len(answer.content) == 1000


@pytest.mark.parametrize("name", PARSERS)
def test_a_parser_lets_a_socket_timeout_through(name):
    with pytest.raises(TimeoutError):
        read_answer(name, b"HTTP/1.1 200 OK\r\n", timeout=0.1)
