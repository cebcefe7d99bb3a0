"""napixclient.core.retry on its own, without I/O: which failures and
statuses are retried for which methods, how many times, after what wait (the
way urllib3's test_retry.py tests its Retry), compared with what urllib3's
Retry itself says; one policy for connection failures and statuses."""

import math

import pytest
from urllib3.util import Retry

from napixclient.core.retry import (
    IDEMPOTENT_METHODS,
    RetryPolicy,
    backoff,
    parse_retry_after,
)
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


def after(policy, method, failure):
    """The policy for the next attempt after ``failure``, or None."""
    step = policy.after_failure(method, failure)
    return None if step is None else step[0]


def test_the_idempotent_methods_are_rfc_9110_s():
    assert IDEMPOTENT_METHODS == frozenset(IDEMPOTENT)


def test_by_default_nothing_but_one_stale_connection_is_retried():
    policy = RetryPolicy()
    assert (policy.total, policy.backoff_factor, policy.stale, policy.attempts) == (
        0, 0.0, 1, 0)
    for failure in (refused(), unresolved(), reset_before_answer()):
        assert after(policy, "GET", failure) is None
    assert after(policy, "GET", stale()) is not None


# -- what is retried, for which methods ---------------------------------------------

@pytest.mark.parametrize("method", IDEMPOTENT + NOT_IDEMPOTENT)
@pytest.mark.parametrize("failure", [refused, unresolved],
                         ids=["refused", "unresolved"])
def test_a_failure_before_sending_is_retried_for_every_method(method, failure):
    following = after(RetryPolicy(2), method, failure())
    assert following is not None
    assert (following.total, following.attempts) == (1, 1)


@pytest.mark.parametrize("method", IDEMPOTENT)
def test_a_reset_before_the_answer_is_retried_for_an_idempotent_method(method):
    following = after(RetryPolicy(1), method, reset_before_answer())
    assert following is not None and following.total == 0


@pytest.mark.parametrize("method", NOT_IDEMPOTENT)
def test_a_reset_before_the_answer_is_never_retried_for_a_post(method):
    # The request may have reached the server: sending it again could act twice.
    assert after(RetryPolicy(5), method, reset_before_answer()) is None


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
    assert after(RetryPolicy(5), method, failure()) is None


# -- the stale kept-alive connection ------------------------------------------------

@pytest.mark.parametrize("method", IDEMPOTENT)
def test_a_stale_connection_is_retried_once_whatever_retries_says(method):
    policy = RetryPolicy(0)
    following = after(policy, method, stale())
    assert following is not None
    assert (following.stale, following.total, following.attempts) == (0, 0, 0)
    assert following.backoff() == 0.0  # at once: it was not a failure of the server
    assert after(following, method, stale()) is None


def test_a_second_stale_connection_takes_a_counted_retry_when_there_is_one():
    first = after(RetryPolicy(1), "GET", stale())
    second = after(first, "GET", stale())
    assert second is not None and (second.stale, second.total, second.attempts) == (0, 0, 1)
    assert after(second, "GET", stale()) is None


@pytest.mark.parametrize("method", NOT_IDEMPOTENT)
def test_a_stale_connection_is_not_retried_for_a_post(method):
    assert after(RetryPolicy(3), method, stale()) is None


def test_stale_zero_turns_the_stale_retry_off():
    assert after(RetryPolicy(stale=0), "GET", stale()) is None


# -- counts and backoff --------------------------------------------------------------

def test_retries_run_out_after_their_count():
    policy = RetryPolicy(3)
    seen = []
    while policy is not None:
        seen.append((policy.total, policy.attempts))
        policy = after(policy, "GET", refused())
    assert seen == [(3, 0), (2, 1), (1, 2), (0, 3)]


@pytest.mark.parametrize("factor", [0.0, 0.05, 0.5, 2])
def test_the_backoff_is_0_then_doubles_from_twice_the_factor(factor):
    policy = RetryPolicy(5, backoff_factor=factor)
    assert policy.backoff() == 0.0  # the first attempt waits for nothing
    waits = []
    for _ in range(5):
        policy = after(policy, "GET", refused())
        waits.append(policy.backoff())
    assert waits == [0.0, 2 * factor, 4 * factor, 8 * factor, 16 * factor]
    assert after(policy, "GET", refused()) is None


def test_the_backoff_counts_only_counted_retries():
    policy = RetryPolicy(2, backoff_factor=1.0)
    policy = after(policy, "GET", stale())
    assert policy.backoff() == 0.0
    policy = after(policy, "GET", refused())
    assert policy.backoff() == 0.0
    policy = after(policy, "GET", reset_before_answer())
    assert policy.backoff() == 2.0


