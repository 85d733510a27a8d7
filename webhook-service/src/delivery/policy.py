"""The outcome policy, importable here too; it lives in
:mod:`webhooks_core.deliveries.outcomes`."""

from webhooks_core.deliveries.outcomes import (
    RETRYABLE_STATUSES,
    Verdict,
    judge,
    next_delay,
    parse_retry_after,
)

__all__ = ["RETRYABLE_STATUSES", "Verdict", "judge", "next_delay", "parse_retry_after"]
