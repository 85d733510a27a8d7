"""Endpoints' rate buckets, kept in PostgreSQL so a rate limit holds across schedulers.

The claim reads each due endpoint's bucket with its due rows, spends it in
:class:`~webhooks_core.deliveries.planning.RateLimiter` and writes back what it touched, in
its own transaction and under the claim lock (:mod:`delivery.scheduling`): every scheduler
spends the same bucket.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from webhooks_core.deliveries.planning import RateLimiter

# The buckets the claim read and spent, written back in its transaction (under the claim
# lock, so every scheduler spends the same bucket).
_SAVE_BUCKETS = text(
    """
    INSERT INTO endpoint_rate_buckets AS b (endpoint_id, tokens, stamp)
    SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:tokens AS float8[]),
                         CAST(:stamps AS timestamptz[]))
    ON CONFLICT (endpoint_id) DO UPDATE SET tokens = excluded.tokens, stamp = excluded.stamp
    """
)


def stored_buckets(rows: Sequence[Any]) -> dict[uuid.UUID, tuple[float, float]]:
    """A limiter seeded with the buckets stored for the rows' endpoints, on the claim's
    clock (``now`` as seconds)."""
    return {
        row.endpoint_id: (row.tokens, row.stamp.timestamp())
        for row in rows
        if row.tokens is not None
    }


def save_buckets(session: Session, limiter: RateLimiter) -> None:
    touched = limiter.touched()
    if not touched:
        return
    session.execute(
        _SAVE_BUCKETS,
        {
            "ids": [str(endpoint_id) for endpoint_id in touched],
            "tokens": [tokens for tokens, _ in touched.values()],
            "stamps": [datetime.fromtimestamp(stamp, UTC) for _, stamp in touched.values()],
        },
    )
