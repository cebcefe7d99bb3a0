"""Status retries with a urllib3 Retry (what requests users configure), over
real servers on loopback: NapixTestServer routes that answer 503 first
(checking each attempt's signature and refusing a replayed nonce), and a
scripted raw server for a reset followed by statuses."""

import socket
import struct
import time

import gevent
import pytest
from gevent.server import StreamServer
from urllib3.util import Retry

from napixclient import Client, ClientPool, HTTPError
from napixclient.testing import NapixTestServer
from tests.helpers import AUTH, closed_port


@pytest.fixture
def server():
    with NapixTestServer(users={"root": "toor"}) as srv:
        yield srv


def unavailable_first(srv, path, failures=1, status=503, retry_after=None, method=None):
    """Route ``path`` to answer ``status`` (with ``Retry-After`` when given)
    to its first ``failures`` requests, then 200 with ``{"attempt": n}``."""
    seen = []

    def handler(request):
        seen.append(request)
        if len(seen) <= failures:
            headers = {} if retry_after is None else {"Retry-After": retry_after}
            return status, {"error_class": "Unavailable", "error_text": "busy"}, headers
        return 200, {"attempt": len(seen)}

    srv.route(path, method, handler=handler)
    return seen


def retry(**kwargs):
    kwargs.setdefault("total", 3)
    kwargs.setdefault("status_forcelist", [429, 502, 503, 504])
    return Retry(**kwargs)


# -- what is retried -----------------------------------------------------------------

def test_a_503_with_retry_after_1_then_200_gives_200_after_about_a_second(server):
    unavailable_first(server, "/capacity", retry_after="1")
    with Client(server.host, AUTH, retries=retry(), timeout=10) as client:
        started = time.monotonic()
        response = client.get("/capacity")
        took = time.monotonic() - started
    assert response.status == 200 and response.body == {"attempt": 2}
    assert 0.9 <= took < 3, took
    assert [r.path for r in server.requests] == ["/capacity", "/capacity"]


def test_each_attempt_is_signed_anew_and_accepted_by_a_server_refusing_replayed_nonces(
        server):
    assert server.reject_replayed_nonces
    seen = unavailable_first(server, "/vm/", failures=3)
    with Client(server.host, AUTH, retries=retry(total=5)) as client:
        assert client.put("/vm/", {"size": 1}).body == {"attempt": 4}
    nonces = [request.nonce for request in server.requests]
    assert len(seen) == len(server.requests) == 4  # every attempt reached the route
    assert all(nonces) and len(set(nonces)) == 4
    assert all(request.json == {"size": 1} for request in seen)


def test_an_int_retries_never_retries_a_status_and_a_retry_does(server):
    unavailable_first(server, "/once", failures=10)
    with Client(server.host, AUTH, retries=3) as client, pytest.raises(HTTPError):
        client.get("/once")
    assert len(server.requests) == 1
    unavailable_first(server, "/again")
    with Client(server.host, AUTH, retries=retry()) as client:
        assert client.get("/again").status == 200
    assert len(server.requests) == 3


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_post_is_not_retried_unless_allowed_methods_lists_it(server, method):
    unavailable_first(server, "/vm-ip/", failures=1)
    with Client(server.host, AUTH, retries=retry()) as client:
        with pytest.raises(HTTPError) as caught:
            client.request(method, "/vm-ip/", {"size": 1})
    assert caught.value.status == 503
    assert len(server.requests) == 1  # the server saw it once

    server.requests.clear()
    unavailable_first(server, "/vm-ip/", failures=1)
    allowed = Retry.DEFAULT_ALLOWED_METHODS | {method}
    with Client(server.host, AUTH, retries=retry(allowed_methods=allowed)) as client:
        assert client.request(method, "/vm-ip/", {"size": 1}).body == {"attempt": 2}
    assert len(server.requests) == 2


def test_a_status_outside_the_forcelist_is_not_retried(server):
    unavailable_first(server, "/broken", status=500)
    with Client(server.host, AUTH, retries=retry()) as client:
        with pytest.raises(HTTPError) as caught:
            client.get("/broken")
    assert caught.value.status == 500 and len(server.requests) == 1
    unavailable_first(server, "/limited", status=429)
    with Client(server.host, AUTH, retries=retry()) as client:
        assert client.get("/limited").status == 200


