"""The statistics' pure aggregation: what one batch's upsert writes (no database)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from webhooks_core.statistics import (
    DAY,
    HISTOGRAM_SIZE,
    HOUR,
    LATENCY_BOUNDS_MS,
    MINUTE,
    DeliveryFacts,
    bucket_start,
    percentile,
    percentiles,
    status_class,
    summary_rows,
)

ENDPOINT, APP = uuid.uuid4(), uuid.uuid4()
AT = datetime(2026, 12, 1, 14, 37, 42, tzinfo=UTC)


def attempt(delivery_id: int, latency: float, code: int | None, outcome: str) -> dict[str, object]:
    return {
        "delivery_id": delivery_id,
        "started_at": AT,
        "latency_ms": latency,
        "status_code": code,
        "outcome": outcome,
    }


def test_a_batch_of_one_endpoints_successes_is_one_row_per_width() -> None:
    facts = {n: DeliveryFacts(ENDPOINT, APP, "person.created", "delivered") for n in range(50)}
    rows = summary_rows([attempt(n, 3.0 + n, 200, "success") for n in range(50)], facts)

    assert len(rows) == 3
    by_width = {key[1]: (key, row) for key, row in rows.items()}
    (minute_key, minute), (hour_key, hour) = by_width[MINUTE], by_width[HOUR]
    day_key, day = by_width[DAY]
    assert minute_key[2] == datetime(2026, 12, 1, 14, 37, tzinfo=UTC)
    assert hour_key[2] == datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
    assert day_key[2] == datetime(2026, 12, 1, tzinfo=UTC)
    assert minute_key[3:] == hour_key[3:] == day_key[3:]
    assert minute_key[3:] == ("person.created", "success", "2xx", "delivered", APP)
    assert minute.attempts == hour.attempts == day.attempts == 50
    assert minute.histogram == hour.histogram == day.histogram
    assert minute.latency_sum_ms == sum(3.0 + n for n in range(50))
    assert len(minute.histogram) == HISTOGRAM_SIZE
    # Bounds 5, 10, 25, 50 ms...: 3 and 4 ms below 5; 5..9 in [5, 10); 10..24; 25..49; 50..52.
    assert minute.histogram[:5] == [2, 5, 15, 25, 3]
    assert sum(minute.histogram) == 50


def test_outcomes_status_classes_and_final_states_are_rows_of_their_own() -> None:
    facts = {
        1: DeliveryFacts(ENDPOINT, APP, "person.created", "delivered"),
        2: DeliveryFacts(ENDPOINT, APP, "person.created", "retrying"),
        3: DeliveryFacts(ENDPOINT, APP, "person.created", "dead"),
    }
    attempts = [
        attempt(1, 12.0, 200, "success"),
        attempt(2, 30_000.0, None, "timeout"),
        attempt(3, 7.0, 503, "http_5xx"),
        attempt(4, 7.0, 200, "success"),  # no facts: not recorded (another run's lease)
    ]
    rows = summary_rows(attempts, facts)

    minute_rows = {key[4:7]: row for key, row in rows.items() if key[1] == MINUTE}
    assert set(minute_rows) == {
        ("success", "2xx", "delivered"),
        ("timeout", "none", "retrying"),
        ("http_5xx", "5xx", "dead"),
    }
    assert minute_rows[("timeout", "none", "retrying")].histogram[-1] == 1  # the open bucket


def test_buckets_and_status_classes() -> None:
    assert bucket_start(datetime(2026, 12, 1, 0, 0, 59, tzinfo=UTC), MINUTE) == datetime(
        2026, 12, 1, 0, 0, tzinfo=UTC
    )
    assert bucket_start(datetime(2026, 12, 1, 0, 1, tzinfo=UTC), MINUTE) == datetime(
        2026, 12, 1, 0, 1, tzinfo=UTC
    )
    assert status_class(None) == "none"
    assert status_class(204) == "2xx"
    assert status_class(429) == "4xx"


def test_percentiles_in_one_pass_are_each_percentile() -> None:
    fractions = (0.5, 0.9, 0.99)
    histograms = [
        [0] * HISTOGRAM_SIZE,
        [1] + [0] * (HISTOGRAM_SIZE - 1),
        [0] * (HISTOGRAM_SIZE - 1) + [7],  # only the open bucket
        [50, 0, 0, 40, 0, 9, 1, 0, 0, 0, 0, 0, 0],
        [0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        [n % 5 for n in range(HISTOGRAM_SIZE)],
    ]
    for histogram in histograms:
        assert percentiles(histogram, fractions) == [percentile(histogram, f) for f in fractions]
    assert percentiles([0, 3] + [0] * 10 + [1], fractions) == [10.0, 30_000.0, 30_000.0]
    assert len(LATENCY_BOUNDS_MS) + 1 == HISTOGRAM_SIZE
