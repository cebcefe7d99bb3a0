"""The client against a misbehaving server: every request yields one result of
the right class, nothing is retried that should not be, and the client keeps
working after each fault. Cancellation never returns a half-read connection
to the pool. All over real loopback sockets (tests/faultserver.py)."""

import time
import tracemalloc

import gevent
import pytest

from napixclient import Client, ClientPool, ConnectionError, HTTPError, Response, Timeout
from napixclient.core.parser import available_parsers
from napixclient.exceptions import BodyTooLarge
from tests.faultserver import FaultServer
from tests.helpers import AUTH, closed_port


@pytest.fixture
def fault_server():
    with FaultServer() as server:
        yield server


def assert_answers_its_own_request(client, path="/ok?after=1"):
    """A request after a fault gets its own answer, not leftovers."""
    response = client.get(path)
    assert isinstance(response, Response)
    assert response.status == 200
    assert response.body["path"] == path
    return response


# -- one fault at a time, on one Client ----------------------------------------

BROKE = "the connection broke during the exchange: "
# The socket's read timeout and the exchange's deadline are both 0.4 s here:
# either may fire first.
STALLED = ("timed out while reading", "the exchange took longer than")
# (path, exception class, one of these in the error's text)
FAULTS = [
    ("/reset", ConnectionError, (BROKE + "connection reset by peer",)),
    ("/short", ConnectionError, (BROKE + "the body ended after 10 bytes, 90 fewer than "
                                 "announced",)),
    ("/bad-chunked", ConnectionError, ("its chunked encoding is malformed",)),
    ("/not-http", ConnectionError, (BROKE + "the answer is not HTTP",)),
    ("/trickle-headers?interval=0.02&count=200", Timeout, ("the exchange took longer",)),
    ("/stall-headers?seconds=3", Timeout, STALLED),
    ("/stall-body?seconds=3", Timeout, STALLED),
]


@pytest.mark.parametrize("path, error_class, words", FAULTS,
                         ids=[fault[0].split("?")[0] for fault in FAULTS])
def test_each_fault_gives_one_error_of_its_class_then_the_client_works(
        fault_server, path, error_class, words):
    with Client(fault_server.host, simultaneous=1, timeout=0.4) as client:
        assert_answers_its_own_request(client, "/ok?before=1")
        with pytest.raises(HTTPError) as caught:
            client.get(path)
        error = caught.value
        assert type(error) is error_class
        assert error.status is None and error.response is None
        assert any(word in str(error) for word in words), str(error)
        assert error.remote_call == f"GET http://{fault_server.host}{path}"
        assert_answers_its_own_request(client)
    # Nothing was retried: the fault path was asked once.
    assert fault_server.paths().count(path) == 1


def test_a_refused_connection_is_a_connection_error_and_the_client_recovers(fault_server):
    port = closed_port()
    with Client(f"127.0.0.1:{port}", timeout=1) as client:
        with pytest.raises(ConnectionError) as caught:
            client.get("/")
        assert "could not connect" in str(caught.value)
        assert "refused" in str(caught.value)
    # The same pool of connections keeps working against a live server.
    with Client(fault_server.host) as client:
        assert_answers_its_own_request(client)


def test_trickling_headers_are_cut_by_the_whole_exchange_deadline(fault_server):
    """Each byte comes well within the socket timeout, so only the deadline
    of the whole exchange can stop it: the request ends long before the
    trickle would (a ratio, not an absolute time)."""
    interval, count = 0.02, 400  # 8 s of trickle if nobody stops it
    with Client(fault_server.host, simultaneous=1, timeout=0.3) as client:
        started = gevent.get_hub().loop.now()
        with pytest.raises(Timeout) as caught:
            client.get(f"/trickle-headers?interval={interval}&count={count}")
        spent = gevent.get_hub().loop.now() - started
        assert "the exchange took longer than 0.3 s" in str(caught.value)
        assert spent < interval * count / 4
        assert_answers_its_own_request(client)