def test_a_429_with_retry_after_is_retried_without_a_forcelist_as_urllib3_does(server):
    # urllib3's Retry.is_retry: 413, 429 and 503 with a Retry-After.
    unavailable_first(server, "/slow-down", status=429, retry_after="0")
    with Client(server.host, AUTH, retries=Retry(total=2)) as client:
        assert client.get("/slow-down").body == {"attempt": 2}


# -- when retries run out --------------------------------------------------------------

@pytest.mark.parametrize("settings, attempts", [
    ({"total": 2}, 3),
    ({"total": 10, "status": 1}, 2),
    ({"total": 0}, 1),
], ids=["total", "status", "none"])
def test_the_last_answer_is_the_result_when_the_counts_run_out(server, settings, attempts):
    unavailable_first(server, "/down", failures=100)
    with Client(server.host, AUTH, retries=retry(**settings)) as client:
        with pytest.raises(HTTPError) as caught:
            client.get("/down")
    assert caught.value.status == 503
    assert caught.value.remote_error["error_text"] == "busy"
    assert len(server.requests) == attempts


def test_a_retry_after_that_would_pass_the_deadline_is_not_waited_for(server):
    unavailable_first(server, "/later", retry_after="30")
    with Client(server.host, AUTH, retries=retry(), timeout=2) as client:
        started = time.monotonic()
        with pytest.raises(HTTPError) as caught:
            client.get("/later")
        took = time.monotonic() - started
    assert caught.value.status == 503  # the last answer, not a Timeout
    assert took < 1.0, took
    assert len(server.requests) == 1


def test_the_backoff_waits_between_status_retries(server):
    # urllib3's backoff: nothing before the first retry, then 2 * 0.1, 4 * 0.1.
    unavailable_first(server, "/busy", failures=3)
    with Client(server.host, AUTH, retries=retry(backoff_factor=0.1)) as client:
        started = time.monotonic()
        assert client.get("/busy").body == {"attempt": 4}
        took = time.monotonic() - started
    assert 0.55 <= took < 3, took


def test_respect_retry_after_header_false_takes_the_backoff_instead(server):
    unavailable_first(server, "/later", retry_after="30")
    settings = retry(respect_retry_after_header=False)
    with Client(server.host, AUTH, retries=settings, timeout=5) as client:
        started = time.monotonic()
        assert client.get("/later").status == 200
        assert time.monotonic() - started < 1.0


def test_the_wait_does_not_block_other_greenlets(server):
    unavailable_first(server, "/capacity", retry_after="1")
    ticks = []

    def ticker():
        for _ in range(20):
            ticks.append(time.monotonic())
            gevent.sleep(0.05)

    counter = gevent.spawn(ticker)
    with Client(server.host, AUTH, retries=retry()) as client:
        assert client.get("/capacity").status == 200
    counter.kill()
    assert len(ticks) >= 15


# -- the pool, and the trace ------------------------------------------------------------

def test_a_pool_takes_a_retry_for_each_of_its_clients(server):
    unavailable_first(server, "/a", retry_after="0")
    unavailable_first(server, "/b", status=502)
    with ClientPool(AUTH, retries=retry()) as pool:
        pool.request(server.host, "GET", "/a")
        pool.request(server.host, "GET", "/b")
        first, second = pool.wait(timeout=10)
    assert (first.status, first.body, second.body) == (200, {"attempt": 2}, {"attempt": 2})


def test_a_status_retry_is_a_request_retry_trace_event_with_its_status(server):
    unavailable_first(server, "/traced", failures=2)
    events = []
    with Client(server.host, AUTH, retries=retry(), trace=lambda e, i: events.append((e, i))
                ) as client:
        client.get("/traced")
    retries = [info for event, info in events if event == "request.retry"]
    assert [info["status"] for info in retries] == [503, 503]
    assert [info["wait"] for info in retries] == [0.0, 0.0]
    assert all(info["request"].path == "/traced" for info in retries)


# -- connection failures share the counts --------------------------------------------------