# -- a value ---------------------------------------------------------------------------

def test_a_policy_is_never_changed_by_using_it():
    """One policy serves every request of a Client at once: after() and
    backoff() give new values and leave it as it was."""
    policy = RetryPolicy(2, backoff_factor=0.5)
    before = (policy.total, policy.backoff_factor, policy.stale, policy.attempts)
    following = after(policy, "GET", refused())
    after(policy, "GET", stale())
    policy.backoff()
    assert following is not policy
    assert (policy.total, policy.backoff_factor, policy.stale, policy.attempts) == before
    assert following.backoff_factor == 0.5 and following.stale == 1


def test_a_policy_takes_no_other_attribute():
    with pytest.raises(AttributeError):
        RetryPolicy().extra = 1


def test_the_repr_shows_the_settings():
    assert repr(RetryPolicy(3, 0.25)) == (
        "RetryPolicy(total=3, backoff=0.25, stale=1, attempts=0)")


@pytest.mark.parametrize("retries, retry_backoff, name", [
    (-1, 0.0, "retries"),
    (1.5, 0.0, "retries"),
    (True, 0.0, "retries"),
    ("2", 0.0, "retries"),
    (None, 0.0, "retries"),
    (1, -0.1, "retry_backoff"),
    (1, math.inf, "retry_backoff"),
    (1, math.nan, "retry_backoff"),
    (1, "1", "retry_backoff"),
    (1, True, "retry_backoff"),
    (1, None, "retry_backoff"),
    (Retry(3), 0.5, "retry_backoff"),
])
def test_bad_options_are_a_value_error_naming_the_argument(retries, retry_backoff, name):
    with pytest.raises(ValueError, match=name):
        RetryPolicy.from_option(retries, retry_backoff)


@pytest.mark.parametrize("kwargs, name", [
    ({"stale": -1}, "stale"), ({"stale": 0.5}, "stale"), ({"attempts": -1}, "attempts"),
])
def test_bad_counts_of_a_policy_are_a_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RetryPolicy(**kwargs)


def test_an_integer_backoff_is_seconds_as_a_float():
    policy = RetryPolicy(backoff_factor=1)
    assert policy.backoff_factor == 1.0 and isinstance(policy.backoff_factor, float)


# -- RetryPolicy's counts of their own ---------------------------------------------------

def test_connect_and_read_count_their_own_failures_within_retries():
    policy = RetryPolicy(5, connect=1, read=2)
    after_refused = after(policy, "GET", refused())
    assert (after_refused.total, after_refused.connect, after_refused.read) == (4, 0, 2)
    assert after(after_refused, "GET", unresolved()) is None  # connect spent
    after_reset = after(after_refused, "GET", reset_before_answer())
    assert (after_reset.total, after_reset.connect, after_reset.read) == (3, 0, 1)
    assert after(RetryPolicy(5, read=0), "GET", reset_before_answer()) is None
    assert after(RetryPolicy(0, connect=3), "GET", refused()) is None


def test_methods_none_repeats_a_post_reset_before_the_answer():
    assert after(RetryPolicy(1), "POST", reset_before_answer()) is None
    assert after(RetryPolicy(1, methods=None), "POST", reset_before_answer())
    listed = RetryPolicy(1, methods=frozenset(["POST"]))
    assert after(listed, "POST", reset_before_answer()) is not None
    assert after(listed, "GET", reset_before_answer()) is None


def test_the_backoff_is_capped_by_backoff_max_and_jittered_within_its_range():
    policy = RetryPolicy(9, backoff_factor=1.0, backoff_max=3.0, attempts=5)
    assert policy.backoff() == 3.0
    for _ in range(50):
        waits = RetryPolicy(1, backoff_factor=0.5, jitter=0.25, attempts=2).backoff()
        assert 1.0 <= waits <= 1.25
    assert RetryPolicy(1, backoff_factor=0.5, jitter=9, attempts=1).backoff() == 0.0


def test_each_step_says_the_wait_before_the_next_attempt():
    policy = RetryPolicy(3, backoff_factor=0.5)
    waits = []
    for _ in range(3):
        policy, wait = policy.after_failure("GET", refused())
        waits.append(wait)
    assert waits == [0.0, 1.0, 2.0]
    assert policy.after_failure("GET", ReadTimedOut("timed out")) is None