def test_a_body_larger_than_max_body_size_is_refused_clearly(fault_server):
    with Client(fault_server.host, simultaneous=1, max_body_size=100_000) as client:
        for query in ("size=100001", "size=100001&chunked=1", "size=5000000&chunked=1"):
            with pytest.raises(BodyTooLarge) as caught:
                client.get(f"/big?{query}")
            error = caught.value
            assert isinstance(error, HTTPError) and error.status == 200
            assert "max_body_size (100000 bytes)" in str(error)
            assert_answers_its_own_request(client)
        # At the limit it is read whole, known length or chunked.
        assert len(client.get("/big?size=100000").content) == 100_000
        assert len(client.get("/big?size=100000&chunked=1").content) == 100_000


def test_max_body_size_defaults_to_64_mib():
    with Client("127.0.0.1:1") as client:
        assert client.max_body_size == 64 * 1024 * 1024


# -- keep-alive connections closed by the server -------------------------------

def test_a_keep_alive_connection_closed_between_requests_is_replaced(fault_server):
    with Client(fault_server.host, simultaneous=1) as client:
        client.get("/close-after")
        gevent.sleep(0.05)  # the FIN arrives while the connection is idle
        response = assert_answers_its_own_request(client)
        client.post("/close-after", "x")
        gevent.sleep(0.05)
        assert client.post("/ok?post=1", "x").body["path"] == "/ok?post=1"
    assert response.body["connection"] == 2
    assert fault_server.paths() == ["/close-after", "/ok?after=1", "/close-after", "/ok?post=1"]


def test_a_stale_connection_is_retried_once_for_an_idempotent_request(fault_server):
    with Client(fault_server.host, simultaneous=1) as client:
        first = client.get("/race")
        second = client.get("/race?n=2")  # the server hangs up on this one
        assert second.status == 200 and second.body["path"] == "/race?n=2"
        third = client.delete("/race?n=3")
        assert third.status == 200
    assert first.body["connection"] == 1 and second.body["connection"] == 2
    # /race?n=2 went out twice: on the stale connection, then on a fresh one.
    assert fault_server.paths() == ["/race", "/race?n=2", "/race?n=2", "/race?n=3",
                                    "/race?n=3"]


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_stale_connection_is_not_retried_for_a_post(fault_server, method):
    with Client(fault_server.host, simultaneous=1, retries=3) as client:
        client.get("/race")
        with pytest.raises(ConnectionError) as caught:
            client.request(method, "/race?n=2", {"size": 1})
        assert "closed the kept-alive connection" in str(caught.value)
        assert f"a {method} may not be repeated" in str(caught.value)
        assert_answers_its_own_request(client)
    assert fault_server.paths().count("/race?n=2") == 1


# -- many at once --------------------------------------------------------------

def test_a_thousand_requests_to_a_dead_port_give_a_thousand_connection_errors():
    port = closed_port()
    with ClientPool(simultaneous=4, timeout=5) as pool:
        for index in range(1000):
            pool.request(f"127.0.0.1:{port}", "GET", f"/n/{index}")
        assert pool.pending == 1000
        results = pool.wait(timeout=60)
    assert len(results) == 1000
    assert all(type(result) is ConnectionError for result in results)
    assert [result.request.path for result in results] == [f"/n/{i}" for i in range(1000)]
    assert {"could not connect: connection refused" in str(r) for r in results} == {True}


def test_every_fault_at_once_through_a_pool_gives_one_result_each(fault_server):
    """All the faults interleaved with good requests on one connection slot:
    each request gets its own result, in order, and none is lost."""
    paths = ["/ok?i=0"]
    for index, (path, _, _) in enumerate(FAULTS, start=1):
        paths += [path, f"/ok?i={index}"]
    paths += ["/race", "/race?n=2", "/big?size=2000001", f"/ok?i={len(FAULTS) + 1}"]
    with ClientPool(simultaneous=1, timeout=0.4, max_body_size=2_000_000) as pool:
        for path in paths:
            pool.request(fault_server.host, "GET", path)
        results = pool.wait(timeout=30)
    assert len(results) == len(paths)
    expected = {path: error_class for path, error_class, _ in FAULTS}
    for path, result in zip(paths, results, strict=True):
        assert result.request.path == path
        if path in expected:
            assert type(result) is expected[path], path
        elif path.startswith("/big"):
            assert type(result) is BodyTooLarge
        else:
            assert isinstance(result, Response) and result.body["path"] == path


# -- retries -------------------------------------------------------------------

def test_retries_retry_a_connection_reset_before_the_answer(fault_server):
    with Client(fault_server.host, retries=2) as client:
        response = client.get("/flaky?fail=2")
    assert response.status == 200
    assert fault_server.paths() == ["/flaky?fail=2"] * 3


