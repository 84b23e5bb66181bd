"""Retry policy: backoff growth, cap, full-jitter bounds, Retry-After, status classes, failover."""

from __future__ import annotations

from typing import Any

import email.utils

import pytest

from ves_streams.sink.errors import PermanentDeliveryError, SinkConfigError, TransientDeliveryError
from ves_streams.sink.retry import EndpointSchedule, RetryPolicy, classify_response, parse_retry_after

NOW = 1_700_000_000.0


def _classify(status: int, retry_after: str | None = None, body: str = "") -> object:
    return classify_response(status, body=body, url="http://c/eventListener/v7", retry_after=retry_after, now_epoch=NOW)


def test_backoff_ceiling_doubles_from_initial_and_stops_at_the_cap() -> None:
    policy = RetryPolicy(initial_backoff=0.5, max_backoff=30.0)
    assert [policy.backoff_ceiling(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert policy.backoff_ceiling(10_000) == 30.0


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    policy = RetryPolicy(initial_backoff=0.5, max_backoff=30.0)
    assert policy.backoff(4, lambda: 0.0) == 0.0
    assert policy.backoff(4, lambda: 0.999999) == pytest.approx(4.0, rel=1e-5)
    assert policy.backoff(4, lambda: 0.25) == 1.0
    import random

    rng = random.Random(1)
    samples = [policy.backoff(6, rng.random) for _ in range(2000)]
    assert 0.0 <= min(samples) < 1.0 and 15.0 < max(samples) < 16.0


def test_retry_after_lengthens_the_backoff_and_is_capped() -> None:
    policy = RetryPolicy(max_retry_after=60.0)
    assert policy.delay(1, TransientDeliveryError("x", retry_after=2.0), lambda: 0.0) == 2.0
    assert policy.delay(1, TransientDeliveryError("x", retry_after=3600.0), lambda: 0.0) == 60.0
    assert policy.delay(3, TransientDeliveryError("x"), lambda: 0.5) == 1.0


@pytest.mark.parametrize("hint", [0.0, -5.0, 0.1, float("nan"), float("-inf")])
def test_retry_after_never_shortens_the_backoff(hint: float) -> None:
    policy = RetryPolicy(initial_backoff=0.5, max_backoff=30.0)
    for attempt in (1, 3, 6):
        assert policy.delay(attempt, TransientDeliveryError("x", retry_after=hint), lambda: 0.75) == policy.backoff(
            attempt, lambda: 0.75
        )


def test_retry_after_for_the_endpoint_schedule_is_capped_too() -> None:
    policy = RetryPolicy(max_retry_after=300.0)
    assert policy.retry_after(TransientDeliveryError("x", retry_after=10**12)) == 300.0
    assert policy.retry_after(TransientDeliveryError("x", retry_after=-1.0)) == 0.0
    assert policy.retry_after(TransientDeliveryError("x")) is None


def test_max_attempts_zero_means_forever() -> None:
    assert not RetryPolicy(max_attempts=0).exhausted(10**9)
    assert not RetryPolicy(max_attempts=3).exhausted(2)
    assert RetryPolicy(max_attempts=3).exhausted(3)


def test_retry_after_header_in_seconds_or_http_date() -> None:
    assert parse_retry_after("2", NOW) == 2.0
    assert parse_retry_after(" 0 ", NOW) == 0.0
    assert parse_retry_after("-5", NOW) == 0.0
    date = email.utils.formatdate(NOW + 30, usegmt=True)
    assert parse_retry_after(date, NOW) == pytest.approx(30.0, abs=1.0)
    assert parse_retry_after(email.utils.formatdate(NOW - 30, usegmt=True), NOW) == 0.0
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", NOW) is not None
    for junk in (None, "", "soon", "nan", "inf", "Mon, 01 Jan 99999 00:00:00 GMT", "\x00\xff", "1" * 400):
        assert parse_retry_after(junk, NOW) is None


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 413, 429])
def test_5xx_408_429_are_transient(status: int) -> None:
    error = _classify(status, retry_after="7")
    assert isinstance(error, TransientDeliveryError) and error.retriable
    assert error.status == status and error.retry_after == 7.0


@pytest.mark.parametrize("status", [400, 409, 410, 415, 422])
def test_other_4xx_are_permanent_with_status_and_body(status: int) -> None:
    error = _classify(status, body='{"requestError": "bad"}')
    assert isinstance(error, PermanentDeliveryError) and not error.retriable
    assert error.status == status and "requestError" in error.body


@pytest.mark.parametrize("status", [301, 302, 307, 401, 403, 404, 405])
def test_endpoint_errors_retry_rather_than_dead_letter_everything(status: int) -> None:
    error = _classify(status)
    assert isinstance(error, TransientDeliveryError)
    assert "URL, VES version or credentials" in str(error)


@pytest.mark.parametrize("status", [200, 202, 204])
def test_2xx_is_success(status: int) -> None:
    assert _classify(status) is None


def test_permanent_error_body_is_truncated() -> None:
    error = _classify(400, body="x" * 100_000)
    assert isinstance(error, PermanentDeliveryError)
    assert len(error.body) < 1200


def test_schedule_without_backup_always_uses_primary() -> None:
    s = EndpointSchedule("http://p", None, failback_after=30)
    s.failed("http://p", 0.0)
    assert s.choose(1.0) == "http://p"


def test_schedule_fails_over_to_backup_and_back_to_primary_periodically() -> None:
    s = EndpointSchedule("http://p", "http://b", failback_after=30)
    assert s.choose(0.0) == "http://p"
    s.failed("http://p", 0.0)
    assert s.choose(0.1) == "http://b" and s.is_up("http://b", 0.1)
    s.succeeded("http://b")
    assert s.choose(29.9) == "http://b"
    assert s.choose(30.0) == "http://p", "primary is tried again after failback_after"
    s.failed("http://p", 30.0)
    assert s.choose(30.1) == "http://b"
    s.succeeded("http://b")
    s.succeeded("http://p")
    assert s.choose(31.0) == "http://p"


def test_schedule_alternates_when_both_fail() -> None:
    s = EndpointSchedule("http://p", "http://b", failback_after=5)
    s.failed("http://p", 0.0)
    assert s.choose(0.0) == "http://b"
    s.failed("http://b", 1.0)
    assert s.choose(1.0) == "http://p"
    s.failed("http://p", 2.0)
    assert s.choose(2.0) == "http://b"


def test_schedule_respects_retry_after_longer_than_failback() -> None:
    s = EndpointSchedule("http://p", "http://b", failback_after=5)
    s.failed("http://p", 0.0, retry_after=60)
    assert s.choose(30.0) == "http://b"
    assert s.choose(60.0) == "http://p"


@pytest.mark.parametrize(
    "kwargs",
    [{"initial_backoff": 0}, {"max_backoff": 0.1}, {"max_attempts": -1}, {"failback_after": -1}],
)
def test_invalid_retry_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(SinkConfigError):
        RetryPolicy(**kwargs)
