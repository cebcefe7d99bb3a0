"""napixclient.retry.RetryPolicy on its own, without I/O: which failures are
retried for which methods, how many times, after what wait (the way
urllib3's test_retry.py tests its Retry)."""

import math

import pytest

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
from napixclient.retry import IDEMPOTENT_METHODS, RetryPolicy

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