def test_retries_are_off_by_default(fault_server):
    with Client(fault_server.host) as client:
        with pytest.raises(ConnectionError):
            client.get("/flaky?fail=1")
        assert_answers_its_own_request(client)
    assert fault_server.paths().count("/flaky?fail=1") == 1


def test_retries_that_run_out_raise_the_last_connection_error_without_the_url(
        fault_server):
    with Client(fault_server.host, retries=2) as client:
        with pytest.raises(ConnectionError) as caught:
            client.get("/flaky?fail=9&secret=s3cr3t")
    error = caught.value
    assert "the connection broke during the exchange" in str(error)
    assert "Max retries" not in str(error) and "MaxRetryError" not in repr(error.remote_error)
    assert error.__context__ is None and error.__cause__ is None
    assert fault_server.paths().count("/flaky?fail=9&secret=s3cr3t") == 3


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_retries_never_repeat_a_post(fault_server, method):
    with Client(fault_server.host, retries=3) as client:
        with pytest.raises(ConnectionError):
            client.request(method, "/flaky?fail=1", {"a": 1})
        assert_answers_its_own_request(client)
    assert fault_server.paths().count("/flaky?fail=1") == 1


def test_retries_never_repeat_a_timeout(fault_server):
    with Client(fault_server.host, retries=3, timeout=(1.0, 0.2)) as client:
        with pytest.raises(Timeout):
            client.get("/stall-headers?seconds=2")
        assert_answers_its_own_request(client)
    assert fault_server.paths().count("/stall-headers?seconds=2") == 1


def test_retries_retry_a_refused_connection_and_back_off_without_blocking_the_hub():
    """urllib3's Retry sleeps with time.sleep; ours must yield to the hub, so a
    ticker greenlet keeps running while the retrying request waits."""
    port = closed_port()
    ticks = []

    def ticker():
        for _ in range(200):
            ticks.append(1)
            gevent.sleep(0.01)

    with Client(f"127.0.0.1:{port}", retries=3, retry_backoff=0.05, timeout=5) as client:
        beat = gevent.spawn(ticker)
        gevent.sleep(0)
        before = len(ticks)
        with pytest.raises(ConnectionError):
            client.get("/")  # waits 0.1 + 0.2 s in backoff
        during = len(ticks) - before
        beat.kill()
    assert during >= 5


def test_a_pool_passes_retries_to_its_clients(fault_server):
    with ClientPool(retries=1) as pool:
        pool.request(fault_server.host, "GET", "/flaky?fail=1&key=a")
        pool.request(fault_server.host, "GET", "/flaky?fail=2&key=b")
        good, bad = pool.wait(timeout=10)
    assert isinstance(good, Response) and good.status == 200
    assert type(bad) is ConnectionError
    assert sorted(fault_server.paths()) == ["/flaky?fail=1&key=a"] * 2 + [
        "/flaky?fail=2&key=b"] * 2


@pytest.mark.parametrize("options", [
    {"retries": -1}, {"retries": 1.5}, {"retries": True}, {"retries": "2"},
    {"retry_backoff": -0.1}, {"retry_backoff": float("inf")}, {"retry_backoff": "1"},
])
def test_bad_retry_options_are_refused_at_once(options):
    name = next(iter(options))
    with pytest.raises(ValueError, match=name):
        Client("127.0.0.1:1", **options)
    with pytest.raises(ValueError, match=name):
        ClientPool(**options)


def test_a_retried_request_is_signed_anew_and_accepted_by_a_server_refusing_replays(
        napix_server):
    # Dropped the first time: the route is replaced when the retry is announced.
    napix_server.route("/once", drop=True)

    def trace(event, info):
        if event == "request.retry":
            napix_server.route("/once", body={"ok": True})

    with Client(napix_server.host, AUTH, retries=1, trace=trace) as client:
        response = client.get("/once")
    assert response.status == 200 and response.body == {"ok": True}
    nonces = [request.nonce for request in napix_server.requests]
    assert len(nonces) == 2 and nonces[0] != nonces[1] and all(nonces)


# -- cancellation --------------------------------------------------------------

