"""napixclient.retry on its own, without I/O: which failures are retried
for which methods, how many times, after what wait (the way urllib3's
test_retry.py tests its Retry); which statuses a urllib3 Retry read into a
StatusRetry sends again, compared with what urllib3's Retry itself says."""

import math

import pytest
from urllib3.util import Retry

from napixclient.failures import (
    BodyLimitExceeded,
    ConnectFailed,
    ConnectionBroken,
    ConnectTimedOut,
    MalformedAnswer,
    NameNotResolved,
    ReadTimedOut,
    TLSFailed,
)
from napixclient.retry import (
    IDEMPOTENT_METHODS,
    RetryPolicy,
    StatusRetry,
    parse_retry_after,
)

IDEMPOTENT = ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"]
NOT_IDEMPOTENT = ["POST", "PATCH", "CONNECT", "PROPFIND"]


def refused():
    return ConnectFailed("could not connect: connection refused")


def unresolved():
    return NameNotResolved("the host name did not resolve")


def reset_before_answer():
    return ConnectionBroken("connection reset by peer", before_answer=True)


def reset_during_answer():
    return ConnectionBroken("connection reset by peer")


def stale():
    return ConnectionBroken("closed the kept-alive connection", before_answer=True,
                            stale=True)


def test_the_idempotent_methods_are_rfc_9110_s():
    assert IDEMPOTENT_METHODS == frozenset(IDEMPOTENT)


def test_by_default_nothing_but_one_stale_connection_is_retried():
    policy = RetryPolicy()
    assert (policy.retries, policy.backoff_factor, policy.stale, policy.attempts) == (
        0, 0.0, 1, 0)
    for failure in (refused(), unresolved(), reset_before_answer()):
        assert policy.after("GET", failure) is None
    assert policy.after("GET", stale()) is not None


# -- what is retried, for which methods ---------------------------------------------

@pytest.mark.parametrize("method", IDEMPOTENT + NOT_IDEMPOTENT)
@pytest.mark.parametrize("failure", [refused, unresolved],
                         ids=["refused", "unresolved"])
def test_a_failure_before_sending_is_retried_for_every_method(method, failure):
    following = RetryPolicy(retries=2).after(method, failure())
    assert following is not None
    assert (following.retries, following.attempts) == (1, 1)


@pytest.mark.parametrize("method", IDEMPOTENT)
def test_a_reset_before_the_answer_is_retried_for_an_idempotent_method(method):
    following = RetryPolicy(retries=1).after(method, reset_before_answer())
    assert following is not None and following.retries == 0


@pytest.mark.parametrize("method", NOT_IDEMPOTENT)
def test_a_reset_before_the_answer_is_never_retried_for_a_post(method):
    # The request may have reached the server: sending it again could act twice.
    assert RetryPolicy(retries=5).after(method, reset_before_answer()) is None


@pytest.mark.parametrize("method", IDEMPOTENT + NOT_IDEMPOTENT)
@pytest.mark.parametrize("failure", [
    reset_during_answer,
    lambda: ConnectTimedOut("timed out while connecting"),
    lambda: ReadTimedOut("timed out while reading the answer"),
    lambda: TLSFailed("TLS failed: certificate verify failed"),
    lambda: MalformedAnswer("the answer is not HTTP"),
    lambda: BodyLimitExceeded(10, 200, 5),
], ids=["reset-during-answer", "connect-timeout", "read-timeout", "tls", "malformed",
        "body-too-large"])
def test_timeouts_tls_failures_bad_answers_and_broken_answers_are_never_retried(
        method, failure):
    assert RetryPolicy(retries=5).after(method, failure()) is None


# -- the stale kept-alive connection ------------------------------------------------

@pytest.mark.parametrize("method", IDEMPOTENT)
def test_a_stale_connection_is_retried_once_whatever_retries_says(method):
    policy = RetryPolicy(retries=0)
    following = policy.after(method, stale())
    assert following is not None
    assert (following.stale, following.retries, following.attempts) == (0, 0, 0)
    assert following.backoff() == 0.0  # at once: it was not a failure of the server
    assert following.after(method, stale()) is None


