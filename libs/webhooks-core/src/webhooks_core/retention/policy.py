"""What is kept for how long: the one home of the retention rules (docs/retention.md).

An application's ``retention`` overrides the platform's defaults (``WEBHOOKS_RETENTION_*``)
field by field.  Attempts and payloads never outlive their message: a message deleted takes
its deliveries and their attempts with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from webhooks_core.settings import CoreSettings

MAX_DAYS = 3650


class RetentionError(ValueError):
    """Retention values that cannot hold together; ``field`` names the culprit."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Retention:
    """Days kept: attempts, messages (with their deliveries), payloads (None: as messages)."""

    attempts_days: int
    messages_days: int
    payload_days: int | None = None


@dataclass(frozen=True)
class RetentionOverrides:
    """An application's own values; None falls back to the platform's default."""

    attempts_days: int | None = None
    messages_days: int | None = None
    payload_days: int | None = None


def defaults(settings: CoreSettings) -> Retention:
    """The platform's retention (what an application without its own values gets)."""
    return Retention(
        settings.retention_attempts_days,
        settings.retention_messages_days,
        settings.retention_payload_days,
    )


def effective(overrides: RetentionOverrides, settings: CoreSettings) -> Retention:
    """An application's retention: its own values, else the platform's -- a default no
    longer than the application's messages (they take their attempts and payload along)."""
    base = defaults(settings)
    messages = overrides.messages_days or base.messages_days
    payload = overrides.payload_days or base.payload_days
    if overrides.payload_days is None and payload is not None:
        payload = min(payload, messages)
    return Retention(
        overrides.attempts_days or min(base.attempts_days, messages), messages, payload
    )


def check(retention: Retention) -> None:
    """Raise :class:`RetentionError` unless the values hold together.

    Each is 1 to 3650 days; attempts and payloads are kept no longer than their messages
    (deleting a message deletes its attempts; a payload outliving its message is nothing).
    """
    values = (
        ("attempts_days", retention.attempts_days),
        ("messages_days", retention.messages_days),
        ("payload_days", retention.payload_days),
    )
    for name, value in values:
        if value is not None and not 1 <= value <= MAX_DAYS:
            raise RetentionError(f"must be between 1 and {MAX_DAYS} days", f"retention.{name}")
    if retention.attempts_days > retention.messages_days:
        raise RetentionError(
            f"attempts are kept no longer than their messages ({retention.messages_days} days)",
            "retention.attempts_days",
        )
    if retention.payload_days is not None and retention.payload_days > retention.messages_days:
        raise RetentionError(
            f"payloads are kept no longer than their messages ({retention.messages_days} days)",
            "retention.payload_days",
        )


def cutoff(now: datetime, days: int) -> datetime:
    """Rows older than this are past ``days`` of retention."""
    return now - timedelta(days=days)


def day_expired(day: date, now: datetime, keep_days: int) -> bool:
    """Whether every moment of ``day`` (UTC) is older than ``keep_days`` before ``now``."""
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=now.tzinfo)
    return end <= cutoff(now, keep_days)