@pytest.mark.parametrize("attempts", [1025, 5000, 10 ** 9])
def test_the_backoff_after_any_number_of_attempts_is_a_number_not_an_overflow(attempts):
    """Issue 19, item 7: 2 ** 1024 seconds does not fit a float."""
    assert backoff(attempts, 0.1) > 10 ** 17
    assert backoff(attempts, 0.1, ceiling=120.0) == 120.0
    assert RetryPolicy(None, 0.1, attempts=attempts).backoff() == backoff(attempts, 0.1)


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
    ("9" * 400, math.inf),  # issue 19, item 7: int() then float() overflowed
])
def test_retry_after_is_seconds_or_an_http_date(value, seconds):
    assert parse_retry_after(value, NOW) == seconds


# -- StatusRetry: a urllib3 Retry read ------------------------------------------------------

FORCELIST = [429, 502, 503, 504]


def status_retry(**kwargs):
    kwargs.setdefault("status_forcelist", FORCELIST)
    return RetryPolicy.from_option(Retry(**kwargs))


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
    assert (RetryPolicy.from_option(retry).retries_status(method, status, has_retry_after)
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
    schedule = RetryPolicy.from_option(retry)
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


def test_a_retry_after_of_hundreds_of_digits_is_capped_not_an_overflow():
    _, wait = status_retry(total=3).after_status("GET", 503, "9" * 309, NOW)
    assert wait == 6 * 3600.0  # urllib3's cap, whatever this urllib3 says


def test_a_retry_after_is_capped_by_retry_after_max():
    try:
        schedule = status_retry(total=3, retry_after_max=60)
    except TypeError:
        pytest.skip("this urllib3 has no retry_after_max (2.6 added it)")
    _, wait = schedule.after_status("GET", 503, "86400", NOW)
    assert wait == 60.0


def test_connection_failures_and_statuses_spend_one_retry_s_counts():
    schedule = status_retry(total=3, connect=2, read=None, backoff_factor=0.1,
                            allowed_methods=["GET", "POST"])
    assert (schedule.total, schedule.connect, schedule.read, schedule.attempts) == (
        3, 2, None, 0)
    assert schedule.methods == frozenset(["GET", "POST"])
    assert after(schedule, "POST", reset_before_answer()) is not None
    schedule = after(after(schedule, "GET", refused()), "GET", refused())
    assert (schedule.total, schedule.connect, schedule.attempts) == (1, 0, 2)
    # The next retry's backoff counts the connection retries before it.
    schedule, wait = schedule.after_status("GET", 503, None, NOW)
    assert (schedule.total, wait) == (0, 0.1 * 2 ** 2)
    assert schedule.after_status("GET", 503, None, NOW) is None
    assert after(schedule, "GET", refused()) is None


def test_unlimited_total_gives_unlimited_connection_retries():
    policy = status_retry(total=None)
    for _ in range(1000):
        policy = after(policy, "GET", refused())
    assert policy.total is None and policy.attempts == 1000


def test_false_counts_as_zero_and_a_negative_count_as_none_left():
    schedule = status_retry(total=False)
    assert schedule.total == 0 and schedule.after_status("GET", 503, None, NOW) is None
    assert status_retry(total=3, status=-1).after_status("GET", 503, None, NOW) is None


@pytest.mark.parametrize("bad", [-3, None, "Retry(3)", RetryPolicy(3), 2.0])
def test_retries_is_an_int_or_a_urllib3_retry_only(bad):
    with pytest.raises(ValueError, match="urllib3.util.Retry"):
        RetryPolicy.from_option(bad)


def test_requests_retry_is_urllib3_s():
    from requests.adapters import Retry as RequestsRetry

    assert RetryPolicy.from_option(RequestsRetry(total=2, status_forcelist=[503])).total == 2


def test_a_status_retry_is_never_changed_by_using_it():
    schedule = status_retry(total=3, status=2)
    before = [getattr(schedule, name) for name in RetryPolicy.__slots__]
    schedule.after_status("GET", 503, "1", NOW)
    schedule.after_failure("GET", refused())
    assert [getattr(schedule, name) for name in RetryPolicy.__slots__] == before


def test_the_backoff_after_more_than_1024_retries_is_a_number_not_an_overflow_error():
    """Issue 19, item 7."""
    policy = RetryPolicy(2000, backoff_factor=0.5, backoff_max=120)
    for _ in range(1100):
        policy = after(policy, "GET", refused())
    assert policy.attempts == 1100
    assert policy.backoff() == 120.0
    uncapped = RetryPolicy(1, backoff_factor=0.5, attempts=1100).backoff()
    assert isinstance(uncapped, float) and uncapped >= 0
    schedule = RetryPolicy.from_option(Retry(total=None, status_forcelist=[503],
                                             backoff_factor=0.5, backoff_max=120))
    for _ in range(1100):
        schedule, wait = schedule.after_status("GET", 503, None, 0.0)
    assert wait == 120.0
