"""What an attempt's result means for its delivery: delivered, retry later, dead, or gone.

Pure functions; docs/delivery.md states the same rules for users.

* any 2xx: delivered;
* 410 Gone: the endpoint is disabled and its open deliveries cancelled;
* timeouts, connection errors (a response cut off anywhere, even after a 2xx status line,
  is one), refused (blocked) targets, 408, 429 and 5xx: retried;
* anything else (3xx, since redirects are not followed, and other 4xx): retried by default,
  or dead at once with ``WEBHOOKS_OTHER_STATUS_POLICY=dead``.

Retries follow the schedule (the endpoint's own, else the settings'): after attempt *n* fails
the next one waits ``schedule[n]`` seconds with ±jitter; when attempt ``len(schedule)`` has
failed, the delivery is dead.  ``Retry-After`` (seconds or an HTTP date) can only lengthen the
wait, up to ``WEBHOOKS_RETRY_AFTER_MAX_SECONDS``.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from delivery.sender import SendResult
from webhooks_core.settings import Settings

RETRYABLE_STATUSES = frozenset({408, 429})


class Verdict(enum.StrEnum):
    """What to do with a delivery after one attempt."""

    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"  # no retry, whatever the schedule says
    GONE = "gone"  # 410: disable the endpoint


def judge(result: SendResult, settings: Settings) -> Verdict:
    """Classify one attempt's result."""
    if result.succeeded:
        return Verdict.DELIVERED
    status = result.status_code
    if status is None or not result.outcome.startswith("http_"):
        # No complete answer (a timeout, or the connection broke after the status line):
        # whatever the status said, the receiver may not have it.
        return Verdict.RETRY
    if status == 410:
        return Verdict.GONE
    if status in RETRYABLE_STATUSES or status >= 500:
        return Verdict.RETRY
    return Verdict.RETRY if settings.other_status_policy == "retry" else Verdict.DEAD


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a ``Retry-After`` header asks for; None when absent or unparsable."""
    if not value:
        return None
    value = value.strip()
    # isdigit() alone admits digits float() refuses (superscripts, other scripts).
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max((when - now).total_seconds(), 0.0)
    except (TypeError, ValueError, IndexError, OverflowError):
        # Whatever a receiver sends here is its own mistake, never the batch's.
        return None


def next_delay(
    attempts_made: int,
    schedule: Sequence[int],
    *,
    jitter: float,
    retry_after: float | None = None,
    retry_after_max: float = 3600.0,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds until the next attempt after ``attempts_made`` attempts, or None if exhausted."""
    if attempts_made >= len(schedule):
        return None
    base = float(schedule[attempts_made])
    spread = (rng or random).uniform(-jitter, jitter) if jitter else 0.0
    delay = base * (1.0 + spread)
    if retry_after is not None:
        delay = max(delay, min(retry_after, retry_after_max))
    return max(delay, 0.0)
