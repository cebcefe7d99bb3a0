"""CooperativeAdapter: a plain requests.Session over gevent sockets."""

import time

import gevent
import pytest
import requests
from urllib3.util.retry import Retry

from napixclient.adapter import CooperativeAdapter, HubSleepRetry
from napixclient.authenticators import LoginAuthenticator
from tests.helpers import closed_port


def _session(**kwargs):
    session = requests.Session()
    adapter = CooperativeAdapter(**kwargs)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def test_a_session_with_the_adapter_is_signed_and_answered(napix_server):
    napix_server.route("/", body={"ok": True})
    with _session() as session:
        response = session.get(f"{napix_server.url}/", auth=LoginAuthenticator("root", "toor"),
                               timeout=5)
    assert response.status_code == 200 and response.json() == {"ok": True}


def test_requests_through_the_adapter_run_concurrently_without_patching(napix_server):
    napix_server.route("/slow", body=[], latency=0.3)
    auth = LoginAuthenticator("root", "toor")
    with _session(pool_maxsize=10) as session:
        started = time.monotonic()
        session.get(f"{napix_server.url}/slow", auth=auth, timeout=5)
        single = time.monotonic() - started
        started = time.monotonic()
        greenlets = [gevent.spawn(session.get, f"{napix_server.url}/slow", auth=auth,
                                  timeout=5) for _ in range(10)]
        gevent.joinall(greenlets, timeout=20, raise_error=True)
        makespan = time.monotonic() - started
    assert [g.value.status_code for g in greenlets] == [200] * 10
    # Serial would take ten latencies; a fourfold margin for a busy machine.
    assert makespan < 10 * single / 4
    assert napix_server.max_in_flight == 10


def test_the_adapter_refuses_a_blocking_pool():
    with pytest.raises(ValueError, match="pool_block"):
        CooperativeAdapter(pool_block=True)


def test_a_plain_retry_backoff_yields_to_the_hub_instead_of_blocking_it():
    retry = Retry(total=2, connect=2, backoff_factor=0.1)
    adapter = CooperativeAdapter(max_retries=retry)
    assert isinstance(adapter.max_retries, HubSleepRetry)
    assert adapter.max_retries.total == 2 and adapter.max_retries.backoff_factor == 0.1
    ticks = []

    def tick():
        for _ in range(50):
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    ticker = gevent.spawn(tick)
    with _session(max_retries=retry) as session:
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get(f"http://127.0.0.1:{closed_port()}/", timeout=2)
    ticker.kill()
    # Two retries wait 0.1 and 0.2 s of backoff; a blocked hub would show a
    # gap that long between ticks.
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert len(ticks) >= 10 and max(gaps) < 0.09


def test_the_old_import_path_still_gives_the_adapter_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="napixclient.adapter"):
        from napixclient.transport import CooperativeAdapter as old
    assert old is CooperativeAdapter
