"""What goes on the wire: the request as a raw loopback server
(tests/faultserver.py) and a real nginx (tests/nginxserver.py) receive it,
and how an answer's head and body are framed (RFC 9112, section 6), on every
parser, against canned answers from a raw loopback socket."""

import gevent
import pytest
from gevent.server import StreamServer

from napixclient import Client, ClientPool, ConnectionError, Response
from napixclient.core.parser import available_parsers
from tests.faultserver import FaultServer
from tests.helpers import AUTH
from tests.nginxserver import nginx_fixture  # noqa: F401 (the nginx fixture)


@pytest.fixture
def fault_server():
    with FaultServer() as server:
        yield server


# -- one field per name --------------------------------------------------------------

def _named(seen, name):
    return [value for field, value in seen.fields if field.lower() == name.lower()]


@pytest.mark.parametrize("auth", [None, AUTH], ids=["unauthenticated", "signed"])
def test_each_field_is_sent_once_the_request_s_value_winning_over_the_client_s(
        fault_server, auth):
    client_headers = {"user-agent": "probe/1", "ACCEPT": "text/plain", "X-Team": "a"}
    with Client(fault_server.host, auth, headers=client_headers) as client:
        client.get("/ok?n=1")
        client.get("/ok?n=2", headers={"Accept": "application/xml", "x-team": "b",
                                       "HOST": "alias.example"})
    first, second = fault_server.requests
    for seen in (first, second):
        for name in ("Host", "User-Agent", "Accept", "Accept-Encoding", "X-Team"):
            assert len(_named(seen, name)) == 1, (name, seen.head)
        assert _named(seen, "User-Agent") == ["probe/1"]
    assert (_named(first, "Accept"), _named(first, "X-Team")) == (["text/plain"], ["a"])
    assert (_named(second, "Accept"), _named(second, "X-Team")) == (["application/xml"],
                                                                    ["b"])
    assert _named(first, "Host") == [fault_server.host]
    assert _named(second, "Host") == ["alias.example"]
    if auth:
        # What is signed is the Host as sent.
        (authorization,) = _named(second, "Authorization")
        assert "&host=alias.example&" in authorization


def test_a_client_host_header_replaces_the_default_one(fault_server):
    with Client(fault_server.host, headers={"host": "alias.example"}) as client:
        client.get("/ok")
    assert _named(fault_server.requests[0], "Host") == ["alias.example"]


def test_a_signed_request_with_its_own_host_is_accepted_by_a_napix_server(napix_server):
    napix_server.route("/", body={"ok": True})
    with Client(napix_server.host, AUTH) as client:
        assert client.get("/", headers={"Host": "alias.example:8002"}).body == {"ok": True}
    assert napix_server.requests[-1].headers["Host"] == "alias.example:8002"


@pytest.mark.parametrize("auth", [None, AUTH], ids=["unauthenticated", "signed"])
def test_nginx_answers_a_request_with_its_own_host_and_headers(nginx, auth):
    with Client(nginx.host, auth, headers={"Accept": "text/plain"}) as client:
        response = client.get("/index.html", headers={"host": "alias.example",
                                                      "accept": "*/*",
                                                      "User-Agent": "probe/1"})
    assert response.status == 200 and response.content == b"index\n"


# -- the request target ---------------------------------------------------------------

@pytest.mark.parametrize("url, target", [
    ("/100%.txt", "/100%25.txt"),
    ("/a b.txt", "/a%20b.txt"),
    ("/ok?zone=eu west&rate=5%", "/ok?zone=eu%20west&rate=5%25"),
    ("/eu%20west/%41", "/eu%20west/A"),
])
def test_a_lone_percent_and_a_space_are_percent_encoded_on_the_wire(fault_server, url,
                                                                    target):
    with Client(fault_server.host) as client:
        response = client.get(url)
    assert response.body["path"] == target
    assert fault_server.requests[0].head.startswith(f"GET {target} HTTP/1.1\r\n".encode())


def test_a_signed_request_signs_the_target_as_encoded_on_the_wire(napix_server):
    napix_server.route("/100%.txt", body="percent")
    napix_server.route("/a b", body="space")
    with Client(napix_server.host, AUTH) as client:
        assert client.get("/100%.txt").body == "percent"
        assert client.get("/a b").body == "space"
    assert [r.path for r in napix_server.requests] == ["/100%25.txt", "/a%20b"]


