"""Headers looked up without an index and JSON bodies read without
json.loads's wrapper (issue 12) give exactly what the plain ways give. No I/O."""

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from napixclient.response import Headers, _loads, decode_body, media_type

NAMES = st.sampled_from(["Content-Type", "content-type", "Set-Cookie", "X-A", "x-a", "ETag",
                         "\u212a", "k", "K", "\u0130", "i\u0307", "ß", "SS", "Été", "été"])


def _naive(fields, name):
    values = [value for field, value in fields if field.lower() == name.lower()]
    return values or None


@settings(max_examples=400, deadline=None)
@given(fields=st.lists(st.tuples(NAMES | st.text(max_size=6), st.text(max_size=4)),
                       max_size=40),
       name=NAMES | st.text(max_size=6))
@example(fields=[("\u0130", "dotted")], name="i\u0307")  # lower-casing lengthens it
@example(fields=[("\u212a", "kelvin")], name="k")
def test_looking_a_field_up_gives_what_the_index_gives_whatever_the_names(fields, name):
    scanned = Headers(fields)
    expected = _naive(fields, name)
    assert scanned.get_all(name) == (expected or [])
    assert (name in scanned) == (expected is not None)
    assert scanned.get(name) == (None if expected is None else ", ".join(expected))
    indexed = Headers(fields)
    list(indexed)  # builds the index
    assert indexed.get_all(name) == scanned.get_all(name)
    assert indexed.get(name, "d") == scanned.get(name, "d")


class _Name(str):
    """A field name that counts how many times it is lower-cased."""

    lowered = 0

    def lower(self):
        _Name.lowered += 1
        return super().lower()


def test_a_lookup_lower_cases_only_names_of_its_length_and_the_index_each_name_once():
    """As Headers documents: a lookup scans the fields, lower-casing only
    the ASCII names as long as the one looked up; what needs every name
    (len, iteration) builds the index, each name lower-cased once, and
    later lookups lower-case none."""
    _Name.lowered = 0
    headers = Headers([(_Name("Content-Type"), "application/json"), (_Name("X-A"), "1"),
                       (_Name("x-a"), "2"), (_Name("X-Other"), "o")])
    assert headers["content-type"] == "application/json"
    assert _Name.lowered == 1  # X-A, x-a and X-Other were skipped by their length
    assert headers["X-A"] == "1, 2"
    assert _Name.lowered == 3
    assert len(headers) == 3 and list(headers) == ["Content-Type", "X-A", "X-Other"]
    assert _Name.lowered == 3 + 4
    assert headers.get("x-a") == "1, 2" and headers.get("content-type") == "application/json"
    assert _Name.lowered == 3 + 4


def test_headers_from_a_list_keep_their_own_copy():
    fields = [("X-A", "1")]
    headers = Headers(fields)
    fields.append(("X-B", "2"))
    assert "X-B" not in headers and headers.fields == [("X-A", "1")]


JSON_TEXTS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12).map(json.dumps)


@settings(max_examples=400, deadline=None)
@given(text=JSON_TEXTS | st.text(alphabet=' \t\r\n[]{}"0123456789.,:-eEtrufalsn\ufeff',
                                max_size=20),
       pad=st.sampled_from(["", " ", "\n", "\t ", "\r\n"]))
def test_reading_json_agrees_with_json_loads(text, pad):
    for candidate in (text, pad + text, text + pad):
        try:
            expected = json.loads(candidate)
        except ValueError:
            with pytest.raises(ValueError):
                _loads(candidate)
        else:
            assert _loads(candidate) == expected or expected != expected


def test_the_media_type_of_a_value_met_again_is_the_same():
    for _ in range(3):
        assert media_type("Application/JSON; Charset=\"latin-1\"") == ("application/json",
                                                                        "latin-1")
    assert decode_body(b'{"a": [1]}', "application/json") == {"a": [1]}
    assert decode_body(b'{"a": 1} x', "application/json") == '{"a": 1} x'
