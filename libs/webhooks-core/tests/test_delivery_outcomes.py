"""What one attempt's result makes of its delivery, decided without a database."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest

from webhooks_core.deliveries.outcomes import (
    GONE_ERROR,
    breaker_tripped,
    decide,
    disable_reason,
    health_change,
)
from webhooks_core.deliveries.states import DeliveryState

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
REAL_NOW = datetime(2026, 11, 23, 12, 0, 30, tzinfo=UTC)
SCHEDULE = (0, 60, 3600)


@dataclass(frozen=True)
class Policy:
    """The retry policy the decisions read, at the delivery settings' defaults."""

    other_status_policy: Literal["retry", "dead"] = "retry"
    retry_jitter: float = 0.2
    retry_after_max_seconds: int = 3600


@pytest.fixture
def settings() -> Policy:
    return Policy()


@dataclass(frozen=True)
class Result:
    outcome: str
    status_code: int | None = None
    retry_after: str | None = None
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.outcome == "success"


def test_a_2xx_is_delivered(settings: Policy) -> None:
    decision = decide(
        Result("success", 204), 1, SCHEDULE, settings, now=lambda: NOW, real_now=lambda: REAL_NOW
    )
    assert decision.state is DeliveryState.DELIVERED
    assert decision.next_attempt_at is None
    assert decision.error is None
    assert not decision.stop
    assert not decision.gone


def test_a_success_reads_no_clock(settings: Policy) -> None:
    def no_clock() -> datetime:
        raise AssertionError("a delivered attempt needs no next time")

    decision = decide(
        Result("success", 200), 1, SCHEDULE, settings, now=no_clock, real_now=no_clock
    )
    assert decision.state is DeliveryState.DELIVERED


def test_a_5xx_retries_after_the_schedules_next_wait_with_injected_jitter(
    settings: Policy,
) -> None:
    jittered = replace(settings, retry_jitter=0.2)
    waits = set()
    for seed in range(5):
        decision = decide(
            Result("http_5xx", 503),
            1,
            SCHEDULE,
            jittered,
            now=lambda: NOW,
            real_now=lambda: REAL_NOW,
            rng=random.Random(seed),
        )
        assert decision.state is DeliveryState.RETRYING
        assert decision.error == "HTTP 503"
        assert decision.next_attempt_at is not None
        wait = (decision.next_attempt_at - NOW).total_seconds()
        assert 48 <= wait <= 72
        waits.add(wait)
        again = decide(
            Result("http_5xx", 503),
            1,
            SCHEDULE,
            jittered,
            now=lambda: NOW,
            real_now=lambda: REAL_NOW,
            rng=random.Random(seed),
        )
        assert again.next_attempt_at == decision.next_attempt_at  # the seed decides the jitter
    assert len(waits) > 1


def test_the_last_scheduled_attempt_failing_is_dead(settings: Policy) -> None:
    decision = decide(
        Result("connect_error", error="refused"),
        3,
        SCHEDULE,
        settings,
        now=lambda: NOW,
        real_now=lambda: NOW,
    )
    assert decision.state is DeliveryState.DEAD
    assert decision.next_attempt_at is None
    assert decision.error == "refused"


def test_410_cancels_disables_and_stops_the_batch(settings: Policy) -> None:
    decision = decide(
        Result("http_4xx", 410), 1, SCHEDULE, settings, now=lambda: NOW, real_now=lambda: NOW
    )
    assert decision.state is DeliveryState.CANCELLED
    assert decision.error == GONE_ERROR
    assert decision.gone
    assert decision.stop


def test_a_timeout_retries_and_stops_the_batch(settings: Policy) -> None:
    decision = decide(
        Result("timeout", error="no answer"),
        1,
        SCHEDULE,
        settings,
        now=lambda: NOW,
        real_now=lambda: NOW,
    )
    assert decision.state is DeliveryState.RETRYING
    assert decision.stop
    assert not decision.gone


def test_other_4xx_follow_the_status_policy(settings: Policy) -> None:
    result = Result("http_4xx", 404)
    assert (
        decide(result, 1, SCHEDULE, settings, now=lambda: NOW, real_now=lambda: NOW).state
        == "retrying"
    )
    strict = replace(settings, other_status_policy="dead")
    decision = decide(result, 1, SCHEDULE, strict, now=lambda: NOW, real_now=lambda: NOW)
    assert decision.state is DeliveryState.DEAD
    assert decision.error == "HTTP 404"


def test_retry_after_date_is_read_on_the_real_clock_and_timed_on_the_scheduling_one(
    settings: Policy,
) -> None:
    calm = replace(settings, retry_jitter=0.0, retry_after_max_seconds=3600)
    header = "Mon, 23 Nov 2026 12:10:30 GMT"  # ten minutes after REAL_NOW
    decision = decide(
        Result("http_4xx", 429, retry_after=header),
        1,
        SCHEDULE,
        calm,
        now=lambda: NOW,
        real_now=lambda: REAL_NOW,
    )
    assert decision.next_attempt_at == NOW + timedelta(minutes=10)


@pytest.mark.parametrize(
    ("trailing", "attempts", "before", "threshold", "tripped"),
    [
        (0, 3, 9, 5, False),  # the last attempt succeeded
        (2, 2, 3, 5, True),  # all failed: the endpoint's count before the batch adds up
        (2, 3, 3, 5, False),  # a success in the batch reset the count
        (5, 6, 0, 5, True),
        (1, 1, 0, 1, True),
    ],
)
def test_breaker_trips_at_the_threshold(
    trailing: int, attempts: int, before: int, threshold: int, tripped: bool
) -> None:
    assert breaker_tripped(trailing, attempts, before, threshold) is tripped


def at(seconds: int) -> datetime:
    return NOW + timedelta(seconds=seconds)


def test_health_change_counts_the_failures_after_the_last_success() -> None:
    assert health_change([]) is None
    ok, failed = Result("success", 200), Result("http_5xx", 500)
    change = health_change([(at(0), failed), (at(1), ok), (at(2), failed), (at(3), failed)])
    assert change is not None
    assert change.last_attempt_at == at(3)
    assert change.last_success_at == at(1)
    assert change.had_success
    assert change.trailing == 2
    assert change.first_failure_at == at(2)
    only_failures = health_change([(at(0), failed), (at(1), failed)])
    assert only_failures is not None
    assert not only_failures.had_success
    assert only_failures.trailing == 2
    assert only_failures.first_failure_at == at(0)
    healthy = health_change([(at(0), failed), (at(1), ok)])
    assert healthy is not None
    assert healthy.trailing == 0
    assert healthy.first_failure_at is None


def test_an_endpoint_is_disabled_when_gone_or_failing_past_the_window() -> None:
    assert disable_reason(True, None, NOW, 3600) == "gone"
    assert disable_reason(False, NOW - timedelta(hours=2), NOW, 3600) == "failing"
    assert disable_reason(False, NOW - timedelta(minutes=59), NOW, 3600) is None
    assert disable_reason(False, None, NOW, 3600) is None