@pytest.mark.parametrize("url", ["/100%.txt", "/a b.txt"])
def test_nginx_serves_a_file_named_with_a_percent_or_a_space(nginx, url):
    with Client(nginx.host) as client:
        response = client.get(url)
    assert response.status == 200
    assert response.content == {"/100%.txt": b"one hundred per cent\n",
                                "/a b.txt": b"a space\n"}[url]


@pytest.fixture
def canned():
    """A server that answers each connection's first request with the bytes
    in ``answers[path]`` and closes it."""
    answers = {}

    def handle(sock, address):
        data = b""
        with gevent.Timeout(5, False):
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                data += chunk
        path = data.split(b" ", 2)[1].decode()
        sock.sendall(answers[path])
        sock.close()

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    server.answers = answers
    yield server
    server.stop(timeout=1)


CANNED = {
    "/http10": (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close",
                200, "until close", {}),
    "/continue": (b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
                  b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nfinal",
                  200, "final", {}),
    "/chunked": (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                 200, "abcde", {}),
    "/head-only": (b"HTTP/1.1 204 No Content\r\nX-B: 1\r\n\r\n", 204, None, {"x-b": "1"}),
    "/repeated": (b"HTTP/1.1 200 OK\r\nX-A: 1\r\nX-A: 2\r\nContent-Length: 0\r\n\r\n",
                  200, None, {"X-A": "1, 2"}),
}

# Ambiguous framing (RFC 9112, section 6.3, rules 3 and 5): refused by both
# transports, where http.client alone would guess.
AMBIGUOUS = {
    "/two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
    "/equal-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
    "/length-and-chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                            b"Content-Length: 99\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    "/negative-length": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nabc",
}


@pytest.mark.parametrize("parser", available_parsers())
@pytest.mark.parametrize("path", sorted(CANNED))
def test_answers_are_framed_as_rfc_9112_says(canned, parser, path):
    raw, status, body, headers = CANNED[path]
    canned.answers[path] = raw
    with Client(f"127.0.0.1:{canned.server_port}", parser=parser, timeout=3) as client:
        response = client.get(path)
    assert isinstance(response, Response)
    assert (response.status, response.body) == (status, body)
    for name, value in headers.items():
        assert response.headers[name] == value


@pytest.mark.parametrize("parser", available_parsers())
@pytest.mark.parametrize("path", sorted(AMBIGUOUS))
def test_ambiguous_framing_is_a_broken_answer_on_every_transport(canned, parser, path):
    canned.answers[path] = AMBIGUOUS[path]
    with Client(f"127.0.0.1:{canned.server_port}", parser=parser, timeout=3) as client:
        with pytest.raises(ConnectionError, match="broke during the exchange"):
            client.get(path)


# -- answers on a kept-alive connection (FaultServer's canned answers) -----------------

PARSERS = available_parsers()


def _own_answers(client, count=3):
    """The next requests on the client each get their own answer."""
    for index in range(count):
        response = client.get(f"/ok?after={index}")
        assert response.body["path"] == f"/ok?after={index}"
    return response


@pytest.mark.parametrize("parser", PARSERS)
def test_a_head_answer_announcing_a_body_above_max_body_size_is_read(fault_server, parser):
    fault_server.canned["/huge"] = [b"HTTP/1.1 200 OK\r\nContent-Type: application/zip\r\n"
                                    b"Content-Length: 10000000000\r\n\r\n"]
    with Client(fault_server.host, parser=parser, max_body_size=1000,
                simultaneous=1) as client:
        response = client.head("/huge")
        assert (response.status, response.content) == (200, b"")
        assert response.headers["Content-Length"] == "10000000000"
        # A HEAD answer has no body: nothing was left on the connection.
        assert _own_answers(client).body["connection"] == 1


FINAL = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Final: 1\r\n"
         b"Content-Length: 5\r\n\r\nfinal")
CONTINUE = b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
INTERIM = {
    "/continue": [CONTINUE, 0.002, FINAL],
    "/early-hints": [EARLY_HINTS, 0.002, FINAL],
    "/both-at-once": [CONTINUE + EARLY_HINTS + FINAL],
    "/body-later": [CONTINUE, 0.002, FINAL[:-5], 0.002, FINAL[-5:]],
    "/split-heads": [CONTINUE[:10], 0.001, CONTINUE[10:] + EARLY_HINTS[:20], 0.001,
                     EARLY_HINTS[20:], 0.001, FINAL[:30], 0.001, FINAL[30:]],
}


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("path", sorted(INTERIM))
def test_the_answer_after_an_interim_1xx_is_read_whole_every_time(fault_server, parser,
                                                                    path):
    fault_server.canned[path] = INTERIM[path]
    with Client(fault_server.host, parser=parser, simultaneous=1, timeout=5) as client:
        for _ in range(50):
            response = client.post(path, "data", headers={"Expect": "100-continue"})
            assert (response.status, response.body) == (200, "final")
            assert response.headers["X-Final"] == "1"
            assert "X-Interim" not in response.headers and "Link" not in response.headers
        _own_answers(client)
    assert fault_server.connections == 1


