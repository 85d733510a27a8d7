"""Statistics: the summary rows kept as attempts and messages are stored, and how they read.

One home for the rules of the statistics API (docs/api.md, *Statistics*):

* every attempt is counted in ``attempt_stats`` in the transaction that records it, by one
  aggregated upsert per recorded batch (:func:`summarise_attempts`), in a minute row and an
  hour row (:data:`WIDTHS`);
* every message is counted in ``message_stats`` by a statement-level trigger on
  ``messages`` (migration 0008), whichever path stored it;
* latency is kept as a histogram of fixed buckets (:data:`LATENCY_BOUNDS_MS`), so
  percentiles over any window are read from summed histograms (:func:`percentile`), to the
  precision of a bucket's upper bound.

Rows are keyed by endpoint (never shared between applications) and by a shard of the
writing connection (see :mod:`webhooks_core.models.statistics`), so batches of different
applications, and concurrent batches of one endpoint, never wait on each other's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

# Upper bounds (exclusive) of the latency buckets, in milliseconds; the last bucket is open.
LATENCY_BOUNDS_MS: tuple[int, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
# Bucket widths kept, in seconds: minutes for the last hours, hours for days and weeks.
MINUTE, HOUR = 60, 3600
WIDTHS = (MINUTE, HOUR)
# Writers per key; the trigger of migration 0008 on ``messages`` uses the same 8.
SHARDS = 8

_BOUNDS_SQL = "ARRAY[" + ", ".join(f"{b}::float8" for b in LATENCY_BOUNDS_MS) + "]"
_HISTOGRAM_SQL = (
    "ARRAY["
    + ", ".join(
        f"count(*) FILTER (WHERE v.latency_bucket = {i})::int"
        for i in range(len(LATENCY_BOUNDS_MS) + 1)
    )
    + "]"
)
_WIDTHS_SQL = ", ".join(f"({w})" for w in WIDTHS)
# Status class of an answer: '2xx'... or 'none' when nothing came back (timeout, refused).
STATUS_CLASS_SQL = (
    "CASE WHEN v.status_code IS NULL THEN 'none' ELSE (v.status_code / 100)::text || 'xx' END"
)

# The delivery's state after this transaction's record (same transaction: the new state) and
# its event type come from the deliveries rows the batch already holds locked.  Grouped so
# that no key is upserted twice in the statement; ordered so that two writers that share a
# shard take the rows' locks in the same order.
_SUMMARISE = text(
    f"""
    INSERT INTO attempt_stats AS s
        (endpoint_id, width, bucket, event_type, outcome, status_class, final_state, shard,
         application_id, attempts, latency_sum_ms, latency_histogram)
    SELECT d.endpoint_id, w.width,
           date_bin(make_interval(secs => w.width), v.started_at, TIMESTAMPTZ '2000-01-01'),
           d.event_type, v.outcome, {STATUS_CLASS_SQL}, d.state,
           pg_backend_pid() % {SHARDS}, d.application_id,
           count(*), sum(v.latency_ms), {_HISTOGRAM_SQL}
    FROM (SELECT a.*, width_bucket(a.latency_ms, {_BOUNDS_SQL}) AS latency_bucket
          FROM unnest(CAST(:delivery_ids AS bigint[]), CAST(:started AS timestamptz[]),
                      CAST(:latencies AS float8[]), CAST(:codes AS int[]),
                      CAST(:outcomes AS text[]))
               AS a(delivery_id, started_at, latency_ms, status_code, outcome)) AS v
    JOIN deliveries d ON d.id = v.delivery_id
    CROSS JOIN (VALUES {_WIDTHS_SQL}) AS w(width)
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
    ORDER BY 1, 2, 3, 4, 5, 6, 7, 8
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


def summarise_attempts(session: Session, attempts: Sequence[dict[str, Any]]) -> None:
    """Count recorded attempts in ``attempt_stats``: one statement, in the caller's
    transaction, after the deliveries' new states were written.

    ``attempts`` are the rows given to the attempts INSERT (``delivery_id``, ``started_at``,
    ``latency_ms``, ``status_code``, ``outcome``).
    """
    if not attempts:
        return
    session.execute(
        _SUMMARISE,
        {
            "delivery_ids": [a["delivery_id"] for a in attempts],
            "started": [a["started_at"] for a in attempts],
            "latencies": [a["latency_ms"] for a in attempts],
            "codes": [a["status_code"] for a in attempts],
            "outcomes": [a["outcome"] for a in attempts],
        },
    )


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


def add_histograms(left: Sequence[int], right: Sequence[int]) -> list[int]:
    """Element-wise sum of two latency histograms (an empty one counts as zeros)."""
    size = len(LATENCY_BOUNDS_MS) + 1
    left = list(left) or [0] * size
    right = list(right) or [0] * size
    return [a + b for a, b in zip(left, right, strict=True)]
