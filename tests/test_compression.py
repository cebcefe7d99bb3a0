"""Compressed answers: what a client asks for, and how it decodes what comes
back (gzip, deflate, br, zstd; several codings; bodies that do not decode;
a compression bomb), over real servers on loopback: nginx with ``gzip on``,
NapixTestServer routes sending encoded bodies, and I/O-free checks of
:func:`napixclient.core.codings.decode_content`."""

import functools
import gzip
import json
import struct
import time
import zlib

import pytest

from napixclient import Client, ConnectionError, HTTPError
from napixclient.core.codings import (
    MAX_CODINGS,
    MAX_MEMBERS,
    accept_encoding,
    content_codings,
    decode_content,
)
from napixclient.exceptions import BodyTooLarge
from napixclient.failures import BodyLimitExceeded, MalformedAnswer
from napixclient.testing import NapixTestServer
from tests.helpers import AUTH
from tests.nginxserver import NginxServer, find_nginx

try:
    import brotli
except ImportError:
    brotli = None
try:
    from backports import zstd
except ImportError:
    try:
        from compression import zstd  # Python 3.14
    except ImportError:
        zstd = None

needs_brotli = pytest.mark.skipif(brotli is None, reason="brotli is not installed "
                                  "(the compression extra)")
needs_zstd = pytest.mark.skipif(zstd is None, reason="backports.zstd is not installed "
                                "(the compression extra)")

DOCUMENT = {"hypervisors": [{"name": f"hv-{n}", "slots": n % 7} for n in range(200)]}
JSON = json.dumps(DOCUMENT).encode()
MiB = 1024 * 1024


def raw_deflate(data):
    """``data`` as raw deflate (RFC 1951), with no zlib header."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


# -- a compression bomb ----------------------------------------------------------------

def _crc32_of_zeros(mebibytes):
    """zlib.crc32 of ``mebibytes`` MiB of zero bytes, without reading them:
    crc32 over a fixed input is an affine map of the starting value, so the
    map of one MiB is composed with itself by squaring (33 crc32 calls of a
    MiB per composition, instead of one per MiB)."""
    one = bytes(MiB)

    def table(function):
        base = function(0)
        return base, [function(1 << bit) ^ base for bit in range(32)]

    def apply(affine, value):
        result, columns = affine
        for bit in range(32):
            if value >> bit & 1:
                result ^= columns[bit]
        return result

    result = (0, [1 << bit for bit in range(32)])  # the identity
    power = table(lambda value: zlib.crc32(one, value))
    count = mebibytes
    while count:
        if count & 1:
            result = table(lambda value, r=result, p=power: apply(p, apply(r, value)))
        power = table(lambda value, p=power: apply(p, apply(p, value)))
        count >>= 1
    return apply(result, 0)


@functools.lru_cache(maxsize=None)
def gzip_bomb(mebibytes):
    """A valid gzip file of ``mebibytes`` MiB of zeros, built in a fraction
    of a second: once a compressor's window holds nothing but zeros, each
    further MiB of zeros it is given, flushed to a byte boundary
    (Z_SYNC_FLUSH), compresses to the same bytes; so two MiB are compressed,
    the second's bytes repeated, and the stream closed with an empty final
    block and the gzip trailer (RFC 1952)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(MiB)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
    second = compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
    third = compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert second == third, "the repeated MiB does not compress to the same bytes"
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    final_block = b"\x03\x00"  # an empty fixed-Huffman block, marked last
    trailer = struct.pack("<II", _crc32_of_zeros(mebibytes), (mebibytes * MiB) & 0xFFFFFFFF)
    return b"".join([header, first, second * (mebibytes - 1), final_block, trailer])


def test_the_bomb_builder_makes_a_valid_gzip_of_that_many_zeros():
    assert gzip.decompress(gzip_bomb(5)) == bytes(5 * MiB)
    assert _crc32_of_zeros(3) == zlib.crc32(bytes(3 * MiB))


