"""What an attempt's result means for its delivery: delivered, retry later, dead, or gone.

Pure functions, no database and no clock of their own; docs/delivery.md states the same rules
for users.

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

The breaker counts an endpoint's failures in a row: :func:`breaker_tripped` says when a
batch's trailing failures reach the threshold (the batch then stops sending to it).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Literal, Protocol

from webhooks_core.deliveries.states import DeliveryState

RETRYABLE_STATUSES = frozenset({408, 429})
GONE_ERROR = "endpoint answered 410 Gone"


class AttemptResult(Protocol):
    """What one request got back (the webhook service's ``SendResult`` is one)."""

    @property
    def outcome(self) -> str:
        """``success``, ``http_4xx``, ``timeout``, ``connect_error``, ``blocked``, ..."""
        ...

    @property
    def status_code(self) -> int | None:
        """The response's status, when one came."""
        ...

    @property
    def retry_after(self) -> str | None:
        """The ``Retry-After`` header as sent."""
        ...

    @property
    def error(self) -> str | None:
        """Why the attempt failed, when it failed without a status."""
        ...

    @property
    def succeeded(self) -> bool:
        """True for any 2xx."""
        ...


class RetryPolicy(Protocol):
    """The settings the decisions read (the delivery side's ``DeliverySettings`` is one)."""

    @property
    def other_status_policy(self) -> Literal["retry", "dead"]:
        """What a status that is neither success, retryable nor 410 means."""
        ...

    @property
    def retry_jitter(self) -> float:
        """The fraction a retry's wait may move either way."""
        ...

    @property
    def retry_after_max_seconds(self) -> int:
        """The longest wait a ``Retry-After`` header may ask for."""
        ...


class Verdict(enum.StrEnum):
    """What to do with a delivery after one attempt."""

    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"  # no retry, whatever the schedule says
    GONE = "gone"  # 410: disable the endpoint


def judge(result: AttemptResult, settings: RetryPolicy) -> Verdict:
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


@dataclass(frozen=True, slots=True)
class Decision:
    """What one attempt makes of its delivery and of its endpoint's batch."""

    state: DeliveryState
    next_attempt_at: datetime | None
    error: str | None
    gone: bool = False  # 410: disable the endpoint, cancel its open deliveries
    stop: bool = False  # send nothing more to this endpoint in this batch (timeout or 410)


_S = DeliveryState
_DELIVERED = Decision(_S.DELIVERED, None, None)


def status_error(result: AttemptResult) -> str | None:
    """``HTTP <status>`` for a failed attempt that got a status, else None."""
    if result.succeeded or result.status_code is None:
        return None
    return f"HTTP {result.status_code}"


def decide(
    result: AttemptResult,
    attempts_made: int,
    schedule: Sequence[int],
    settings: RetryPolicy,
    *,
    now: Callable[[], datetime],
    real_now: Callable[[], datetime],
    rng: random.Random | None = None,
) -> Decision:
    """The delivery's new state after its attempt number ``attempts_made`` got ``result``.

    ``now`` is the scheduling clock the next attempt is timed on; ``real_now`` the wall
    clock an HTTP date in ``Retry-After`` is read against (the receiver's real time).  Both
    are read only when a retry is due (not on the hot path of a success).  ``rng`` makes
    the jitter reproducible in tests.
    """
    verdict = judge(result, settings)
    if verdict is Verdict.DELIVERED:
        return _DELIVERED if result.error is None else Decision(_S.DELIVERED, None, result.error)
    timed_out = result.outcome == "timeout"
    if verdict is Verdict.GONE:
        return Decision(_S.CANCELLED, None, GONE_ERROR, gone=True, stop=True)
    error = result.error or status_error(result)
    delay = None
    if verdict is Verdict.RETRY:
        delay = next_delay(
            attempts_made,
            schedule,
            jitter=settings.retry_jitter,
            retry_after=parse_retry_after(result.retry_after, real_now()),
            retry_after_max=settings.retry_after_max_seconds,
            rng=rng,
        )
    if delay is None:
        return Decision(_S.DEAD, None, error, stop=timed_out)
    return Decision(_S.RETRYING, now() + timedelta(seconds=delay), error, stop=timed_out)


def breaker_tripped(
    trailing: int, attempts: int, consecutive_failures: int, threshold: int
) -> bool:
    """True when a batch's ``trailing`` failures (of its ``attempts``) reach the breaker's
    ``threshold``.

    ``consecutive_failures`` is the endpoint's count before the batch; it still counts when
    every attempt of the batch failed.  Keeping ``trailing`` as attempts come spares walking
    the batch's results after each one.
    """
    if trailing == 0:
        return False
    base = consecutive_failures if trailing == attempts else 0
    return base + trailing >= threshold


@dataclass(frozen=True, slots=True)
class HealthChange:
    """What a batch's attempts say about their endpoint's health (recorded on its row)."""

    last_attempt_at: datetime
    last_success_at: datetime | None
    trailing: int  # failures in a row at the end of the batch
    first_failure_at: datetime | None  # the first of those

    @property
    def had_success(self) -> bool:
        """True when an attempt of the batch succeeded (the failure count starts over)."""
        return self.last_success_at is not None


def health_change(results: Sequence[tuple[datetime, AttemptResult]]) -> HealthChange | None:
    """The health change of a batch's attempts (each with its start), or None without any."""
    if not results:
        return None
    last_success_at = None
    trailing = 0
    first_failure_at = None
    for at, result in reversed(results):
        if result.succeeded:
            last_success_at = at
            break
        trailing += 1
        first_failure_at = at
    return HealthChange(results[-1][0], last_success_at, trailing, first_failure_at)


def disable_reason(
    gone: bool, failing_since: datetime | None, now: datetime, auto_disable_after_seconds: float
) -> str | None:
    """``gone`` (it answered 410) or ``failing`` (past the auto-disable window), or None."""
    if gone:
        return "gone"
    if failing_since is not None and (now - failing_since).total_seconds() >= (
        auto_disable_after_seconds
    ):
        return "failing"
    return None