def test_a_second_stale_connection_takes_a_counted_retry_when_there_is_one():
    first = RetryPolicy(retries=1).after("GET", stale())
    second = first.after("GET", stale())
    assert second is not None and (second.stale, second.retries, second.attempts) == (0, 0, 1)
    assert second.after("GET", stale()) is None


@pytest.mark.parametrize("method", NOT_IDEMPOTENT)
def test_a_stale_connection_is_not_retried_for_a_post(method):
    assert RetryPolicy(retries=3).after(method, stale()) is None


def test_stale_zero_turns_the_stale_retry_off():
    assert RetryPolicy(stale=0).after("GET", stale()) is None


# -- counts and backoff --------------------------------------------------------------

def test_retries_run_out_after_their_count():
    policy = RetryPolicy(retries=3)
    seen = []
    while policy is not None:
        seen.append((policy.retries, policy.attempts))
        policy = policy.after("GET", refused())
    assert seen == [(3, 0), (2, 1), (1, 2), (0, 3)]


@pytest.mark.parametrize("factor", [0.0, 0.05, 0.5, 2])
def test_the_backoff_is_0_then_doubles_from_twice_the_factor(factor):
    policy = RetryPolicy(retries=5, backoff=factor)
    assert policy.backoff() == 0.0  # the first attempt waits for nothing
    waits = []
    for _ in range(5):
        policy = policy.after("GET", refused())
        waits.append(policy.backoff())
    assert waits == [0.0, 2 * factor, 4 * factor, 8 * factor, 16 * factor]
    assert policy.after("GET", refused()) is None


def test_the_backoff_counts_only_counted_retries():
    policy = RetryPolicy(retries=2, backoff=1.0)
    policy = policy.after("GET", stale())
    assert policy.backoff() == 0.0
    policy = policy.after("GET", refused())
    assert policy.backoff() == 0.0
    policy = policy.after("GET", reset_before_answer())
    assert policy.backoff() == 2.0


# -- a value ---------------------------------------------------------------------------

def test_a_policy_is_never_changed_by_using_it():
    """One policy serves every request of a Client at once: after() and
    backoff() give new values and leave it as it was."""
    policy = RetryPolicy(retries=2, backoff=0.5)
    before = (policy.retries, policy.backoff_factor, policy.stale, policy.attempts)
    following = policy.after("GET", refused())
    policy.after("GET", stale())
    policy.backoff()
    assert following is not policy
    assert (policy.retries, policy.backoff_factor, policy.stale, policy.attempts) == before
    assert following.backoff_factor == 0.5 and following.stale == 1


def test_a_policy_takes_no_other_attribute():
    with pytest.raises(AttributeError):
        RetryPolicy().extra = 1


def test_the_repr_shows_the_settings():
    assert repr(RetryPolicy(3, 0.25, 1)) == "RetryPolicy(retries=3, backoff=0.25, stale=1)"


@pytest.mark.parametrize("kwargs, name", [
    ({"retries": -1}, "retries"),
    ({"retries": 1.5}, "retries"),
    ({"retries": True}, "retries"),
    ({"retries": "2"}, "retries"),
    ({"retries": None}, "retries"),
    ({"stale": -1}, "stale"),
    ({"stale": 0.5}, "stale"),
    ({"attempts": -1}, "attempts"),
    ({"backoff": -0.1}, "retry_backoff"),
    ({"backoff": math.inf}, "retry_backoff"),
    ({"backoff": math.nan}, "retry_backoff"),
    ({"backoff": "1"}, "retry_backoff"),
    ({"backoff": True}, "retry_backoff"),
    ({"backoff": None}, "retry_backoff"),
])
def test_bad_arguments_are_a_value_error_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RetryPolicy(**kwargs)


