"""The engine counts every attempt it records in the statistics summaries.

Real scheduler, worker and receivers: what ``attempt_stats`` holds afterwards equals what
the raw ``attempts`` and the deliveries say, per endpoint, outcome, status class and the
state each attempt left its delivery in, in every bucket width, with latency histograms
that count every attempt.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from webhooks_core.statistics import LATENCY_BOUNDS_MS

_BY_KEY = text(
    """
    SELECT endpoint_id, width, outcome, status_class, final_state, event_type,
           sum(attempts) AS attempts, sum((SELECT sum(n) FROM unnest(latency_histogram) n))
               AS histogram_total,
           min(cardinality(latency_histogram)) AS size
    FROM attempt_stats GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5
    """
)


def test_recorded_attempts_are_summarised_as_they_are_recorded(
    platform: Any, receiver: Any, wait_for: Any
) -> None:
    good, bad = receiver(), receiver(lambda _req, _n: {"status": 503})
    good_id, _ = platform.endpoint(good.url)
    # One failing delivery (two attempts): under the breaker's threshold of 3.
    bad_id, _ = platform.endpoint(bad.url, retry_schedule=[0, 0], event_types=["person.updated"])
    for n in range(4):
        platform.publish({"n": n}, event_type="person.updated" if n == 0 else "person.created")

    wait_for(
        lambda: {d.state for d in platform.deliveries()} == {"delivered", "dead"},
        timeout=30,
        message="every delivery ended",
    )

    with platform.sessions() as session:
        rows = [tuple(r) for r in session.execute(_BY_KEY)]
        raw = session.execute(text("SELECT count(*) FROM attempts")).scalar_one()
    assert raw == 4 + 2  # the good endpoint once each, the bad one twice
    size = len(LATENCY_BOUNDS_MS) + 1
    for width in (60, 3600, 86400):
        mine = [r for r in rows if r[1] == width]
        assert {(r[0], r[2], r[3], r[4], r[5], r[6]) for r in mine} == {
            (good_id, "success", "2xx", "delivered", "person.created", 3),
            (good_id, "success", "2xx", "delivered", "person.updated", 1),
            (bad_id, "http_5xx", "5xx", "retrying", "person.updated", 1),
            (bad_id, "http_5xx", "5xx", "dead", "person.updated", 1),
        }
        assert all(r[7] == r[6] and r[8] == size for r in mine)  # every attempt histogrammed
