"""Request and response models of the endpoint routes: the endpoint with its auth, OAuth, TLS and
signature settings, its health, and its secret and signing key."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    StrictBool,
    computed_field,
    field_validator,
    model_validator,
)

from registration.api.credential_schemas import (
    OAuthIn,
    OAuthOut,
    TLSIn,
    TLSOut,
    oauth_view,
    tls_view,
)
from registration.api.flow_schemas import EndpointFlowOut, flow_view
from registration.api.schemas import (
    ChannelName,
    EventTypeName,
    HeaderName,
    ListQuery,
    ListResponse,
    Out,
    StoredHeaders,
    StoredNames,
    StoredObject,
    StoredText,
    Strict,
    check_custom_headers,
    omittable,
)
from registration.runtime import runtime
from webhooks_core.endpoints.health import endpoint_condition
from webhooks_core.messages.envelope import utcnow

# RFC 7617: a user-id holds no colon; RFC 6750: a bearer token is a b64token.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def _username(value: str) -> str:
    if ":" in value or _CONTROL.search(value):
        raise ValueError("must not contain a colon or control characters (RFC 7617)")
    return value


def _password(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _token(value: str) -> str:
    if not _B64TOKEN.fullmatch(value):
        raise ValueError(
            "must be a b64token (RFC 6750): letters, digits and -._~+/ then optional ="
        )
    return value


Username = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_username)]
Password = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_password)]
BearerToken = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_token)]


class BasicAuthIn(Strict):
    """HTTP basic auth (RFC 7617), sent as ``Authorization: Basic ...``."""

    type: Literal["basic"]
    username: Username = Field(description="no colon, no control characters")
    password: Password = Field(
        description="stored sealed, shown masked; sending the masked value back keeps it",
    )


class BearerAuthIn(Strict):
    """A bearer token (RFC 6750), sent as ``Authorization: Bearer <token>``."""

    type: Literal["bearer"]
    token: BearerToken = Field(
        description="stored sealed, shown masked; sending the masked value back keeps it",
    )


AuthIn = Annotated[BasicAuthIn | BearerAuthIn, Field(discriminator="type")]


def _distinct(value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        raise ValueError("lists each scheme once")
    return value


SignatureSchemes = Annotated[
    list[Literal["v1", "v1a"]], Field(min_length=1, max_length=2), AfterValidator(_distinct)
]


def _v1_only() -> list[Literal["v1", "v1a"]]:
    return ["v1"]


_SCHEMES_DESCRIPTION = (
    "Standard Webhooks signatures each delivery carries: v1 (HMAC-SHA256 with the whsec_"
    " secret), v1a (Ed25519 with the endpoint's whsk_ key, verified with its whpk_ public"
    " key), or both"
)
_AUTH_DESCRIPTION = (
    "how the platform authenticates to the endpoint: basic (username, password) or bearer"
    " (token), sent in the Authorization header (then no custom Authorization header);"
    " stored sealed"
)


class AuthOut(BaseModel):
    """An endpoint's auth setting as shown: the secret part masked."""

    type: Literal["basic", "bearer"]
    username: str | None = Field(default=None, description="basic only")
    password: str | None = Field(default=None, description="basic only, masked")
    token: str | None = Field(default=None, description="bearer only, masked")


_HEADERS_DESCRIPTION = (
    "sent with every delivery; those carrying a credential (Authorization, Proxy-Authorization,"
    " Cookie, names with token, secret, key, auth, passw, credential, session, signature) are"
    " stored sealed and shown masked; a masked value sent back in a PATCH keeps the stored one"
)


def _check_schedule(value: list[int] | None) -> list[int] | None:
    if value is not None and not value:
        raise ValueError("must list at least one delay, or be null for the default")
    return value


RetryDelay = Annotated[int, Field(ge=0, le=7 * 86_400)]

KeyFailurePolicyName = Literal["skip", "block"]
_KEY_FAILURE_POLICY_DESCRIPTION = (
    "what a dead-lettered delivery with an ordering key does to the later messages of its key:"
    " skip (they go on) or block (they wait until it is redriven or resent)"
)

