"""The settings of the delivery side (``WEBHOOKS_*``, read once at start): the scheduler, the
Celery workers that deliver, and the broker ingestion step they run.

:class:`DeliverySettings` extends the shared endpoint rules (allowed targets, breaker and
auto-disable windows) with what only delivery reads.  A new setting of sending, retrying or
scheduling goes here.  The switches only tests use (a fake sender, a moved clock) are not
here: :mod:`delivery.testing` holds them.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from webhooks_core.settings import EndpointSettings, split_csv

DEFAULT_RETRY_SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)


class DeliverySettings(EndpointSettings):
    """What the scheduler and the delivery workers may be configured with."""

    retry_schedule: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_SCHEDULE)
    )
    retry_jitter: float = Field(default=0.2, ge=0, le=1)
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    read_timeout_seconds: float = Field(default=15.0, gt=0)
    total_timeout_seconds: float = Field(default=30.0, gt=0)
    response_body_max_bytes: int = Field(default=1024, ge=0)
    endpoint_max_in_flight: int = Field(default=4, ge=1)
    # Batches (worker task slots) one application may hold at once, whatever its endpoints:
    # below the worker slots (one worker of --concurrency 16 by default), so one tenant's
    # slow endpoints always leave slots to the others.  docs/delivery.md sizes it.
    application_max_in_flight: int = Field(default=12, ge=1)
    lease_seconds: int = Field(default=120, ge=5)
    # A delivery whose lease runs out this many times in a row with nothing recorded (it
    # kills or wedges every worker that takes it) is dead-lettered as a poison delivery.
    max_lease_expiries: int = Field(default=5, ge=1, le=1000)
    # The share of successful attempts that get a log line of their own (every failed one
    # does, and every attempt has its row): one line per success cost the workers 15-20 %.
    log_successful_attempts: float = Field(default=0.01, ge=0, le=1)
    # How often the scheduler re-encrypts secrets sealed under an older key (0: never; the
    # ``reseal`` command does it on demand).
    reseal_interval_seconds: float = Field(default=600.0, ge=0)
    # The scheduler's retention thread (webhooks_core.retention): partitions made ahead,
    # expired data dropped, every this many seconds (0: never; ``make retention`` runs it).
    retention_interval_seconds: float = Field(default=3600.0, ge=0)
    # Every request of the workers (webhooks and OAuth token requests) goes through this
    # forward proxy when set: ``http://[user:password@]host:port``.  HTTPS targets through
    # an HTTP CONNECT tunnel, plain HTTP ones forwarded.  The target is still resolved and
    # checked here, and the proxy is given the checked address (docs/security.md).
    egress_proxy: str | None = None
    # The HTTP client of the workers' sender: aiohttp on one event-loop thread per process
    # (delivery.aiohttp_sender), or urllib3 pools used by each task thread (delivery.sender).
    # aiohttp by default: less CPU per delivery and half the latency's spread
    # (docs/benchmarks.md, *aiohttp by default*).
    http_client: Literal["aiohttp", "urllib3"] = "aiohttp"

    @field_validator("egress_proxy")
    @classmethod
    def _proxy_is_a_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"bad port ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
            raise ValueError("must be http://host:port or https://host:port")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("must be the proxy's address only (no path or query)")
        return value

    # Adaptive flow control per endpoint (webhooks_core.endpoints.flow; docs/delivery.md,
    # *Flow control*): off, every endpoint runs at its configured limits.
    flow_control: bool = True
    flow_backoff_factor: float = Field(default=0.7, gt=0, lt=1)
    flow_latency_backoff_factor: float = Field(default=0.9, gt=0, lt=1)
    flow_latency_tolerance: float = Field(default=2.0, gt=1)
    flow_latency_min_rise_ms: float = Field(default=50.0, ge=0)
    flow_rate_increase: float = Field(default=0.1, gt=0, le=1)
    flow_min_rate: float = Field(default=1.0, gt=0)
    flow_forget_seconds: float = Field(default=300.0, gt=0)

    # Delivery engine tuning (docs/delivery.md explains each).
    retry_after_max_seconds: int = Field(default=3600, ge=0)
    other_status_policy: Literal["retry", "dead"] = "retry"
    delivery_batch_size: int = Field(default=50, ge=1, le=1000)
    scheduler_claim_limit: int = Field(default=1000, ge=1)
    # Keys with parked deliveries one sweep of the scheduler looks at (delivery.claim_keys).
    ordering_sweep_keys: int = Field(default=10_000, ge=1)
    scheduler_poll_seconds: float = Field(default=1.0, gt=0)

    @field_validator("retry_schedule", mode="before")
    @classmethod
    def _schedule_from_csv(cls, value: object) -> object:
        return split_csv(value)

    @field_validator("retry_schedule")
    @classmethod
    def _schedule_not_negative(cls, value: list[int]) -> list[int]:
        if not value or any(delay < 0 for delay in value):
            raise ValueError("must be a non-empty list of non-negative seconds")
        return value

    @field_validator("lease_seconds")
    @classmethod
    def _lease_outlasts_a_request(cls, value: int, info: ValidationInfo) -> int:
        # A lease shorter than one request's deadline would be released before every send.
        deadline = info.data.get("total_timeout_seconds")
        if deadline is not None and value <= deadline + 1:
            raise ValueError(
                f"must be more than WEBHOOKS_TOTAL_TIMEOUT_SECONDS + 1 ({deadline + 1:g} s)"
            )
        return value
