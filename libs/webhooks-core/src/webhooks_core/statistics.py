"""Statistics: the summary rows kept as attempts and messages are stored, and how they read.

One home for the rules of the statistics API (docs/api.md, *Statistics*):

* every attempt is counted in ``attempt_stats`` in the transaction that records it, by one
  aggregated upsert per recorded batch (:func:`summarise_attempts`), in a minute row, an
  hour row and a day row (:data:`WIDTHS`);
* every message is counted in ``message_stats`` by a statement-level trigger on
  ``messages`` (migrations 0008 and 0015), whichever path stored it;
* latency is kept as a histogram of fixed buckets (:data:`LATENCY_BOUNDS_MS`), so
  percentiles over any window are read from summed histograms (:func:`percentile`), to the
  precision of a bucket's upper bound.

Rows are keyed by endpoint (never shared between applications) and by a shard of the
writing connection (see :mod:`webhooks_core.models.statistics`), so batches of different
applications, and concurrent batches of one endpoint, never wait on each other's rows.
"""

from __future__ import annotations

import bisect
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

# Upper bounds (exclusive) of the latency buckets, in milliseconds; the last bucket is open.
LATENCY_BOUNDS_MS: tuple[int, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
# Bucket widths kept, in seconds: minutes for the last hours, hours for a day, days for weeks
# (a 7-day window reads 7 day rows per key instead of 168 hour rows).
MINUTE, HOUR, DAY = 60, 3600, 86400
WIDTHS = (MINUTE, HOUR, DAY)
# Writers per key; the trigger on ``messages`` (migrations 0008, 0015) uses the same 8.
SHARDS = 8

# The statistics' time buckets start at whole multiples of their width from this origin.
ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
HISTOGRAM_SIZE = len(LATENCY_BOUNDS_MS) + 1


@dataclass(frozen=True)
class DeliveryFacts:
    """What a summary row is keyed by, of the delivery an attempt belongs to: its endpoint,
    application and event type, and its state once the attempt is recorded."""

    endpoint_id: uuid.UUID
    application_id: uuid.UUID | None
    event_type: str
    final_state: str


@dataclass
class SummaryRow:
    """The increments of one ``attempt_stats`` row."""

    attempts: int = 0
    latency_sum_ms: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_SIZE)


SummaryKey = tuple[uuid.UUID, int, datetime, str, str, str, str, uuid.UUID | None]