def test_an_integer_backoff_is_seconds_as_a_float():
    policy = RetryPolicy(backoff=1)
    assert policy.backoff_factor == 1.0 and isinstance(policy.backoff_factor, float)


# -- RetryPolicy's counts of their own ---------------------------------------------------

def test_connect_and_read_count_their_own_failures_within_retries():
    policy = RetryPolicy(retries=5, connect=1, read=2)
    after_refused = policy.after("GET", refused())
    assert (after_refused.retries, after_refused.connect, after_refused.read) == (4, 0, 2)
    assert after_refused.after("GET", unresolved()) is None  # connect spent
    after_reset = after_refused.after("GET", reset_before_answer())
    assert (after_reset.retries, after_reset.connect, after_reset.read) == (3, 0, 1)
    assert RetryPolicy(retries=5, read=0).after("GET", reset_before_answer()) is None
    assert RetryPolicy(retries=0, connect=3).after("GET", refused()) is None


def test_methods_none_repeats_a_post_reset_before_the_answer():
    assert RetryPolicy(retries=1).after("POST", reset_before_answer()) is None
    assert RetryPolicy(retries=1, methods=None).after("POST", reset_before_answer())
    listed = RetryPolicy(retries=1, methods=frozenset(["POST"]))
    assert listed.after("POST", reset_before_answer()) is not None
    assert listed.after("GET", reset_before_answer()) is None


def test_the_backoff_is_capped_by_backoff_max_and_jittered_within_its_range():
    policy = RetryPolicy(retries=9, backoff=1.0, backoff_max=3.0, attempts=5)
    assert policy.backoff() == 3.0
    for _ in range(50):
        waits = RetryPolicy(retries=1, backoff=0.5, jitter=0.25, attempts=2).backoff()
        assert 1.0 <= waits <= 1.25
    assert RetryPolicy(retries=1, backoff=0.5, jitter=9, attempts=1).backoff() == 0.0


def test_a_record_gets_each_policy_after_hands_out():
    record = []
    policy = RetryPolicy(retries=2, record=record)
    first = policy.after("GET", refused())
    second = first.after("GET", stale())
    assert record == [first, second]
    assert second.record is record
    assert second.after("GET", ReadTimedOut("timed out")) is None
    assert len(record) == 2


@pytest.mark.parametrize("kwargs, name", [
    ({"connect": -1}, "connect"), ({"read": 1.5}, "read"),
    ({"jitter": -1}, "jitter"), ({"backoff_max": -1}, "backoff_max"),
    ({"backoff_max": math.nan}, "backoff_max"),
])
def test_bad_counts_and_times_are_value_errors_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RetryPolicy(**kwargs)


# -- Retry-After -----------------------------------------------------------------------------

NOW = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT


@pytest.mark.parametrize("value, seconds", [
    ("1", 1.0), (" 120 ", 120.0), ("0", 0.0),
    ("Tue, 14 Nov 2023 22:13:50 GMT", 30.0),
    ("Tuesday, 14-Nov-23 22:14:20 GMT", 60.0),  # RFC 850, obsolete but allowed
    ("Tue Nov 14 22:13:25 2023", 5.0),  # asctime
    ("Tue, 14 Nov 2023 22:00:00 GMT", 0.0),  # past: no wait
    (None, None), ("", None), ("soon", None), ("-5", None), ("1.5", None),
    ("Tue, 99 Nov 2023 22:13:50 GMT", None),
])
def test_retry_after_is_seconds_or_an_http_date(value, seconds):
    assert parse_retry_after(value, NOW) == seconds


# -- StatusRetry: a urllib3 Retry read ------------------------------------------------------

FORCELIST = [429, 502, 503, 504]


def status_retry(**kwargs):
    kwargs.setdefault("status_forcelist", FORCELIST)
    return StatusRetry(Retry(**kwargs))