def _slow(fault_server, head_delay=0.0, delay=0.3):
    fault_server.mid_body.clear()
    return f"/slow-body?size=200000&delay={delay}&head-delay={head_delay}"


def _wait_for_request(fault_server, count):
    """Wait (at most 5 s) until the server has read ``count`` requests."""
    for _ in range(500):
        if len(fault_server.requests) >= count:
            return
        gevent.sleep(0.01)
    raise AssertionError(f"the server read {len(fault_server.requests)} requests, "
                         f"not {count}")


def test_cancel_mid_body_never_returns_the_half_read_connection(fault_server):
    with ClientPool(simultaneous=1) as pool:
        pool.request(fault_server.host, "GET", _slow(fault_server))
        assert fault_server.mid_body.wait(timeout=5)
        gevent.sleep(0.02)  # the client is now reading the body
        pool.cancel()
        assert pool.pending == 0
        pool.request(fault_server.host, "GET", "/ok?after=cancel")
        (result,) = pool.wait(timeout=5)
    assert isinstance(result, Response)
    assert result.body["path"] == "/ok?after=cancel"
    assert result.body["connection"] == 2


def test_leaving_the_with_block_mid_body_closes_the_connection(fault_server):
    with ClientPool(simultaneous=1) as pool:
        greenlet = pool.request(fault_server.host, "GET", _slow(fault_server))
        assert fault_server.mid_body.wait(timeout=5)
        gevent.sleep(0.02)
    assert greenlet.dead
    gevent.sleep(0.05)
    assert fault_server.open_connections == 0
    with ClientPool(simultaneous=1) as pool:
        pool.request(fault_server.host, "GET", "/ok?after=with")
        (result,) = pool.wait(timeout=5)
    assert result.body["path"] == "/ok?after=with"


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_gevent_timeout_around_a_request_never_leaves_a_half_read_connection(
        fault_server, phase):
    # Long waits on the server's side, so that the timeout surely fires
    # after the request went out, even on a loaded machine.
    head_delay = 2.0 if phase == "headers" else 0.0
    with Client(fault_server.host, simultaneous=1) as client:
        assert_answers_its_own_request(client, "/ok?before=1")
        with pytest.raises(gevent.Timeout):
            with gevent.Timeout(0.3):
                client.get(_slow(fault_server, head_delay, delay=2.0))
        assert len(fault_server.requests) == 2
        response = assert_answers_its_own_request(client)
        assert response.body["connection"] == 2


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_killing_a_request_greenlet_never_leaves_a_half_read_connection(
        fault_server, phase):
    with Client(fault_server.host, simultaneous=1) as client:
        greenlet = gevent.spawn(client.get, _slow(fault_server, 2.0 if phase == "headers"
                                                  else 0.0, delay=2.0))
        if phase == "body":
            assert fault_server.mid_body.wait(timeout=5)
        else:
            _wait_for_request(fault_server, 1)
        gevent.sleep(0.05)
        greenlet.kill(block=True, timeout=2)
        assert greenlet.dead
        response = assert_answers_its_own_request(client)
        assert response.body["connection"] == 2
        # A request that is not killed reads its whole slow body.
        assert len(client.get(_slow(fault_server)).content) == 200_000


def test_a_connection_closed_without_a_byte_says_so(napix_server):
    napix_server.route("/drop", drop=True)
    napix_server.route("/ok", body={"ok": True})
    with Client(napix_server.host, AUTH, simultaneous=1) as client:
        with pytest.raises(ConnectionError) as caught:
            client.get("/drop")  # on a fresh connection: not stale, not retried
        assert str(caught.value).endswith(
            "the server closed the connection without answering")
        assert client.get("/ok").body == {"ok": True}
    assert [r.path for r in napix_server.requests] == ["/drop", "/ok"]


# -- floods, from a server in a process of its own (tests/hostileserver.py) ------
#
# gevent's recv yields to the hub only when no data is ready: a server that
# sends faster than the client parses must still not hold the hub, nor the
# request past its deadline (issue 19, item 1).

PARSERS = available_parsers()


