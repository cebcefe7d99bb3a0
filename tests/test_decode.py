"""decode_body: how a response body becomes ``Response.body``, whatever the
server sent and whatever it declared."""

import sys
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napixclient.response import decode_body

DEEP_JSON = b"[" * 100_000 + b"]" * 100_000


def test_json_nested_100000_levels_deep_comes_back_as_text():
    body = decode_body(DEEP_JSON, "application/json")
    assert isinstance(body, str) and len(body) == len(DEEP_JSON)


def test_deep_json_is_safe_even_with_a_raised_recursion_limit():
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200_000)
    try:
        # The C decoder would overflow the C stack here without the cap.
        body = decode_body(DEEP_JSON, "application/json")
        assert sys.getrecursionlimit() == 200_000
    finally:
        sys.setrecursionlimit(limit)
    assert isinstance(body, str)


@pytest.mark.parametrize("content,content_type,expected", [
    (b"\xff\xfe{\"a\": 1}", "application/json", "\ufffd\ufffd{\"a\": 1}"),
    (b"\xe9t\xe9", "text/plain", "\ufffdt\ufffd"),
    (b"\xe9t\xe9", "text/plain; charset=latin-1", "été"),
    (b"\xff abc", "text/plain; charset=idna", "\ufffd abc"),
    (b"\xff abc", "application/json; charset=punycode", "\ufffd abc"),
    (b"abc", "text/plain; charset=base64", "abc"),
    (b"abc", "text/plain; charset=no-such-charset", "abc"),
    (b"\xef\xbb\xbf{\"a\": 1}", "application/json; charset=utf-8", {"a": 1}),
    (b"1" * 10_000, "application/json", "1" * 10_000),
    (b"{\"a\": ", "application/problem+json", "{\"a\": "),
    (b"\x00\x01", 12, b"\x00\x01"),
    (b"\x00\x01", None, b"\x00\x01"),
    (b"", "application/json", None),
])
def test_hostile_bodies_decode_without_raising(content, content_type, expected):
    assert decode_body(content, content_type) == expected


@settings(max_examples=200, deadline=timedelta(seconds=2))
@given(st.binary(max_size=300), st.one_of(
    st.none(), st.text(max_size=40),
    st.sampled_from(["application/json", "application/json; charset=utf-16",
                     "text/plain; charset=idna", "text/html; charset=utf-7",
                     "application/x+json; charset=utf_32", "text/plain; charset="])))
def test_generated_bodies_decode_without_raising(content, content_type):
    decode_body(content, content_type)


# -- a non-empty body never decodes to an empty or silently shortened text -------


@pytest.mark.parametrize("content,content_type,expected", [
    # Python 3.13's punycode codec returns '' (or drops the bad tail) with
    # errors="replace" where 3.12 raised.
    (b"\xff abc", "text/plain; charset=punycode", "\ufffd abc"),
    (b"abc-\xff", "text/plain; charset=punycode", "abc-\ufffd"),
    (b"\x80", "application/json; charset=punycode", "\ufffd"),
    (b"caf\xc3\xa9", "text/plain; charset=punycode", "café"),
    # Strictly valid for the charset, but nothing comes out.
    (b"-", "text/plain; charset=punycode", "-"),
    (b"\x1b$B", "text/plain; charset=iso-2022-jp", "\x1b$B"),
    (b"\xef\xbb\xbf", "text/plain; charset=utf-8-sig", "\ufeff"),
    (b"\xef\xbb\xbf", "application/json", "\ufeff"),
])
def test_a_charset_that_yields_nothing_or_drops_bytes_falls_back_to_utf8(
        content, content_type, expected):
    assert decode_body(content, content_type) == expected


@pytest.mark.parametrize("content,content_type,expected", [
    (b"\x82\xa0\xff", "text/plain; charset=shift_jis", "\u3042\ufffd"),
    (b"a\x00b", "text/plain; charset=utf-16-le", "a\ufffd"),
    (b"abc-", "text/plain; charset=punycode", "abc"),
    (b"\xe9t\xe9", "text/plain; charset=ISO-8859-1", "été"),
])
def test_the_declared_charset_is_kept_when_it_decodes_or_replaces_faithfully(
        content, content_type, expected):
    assert decode_body(content, content_type) == expected


CHARSETS = ["utf-8", "utf-16", "utf-32-be", "utf-7", "punycode", "idna", "iso-2022-jp",
            "shift_jis", "cp037", "utf-8-sig", "latin-1", "base64", "rot13", "no-such"]


@settings(max_examples=300, deadline=timedelta(seconds=2))
@given(st.binary(min_size=1, max_size=200), st.sampled_from(CHARSETS),
       st.sampled_from(["text/plain", "text/html"]))
def test_generated_text_bodies_are_never_emptied_nor_silently_cut(content, charset, kind):
    text = decode_body(content, f"{kind}; charset={charset}")
    assert isinstance(text, str) and text
    try:
        content.decode(charset)
    except (UnicodeError, LookupError):
        # The declared charset could not read it all: the text shows where
        # (U+FFFD), or is the body read as UTF-8.
        assert "\ufffd" in text or text == content.decode("utf-8")