_ADAPTIVE_FLOW_DESCRIPTION = (
    "adaptive flow control: the delivery engine lowers the endpoint's concurrency and rate"
    " below the configured ones on 429, 503, timeouts and rising latency; false: only the"
    " configured max_in_flight and rate_limit, a 429 counts as a failure, and what was"
    " learnt is dropped"
)


class EndpointFields(Strict):
    """Fields an endpoint is created or updated with."""

    description: str = Field(default="", max_length=1024)
    event_types: list[EventTypeName] = Field(
        default_factory=list, max_length=256, description="empty subscribes to every type"
    )
    channels: list[ChannelName] | None = Field(default=None, max_length=16)
    headers: dict[HeaderName, str] = Field(
        default_factory=dict, max_length=32, description=_HEADERS_DESCRIPTION
    )
    rate_limit: int | None = Field(default=None, ge=1, le=100_000, description="per second")
    max_in_flight: int | None = Field(default=None, ge=1, le=256)
    adaptive_flow: StrictBool = Field(default=True, description=_ADAPTIVE_FLOW_DESCRIPTION)
    retry_schedule: list[RetryDelay] | None = Field(
        default=None, max_length=32, description="seconds before each retry"
    )
    key_failure_policy: KeyFailurePolicyName = Field(
        default="skip", description=_KEY_FAILURE_POLICY_DESCRIPTION
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    auth: AuthIn | None = Field(default=None, description=_AUTH_DESCRIPTION)
    signature_schemes: SignatureSchemes = Field(
        default_factory=_v1_only, description=_SCHEMES_DESCRIPTION
    )
    oauth: OAuthIn | None = Field(
        default=None, description="OAuth 2.0 client credentials; null: none"
    )
    tls: TLSIn | None = Field(default=None, description="mutual TLS and CA bundle; null: none")

    _headers = field_validator("headers")(check_custom_headers)
    _schedule = field_validator("retry_schedule")(_check_schedule)


class EndpointIn(EndpointFields):
    url: str = Field(min_length=1, max_length=2048)
    secret: str | None = Field(
        default=None, description="whsec_ secret to use; generated when omitted"
    )
    signing_key: str | None = Field(
        default=None,
        description="whsk_ Ed25519 secret key for v1a; generated when v1a is signed and it is"
        " omitted; its whpk_ public key is served by GET .../signing-key",
    )


class EndpointPatch(Strict):
    """Fields left out are unchanged; ``null`` is accepted only where it means something."""

    url: str = omittable(min_length=1, max_length=2048)
    description: str = omittable(max_length=1024)
    event_types: list[EventTypeName] = omittable(max_length=256)
    channels: list[ChannelName] | None = Field(
        default=None, max_length=16, description="null: every channel"
    )
    headers: dict[HeaderName, str] = omittable(max_length=32, description=_HEADERS_DESCRIPTION)
    rate_limit: int | None = Field(default=None, ge=1, le=100_000, description="null: no limit")
    max_in_flight: int | None = Field(default=None, ge=1, le=256, description="null: no limit")
    adaptive_flow: StrictBool = omittable(description=_ADAPTIVE_FLOW_DESCRIPTION)
    retry_schedule: list[RetryDelay] | None = Field(
        default=None, max_length=32, description="null: the platform's schedule"
    )
    key_failure_policy: KeyFailurePolicyName = omittable(
        description=_KEY_FAILURE_POLICY_DESCRIPTION
    )
    metadata: dict[str, Any] = omittable()
    auth: AuthIn | None = Field(default=None, description=_AUTH_DESCRIPTION + "; null: none")
    signature_schemes: SignatureSchemes = omittable(description=_SCHEMES_DESCRIPTION)
    oauth: OAuthIn | None = Field(
        default=None, description="replaces the OAuth client credentials; null removes them"
    )
    tls: TLSIn | None = Field(
        default=None, description="replaces the TLS settings; null removes them"
    )

    _headers = field_validator("headers")(check_custom_headers)
    _schedule = field_validator("retry_schedule")(_check_schedule)


class EndpointOut(Out):
    id: uuid.UUID
    application_id: uuid.UUID
    url: str
    description: StoredText
    event_types: StoredNames
    channels: list[str] | None
    headers: StoredHeaders = Field(
        validation_alias="shown_headers",
        description="custom headers; those carrying a credential (Authorization, Cookie, names"
        " with token, secret, key, auth, password...) are stored sealed and shown masked",
    )
    auth: AuthOut | None = Field(
        validation_alias="shown_auth", description="the auth setting, its secret masked"
    )
    signature_schemes: list[str] = Field(description=_SCHEMES_DESCRIPTION)
    rate_limit: int | None
    max_in_flight: int | None
    adaptive_flow: bool = Field(default=True, description=_ADAPTIVE_FLOW_DESCRIPTION)
    retry_schedule: list[int] | None
    key_failure_policy: str = Field(default="skip", description=_KEY_FAILURE_POLICY_DESCRIPTION)
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    paused_at: datetime | None = Field(
        description="set while paused: deliveries are accepted and held, none is sent,"
        " until POST .../resume sends them in acceptance order"
    )
    metadata: StoredObject = Field(validation_alias="metadata_")
    consecutive_failures: int
    failing_since: datetime | None
    circuit_open_until: datetime | None
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    created_at: datetime
    updated_at: datetime
    oauth: OAuthOut | None = Field(
        default=None, description="OAuth 2.0 client credentials (without the secret)"
    )
    tls: TLSOut | None = Field(
        default=None, description="mutual TLS: the client certificate and its expiry"
    )
    flow: EndpointFlowOut | None = Field(
        default=None,
        validation_alias="flow_view_",  # built from the row below, not read as a column
        description="the limits adaptive flow control allows now",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _with_credentials(cls, data: Any, handler: Any) -> Any:
        """Read the nested credentials from an endpoint row's columns."""
        out = handler(data)
        if hasattr(data, "oauth_token_url"):
            out.oauth = oauth_view(data)
            out.tls = tls_view(data)
            out.flow = flow_view(data)
        return out

    @computed_field  # type: ignore[prop-decorator]
    @property
    def health(self) -> EndpointHealthOut:
        """The shared health reading (webhooks_core.endpoints.health), as console and metrics."""
        settings = runtime().settings
        condition = endpoint_condition(
            self,
            threshold=settings.circuit_breaker_threshold,
            auto_disable_after_seconds=settings.auto_disable_after_seconds,
            now=utcnow(),
        )
        return EndpointHealthOut(
            state=condition.state,
            circuit_open_until=condition.circuit_open_until,
            auto_disable_at=condition.auto_disable_at,
        )


class EndpointHealthOut(BaseModel):
    """What the failures mean now: the same states as the console and the metrics."""

    state: Literal["healthy", "failing", "half_open", "open", "disabled"] = Field(
        description="healthy; failing (the last attempts failed); open (the breaker rests,"
        " nothing is sent until circuit_open_until); half_open (the next attempt is a single"
        " probe); disabled"
    )
    circuit_open_until: datetime | None = Field(description="while open: when the probe may go")
    auto_disable_at: datetime | None = Field(
        description="while failing: when the endpoint is disabled unless an attempt succeeds"
    )


class EndpointList(ListResponse[EndpointOut]):
    pass


class EndpointQuery(ListQuery):
    event_type: EventTypeName | None = None
    state: str | None = Field(default=None, pattern="^(enabled|disabled)$")


class EndpointPath(BaseModel):
    app_id: uuid.UUID
    endpoint_id: uuid.UUID


class DisableIn(Strict):
    reason: str | None = Field(default=None, max_length=512)


class RotateIn(Strict):
    key: str | None = Field(default=None, description="whsec_ secret; generated when omitted")


class PreviousSecret(BaseModel):
    key: str
    expires_at: datetime


class SecretOut(BaseModel):
    key: str
    previous: list[PreviousSecret]


class RotateSigningKeyIn(Strict):
    key: str | None = Field(
        default=None,
        description="whsk_ Ed25519 secret key (base64 of the 32-byte seed, or seed and public"
        " key); generated when omitted",
    )


class PreviousPublicKey(BaseModel):
    public_key: str
    expires_at: datetime = Field(description="it signs too until then (the grace period)")


class SigningKeyOut(BaseModel):
    """The whpk_ public keys receivers verify v1a signatures with (never the whsk_ key)."""

    public_key: str = Field(description="whpk_ + base64 of the 32-byte Ed25519 public key")
    previous: list[PreviousPublicKey]
