"""Process settings, read once from ``WEBHOOKS_*`` environment variables.

Each process builds the one typed settings object of its kind at start
(``<Kind>Settings.from_env()``) and passes it down; nothing else reads the environment.

* :class:`CoreSettings` (here): what every process reads, the database, the broker, metrics,
  the keys that seal secrets at rest, and logs (:class:`LogSettings`, the part that logging
  reads on its own).  The two URLs have no default: a process started without them stops
  at once with a message naming the variable to set.
* :class:`EndpointSettings` (here): the endpoint rules the API and the delivery engine both
  apply or report, which targets are allowed and when the breaker opens or an endpoint is
  disabled (the metrics gauges read them too).
* ``registration.config.APISettings``: the management API and console.
* ``delivery.config.DeliverySettings``: the scheduler, the delivery workers and ingestion.
* ``outbox.config.RelaySettings`` and ``producer.config.ProducerSettings``: the outbox relay
  and the people demo.

A field read by one process lives in that process's class; a field two services read lives
here.  Switches only tests use (a fake sender, a moved clock) are in no production class:
``delivery.testing`` holds them, for the processes the tests start.
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from typing import Annotated, Any, Literal, Self

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "WEBHOOKS_"


class SettingsError(RuntimeError):
    """Raised when the environment does not describe a runnable process."""


def split_csv(value: object) -> object:
    """``"a, b"`` as ``["a", "b"]`` (how list settings are written in the environment)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _problem(settings: type[BaseSettings], error: ErrorDetails) -> str:
    """One sentence of a settings error, naming the variable (and, when unset, what to set)."""
    if not error["loc"]:
        return str(error["msg"]).removeprefix("Value error, ")
    name = str(error["loc"][0])
    variable = f"{ENV_PREFIX}{name.upper()}"
    field = settings.model_fields.get(name)
    if error["type"] == "missing" and field is not None and field.description:
        return f"{variable} is not set: set it to {field.description}"
    return f"{variable}: {error['msg']}"


class LogSettings(BaseSettings):
    """How a process logs: all that :func:`webhooks_core.logging.configure_logging` reads
    when it is called before the process's own settings exist (Celery's logging signal)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # Logs: auto = readable colour on a terminal, JSON lines otherwise (containers).
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """Read the environment; a bad or missing value raises :class:`SettingsError` naming
        the variable."""
        try:
            return cls(**overrides)
        except ValidationError as exc:
            problems = "; ".join(_problem(cls, error) for error in exc.errors())
            raise SettingsError(f"invalid settings: {problems}") from None


class CoreSettings(LogSettings):
    """What every process reads: the database, the broker, metrics and logs."""

    database_url: str = Field(
        description="the platform's PostgreSQL database, for example "
        "postgresql+psycopg2://postgres@127.0.0.1:5432/webhooks (make run sets this one)"
    )
    database_pool_size: int = Field(default=10, ge=1)
    # How long a process starting while its database restarts (or is still starting) waits
    # for it before it gives up and exits (webhooks_core.db.check_database).
    database_startup_wait_seconds: float = Field(default=60.0, ge=0)
    broker_url: str = Field(
        description="the RabbitMQ vhost of the platform, for example "
        "amqp://guest:guest@127.0.0.1:5672/webhooks (make run sets this one)"
    )

    # Metrics HTTP server of a non-HTTP process (worker, scheduler, relay).  No port means
    # the process's well-known one (9101, 9102, 9103); a worker without a port serves none.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)

    # Keys that seal endpoint secrets at rest: ``<id>:<base64 of 32 bytes>``, comma-separated,
    # the first seals (webhooks_core.endpoints.sealing; docs/security.md).  Every process that
    # reads or writes endpoints (and the migrations, which seal what was stored in clear)
    # needs it and refuses to start without it.
    sealing_keys: SecretStr | None = None

    # Retention (webhooks_core.retention; docs/retention.md): the platform's defaults, which
    # an application's own ``retention`` settings override.  No payload days: a payload stays
    # as long as its message.
    retention_attempts_days: int = Field(default=30, ge=1, le=3650)
    retention_messages_days: int = Field(default=90, ge=1, le=3650)
    retention_payload_days: int | None = Field(default=None, ge=1, le=3650)
    # Day partitions of ``attempts`` made ahead of today; rows deleted per statement.
    retention_partitions_ahead_days: int = Field(default=7, ge=1, le=60)
    retention_batch_size: int = Field(default=5000, ge=1)
    # How long a partition drop or attach waits for its lock before giving up until the
    # next run (it never queues the delivery engine's inserts behind a long query).
    retention_lock_timeout_ms: int = Field(default=2000, ge=1)

    @field_validator("sealing_keys")
    @classmethod
    def _sealing_keys_parse(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from webhooks_core.endpoints.sealing import KeyRing

            KeyRing.parse(value.get_secret_value())  # raises naming the problem, not the key
        return value


class EndpointSettings(CoreSettings):
    """The endpoint rules that the API and the delivery engine share.

    Which targets are allowed (the API checks an endpoint's URL when it is registered, the
    engine again before each request), and the breaker and auto-disable windows (the engine
    applies them; the API, the console and the metrics gauges report an endpoint's health
    with the same numbers).
    """

    # Outbound targets: CIDR ranges that are allowed although private or loopback.
    allowed_target_networks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    circuit_breaker_threshold: int = Field(default=5, ge=1)
    circuit_breaker_cooldown_seconds: float = Field(default=60.0, gt=0)
    auto_disable_after_seconds: int = Field(default=5 * 86_400, ge=60)

    @field_validator("allowed_target_networks", mode="before")
    @classmethod
    def _networks_from_csv(cls, value: object) -> object:
        return split_csv(value)

    @field_validator("allowed_target_networks")
    @classmethod
    def _networks_parse(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value

    @cached_property
    def allowed_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The parsed form of ``allowed_target_networks``."""
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.allowed_target_networks)


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced, for log lines and error messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown without its userinfo
        return url.split("@")[-1]