def _peak_rss_kib():
    """The process's peak resident size (VmHWM, KiB) after resetting it when
    Linux allows it, so the peak measured is that of what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # reset the peak RSS (Linux 4.0+)
    except OSError:
        pass
    return _vm("VmHWM")


def _vm(name):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {name} in /proc/self/status")


# -- servers ---------------------------------------------------------------------------

@pytest.fixture
def server():
    with NapixTestServer(users={"root": "toor"}) as srv:
        yield srv


def encoded(srv, path, body, coding, content_type="application/json", status=200):
    """Route ``path`` to answer ``body`` (bytes, already encoded) with
    ``Content-Encoding: coding``."""
    srv.route(path, status=status, body=body,
              headers={"Content-Encoding": coding, "Content-Type": content_type})


@pytest.fixture
def gzip_nginx(tmp_path):
    """nginx compressing JSON with gzip, whatever its size."""
    if find_nginx() is None:
        pytest.skip("nginx is not installed (the Debian package nginx)")
    directives = ("    types { application/json json; }\n"
                  "    gzip on;\n    gzip_types application/json;\n    gzip_min_length 0;")
    with NginxServer(tmp_path / "nginx", {"/capacity.json": JSON}, directives) as nginx:
        yield nginx


# -- what is asked for -----------------------------------------------------------------

def test_a_client_asks_for_gzip_and_deflate_by_default(server):
    server.route("/", body={})
    with Client(server.host, AUTH) as client:
        client.get("/")
    asked = server.requests[0].headers["Accept-Encoding"]
    assert asked == accept_encoding()
    assert asked.split(", ")[:2] == ["gzip", "deflate"]


def test_br_and_zstd_are_asked_for_when_their_modules_import():
    codings = content_codings()
    assert ("br" in codings) == (brotli is not None)
    assert ("zstd" in codings) == (zstd is not None)
    assert accept_encoding() == ", ".join(codings)


# -- nginx -------------------------------------------------------------------------------

def test_a_json_file_nginx_gzips_is_decoded(gzip_nginx):
    with Client(gzip_nginx.host) as client:
        response = client.get("/capacity.json")
    assert response.headers["Content-Encoding"] == "gzip"  # the headers as they came
    assert response.content == JSON
    assert response.body == DOCUMENT


def test_nginx_sends_identity_when_a_request_asks_for_it(gzip_nginx):
    with Client(gzip_nginx.host) as client:
        compressed = client.get("/capacity.json")
        plain = client.get("/capacity.json", headers={"Accept-Encoding": "identity"})
    assert compressed.headers["Content-Encoding"] == "gzip"
    assert "Content-Encoding" not in plain.headers
    assert int(plain.headers["Content-Length"]) == len(JSON)
    assert plain.body == compressed.body == DOCUMENT


# -- each coding -----------------------------------------------------------------------

@pytest.mark.parametrize("compress", [zlib.compress, raw_deflate],
                         ids=["zlib-wrapped", "raw"])
def test_deflate_is_decoded_zlib_wrapped_or_raw(server, compress):
    encoded(server, "/d", compress(JSON), "deflate")
    with Client(server.host, AUTH) as client:
        response = client.get("/d")
    assert response.content == JSON and response.body == DOCUMENT


@needs_brotli
def test_br_is_decoded(server):
    encoded(server, "/br", brotli.compress(JSON), "br")
    with Client(server.host, AUTH) as client:
        assert client.get("/br").body == DOCUMENT


@needs_zstd
def test_zstd_is_decoded_across_frames(server):
    half = len(JSON) // 2
    encoded(server, "/zstd", zstd.compress(JSON[:half]) + zstd.compress(JSON[half:]), "zstd")
    with Client(server.host, AUTH) as client:
        assert client.get("/zstd").body == DOCUMENT


def test_several_codings_are_undone_the_last_applied_first(server):
    # RFC 9110, 8.4: the codings are listed in the order they were applied.
    encoded(server, "/two", gzip.compress(zlib.compress(JSON)), "deflate, gzip")
    server.route("/repeated", body=zlib.compress(gzip.compress(JSON)), headers=[
        ("Content-Type", "application/json"), ("Content-Encoding", "gzip"),
        ("Content-Encoding", "deflate")])
    with Client(server.host, AUTH) as client:
        assert client.get("/two").body == DOCUMENT
        assert client.get("/repeated").body == DOCUMENT


@needs_brotli
def test_gzip_then_br_is_undone_br_first(server):
    encoded(server, "/gzip-br", brotli.compress(gzip.compress(JSON)), "gzip, br")
    with Client(server.host, AUTH) as client:
        assert client.get("/gzip-br").body == DOCUMENT


def test_several_gzip_members_and_zero_padding_are_one_body(server):
    half = len(JSON) // 2
    encoded(server, "/members",
            gzip.compress(JSON[:half]) + gzip.compress(JSON[half:]) + b"\0" * 8, "gzip")
    with Client(server.host, AUTH) as client:
        assert client.get("/members").body == DOCUMENT


def test_an_answer_to_a_request_asking_for_identity_is_still_decoded(server):
    encoded(server, "/anyway", gzip.compress(JSON), "gzip")
    with Client(server.host, AUTH) as client:
        response = client.get("/anyway", headers={"Accept-Encoding": "identity"})
    assert server.requests[0].headers["Accept-Encoding"] == "identity"
    assert response.body == DOCUMENT


def test_a_client_wide_accept_encoding_replaces_the_default(server):
    encoded(server, "/anyway", gzip.compress(JSON), "gzip")
    with Client(server.host, AUTH, headers={"accept-encoding": "gzip"}) as client:
        assert client.get("/anyway").body == DOCUMENT
    assert server.requests[0].headers["Accept-Encoding"] == "gzip"


@pytest.mark.parametrize("coding", ["compress", "x-napix-secret, gzip", "gzip, exi"])
def test_a_body_with_a_coding_it_does_not_know_is_left_as_it_came(server, coding):
    body = gzip.compress(JSON)
    encoded(server, "/unknown", body, coding, content_type="application/octet-stream")
    encoded(server, "/known", body, "gzip", content_type="application/octet-stream")
    with Client(server.host, AUTH) as client:
        assert client.get("/known").content == JSON
        response = client.get("/unknown")
    assert response.content == body
    assert response.headers["Content-Encoding"] == coding


def test_an_error_answer_is_decoded_too(server):
    document = {"error_class": "KeyError", "error_text": "no slot left"}
    encoded(server, "/broken", gzip.compress(json.dumps(document).encode()), "gzip",
            status=500)
    with Client(server.host, AUTH) as client, pytest.raises(HTTPError) as caught:
        client.get("/broken")
    assert caught.value.status == 500
    assert caught.value.remote_error == document
    assert caught.value.root.error_text == "no slot left"


def test_head_and_204_answers_have_nothing_to_decode(server):
    encoded(server, "/doc", gzip.compress(JSON), "gzip")
    server.route("/empty", status=204, headers={"Content-Encoding": "gzip"})
    with Client(server.host, AUTH) as client:
        assert client.get("/doc").body == DOCUMENT
        head = client.head("/doc")
        empty = client.get("/empty")
    assert (head.status, head.content, head.headers["Content-Encoding"]) == (200, b"", "gzip")
    assert (empty.status, empty.content) == (204, b"")


# -- what does not decode ---------------------------------------------------------------

@pytest.mark.parametrize("coding, body, says", [
    ("gzip", JSON, "the body is not valid gzip: incorrect header check"),
    ("gzip", gzip.compress(JSON)[:-12],
     "the body is not valid gzip: it ends before the end of its compressed data"),
    ("gzip", gzip.compress(JSON) + b"trailing", "the body is not valid gzip"),
    ("deflate", zlib.compress(JSON)[:40],
     "the body is not valid deflate: it ends before the end of its compressed data"),
], ids=["not-gzip", "cut-short", "trailing-garbage", "deflate-cut-short"])
def test_a_body_that_does_not_decode_is_a_connection_error_saying_why(server, coding, body,
                                                                     says):
    encoded(server, "/bad", body, coding)
    with Client(server.host, AUTH) as client, pytest.raises(ConnectionError) as caught:
        client.get("/bad")
    assert caught.value.remote_error.startswith(says)
    assert caught.value.status is None
    assert says in str(caught.value)


def test_a_body_that_does_not_decode_is_a_request_failed_trace_event(server):
    encoded(server, "/bad", gzip.compress(JSON)[:-12], "gzip")
    events = []
    with Client(server.host, AUTH, trace=lambda e, i: events.append((e, i))) as client:
        with pytest.raises(ConnectionError):
            client.get("/bad")
    (failed,) = [info for event, info in events if event == "request.failed"]
    assert failed["error_class"] == "ConnectionError"
    assert failed["failure"].startswith("the body is not valid gzip")


def test_a_connection_stays_usable_after_a_body_that_did_not_decode(server):
    encoded(server, "/bad", b"not gzip at all", "gzip")
    server.route("/ok", body={"ok": True})
    with Client(server.host, AUTH, simultaneous=1) as client:
        with pytest.raises(ConnectionError):
            client.get("/bad")
        assert client.get("/ok").body == {"ok": True}
    assert server.max_open_connections == 1


def test_more_codings_than_the_limit_are_refused(server):
    body = JSON
    for _ in range(MAX_CODINGS + 1):
        body = gzip.compress(body)
    encoded(server, "/deep", body, ", ".join(["gzip"] * (MAX_CODINGS + 1)))
    with Client(server.host, AUTH) as client, pytest.raises(ConnectionError) as caught:
        client.get("/deep")
    assert f"more than {MAX_CODINGS}" in caught.value.remote_error


# -- max_body_size applies to the decoded body -------------------------------------------

def test_max_body_size_bounds_the_decoded_size_not_the_compressed_one(server):
    body = gzip.compress(bytes(100_000))
    encoded(server, "/zeros", body, "gzip", content_type="application/octet-stream")
    with Client(server.host, AUTH, max_body_size=100_000) as client:
        assert client.get("/zeros").content == bytes(100_000)
    with Client(server.host, AUTH, max_body_size=99_999) as client:
        with pytest.raises(BodyTooLarge) as caught:
            client.get("/zeros")
    assert len(body) < 1000
    assert caught.value.status == 200
    assert "max_body_size (99999 bytes)" in caught.value.remote_error


def test_a_gzip_bomb_raises_body_too_large_without_inflating_it(server):
    """10 MiB on the wire that would inflate to 10 GiB: refused after 64 MiB
    of it, with the process's peak memory growing by far less than the body."""
    bomb = gzip_bomb(10 * 1024)
    assert 10_000_000 < len(bomb) < 12_000_000
    encoded(server, "/bomb", bomb, "gzip", content_type="application/octet-stream")
    with Client(server.host, AUTH, max_body_size=64 * MiB, timeout=60) as client:
        before = _peak_rss_kib()
        with pytest.raises(BodyTooLarge) as caught:
            client.get("/bomb")
        grown = _vm("VmHWM") - before
    assert caught.value.status == 200
    assert "max_body_size" in caught.value.remote_error
    # 64 MiB of decoded body at most, with the 10 MiB read and their copies
    # (about 100 MiB in all); 10 GiB had it been inflated.
    assert grown < 160 * 1024, f"the peak RSS grew by {grown} KiB"