# (path, the word naming the bound): each flood outlasts the timeout of 4 s.
BOUNDED_FLOODS = [
    pytest.param("/flood-interim?seconds=6", "interim", id="interim"),
    pytest.param("/flood-head?seconds=6", "head", id="head"),
    pytest.param("/flood-trailers?seconds=6", "trailer", id="trailers"),
]


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("path, bound", BOUNDED_FLOODS)
def test_a_flood_of_a_bounded_part_fails_naming_the_bound_well_within_the_timeout(
        hostile_server, parser, path, bound):
    with Client(hostile_server.host, timeout=4, parser=parser) as client:
        started = time.monotonic()
        with pytest.raises(HTTPError) as caught:
            client.get(path)
        spent = time.monotonic() - started
    assert type(caught.value) is ConnectionError, str(caught.value)
    assert spent < 2, f"the flood held the request {spent:.1f} s"
    assert bound in str(caught.value)


@pytest.mark.parametrize("parser", PARSERS)
def test_32_mb_of_trailer_fields_are_refused_without_being_kept_in_memory(
        hostile_server, parser):
    with Client(hostile_server.host, timeout=30, max_body_size=1024 * 1024,
                parser=parser) as client:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            with pytest.raises(HTTPError) as caught:
                # 32 MB of trailer fields, then the empty line that ends them.
                client.get("/flood-trailers?mb=32&then=end")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert type(caught.value) is ConnectionError, str(caught.value)
    assert "trailer" in str(caught.value)
    assert peak - before < 16 * 1024 * 1024, f"{(peak - before) / 2 ** 20:.0f} MiB"


# A body within max_body_size is bounded by the timeout alone: as 1 TB announced
# with Content-Length, and as chunks of one byte (more work per byte kept).
BODY_FLOODS = {
    "content-length": "/flood-body?seconds=6&then=hold",
    "one-byte-chunks": "/flood-body?chunked=1&seconds=6",
}


def _body_flood_case(flood, parser):
    return pytest.param(BODY_FLOODS[flood], parser, id=f"{flood}-{parser}")


@pytest.mark.parametrize("path, parser", [_body_flood_case(flood, parser)
                                          for flood in BODY_FLOODS for parser in PARSERS])
def test_a_body_flood_within_max_body_size_is_cut_by_the_timeout(hostile_server, path,
                                                                  parser):
    with Client(hostile_server.host, timeout=2, max_body_size=2 ** 40,
                parser=parser) as client:
        started = time.monotonic()
        with pytest.raises(Timeout):
            client.get(path)
        spent = time.monotonic() - started
    assert spent < 2 + 1.5, f"a timeout of 2 s fired after {spent:.1f} s"


@pytest.mark.parametrize("parser", PARSERS)
def test_other_greenlets_keep_running_while_a_flood_is_read(hostile_server, parser):
    ticks = []

    def ticker():
        for _ in range(100):
            ticks.append(time.monotonic())
            gevent.sleep(0.1)

    beat = gevent.spawn(ticker)
    gevent.sleep(0)
    try:
        with Client(hostile_server.host, timeout=2, max_body_size=2 ** 40,
                    parser=parser) as client:
            started = time.monotonic()
            with pytest.raises(HTTPError):
                client.get("/flood-body?chunked=1&seconds=6")
            ended = time.monotonic()
    finally:
        beat.kill()
    during = [tick for tick in ticks if started <= tick <= ended]
    # Ten ticks a second while the hub is free; none while a flood holds it.
    assert len(during) >= 5, f"{len(during)} ticks in {ended - started:.1f} s"


def test_a_flooding_host_does_not_hold_back_the_other_hosts_of_a_pool(
        hostile_server, napix_server_factory):
    healthy = []
    for number in range(20):
        server = napix_server_factory(users={"root": "toor"})
        server.route("/ok", body={"n": number})
        healthy.append(server)
    with ClientPool(AUTH, timeout=10, max_body_size=2 ** 40) as pool:
        pool.request(hostile_server.host, "GET", "/flood-body?chunked=1&seconds=8")
        for server in healthy:
            pool.request(server.host, "GET", "/ok")
        started = time.monotonic()
        results = list(pool.wait_unordered(timeout=3))
        spent = time.monotonic() - started
        still_pending = pool.pending
    assert spent < 4.5, f"wait_unordered(timeout=3) returned after {spent:.1f} s"
    hosts = [result.request.host for result in results]
    assert hostile_server.host not in hosts and still_pending == 1  # the flood goes on
    assert sorted(hosts) == sorted(server.host for server in healthy)
    assert sorted(result.body["n"] for result in results) == list(range(20))