def test_a_retry_is_read_from_its_public_attributes():
    schedule = status_retry(total=4, status=2, connect=1, read=0, backoff_factor=0.5,
                            backoff_max=10, respect_retry_after_header=False)
    assert (schedule.total, schedule.status, schedule.connect, schedule.read) == (4, 2, 1, 0)
    assert schedule.methods == Retry.DEFAULT_ALLOWED_METHODS
    assert schedule.statuses == frozenset(FORCELIST)
    assert (schedule.backoff_factor, schedule.backoff_max) == (0.5, 10.0)
    assert schedule.respect_retry_after is False
    assert schedule.attempts == 0


@pytest.mark.parametrize("method", [
    "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE", "POST", "PATCH"])
@pytest.mark.parametrize("status", [200, 404, 413, 429, 500, 502, 503])
@pytest.mark.parametrize("has_retry_after", [False, True])
@pytest.mark.parametrize("settings", [
    {"total": 3, "status_forcelist": FORCELIST},
    {"total": 3},
    {"total": 0, "status_forcelist": FORCELIST},
    {"total": 3, "status_forcelist": [500], "allowed_methods": None},
    {"total": 3, "status_forcelist": FORCELIST, "allowed_methods": ["POST"]},
    {"total": 3, "status_forcelist": FORCELIST, "respect_retry_after_header": False},
], ids=["forcelist", "none", "total-0", "any-method", "post-only", "no-retry-after"])
def test_which_answers_are_retried_is_what_urllib3_s_is_retry_says(
        settings, method, status, has_retry_after):
    retry = Retry(**settings)
    assert (StatusRetry(retry).retries_status(method, status, has_retry_after)
            == retry.is_retry(method, status, has_retry_after))


def test_status_retries_run_out_with_total_then_the_answer_is_final():
    schedule = status_retry(total=2)
    seen = []
    while True:
        decision = schedule.after_status("GET", 503, None, NOW)
        if decision is None:
            break
        schedule, wait = decision
        seen.append((schedule.total, schedule.attempts, wait))
    assert seen == [(1, 1, 0.0), (0, 2, 0.0)]


def test_the_status_count_runs_out_before_total():
    schedule, _ = status_retry(total=10, status=1).after_status("GET", 503, None, NOW)
    assert (schedule.total, schedule.status) == (9, 0)
    assert schedule.after_status("GET", 503, None, NOW) is None


def test_no_total_and_no_status_count_retry_until_something_else_stops_them():
    schedule = status_retry(total=None)
    for _ in range(100):
        schedule, _ = schedule.after_status("GET", 502, None, NOW)
    assert schedule.attempts == 100


def test_the_status_backoff_is_urllib3_s():
    retry = Retry(total=6, status_forcelist=[503], backoff_factor=0.3, backoff_max=2)
    schedule = StatusRetry(retry)
    ours = []
    for _ in range(6):
        schedule, wait = schedule.after_status("GET", 503, None, NOW)
        ours.append(wait)
    theirs = []
    for _ in range(6):
        retry = retry.increment("GET", "/", response=_Answer(503))
        theirs.append(retry.get_backoff_time())
    assert ours == theirs == [0.0, 0.6, 1.2, 2.0, 2.0, 2.0]


class _Answer:
    """What urllib3's Retry.increment reads of a response."""

    def __init__(self, status):
        self.status = status

    def get_redirect_location(self):
        return False


def test_retry_after_replaces_the_backoff_when_respected():
    schedule = status_retry(total=3, backoff_factor=5)
    _, wait = schedule.after_status("GET", 503, "2", NOW)
    assert wait == 2.0
    _, wait = schedule.after_status("GET", 503, "Tue, 14 Nov 2023 22:13:27 GMT", NOW)
    assert wait == 7.0
    ignoring = status_retry(total=3, backoff_factor=5, respect_retry_after_header=False)
    following, wait = ignoring.after_status("GET", 503, "2", NOW)
    assert wait == 0.0  # the first retry's backoff
    _, wait = following.after_status("GET", 503, "2", NOW)
    assert wait == 10.0


