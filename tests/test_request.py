"""napixclient.core.request on its own: request bytes, field checks, body
encoding, framing (no I/O)."""

import json
import math
import re

import pytest

from napixclient import Client
from napixclient.core.request import (
    absolute_form,
    check_framing,
    check_headers,
    check_method,
    encode_body,
    field_block,
    merge_fields,
    quote_target,
    request_bytes,
)

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
    assert request_bytes("GET", "/x?a=1", fields, None) == (
        b"GET /x?a=1 HTTP/1.1\r\nHost: h:8002\r\nAccept: application/json\r\n\r\n")


def test_request_bytes_adds_the_length_of_a_body():
    data = request_bytes("DELETE", "/x", "Host: h\r\n", b"{}")
    assert data == b"DELETE /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_request_bytes_says_content_length_0_for_a_method_that_expects_a_body(method):
    assert request_bytes(method, "/", "Host: h\r\n", None) == (
        f"{method} / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n".encode())


def test_check_framing_keeps_a_matching_length_out_of_the_fields_request_bytes_writes():
    fields = check_framing({"Host": "h", "Content-Length": "3"}, b"abc")
    assert fields == {"Host": "h"}
    assert request_bytes("POST", "/", field_block(fields), b"abc") == (
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")


@pytest.mark.parametrize("fields, body, words", [
    ({"Content-Length": "10"}, b"abc", "Content-Length does not match the body (3 bytes)"),
    ({"content-length": "5"}, None, "does not match the body (0 bytes)"),
    ({"Content-Length": "3", "content-length": "3"}, b"abc", "does not match"),
    ({"Content-Length": "-3"}, b"abc", "does not match"),
    ({"Transfer-Encoding": "chunked"}, b"abc", "Transfer-Encoding is not sent"),
    ({"transfer-encoding": "gzip"}, None, "Transfer-Encoding is not sent"),
])
def test_check_framing_refuses_framing_fields_that_would_smuggle_a_request(fields, body,
                                                                           words):
    with pytest.raises(ValueError, match=re.escape(words)):
        check_framing(fields, body)


def test_absolute_form_writes_the_origin_in_the_request_line_and_the_proxy_s_credentials():
    data = b"GET /x?a=1 HTTP/1.1\r\nHost: h:8\r\n\r\n"
    assert absolute_form(data, "http", "h:8") == (
        b"GET http://h:8/x?a=1 HTTP/1.1\r\nHost: h:8\r\n\r\n")
    assert absolute_form(data, "http", "h:8", "Basic dTpw") == (
        b"GET http://h:8/x?a=1 HTTP/1.1\r\nProxy-Authorization: Basic dTpw\r\n"
        b"Host: h:8\r\n\r\n")


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
