"""Endpoints (subscriptions), their signing secrets and their health."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from webhooks_core.endpoints import credentials
from webhooks_core.models.base import Base, created_at, updated_at, uuid_pk

if TYPE_CHECKING:
    from webhooks_core.models.flow import EndpointFlow


class EndpointKind(enum.StrEnum):
    """A subscription receives fanned-out messages; a relay endpoint one ad-hoc delivery."""

    SUBSCRIPTION = "subscription"
    RELAY = "relay"


class Endpoint(Base):
    """An HTTP URL of an application that receives the event types it subscribes to.

    An empty ``event_types`` subscribes to every type.  ``channels`` narrows what it receives
    when a message names channels.  The unique index makes ``(url, event types)`` the upsert
    key within an application; ``event_types`` is stored sorted so equal sets compare equal.
    """

    __tablename__ = "endpoints"
    __table_args__ = (
        Index(
            "uq_endpoints_application_url_event_types",
            "application_id",
            "url",
            "event_types",
            unique=True,
            postgresql_where=text("kind = 'subscription' AND deleted_at IS NULL"),
        ),
        Index(
            "ix_endpoints_event_types",
            "event_types",
            postgresql_using="gin",
            postgresql_with={"fastupdate": "off"},
        ),
        # With the GIN index above, fan-out matching ("every type OR this one") is a
        # BitmapOr of two index scans, not a read of all the application's endpoints.
        Index(
            "ix_endpoints_all_types",
            "application_id",
            postgresql_where=text("cardinality(event_types) = 0 AND deleted_at IS NULL"),
        ),
        Index(
            "ix_endpoints_circuit_open",
            "circuit_open_until",
            postgresql_where=text("circuit_open_until IS NOT NULL"),
        ),
        # The claim reads paused endpoints with open breakers on every cycle (a BitmapOr).
        Index("ix_endpoints_paused", "paused_at", postgresql_where=text("paused_at IS NOT NULL")),
        CheckConstraint("kind IN ('subscription', 'relay')", name="kind"),
        CheckConstraint("key_failure_policy IN ('skip', 'block')", name="key_failure_policy"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    application_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16), server_default=EndpointKind.SUBSCRIPTION.value)
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, server_default="", default="")
    event_types: Mapped[list[str]] = mapped_column(server_default=text("'{}'"), default=list)
    channels: Mapped[list[str] | None]
    headers: Mapped[dict[str, str]] = mapped_column(
        server_default=text("'{}'::jsonb"), default=dict
    )
    # Sealed (webhooks_core.endpoints.sealing): the custom headers that carry a credential
    # (a JSON object) and the basic or bearer auth setting (webhooks_core.endpoints.credentials).
    sealed_headers: Mapped[str | None] = mapped_column(Text)
    auth: Mapped[str | None] = mapped_column(Text)
    signature_schemes: Mapped[list[str]] = mapped_column(
        server_default=text("'{v1}'"), default=lambda: ["v1"]
    )
    rate_limit: Mapped[int | None] = mapped_column(comment="deliveries per second at most")
    max_in_flight: Mapped[int | None] = mapped_column(comment="concurrent requests at most")
    adaptive_flow: Mapped[bool] = mapped_column(
        server_default=text("true"),
        default=True,
        comment="false: flow control off, only the configured limits (endpoints.flow)",
    )
    retry_schedule: Mapped[list[int] | None] = mapped_column(comment="seconds; overrides settings")
    # What a dead-lettered keyed delivery does to its key (deliveries.ordering): skip or block.
    key_failure_policy: Mapped[str] = mapped_column(
        String(8), server_default="skip", default="skip"
    )
    enabled: Mapped[bool] = mapped_column(server_default=text("true"), default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[datetime | None]
    paused_at: Mapped[datetime | None] = mapped_column(
        comment="paused: deliveries accepted and held, none sent (endpoints.pause)"
    )
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", server_default=text("'{}'::jsonb"), default=dict
    )
    # Health, maintained by the delivery engine.
    consecutive_failures: Mapped[int] = mapped_column(server_default=text("0"), default=0)
    failing_since: Mapped[datetime | None]
    circuit_open_until: Mapped[datetime | None]
    last_attempt_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()
    deleted_at: Mapped[datetime | None] = mapped_column(
        comment="soft delete: deliveries stay queryable, cancelled"
    )
    # OAuth 2.0 client credentials (webhooks_core.endpoints.authentication); all set or none.
    oauth_token_url: Mapped[str | None] = mapped_column(Text)
    oauth_client_id: Mapped[str | None] = mapped_column(Text)
    oauth_client_secret: Mapped[str | None] = mapped_column(Text, comment="sealed")
    oauth_scopes: Mapped[list[str] | None]
    oauth_audience: Mapped[str | None] = mapped_column(Text)
    oauth_auth_method: Mapped[str | None] = mapped_column(String(32))
    # Mutual TLS: a client certificate with its key, and/or a CA bundle for the server.
    tls_client_certificate: Mapped[str | None] = mapped_column(Text, comment="PEM")
    tls_client_key: Mapped[str | None] = mapped_column(Text, comment="PEM, sealed")
    tls_ca_bundle: Mapped[str | None] = mapped_column(Text, comment="PEM")
    tls_certificate_expires_at: Mapped[datetime | None] = mapped_column(
        comment="the client certificate's notAfter (metrics and alerts)"
    )

    @property
    def shown_headers(self) -> dict[str, str]:
        """The custom headers as the API shows them: those carrying credentials masked."""
        return credentials.shown_headers(self.headers, self.sealed_headers)

    @property
    def shown_auth(self) -> dict[str, str] | None:
        """The auth setting as the API shows it (type, username; the secret masked)."""
        return credentials.masked_auth(self.auth)

    # What the delivery engine learned of its limits (webhooks_core.endpoints.flow); None:
    # nothing, it runs at its configured ones.
    flow_state: Mapped[EndpointFlow | None] = relationship(lazy="selectin", viewonly=True)
    secrets: Mapped[list[EndpointSecret]] = relationship(
        back_populates="endpoint",
        order_by="EndpointSecret.created_at.desc()",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class EndpointSecret(Base):
    """A signing secret, sealed; a rotated-out secret signs until ``expires_at``.

    ``scheme`` ``v1``: a ``whsec_`` HMAC secret; ``v1a``: a ``whsk_`` Ed25519 secret key.
    """

    __tablename__ = "endpoint_secrets"
    __table_args__ = (CheckConstraint("scheme IN ('v1', 'v1a')", name="scheme"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), index=True
    )
    scheme: Mapped[str] = mapped_column(String(8), server_default="v1", default="v1")
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at()
    expires_at: Mapped[datetime | None]

    endpoint: Mapped[Endpoint] = relationship(back_populates="secrets")