# -- decode_content on its own -----------------------------------------------------------

def test_decode_content_leaves_an_empty_body_and_identity_as_they_are():
    assert decode_content(b"", "gzip", 10) == b""
    assert decode_content(b"plain", "identity", 10) == b"plain"
    assert decode_content(b"plain", None, 10) == b"plain"
    assert decode_content(gzip.compress(b"x"), " GZip , identity", 10) == b"x"
    assert decode_content(gzip.compress(b"x"), "x-gzip", 10) == b"x"


@pytest.mark.parametrize("limit", [1, 999_999, 1024 * 1024])
def test_decode_content_stops_one_byte_past_the_limit(limit):
    body = gzip.compress(bytes(limit + 1))
    with pytest.raises(BodyLimitExceeded) as caught:
        decode_content(body, "gzip", limit, status=203)
    assert (caught.value.length, caught.value.status, caught.value.limit) == (None, 203, limit)
    assert decode_content(gzip.compress(bytes(limit)), "gzip", limit) == bytes(limit)


@pytest.mark.parametrize("coding", ["br", "zstd"])
def test_decode_content_bounds_br_and_zstd_too(coding):
    module = {"br": brotli, "zstd": zstd}[coding]
    if module is None:
        pytest.skip(f"no module for {coding}")
    body = module.compress(bytes(3 * MiB))
    with pytest.raises(BodyLimitExceeded):
        decode_content(body, coding, 2 * MiB)
    assert decode_content(body, coding, 3 * MiB) == bytes(3 * MiB)