def test_a_retry_after_too_large_for_a_float_gives_the_503_not_an_overflow_error(server):
    server.route("/busy", status=503, body={"error_class": "Unavailable", "error_text": "busy"},
                 headers={"Retry-After": "9" * 309})
    settings = dict(retries=retry(total=2, status_forcelist=[503]), timeout=5)
    with Client(server.host, AUTH, **settings) as client:
        with pytest.raises(HTTPError) as caught:
            client.get("/busy")
    assert caught.value.status == 503
    with ClientPool(AUTH, **settings) as pool:
        pool.request(server.host, "GET", "/busy")
        (result,) = pool.wait(timeout=10)
    assert isinstance(result, HTTPError) and result.status == 503


def _retries_traced(settings):
    events = []
    with Client(f"127.0.0.1:{closed_port()}", retries=settings,
                trace=lambda e, i: events.append(e)) as client:
        with pytest.raises(HTTPError):
            client.get("/")
    return events.count("request.retry")


@pytest.mark.parametrize("settings, retried", [
    ({"total": 2}, 2),
    ({"total": 5, "connect": 1}, 1),
    ({"total": 1, "connect": 5}, 1),
    ({"total": None, "connect": 3}, 3),
    ({"total": 3, "connect": 0}, 0),
], ids=["total", "connect", "total-first", "no-total", "connect-0"])
def test_a_refused_connection_is_retried_within_total_and_connect(settings, retried):
    assert _retries_traced(Retry(**settings)) == retried


class ScriptedServer:
    """A raw HTTP/1.1 server on 127.0.0.1 that answers its requests, in the
    order they come, one step of ``script`` each: ``"reset"`` (read the
    request, close with a TCP reset) or a status (answered, then the
    connection closed)."""

    def __init__(self, script):
        self.script = list(script)
        self.seen = 0
        self.server = StreamServer(("127.0.0.1", 0), self.handle)

    def handle(self, sock, address):
        with sock, sock.makefile("rb") as reader:
            while reader.readline() not in (b"\r\n", b"", b"\n"):
                pass
            step = self.script[min(self.seen, len(self.script) - 1)]
            self.seen += 1
            if step == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            sock.sendall(f"HTTP/1.1 {step} X\r\nContent-Length: 0\r\n"
                         "Connection: close\r\n\r\n".encode())

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc_info):
        self.server.stop(timeout=1)

    @property
    def host(self):
        return f"127.0.0.1:{self.server.server_port}"


@pytest.mark.parametrize("total, status", [(2, 200), (1, 503)])
def test_a_reset_and_a_status_retry_take_from_one_total(total, status):
    with ScriptedServer(["reset", 503, 200]) as scripted:
        with Client(scripted.host, retries=retry(total=total)) as client:
            try:
                result = client.get("/")
            except HTTPError as error:
                result = error
    assert result.status == status
    assert scripted.seen == total + 1


def test_a_reset_of_a_post_is_retried_when_allowed_methods_is_none():
    # allowed_methods=None: every method, as urllib3 reads it.
    with ScriptedServer(["reset", 200]) as scripted:
        with Client(scripted.host, retries=retry(allowed_methods=None)) as client:
            assert client.post("/", {"a": 1}).status == 200
    assert scripted.seen == 2
    with ScriptedServer(["reset", 200]) as scripted:
        with Client(scripted.host, retries=retry()) as client, pytest.raises(HTTPError):
            client.post("/", {"a": 1})
    assert scripted.seen == 1


# -- arguments ------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["3", 1.5, None, True, [503]])
def test_retries_that_is_neither_an_int_nor_a_retry_is_a_value_error(bad):
    with pytest.raises(ValueError, match=r"retries must be an int >= 0 or a urllib3.util.Retry"):
        Client("127.0.0.1", retries=bad)


def test_a_retry_with_retry_backoff_too_is_a_value_error():
    with pytest.raises(ValueError, match="a Retry has its own backoff_factor"):
        Client("127.0.0.1", retries=Retry(3), retry_backoff=0.5)
    with pytest.raises(ValueError, match="a Retry has its own backoff_factor"):
        ClientPool(retries=Retry(3), retry_backoff=0.5)


def test_a_client_keeps_the_retry_it_was_given():
    settings = retry(backoff_factor=0.25)
    with Client("127.0.0.1", retries=settings) as client:
        assert client.retries is settings
        assert client.retry_backoff == 0.25