def bucket_start(moment: datetime, width: int) -> datetime:
    """The start of the ``width``-second bucket holding ``moment`` (as ``date_bin`` does)."""
    return ORIGIN + timedelta(seconds=(moment - ORIGIN).total_seconds() // width * width)


def status_class(status_code: int | None) -> str:
    """``2xx``... of an answer, or ``none`` when nothing came back (timeout, refused)."""
    return "none" if status_code is None else f"{status_code // 100}xx"


def summary_rows(
    attempts: Iterable[Mapping[str, Any]], facts: Mapping[int, DeliveryFacts]
) -> dict[SummaryKey, SummaryRow]:
    """The attempts counted per row key (endpoint, width, bucket, event type, outcome,
    status class, final state, application), one row of each of :data:`WIDTHS` each.

    Pure: the engine aggregates a batch here, so that its one upsert writes a few rows (one
    per width, for a batch of one endpoint's successes) instead of one per attempt.
    """
    rows: dict[SummaryKey, SummaryRow] = {}
    for attempt in attempts:
        fact = facts.get(attempt["delivery_id"])
        if fact is None:
            continue  # not recorded (its lease had gone to another run)
        latency = float(attempt["latency_ms"])
        bucket = bisect.bisect_right(LATENCY_BOUNDS_MS, latency)
        for width in WIDTHS:
            key = (
                fact.endpoint_id,
                width,
                bucket_start(attempt["started_at"], width),
                fact.event_type,
                attempt["outcome"],
                status_class(attempt["status_code"]),
                fact.final_state,
                fact.application_id,
            )
            row = rows.get(key)
            if row is None:
                row = rows[key] = SummaryRow()
            row.attempts += 1
            row.latency_sum_ms += latency
            row.histogram[bucket] += 1
    return rows


# One row per key of :func:`summary_rows`, in key order (two writers that share a shard take
# the rows' locks in the same order).  The rows come as one JSON document, not as an array
# per column: psycopg2 quotes every element of an array parameter on its own, about 1 us
# apiece, and a fan-out batch of 50 endpoints has 150 rows of 12 values and a 13-bucket
# histogram each (3.1 ms of a worker's CPU per batch as arrays; json.dumps and one quoted
# string cost a tenth of that).
_UPSERT = text(
    f"""
    INSERT INTO attempt_stats AS s
        (endpoint_id, width, bucket, event_type, outcome, status_class, final_state, shard,
         application_id, attempts, latency_sum_ms, latency_histogram)
    SELECT v.endpoint_id, v.width, v.bucket, v.event_type, v.outcome, v.status_class,
           v.final_state, pg_backend_pid() % {SHARDS}, v.application_id, v.attempts,
           v.latency_sum_ms, v.histogram
    FROM json_to_recordset(CAST(:rows AS json))
         AS v(n int, endpoint_id uuid, width int, bucket timestamptz, event_type text,
              outcome text, status_class text, final_state text, application_id uuid,
              attempts int, latency_sum_ms float8, histogram int[])
    ORDER BY v.n
    ON CONFLICT (endpoint_id, width, bucket, event_type, outcome, status_class, final_state,
                 shard)
    DO UPDATE SET attempts = s.attempts + EXCLUDED.attempts,
                  latency_sum_ms = s.latency_sum_ms + EXCLUDED.latency_sum_ms,
                  latency_histogram = (
                      SELECT array_agg(a + b ORDER BY i)
                      FROM unnest(s.latency_histogram, EXCLUDED.latency_histogram)
                           WITH ORDINALITY AS t(a, b, i))
    """  # noqa: S608 - constants only
)
_FACTS = text(
    """
    SELECT id, endpoint_id, application_id, event_type, state FROM deliveries
    WHERE id = ANY(CAST(:ids AS bigint[]))
    """
)


def summarise_attempts(
    session: Session,
    attempts: Sequence[Mapping[str, Any]],
    facts: Mapping[int, DeliveryFacts] | None = None,
) -> None:
    """Count recorded attempts in ``attempt_stats``: one statement, in the caller's
    transaction, after the deliveries' new states were written.

    ``attempts`` are the rows given to the attempts INSERT (``delivery_id``, ``started_at``,
    ``latency_ms``, ``status_code``, ``outcome``); ``facts`` what the caller knows of their
    deliveries (the delivery engine does), else read from the ``deliveries`` rows.
    """
    if not attempts:
        return
    if facts is None:
        ids = sorted({a["delivery_id"] for a in attempts})
        facts = {
            row.id: DeliveryFacts(row.endpoint_id, row.application_id, row.event_type, row.state)
            for row in session.execute(_FACTS, {"ids": ids})
        }
    rows = sorted(summary_rows(attempts, facts).items(), key=_key_order)
    if not rows:
        return
    session.execute(_UPSERT, {"rows": _as_json(rows)})


def _as_json(rows: list[tuple[SummaryKey, SummaryRow]]) -> str:
    """The rows as the upsert's JSON document (each id and time turned into text once: a
    fan-out batch has three rows per endpoint)."""
    texts: dict[object, str] = {}

    def as_text(value: uuid.UUID | datetime) -> str:
        found = texts.get(value)
        if found is None:
            found = texts[value] = value.isoformat() if isinstance(value, datetime) else str(value)
        return found

    return json.dumps(
        [
            {
                "n": n,
                "endpoint_id": as_text(key[0]),
                "width": key[1],
                "bucket": as_text(key[2]),
                "event_type": key[3],
                "outcome": key[4],
                "status_class": key[5],
                "final_state": key[6],
                "application_id": None if key[7] is None else as_text(key[7]),
                "attempts": row.attempts,
                "latency_sum_ms": row.latency_sum_ms,
                "histogram": row.histogram,
            }
            for n, (key, row) in enumerate(rows)
        ]
    )


def _key_order(item: tuple[SummaryKey, SummaryRow]) -> tuple[Any, ...]:
    key = item[0]
    return (str(key[0]), key[1], key[2], key[3], key[4], key[5], key[6])


def percentile(histogram: Sequence[int], fraction: float) -> float | None:
    """The latency (ms) below which ``fraction`` of the counted attempts fell.

    Read from a histogram over :data:`LATENCY_BOUNDS_MS`: the upper bound of the bucket the
    percentile falls in (the last, open bucket reads as its lower bound).  None when empty.
    """
    total = sum(histogram)
    if total == 0:
        return None
    rank = fraction * total
    seen = 0
    for index, count in enumerate(histogram):
        seen += count
        if seen >= rank and count:
            return float(LATENCY_BOUNDS_MS[min(index, len(LATENCY_BOUNDS_MS) - 1)])
    return float(LATENCY_BOUNDS_MS[-1])


def percentiles(histogram: Sequence[int], fractions: Sequence[float]) -> list[float | None]:
    """:func:`percentile` of each of ``fractions`` (ascending), in one pass of the histogram."""
    total = sum(histogram)
    if total == 0:
        return [None] * len(fractions)
    found: list[float | None] = []
    seen = 0
    for index, count in enumerate(histogram):
        seen += count
        while count and len(found) < len(fractions) and seen >= fractions[len(found)] * total:
            found.append(float(LATENCY_BOUNDS_MS[min(index, len(LATENCY_BOUNDS_MS) - 1)]))
    return found + [float(LATENCY_BOUNDS_MS[-1])] * (len(fractions) - len(found))
