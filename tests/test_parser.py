"""napixclient.core.parser on its own: the push parser fed bytes (in one
piece and byte by byte), its events, its limits and its failures, on both
engines; no socket."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napixclient.core.parser import (
    MAX_HEAD_SIZE,
    MAX_HEADER_FIELDS,
    MAX_INTERIM_ANSWERS,
    MAX_LINE,
    MAX_TRAILER_SIZE,
    Body,
    End,
    Head,
    Reading,
    ResponseParser,
    available_parsers,
)
from napixclient.failures import BodyLimitExceeded, ConnectionBroken, MalformedAnswer
from napixclient.response import Headers

# -- reading whole answers -----------------------------------------------------------

PARSERS = available_parsers()


def read_answer(name, raw, method="GET", max_body_size=1_000_000, close=False):
    """Read ``raw`` with the engine ``name``, in one piece; ``close``: the
    stream ends after ``raw``. Returns ``(answer, reusable)``."""
    reading = Reading(method, max_body_size, name)
    done = reading.feed(raw) if raw else False
    if not done:
        if not close:
            raise AssertionError("the answer is not whole and the stream did not end")
        reading.feed_eof()
    return reading.answer(), reading.reusable


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


# -- fed byte by byte, the same events ------------------------------------------------

def feed_all(name, raw, method, pieces, max_body_size=1_000_000):
    """The events of ``raw`` fed in ``pieces`` (sizes), then the end of the
    stream when it is not whole; or the failure's class and text."""
    parser = ResponseParser(method, max_body_size, name)
    events = []
    try:
        start = 0
        for size in pieces:
            if start >= len(raw) or parser.done:
                break
            events += parser.feed(raw[start:start + size])
            start += size
        if start < len(raw) and not parser.done:
            events += parser.feed(raw[start:])
        if not parser.done:
            events += parser.feed_eof()
    except (MalformedAnswer, ConnectionBroken, BodyLimitExceeded) as failure:
        return type(failure), str(failure)
    merged, body = [], b""
    for event in events:  # pieces of body come in other sizes: compare the whole
        if type(event) is Body:
            body += event.data
        else:
            merged.append(event)
    return merged, body


@pytest.mark.parametrize("name", PARSERS)
@pytest.mark.parametrize("case", sorted(set(ANSWERS) - {"bytes-after", "head-and-a-body",
                                                       "no-content-and-terminator"}))
def test_an_answer_fed_byte_by_byte_gives_the_events_it_gives_in_one_piece(name, case):
    raw, method, _, _ = ANSWERS[case]
    whole = feed_all(name, raw, method, [len(raw)])
    assert feed_all(name, raw, method, [1] * len(raw)) == whole
    assert type(whole[0][0]) is Head and type(whole[0][-1]) is End


# Heads whose fields and reason llhttp reads in odd ways, with a body: a first
# read (the head and the body in one call of the engine) and a reading byte
# by byte must agree.
ODD_HEADS = [
    b"HTTP/1.1 200 OK\r\nX-A:v  \t \r\nX-B:\t \tw\r\nX-C:\r\nX-D:  \r\n",
    b"HTTP/1.1 200 OK\r\nX-A: a:b: c\r\nx-a: \xe9\xff\r\nLink: <a>; rel=x\r\n",
    b"HTTP/1.1 200\r\nX-A: 1\r\n",
    b"HTTP/1.1 200 \r\nX-A: 1\r\n",
    b"HTTP/1.1 200  Two  Spaces \r\n",
    b"HTTP/1.0 404 Not \xe9 Found\r\n",
    b"HTTP/1.1 200 OK\r\n",
]


@pytest.mark.parametrize("name", PARSERS)
@pytest.mark.parametrize("head", ODD_HEADS)
@pytest.mark.parametrize("body", [b"Content-Length: 2\r\n\r\nok",
                                  b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"])
def test_odd_heads_read_in_one_piece_give_the_fields_read_byte_by_byte(name, head, body):
    raw = head + body
    whole = feed_all(name, raw, "GET", [len(raw)])
    assert feed_all(name, raw, "GET", [1] * len(raw)) == whole
    assert type(whole[0][0]) is Head and whole[1] == b"ok"


ANSWER_PARTS = st.sampled_from([
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX: y\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\n\r\nuntil the close",
    b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nno!",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    b"HTTP/1.1 200 OK\r\nX: " + b"v" * 70 + b"\r\nContent-Length: 0\r\n\r\n",
    b"NOT HTTP AT ALL\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"HTTP/1.1 099 Odd\r\n\r\n",
])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=ANSWER_PARTS, cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=20),
       name=st.sampled_from(PARSERS))
