"""Process settings, read once from ``WEBHOOKS_*`` environment variables.

Every service builds one :class:`Settings` at start (``Settings.from_env()``) and passes it
down; nothing else reads the environment.  Defaults point at the services on 127.0.0.1 with
the project's own database (``webhooks``) and RabbitMQ vhost (``webhooks``).

The fields are grouped by the process that reads them, in :data:`FIELD_GROUPS` (core, api,
delivery, producer, test).  It stays one flat object for now, so that ``settings.<field>``
reads the same everywhere; the groups are where a split into typed objects per process would
cut.

The test switches (:data:`TEST_SWITCHES`: ``delivery_sender=fake`` and ``clock_offset_file``)
replace the network and the clock, so a process refuses to start with either unless
``WEBHOOKS_TESTING=1`` says it is a test or a measurement (the test fixtures set it for the
processes they start).
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "WEBHOOKS_"

DEFAULT_RETRY_SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)


class SettingsError(RuntimeError):
    """Raised when the environment does not describe a runnable process."""


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# Fields that replace a real collaborator (the network, the clock) for tests; see the module
# docstring.
TEST_SWITCHES = ("delivery_sender", "clock_offset_file")

# Which process reads which field (every field is in exactly one group; a test checks it).
FIELD_GROUPS: dict[str, tuple[str, ...]] = {
    # Every process.
    "core": (
        "database_url", "database_pool_size", "broker_url", "allowed_target_networks",
        "metrics_host", "metrics_port", "log_format", "log_level", "sealing_keys",
    ),
    # The management API and the console (registration-service).
    "api": (
        "admin_token", "max_request_bytes", "max_payload_bytes",
        "secret_rotation_grace_seconds", "idempotency_window_seconds", "console_secret_key",
        "console_cookie_secure",
    ),
    # The scheduler and the delivery workers (webhook-service).
    "delivery": (
        "retry_schedule", "retry_jitter", "connect_timeout_seconds", "read_timeout_seconds",
        "total_timeout_seconds", "response_body_max_bytes", "endpoint_max_in_flight",
        "application_max_in_flight", "lease_seconds", "max_lease_expiries",
        "auto_disable_after_seconds", "retry_after_max_seconds", "other_status_policy",
        "circuit_breaker_threshold", "circuit_breaker_cooldown_seconds", "delivery_batch_size",
        "scheduler_claim_limit", "scheduler_poll_seconds", "reseal_interval_seconds",
        "egress_proxy",
    ),
    # The people demo and the outbox relay (event-producer).
    "producer": (
        "producer_database_url", "upload_dir", "upload_max_bytes", "outbox_batch_size",
        "outbox_poll_seconds",
    ),
    "test": ("testing", *TEST_SWITCHES),
}  # fmt: skip


class Settings(BaseSettings):
    """Everything a process of the platform may be configured with."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    database_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/webhooks"
    database_pool_size: int = Field(default=10, ge=1)
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672/webhooks"

    # Management API.
    admin_token: str | None = Field(default=None, min_length=16)
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    max_payload_bytes: int = Field(default=262_144, ge=256)
    secret_rotation_grace_seconds: int = Field(default=86_400, ge=0)
    idempotency_window_seconds: int = Field(default=86_400, ge=60)

    # Web console: signs its session cookie (generated per process when unset, which signs
    # everyone out on restart); Secure cookies when served over HTTPS.
    console_secret_key: str | None = Field(default=None, min_length=16)
    console_cookie_secure: bool = False

    # Demo producer (people API) and the outbox relay that publishes its events.
    producer_database_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/webhooks_producer"
    upload_dir: str = "var/uploads"
    upload_max_bytes: int = Field(default=10 * 1_048_576, ge=1024)
    outbox_batch_size: int = Field(default=100, ge=1, le=10_000)
    outbox_poll_seconds: float = Field(default=1.0, gt=0)

    # Keys that seal endpoint secrets at rest: ``<id>:<base64 of 32 bytes>``, comma-separated,
    # the first seals (webhooks_core.endpoints.sealing; docs/security.md).  Every process that
    # reads or writes endpoints needs it and refuses to start without it.
    sealing_keys: SecretStr | None = None

    # Outbound targets: CIDR ranges that are allowed although private or loopback.
    allowed_target_networks: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Delivery.
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
    auto_disable_after_seconds: int = Field(default=5 * 86_400, ge=60)
    # Delivery engine tuning (docs/delivery.md explains each).
    retry_after_max_seconds: int = Field(default=3600, ge=0)
    other_status_policy: Literal["retry", "dead"] = "retry"
    circuit_breaker_threshold: int = Field(default=5, ge=1)
    circuit_breaker_cooldown_seconds: float = Field(default=60.0, gt=0)
    delivery_batch_size: int = Field(default=50, ge=1, le=1000)
    scheduler_claim_limit: int = Field(default=1000, ge=1)
    scheduler_poll_seconds: float = Field(default=1.0, gt=0)
    # How often the scheduler re-encrypts secrets sealed under an older key (0: never; the
    # ``reseal`` command does it on demand).
    reseal_interval_seconds: float = Field(default=600.0, ge=0)
    # Every request of the workers (webhooks and OAuth token requests) goes through this
    # forward proxy when set: ``http://[user:password@]host:port``.  HTTPS targets through
    # an HTTP CONNECT tunnel, plain HTTP ones forwarded.  The target is still resolved and
    # checked here, and the proxy is given the checked address (docs/security.md).
    egress_proxy: str | None = None

    # Test switches (see TEST_SWITCHES): honoured only with WEBHOOKS_TESTING=1.
    testing: bool = False
    # ``fake`` answers 200 at once without a request (tests, overhead measurements).
    delivery_sender: Literal["http", "fake"] = "http"
    # A file holding seconds to add to the wall clock of scheduling decisions.
    clock_offset_file: str | None = None

    # Metrics HTTP server of a non-HTTP process (worker, scheduler, relay).  No port means
    # the process's well-known one (9101, 9102, 9103); a worker without a port serves none.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # Logs: auto = readable colour on a terminal, JSON lines otherwise (containers).
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("allowed_target_networks", mode="before")
    @classmethod
    def _networks_from_csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("allowed_target_networks")
    @classmethod
    def _networks_parse(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value

    @field_validator("sealing_keys")
    @classmethod
    def _sealing_keys_parse(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from webhooks_core.endpoints.sealing import KeyRing

            KeyRing.parse(value.get_secret_value())  # raises naming the problem, not the key
        return value

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

    @field_validator("retry_schedule", mode="before")
    @classmethod
    def _schedule_from_csv(cls, value: object) -> object:
        return _split_csv(value)

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

    @model_validator(mode="after")
    def _test_switches_only_when_testing(self) -> Settings:
        # A fake sender or a moved clock in production would silently "deliver" nothing or
        # retry at the wrong time: refuse at start, naming what to unset.
        if not self.testing:
            on = [
                f"{ENV_PREFIX}{name.upper()}={value}"
                for name, value in ((n, getattr(self, n)) for n in TEST_SWITCHES)
                if value != type(self).model_fields[name].default
            ]
            if on:
                raise ValueError(
                    f"{', '.join(on)} is only for tests: unset it, or set "
                    f"{ENV_PREFIX}TESTING=1 if this process is a test or a measurement"
                )
        return self

    @cached_property
    def allowed_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The parsed form of ``allowed_target_networks``."""
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.allowed_target_networks)

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Read the environment; a bad value raises :class:`SettingsError` naming the variable."""
        try:
            return cls(**overrides)  # type: ignore[arg-type]
        except ValidationError as exc:
            problems = "; ".join(
                f"{ENV_PREFIX}{str(err['loc'][0]).upper()}: {err['msg']}"
                if err["loc"]
                else str(err["msg"]).removeprefix("Value error, ")
                for err in exc.errors()
            )
            raise SettingsError(f"invalid settings: {problems}") from None


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced, for log lines and error messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown without its userinfo
        return url.split("@")[-1]