@pytest.mark.parametrize("coding, body", [
    ("br", b"\xff" * 20), ("zstd", b"\x00" * 20),
    ("br", None), ("zstd", None),
], ids=["br-garbage", "zstd-garbage", "br-cut", "zstd-cut"])
def test_decode_content_refuses_br_and_zstd_that_do_not_decode(coding, body):
    module = {"br": brotli, "zstd": zstd}[coding]
    if module is None:
        pytest.skip(f"no module for {coding}")
    if body is None:
        body = module.compress(JSON)[:-4]
    with pytest.raises(MalformedAnswer, match=f"^the body is not valid {coding}: "):
        decode_content(body, coding, MiB)


def test_decode_content_reads_up_to_max_members_gzip_members_and_refuses_more():
    empty = gzip.compress(b"")
    assert decode_content(empty * MAX_MEMBERS, "gzip", 10) == b""
    with pytest.raises(MalformedAnswer, match=f"more than {MAX_MEMBERS} members"):
        decode_content(empty * (MAX_MEMBERS + 1), "gzip", 10)


@needs_zstd
def test_decode_content_reads_up_to_max_members_zstd_frames_and_refuses_more():
    one = zstd.compress(b"x")
    assert decode_content(one * MAX_MEMBERS, "zstd", MAX_MEMBERS) == b"x" * MAX_MEMBERS
    with pytest.raises(MalformedAnswer, match=f"more than {MAX_MEMBERS} frames"):
        decode_content(one * (MAX_MEMBERS + 1), "zstd", 10 * MAX_MEMBERS)


def test_a_million_empty_gzip_members_are_refused_in_a_moment():
    """Each member costs a decompressor: a 20 MB body of a million empty ones
    is refused at the limit, not decoded for seconds while the hub waits."""
    body = gzip.compress(b"") * 1_000_000
    started = time.monotonic()
    with pytest.raises(MalformedAnswer):
        decode_content(body, "gzip", MiB)
    assert time.monotonic() - started < 1.0


def test_long_zero_padding_after_a_gzip_member_is_skipped():
    body = gzip.compress(JSON) + bytes(4 * MiB) + gzip.compress(JSON) + bytes(MiB)
    assert decode_content(body, "gzip", MiB) == JSON * 2
