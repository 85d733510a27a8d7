"""Request and response models of the management API; the OpenAPI spec is built from them."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from webhooks_core.deliveries.ordering import ORDERING_KEY_MAX_LENGTH, check_ordering_key
from webhooks_core.messages.envelope import CHANNEL_PATTERN, EVENT_TYPE_PATTERN

T = TypeVar("T")

EventTypeName = Annotated[str, StringConstraints(pattern=EVENT_TYPE_PATTERN, max_length=128)]
ChannelName = Annotated[str, StringConstraints(pattern=CHANNEL_PATTERN)]
OrderingKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=ORDERING_KEY_MAX_LENGTH),
    AfterValidator(check_ordering_key),
]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")]

# An HTTP field value (RFC 9110 5.5): visible characters, spaces and tabs, and obs-text, which
# HTTP/1.1 clients send as Latin-1.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")

# Headers the platform sets itself, which an endpoint may not override.
RESERVED_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
        "content-length",
        "host",
        "transfer-encoding",
        "connection",
        "user-agent",
    }
)


def check_custom_headers(value: dict[str, str] | None) -> dict[str, str] | None:
    """Validate the custom headers a request asks to send (an endpoint's, a relayed webhook's).

    They may not replace a header the platform sets itself (the signature, the body's framing),
    and each value must be one line that HTTP/1.1 carries (RFC 9110 5.5).  Both request bodies
    that take headers use this one rule; a ``ValueError`` is a 422 on their ``headers`` field.
    """
    if value is None:
        return None
    reserved = sorted(name for name in value if name.lower() in RESERVED_HEADERS)
    if reserved:
        raise ValueError(f"headers set by the platform cannot be overridden: {', '.join(reserved)}")
    for name, header_value in value.items():
        if len(header_value) > 1024 or not _FIELD_VALUE.fullmatch(header_value):
            raise ValueError(
                f"header {name!r} must be one line of at most 1024 characters, without control"
                " characters or characters beyond U+00FF (what HTTP carries)"
            )
    return value


def _without_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def omittable(**constraints: Any) -> Any:
    """A PATCH field that may be left out (unchanged) but is never null.

    ``null`` is refused with 422 naming the field: saved, it would make every later read of
    the object fail.  (The ``None`` default only marks "not sent": views read
    ``model_dump(exclude_unset=True)``.)
    """
    return Field(default=None, json_schema_extra=_without_default, **constraints)


class Strict(BaseModel):
    """Request bodies refuse unknown fields, so typos are reported instead of ignored."""

    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    """Response bodies are built from ORM objects."""

    model_config = ConfigDict(from_attributes=True, populate_by_name=True)


def _null_as(empty: Callable[[], Any]) -> BeforeValidator:
    return BeforeValidator(lambda value: empty() if value is None else value)


# Tolerant readers of what earlier versions could store (a PATCH with null saved JSON null):
# such a row reads back as the empty value instead of failing every list it is part of.
StoredText = Annotated[str, _null_as(str)]
StoredFlag = Annotated[bool, _null_as(bool)]
StoredObject = Annotated[dict[str, Any], _null_as(dict)]
StoredHeaders = Annotated[dict[str, str], _null_as(dict)]
StoredNames = Annotated[list[str], _null_as(list)]


class ListResponse(BaseModel, Generic[T]):
    """A page: ``iterator`` resumes after the last item; ``done`` when there is no more."""

    data: list[T]
    iterator: str | None
    done: bool


class ListQuery(Strict):
    """Pagination parameters of every list."""

    limit: int = Field(default=50, ge=1, le=250)
    iterator: str | None = Field(default=None, max_length=512)


# Applications and tokens ---------------------------------------------------------------


class RetentionIn(Strict):
    """Days this application's data is kept (docs/retention.md); null or left out: the
    platform's default (``WEBHOOKS_RETENTION_*_DAYS``: 30 days of attempts, 90 of messages,
    payloads as long as their message).  Attempts and payloads are kept no longer than
    messages."""

    attempts_days: int | None = Field(default=None, ge=1, le=3650, description="attempts kept")
    messages_days: int | None = Field(
        default=None, ge=1, le=3650, description="messages with their deliveries kept"
    )
    payload_days: int | None = Field(
        default=None, ge=1, le=3650, description="payloads kept (then replaced by {})"
    )


class RetentionOut(Out):
    """The application's own retention values; null: the platform's default."""

    attempts_days: int | None
    messages_days: int | None
    payload_days: int | None


class ApplicationIn(Strict):
    name: str = Field(min_length=1, max_length=256)
    uid: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-.]{1,64}$")
    metadata: dict[str, Any] = Field(default_factory=dict)
    retention: RetentionIn = Field(default_factory=RetentionIn)


class ApplicationPatch(Strict):
    name: str = omittable(min_length=1, max_length=256)
    metadata: dict[str, Any] = omittable()
    # The fields sent replace those values (null: back to the default); others stay.
    retention: RetentionIn = omittable()


class ApplicationOut(Out):
    id: uuid.UUID
    name: str
    uid: str | None
    metadata: StoredObject = Field(validation_alias="metadata_")
    retention: RetentionOut
    created_at: datetime
    updated_at: datetime


class ApplicationList(ListResponse[ApplicationOut]):
    pass


class ApplicationPath(BaseModel):
    app_id: uuid.UUID


class TokenIn(Strict):
    name: str = Field(default="default", min_length=1, max_length=256)


class TokenOut(Out):
    id: uuid.UUID
    application_id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class IssuedTokenOut(Out):
    """The token value appears here once and is never shown again."""

    id: uuid.UUID
    application_id: uuid.UUID
    name: str
    token: str
    created_at: datetime


class TokenList(BaseModel):
    data: list[TokenOut]


class TokenPath(BaseModel):
    app_id: uuid.UUID
    token_id: uuid.UUID


# Event types ---------------------------------------------------------------------------


class EventTypeIn(Strict):
    name: EventTypeName
    description: str = Field(default="", max_length=4096)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    example: dict[str, Any] | None = None


class EventTypePatch(Strict):
    description: str = omittable(max_length=4096)
    schema_: dict[str, Any] | None = Field(
        default=None, alias="schema", description="null removes the schema"
    )
    example: dict[str, Any] | None = Field(default=None, description="null removes the example")
    archived: bool = omittable()


class EventTypeOut(Out):
    name: str
    description: StoredText
    schema_: dict[str, Any] | None = Field(
        default=None, validation_alias="schema", serialization_alias="schema"
    )
    example: dict[str, Any] | None
    archived: StoredFlag
    created_at: datetime
    updated_at: datetime


class EventTypeList(ListResponse[EventTypeOut]):
    pass


class EventTypeQuery(ListQuery):
    include_archived: bool = False


class EventTypePath(BaseModel):
    name: EventTypeName