def test_any_cutting_of_an_answer_into_pieces_gives_the_same_events(raw, cuts, name):
    assert feed_all(name, raw, "GET", cuts) == feed_all(name, raw, "GET", [len(raw)])


# -- the limits -------------------------------------------------------------------------

@pytest.mark.parametrize("name", PARSERS)
def test_interim_answers_are_bounded_in_number(name):
    raw = b"HTTP/1.1 100 Continue\r\n\r\n" * (MAX_INTERIM_ANSWERS + 1)
    parser = ResponseParser("GET", 1000, name)
    with pytest.raises(MalformedAnswer, match="more than 16 interim"):
        parser.feed(raw)


@pytest.mark.parametrize("name", PARSERS)
def test_all_heads_together_are_bounded_in_size(name):
    line = b"X-A: " + b"v" * 1000 + b"\r\n"
    interim = b"HTTP/1.1 103 Early Hints\r\n" + line * 90 + b"\r\n"
    parser = ResponseParser("GET", 1000, name)
    with pytest.raises(MalformedAnswer, match=f"head .interim answers included. is longer "
                                              f"than {MAX_HEAD_SIZE} bytes"):
        for _ in range(4):
            parser.feed(interim)


@pytest.mark.parametrize("name", PARSERS)
def test_the_trailer_section_is_bounded_in_fields_and_in_bytes(name):
    start = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
    parser = ResponseParser("GET", 1000, name)
    with pytest.raises(MalformedAnswer, match="trailer"):
        parser.feed(start + b"X-T: " + b"t" * 60 + b"\r\n" * 1)
        for _ in range(2000):
            parser.feed(b"X-T: " + b"t" * 60 + b"\r\n")
    parser = ResponseParser("GET", 1000, name)
    with pytest.raises(MalformedAnswer, match=f"trailer section .* longer than "
                                              f"{MAX_TRAILER_SIZE} bytes"):
        parser.feed(start + b"X-Long: ")
        for _ in range(MAX_TRAILER_SIZE // 1000 + 2):
            parser.feed(b"t" * 1000)


@pytest.mark.parametrize("name", PARSERS)
def test_a_status_below_100_is_not_an_answer(name):
    with pytest.raises(MalformedAnswer, match="099 is not an HTTP status"):
        read_answer(name, b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize("name", PARSERS)
def test_a_negative_chunk_size_is_a_broken_body(name):
    with pytest.raises(ConnectionBroken, match="chunked encoding is malformed"):
        read_answer(name, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n",
                    close=True)


@pytest.mark.parametrize("name", PARSERS)
def test_a_2xx_to_connect_ends_with_its_head_and_hands_over_what_follows(name):
    parser = ResponseParser("CONNECT", 1000, name)
    events = parser.feed(b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03tls")
    assert events[0] == Head(200, "Connection established", [])
    assert events[1].rest == b"\x16\x03tls"


def test_the_fast_and_the_line_by_line_reading_agree_on_where_a_head_breaks():
    for name in PARSERS:
        bad = b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n"
        with pytest.raises(MalformedAnswer) as caught:
            read_answer(name, bad)
        assert "malformed head" in str(caught.value), name
        assert "Bad Name" not in str(caught.value)  # the far side's bytes are never quoted


def test_max_line_and_fields_are_the_limits_named():
    assert (MAX_LINE, MAX_HEADER_FIELDS) == (65536, 99)


@pytest.mark.parametrize("name", PARSERS)
@pytest.mark.parametrize("case", ["length", "chunked", "head", "asks-to-close"])
def test_an_answer_read_leaves_no_garbage_cycle(name, case):
    # The engine and the parser point at each other while an answer is read;
    # left so, every answer is freed only by the cyclic garbage collector.
    import gc

    raw, method, _, _ = ANSWERS[case]
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            read_answer(name, raw, method)
        assert gc.collect() == 0
    finally:
        gc.enable()