@pytest.mark.parametrize("value", ["0", "whenever", "Tue, 14 Nov 2023 22:00:00 GMT"])
def test_a_retry_after_of_nothing_or_nonsense_takes_the_backoff(value):
    schedule, _ = status_retry(total=3, backoff_factor=1).after_status("GET", 503, None, NOW)
    _, wait = schedule.after_status("GET", 503, value, NOW)
    assert wait == 2.0


def test_a_retry_after_is_capped_by_retry_after_max():
    try:
        schedule = status_retry(total=3, retry_after_max=60)
    except TypeError:
        pytest.skip("this urllib3 has no retry_after_max (2.6 added it)")
    _, wait = schedule.after_status("GET", 503, "86400", NOW)
    assert wait == 60.0


def test_the_connection_policy_carries_what_is_left_and_spent_takes_it_back():
    schedule = status_retry(total=3, connect=2, read=None, backoff_factor=0.1,
                            allowed_methods=["GET", "POST"])
    record = []
    policy = schedule.connection_policy(record)
    assert (policy.retries, policy.connect, policy.read, policy.attempts) == (3, 2, None, 0)
    assert policy.methods == frozenset(["GET", "POST"])
    assert policy.after("POST", reset_before_answer()) is not None
    policy.after("GET", refused()).after("GET", refused())
    schedule = schedule.spent(record[-1])
    assert (schedule.total, schedule.connect, schedule.attempts) == (1, 0, 2)
    # The next retry's backoff counts the connection retries before it.
    schedule, wait = schedule.after_status("GET", 503, None, NOW)
    assert (schedule.total, wait) == (0, 0.1 * 2 ** 2)
    assert schedule.spent(schedule.connection_policy()) is schedule


def test_unlimited_total_gives_unlimited_connection_retries():
    policy = status_retry(total=None).connection_policy()
    assert policy.retries >= 2 ** 31


def test_false_counts_as_zero_and_a_negative_count_as_none_left():
    schedule = status_retry(total=False)
    assert schedule.total == 0 and schedule.after_status("GET", 503, None, NOW) is None
    assert status_retry(total=3, status=-1).after_status("GET", 503, None, NOW) is None


@pytest.mark.parametrize("bad", [3, None, "Retry(3)", RetryPolicy(3)])
def test_a_status_retry_is_made_of_a_urllib3_retry_only(bad):
    with pytest.raises(ValueError, match="urllib3.util.Retry"):
        StatusRetry(bad)


def test_requests_retry_is_urllib3_s():
    from requests.adapters import Retry as RequestsRetry

    assert StatusRetry(RequestsRetry(total=2, status_forcelist=[503])).total == 2


def test_a_status_retry_is_never_changed_by_using_it():
    schedule = status_retry(total=3, status=2)
    before = [getattr(schedule, name) for name in StatusRetry.__slots__]
    schedule.after_status("GET", 503, "1", NOW)
    schedule.spent(RetryPolicy(retries=1, attempts=1))
    schedule.connection_policy([])
    assert [getattr(schedule, name) for name in StatusRetry.__slots__] == before


@pytest.mark.xfail(strict=True, reason="issue 19 item 7: the backoff after 1,024 retries "
                   "raises OverflowError")
def test_the_backoff_after_more_than_1024_retries_is_a_number_not_an_overflow_error():
    policy = RetryPolicy(retries=2000, backoff=0.5, backoff_max=120)
    for _ in range(1100):
        policy = policy.after("GET", refused())
    assert policy.attempts == 1100
    assert policy.backoff() == 120.0
    uncapped = RetryPolicy(retries=1, backoff=0.5, attempts=1100).backoff()
    assert isinstance(uncapped, float) and uncapped >= 0
    schedule = StatusRetry(Retry(total=None, status_forcelist=[503], backoff_factor=0.5,
                                 backoff_max=120))
    for _ in range(1100):
        schedule, wait = schedule.after_status("GET", 503, None, 0.0)
    assert wait == 120.0