# A status that has no body (RFC 9112, section 6.3) announcing a chunked one,
# as uWSGI's --http-auto-chunked sends it, or an answer followed by bytes that
# are not part of it: whatever follows must never be read as the next answer.
LEFTOVERS = {
    "/no-content-chunked": (204, [b"HTTP/1.1 204 No Content\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"]),
    "/no-content-chunked-later": (204, [b"HTTP/1.1 204 No Content\r\n"
                                        b"Transfer-Encoding: chunked\r\n\r\n", 0.05,
                                        b"0\r\n\r\n"]),
    "/not-modified-chunked": (304, [b"HTTP/1.1 304 Not Modified\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"]),
    "/an-answer-too-many": (200, [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                                  b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"]),
    "/junk-after-the-body": (200, [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                                   + b"junk" * 5000]),
}


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("path", sorted(LEFTOVERS))
def test_a_connection_with_bytes_left_after_the_answer_is_never_reused(fault_server,
                                                                      parser, path):
    status, parts = LEFTOVERS[path]
    fault_server.canned[path] = parts
    with Client(fault_server.host, parser=parser, simultaneous=1, timeout=5) as client:
        assert client.get(path).status == status
        assert _own_answers(client).body["connection"] == 2
        assert client.get(path).status == status
        assert _own_answers(client).body["connection"] == 3


def _answer_with_fields(count, interim=False):
    """A 200 with ``count`` header fields (Content-Length included)."""
    fields = b"".join(b"X-Field-%d: %d\r\n" % (index, index) for index in range(count - 1))
    head = b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 2\r\n\r\nok"
    if interim:
        return b"HTTP/1.1 103 Early Hints\r\n" + fields + b"Link: </a>\r\n\r\n" + FINAL
    return head


def _answer_with_line(length, status_line=False):
    """A 200 whose longest line (CRLF included) is ``length`` bytes."""
    if status_line:
        return (b"HTTP/1.1 200 " + b"O" * (length - 15) + b"\r\n"
                b"Content-Length: 2\r\n\r\nok")
    return (b"HTTP/1.1 200 OK\r\nX-Long: " + b"v" * (length - 10) + b"\r\n"
            b"Content-Length: 2\r\n\r\nok")


TOO_MANY = "the answer has too many header fields (more than 99)"
TOO_LONG = "the answer has a header line longer than 65536 bytes"
LIMITS = {
    "99-fields": (_answer_with_fields(99), None),
    "100-fields": (_answer_with_fields(100), TOO_MANY),
    "1000-fields": (_answer_with_fields(1000), TOO_MANY),
    "99-fields-interim": (_answer_with_fields(99, interim=True), None),
    "100-fields-interim": (_answer_with_fields(100, interim=True), TOO_MANY),
    "line-of-65536": (_answer_with_line(65536), None),
    "line-of-65537": (_answer_with_line(65537), TOO_LONG),
    "line-of-200000": (_answer_with_line(200_000), TOO_LONG),
    "status-line-of-65536": (_answer_with_line(65536, status_line=True), None),
    "status-line-of-65537": (_answer_with_line(65537, status_line=True), TOO_LONG),
}


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("case", sorted(LIMITS))
def test_both_parsers_keep_the_same_header_limits_and_name_the_one_broken(
        fault_server, parser, case):
    raw, refused = LIMITS[case]
    fault_server.canned["/limit"] = [raw]
    with Client(fault_server.host, parser=parser, simultaneous=1, timeout=5) as client:
        if refused is None:
            response = client.get("/limit")
            assert response.status == 200 and response.content in (b"ok", b"final")
        else:
            with pytest.raises(ConnectionError) as caught:
                client.get("/limit")
            assert str(caught.value).endswith(refused)
            assert "broke" not in str(caught.value)
            assert "HTTPException" not in str(caught.value)
        _own_answers(client)


@pytest.mark.parametrize("parser", PARSERS)
def test_repeated_set_cookie_fields_come_back_each_apart_and_joined(fault_server, parser):
    fault_server.canned["/cookies"] = [
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/\r\nX-Other: x\r\n"
        b"set-cookie: b=2; Expires=Wed, 21 Oct 2015 07:28:00 GMT\r\n"
        b"SET-COOKIE: c=3\r\nContent-Length: 0\r\n\r\n"]
    with Client(fault_server.host, parser=parser) as client:
        headers = client.get("/cookies").headers
    assert headers.get_all("Set-Cookie") == [
        "a=1; Path=/", "b=2; Expires=Wed, 21 Oct 2015 07:28:00 GMT", "c=3"]
    assert headers.get_all("set-cookie") == headers.get_all("SET-COOKIE")
    assert headers["set-cookie"] == ("a=1; Path=/, b=2; Expires=Wed, 21 Oct 2015 "
                                     "07:28:00 GMT, c=3")
    assert headers.get_all("X-Other") == ["x"] and headers.get_all("X-Missing") == []


# -- malformed answers on each parser (issue 19, items 7 and 9) ------------------------

MALFORMED = {
    # A chunk size must be hexadecimal digits: "-5" is none.
    "/negative-chunk-size": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"-5\r\nhello\r\n0\r\n\r\n"),
    # A status has three digits, 100 to 599 (RFC 9110, section 15).
    "/status-099": b"HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok",
}
MALFORMED_CASES = [pytest.param(path, parser, id=f"{path[1:]}-{parser}")
                   for path in sorted(MALFORMED) for parser in PARSERS]


@pytest.mark.parametrize("path, parser", MALFORMED_CASES)
def test_a_malformed_answer_is_a_connection_error_on_every_parser(canned, path, parser):
    canned.answers[path] = MALFORMED[path]
    with Client(f"127.0.0.1:{canned.server_port}", parser=parser, timeout=3) as client:
        with pytest.raises(ConnectionError):
            client.get(path)


# -- the body is framed by the library alone (issue 19, item 4) ------------------------

# What a body would smuggle past a Content-Length that says less, or a
# Transfer-Encoding that the body does not follow.
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
DISAGREEING = [
    pytest.param({"Content-Length": "10"}, b"abc", "content-length", id="length-above"),
    pytest.param({"content-length": "0"}, SMUGGLED, "content-length", id="length-below"),
    pytest.param({"Transfer-Encoding": "chunked"}, b"abc", "transfer-encoding",
                 id="chunked-not-chunked"),
    pytest.param({"Transfer-Encoding": "chunked"}, b"0\r\n\r\n" + SMUGGLED,
                 "transfer-encoding", id="chunked-smuggling"),
]


@pytest.mark.parametrize("headers, body, name", DISAGREEING)
def test_a_framing_field_that_disagrees_with_the_body_is_refused_before_anything_is_sent(
        fault_server, headers, body, name):
    with Client(fault_server.host, timeout=2) as client:
        with pytest.raises(ValueError, match=f"(?i){name}"):
            client.post("/framed", body, headers=headers)
    with ClientPool(timeout=2) as pool:
        with pytest.raises(ValueError, match=f"(?i){name}"):
            pool.request(fault_server.host, "POST", "/framed", body, headers)
        assert pool.pending == 0
    gevent.sleep(0.1)
    assert fault_server.connections == 0 and fault_server.requests == []


def test_a_content_length_on_a_request_without_a_body_is_refused(fault_server):
    with Client(fault_server.host, timeout=2) as client:
        with pytest.raises(ValueError, match="(?i)content-length"):
            client.get("/framed", headers={"Content-Length": "5"})
    gevent.sleep(0.1)
    assert fault_server.requests == []


def test_a_content_length_equal_to_the_body_s_length_is_sent_once(fault_server):
    with Client(fault_server.host, timeout=5) as client:
        response = client.post("/framed", b"abc", headers={"Content-Length": "3"})
        assert response.body["path"] == "/framed"
        _own_answers(client, count=1)
    first = fault_server.requests[0]
    assert _named(first, "Content-Length") == ["3"] and not _named(first, "Transfer-Encoding")
    assert fault_server.paths() == ["/framed", "/ok?after=0"]


def test_a_body_that_looks_like_a_request_reaches_the_server_as_a_body_only(fault_server):
    with Client(fault_server.host, timeout=5, simultaneous=1) as client:
        response = client.post("/framed", SMUGGLED)
        assert response.body["path"] == "/framed"
        _own_answers(client, count=1)
    assert fault_server.paths() == ["/framed", "/ok?after=0"]
    assert _named(fault_server.requests[0], "Content-Length") == [str(len(SMUGGLED))]
