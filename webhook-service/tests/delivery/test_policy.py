"""The outcome policy and the retry schedule, as pure functions."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from delivery.config import DEFAULT_RETRY_SCHEDULE, DeliverySettings
from delivery.sender import SendResult, outcome_of_status
from webhooks_core.deliveries.outcomes import Verdict, judge, next_delay, parse_retry_after


def result(status: int | None, outcome: str | None = None) -> SendResult:
    return SendResult(outcome or outcome_of_status(status or 0), 1.0, status_code=status)


@pytest.mark.parametrize(
    ("status", "outcome", "verdict"),
    [
        (200, None, Verdict.DELIVERED),
        (204, None, Verdict.DELIVERED),
        (299, None, Verdict.DELIVERED),
        (410, None, Verdict.GONE),
        (408, None, Verdict.RETRY),
        (429, None, Verdict.RETRY),
        (500, None, Verdict.RETRY),
        (503, None, Verdict.RETRY),
        (None, "timeout", Verdict.RETRY),
        (None, "connect_error", Verdict.RETRY),
        (None, "blocked", Verdict.RETRY),
        (200, "timeout", Verdict.RETRY),  # headers came, the body never finished
        (200, "connect_error", Verdict.RETRY),  # the body was cut off by a closed connection
        (404, "connect_error", Verdict.RETRY),
    ],
)
def test_verdicts(
    settings: DeliverySettings, status: int | None, outcome: str | None, verdict: Verdict
) -> None:
    assert judge(result(status, outcome), settings) is verdict


@pytest.mark.parametrize("status", [301, 302, 400, 401, 403, 404, 422])
def test_other_statuses_follow_the_configured_policy(
    settings: DeliverySettings, status: int
) -> None:
    assert judge(result(status), settings) is Verdict.RETRY
    strict = settings.model_copy(update={"other_status_policy": "dead"})
    assert judge(result(status), strict) is Verdict.DEAD


def test_default_schedule_is_svix_like_with_jitter_bounds() -> None:
    assert DEFAULT_RETRY_SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    rng = random.Random(7)
    for attempts, base in enumerate(DEFAULT_RETRY_SCHEDULE[1:], start=1):
        for _ in range(50):
            delay = next_delay(attempts, DEFAULT_RETRY_SCHEDULE, jitter=0.2, rng=rng)
            assert delay is not None
            assert base * 0.8 <= delay <= base * 1.2
    assert next_delay(8, DEFAULT_RETRY_SCHEDULE, jitter=0.2) is None


def test_retry_after_lengthens_the_wait_within_bounds() -> None:
    schedule = [0, 5, 300]
    assert next_delay(1, schedule, jitter=0, retry_after=60, retry_after_max=600) == 60
    assert next_delay(1, schedule, jitter=0, retry_after=1, retry_after_max=600) == 5
    assert next_delay(1, schedule, jitter=0, retry_after=99999, retry_after_max=600) == 600


def test_retry_after_parses_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(format_datetime(now + timedelta(minutes=2), usegmt=True), now) == 120
    assert parse_retry_after(format_datetime(now - timedelta(minutes=2), usegmt=True), now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize(
    "value",
    ["\u00b2", "\u0663", "1e5", "-5", "\x00", "Mon, 01 Jan 99999 00:00:00 GMT", "Tue, 99 Foo"],
)
def test_retry_after_that_makes_no_sense_is_ignored(value: str) -> None:
    # "²".isdigit() is True but float("²") raises: a receiver's header must never do that.
    assert parse_retry_after(value, datetime(2026, 11, 23, 12, 0, tzinfo=UTC)) is None
