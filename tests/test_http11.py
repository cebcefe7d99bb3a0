"""napixclient.http11 on its own: request bytes, field checks, body encoding
(no I/O), and the parsers on a ``socket.socketpair()``: real sockets, canned
answers, no server."""

import json
import math

import pytest

from napixclient import Client
from napixclient.http11 import encode_body, quote_target

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
