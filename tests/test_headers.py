"""napixclient.response.Headers: the fields of an answer, case-insensitive,
every value kept (RFC 9110, section 5). No I/O."""

import pickle

import pytest

from napixclient import HTTPError, Response
from napixclient.response import Headers, RequestRecord

FIELDS = [("Content-Type", "text/plain"), ("Set-Cookie", "a=1; Path=/"),
          ("X-Other", "x"), ("set-cookie", "b=2"), ("SET-COOKIE", "c=3")]


@pytest.fixture
def headers():
    return Headers(FIELDS)


def test_lookup_ignores_the_case_of_the_name(headers):
    for name in ("Content-Type", "content-type", "CONTENT-TYPE", "cOnTeNt-TyPe"):
        assert headers[name] == "text/plain"
        assert name in headers
        assert headers.get(name) == "text/plain"
    assert headers.get("X-Missing") is None and headers.get("X-Missing", "d") == "d"
    assert "X-Missing" not in headers and 3 not in headers
    with pytest.raises(KeyError):
        headers["X-Missing"]
    with pytest.raises(KeyError):
        headers[3]


def test_a_repeated_field_reads_joined_and_each_value_apart_in_order(headers):
    assert headers["set-cookie"] == "a=1; Path=/, b=2, c=3"
    assert headers.get_all("Set-Cookie") == ["a=1; Path=/", "b=2", "c=3"]
    assert headers.get_all("SET-cookie") == headers.get_all("set-cookie")
    assert headers.get_all("X-Other") == ["x"]
    assert headers.get_all("X-Missing") == [] and headers.get_all(3) == []


def test_get_all_gives_a_new_list_each_time(headers):
    values = headers.get_all("Set-Cookie")
    values.append("d=4")
    assert headers.get_all("Set-Cookie") == ["a=1; Path=/", "b=2", "c=3"]


def test_iteration_gives_each_name_once_as_it_first_came(headers):
    assert list(headers) == ["Content-Type", "Set-Cookie", "X-Other"]
    assert len(headers) == 3
    assert dict(headers) == {"Content-Type": "text/plain",
                             "Set-Cookie": "a=1; Path=/, b=2, c=3", "X-Other": "x"}
    assert list(headers.items())[1] == ("Set-Cookie", "a=1; Path=/, b=2, c=3")


def test_fields_are_every_field_as_it_came_in_a_new_list(headers):
    assert headers.fields == FIELDS
    headers.fields.append(("X-New", "1"))
    assert headers.fields == FIELDS and "X-New" not in headers


def test_headers_equal_a_dict_whatever_the_case_of_its_names(headers):
    assert headers == {"content-type": "text/plain", "SET-COOKIE": "a=1; Path=/, b=2, c=3",
                       "x-other": "x"}
    assert headers != {"content-type": "text/plain"}
    assert headers != {"content-type": "TEXT/PLAIN", "set-cookie": "a=1; Path=/, b=2, c=3",
                       "x-other": "x"}
    assert headers == Headers(headers.fields)
    assert Headers({"A": "1"}) == Headers([("a", "1")])
    assert headers != [("Content-Type", "text/plain")] and headers != "text/plain"


def test_headers_are_not_hashable(headers):
    with pytest.raises(TypeError):
        hash(headers)


def test_headers_are_built_from_pairs_a_mapping_or_headers(headers):
    assert Headers().fields == [] and len(Headers()) == 0
    assert Headers({"A": "1", "B": 2}).fields == [("A", "1"), ("B", "2")]
    copy = Headers(headers)
    assert copy == headers and copy.fields == headers.fields
    assert headers.copy() == headers and headers.copy() is not headers


def test_the_repr_shows_the_joined_values(headers):
    assert repr(Headers([("A", "1"), ("a", "2")])) == "Headers({'A': '1, 2'})"


def test_headers_pickle_with_every_value(headers):
    headers["content-type"]  # the index is built
    copy = pickle.loads(pickle.dumps(headers))
    assert copy == headers and copy.fields == FIELDS
    assert copy.get_all("set-cookie") == ["a=1; Path=/", "b=2", "c=3"]


def _response(status=404):
    record = RequestRecord("GET", "h:8002", "http://h:8002/x", "/x")
    return Response(status, "Not Found", Headers(FIELDS), b"missing", 0.25, record)


def test_a_response_keeps_headers_it_is_given_and_copies_other_mappings():
    record = RequestRecord("GET", "h", "http://h/", "/")
    given = Headers(FIELDS)
    assert Response(200, "OK", given, b"", 0.0, record).headers is given
    from_dict = Response(200, "OK", {"Content-Type": "application/json"}, b"[1]", 0.0,
                         record)
    assert isinstance(from_dict.headers, Headers)
    assert from_dict.headers["content-type"] == "application/json" and from_dict.body == [1]


def test_an_http_error_holding_a_response_pickles_with_its_headers():
    error = HTTPError.from_response(_response())
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is HTTPError and copy.status == 404
    assert str(copy) == str(error)
    assert copy.response.headers == error.response.headers
    assert copy.response.headers.get_all("Set-Cookie") == ["a=1; Path=/", "b=2", "c=3"]
    assert copy.response.content == b"missing" and copy.response.body == "missing"
    assert copy.request == error.request
