"""Routes that put messages into the platform over HTTP: publish, and relay mode."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from flask import Response, jsonify, request
from flask_openapi3 import APIBlueprint, OpenAPI, Tag
from pydantic import AliasChoices, BaseModel, Field, field_validator

from registration.api.auth import authorize_application
from registration.api.problems import Problem
from registration.api.schemas import (
    ApplicationPath,
    ChannelName,
    EventTypeName,
    HeaderName,
    Strict,
    _check_headers,
)
from registration.api.serialize import BEARER
from registration.runtime import runtime
from registration.services import ingest
from registration.services.errors import InvalidField

EVENT_ID_PATTERN = r"^[A-Za-z0-9_\-.:]{1,128}$"
IDEMPOTENCY_KEY_MAX = 256

tag = Tag(name="messages", description="Publish messages and send one-off webhooks")
bp = APIBlueprint(
    "ingest",
    __name__,
    url_prefix="/api/v1/applications/<app_id>",
    abp_tags=[tag],
    abp_security=BEARER,
    abp_responses={401: Problem, 404: Problem, 409: Problem, 413: Problem, 422: Problem},
)


class IdempotencyHeader(BaseModel):
    """``Idempotency-Key``: a repeat within the idempotency window returns the first result."""

    idempotency_key: str | None = Field(
        default=None, alias="Idempotency-Key", min_length=1, max_length=IDEMPOTENCY_KEY_MAX
    )


class MessageIn(Strict):
    """A message to deliver to every endpoint of the application subscribed to its type."""

    event_type: EventTypeName
    payload: dict[str, Any] = Field(
        validation_alias=AliasChoices("payload", "data"), description="also accepted as data"
    )
    event_id: str | None = Field(
        default=None,
        pattern=EVENT_ID_PATTERN,
        description="becomes webhook-id; an id already published is not stored again",
    )
    channels: list[ChannelName] | None = Field(default=None, max_length=10)
    timestamp: datetime | None = Field(default=None, description="when it happened (now)")


class RelayIn(Strict):
    """One webhook to one URL, without a subscription."""

    url: str = Field(min_length=1, max_length=2048)
    payload: dict[str, Any] = Field(
        validation_alias=AliasChoices("payload", "data"), description="also accepted as data"
    )
    event_type: EventTypeName | None = Field(default=None, description="relay.message if unset")
    headers: dict[HeaderName, str] = Field(default_factory=dict, max_length=32)
    secret: str | None = Field(default=None, description="whsec_ secret; generated if unset")
    event_id: str | None = Field(default=None, pattern=EVENT_ID_PATTERN)

    _headers = field_validator("headers")(_check_headers)


class MessageAccepted(BaseModel):
    """The stored message; ``duplicate`` when a repeat returned the first result."""

    id: str = Field(description="the event id (webhook-id)")
    message_id: int
    event_type: str
    timestamp: datetime
    channels: list[str] | None
    deliveries: int = Field(description="deliveries the message fanned out to")
    duplicate: bool


class RelayAccepted(MessageAccepted):
    """The relayed message and the delivery to follow it by."""

    delivery_id: int | None
    endpoint_id: uuid.UUID | None
    secret: str | None = Field(description="the generated signing secret, shown only once")


def _accepted(result: ingest.Accepted) -> dict[str, Any]:
    message = result.message
    return MessageAccepted(
        id=message.event_id,
        message_id=message.id,
        event_type=message.event_type,
        timestamp=message.occurred_at,
        channels=message.channels,
        deliveries=result.deliveries,
        duplicate=result.duplicate,
    ).model_dump(mode="json")


def _raw_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


@bp.post("/messages", responses={202: MessageAccepted})
def publish_message(
    path: ApplicationPath, body: MessageIn, header: IdempotencyHeader
) -> tuple[Response, int]:
    """Publish a message: validated against its event type, stored once, fanned out (202).

    Send ``Idempotency-Key`` to retry safely: a repeat within the idempotency window returns
    the first result; the same key with a different body is a 422.
    """
    app_id = authorize_application(path.app_id)
    result = ingest.publish_message(
        runtime().sessions,
        runtime().settings,
        app_id,
        event_type=body.event_type,
        payload=body.payload,
        event_id=body.event_id,
        channels=body.channels,
        timestamp=body.timestamp,
        idempotency_key=_idempotency_key(header),
        body=_raw_body(),
    )
    return jsonify(_accepted(result)), 202


@bp.post("/relay", responses={202: RelayAccepted})
def relay_message(
    path: ApplicationPath, body: RelayIn, header: IdempotencyHeader
) -> tuple[Response, int]:
    """Send one signed webhook to ``url`` without a subscription, with the usual retries and
    attempt log (202).  Follow it by ``delivery_id``; keep ``secret`` (shown only once)."""
    app_id = authorize_application(path.app_id)
    result = ingest.relay_message(
        runtime().sessions,
        runtime().settings,
        app_id,
        url=body.url,
        payload=body.payload,
        event_type=body.event_type,
        headers=body.headers,
        secret=body.secret,
        event_id=body.event_id,
        idempotency_key=_idempotency_key(header),
        body=_raw_body(),
    )
    view = RelayAccepted(
        **_accepted(result),
        delivery_id=result.delivery_id,
        endpoint_id=result.endpoint_id,
        secret=result.secret,
    )
    return jsonify(view.model_dump(mode="json")), 202


def _idempotency_key(header: IdempotencyHeader) -> str | None:
    key = header.idempotency_key
    if key is not None and not key.isprintable():
        raise InvalidField("must be printable text", field=ingest.IDEMPOTENCY_FIELD)
    return key


def register(app: OpenAPI) -> None:
    """Register the routes without hiding other operations documented on the same paths.

    flask-openapi3 replaces a whole path item per blueprint, and ``/messages`` also has the
    message list (another blueprint): keep the operations registered before this one.
    """
    before = dict(app.paths)
    app.register_api(bp)
    for uri, earlier in before.items():
        mine = app.paths.get(uri)
        if mine is None or mine is earlier:
            continue
        for method in ("get", "put", "post", "delete", "patch", "options", "head", "trace"):
            if getattr(mine, method, None) is None and getattr(earlier, method, None) is not None:
                setattr(mine, method, getattr(earlier, method))
