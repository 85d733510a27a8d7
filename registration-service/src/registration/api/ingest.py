"""Routes that put messages into the platform over HTTP: publish, and relay mode."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from flask import Response, jsonify, request
from flask_openapi3 import APIBlueprint, OpenAPI, Tag
from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SkipValidation,
    ValidationError,
    field_validator,
)

from registration.api.auth import authorize_application
from registration.api.problems import FieldError, Problem, field_errors, judge_items_in_view
from registration.api.schemas import (
    ApplicationPath,
    ChannelName,
    EventTypeName,
    HeaderName,
    OrderingKey,
    Strict,
    check_custom_headers,
)
from registration.api.serialize import BEARER
from registration.config import APISettings
from registration.runtime import runtime
from registration.services import ingest
from registration.services.errors import DomainError, InvalidField
from webhooks_core import json_input
from webhooks_core.json_input import Timestamp

EVENT_ID_PATTERN = r"^[A-Za-z0-9_\-.:]{1,128}$"
IDEMPOTENCY_KEY_MAX = 256
BATCH_MAX = 100

tag = Tag(name="messages", description="Publish messages and send one-off webhooks")
bp = APIBlueprint(
    "ingest",
    __name__,
    url_prefix="/api/v1/applications/<app_id>",
    abp_tags=[tag],
    abp_security=BEARER,
    abp_responses={401: Problem, 404: Problem, 413: Problem, 422: Problem},
)


class IdempotencyHeader(BaseModel):
    """``Idempotency-Key``: a repeat within the idempotency window returns the first result."""

    idempotency_key: str | None = Field(
        default=None, alias="Idempotency-Key", min_length=1, max_length=IDEMPOTENCY_KEY_MAX
    )

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The JSON schema; the default one is computed once.

        flask-openapi3 asks a header model for it on every request to find its fields, and
        generating it was a quarter of the API's CPU per published message.
        """
        if args or kwargs:
            return super().model_json_schema(*args, **kwargs)
        if cls not in _HEADER_SCHEMAS:
            _HEADER_SCHEMAS[cls] = super().model_json_schema()
        return _HEADER_SCHEMAS[cls]


_HEADER_SCHEMAS: dict[type[BaseModel], dict[str, Any]] = {}


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
    timestamp: Timestamp | None = Field(
        default=None, description="when it happened (now); 1970 to 9999, stored in UTC"
    )
    ordering_key: OrderingKey | None = Field(
        default=None,
        description="1 to 256 printable characters: for each endpoint, the messages with the "
        "same key are delivered one at a time, in the order they were accepted "
        "(docs/delivery.md, Ordering)",
    )


class BatchMessageIn(MessageIn):
    """One message of a batch, with its own idempotency key."""

    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX,
        description="as the Idempotency-Key header of a single publish",
    )


class MessageBatchIn(Strict):
    """Up to 100 messages to publish in one request.

    Each item is documented as a ``BatchMessageIn`` but judged on its own by the view: an item
    that breaks the rules is refused alone, in its result.
    """

    messages: list[SkipValidation[BatchMessageIn]] = Field(min_length=1, max_length=BATCH_MAX)


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

    _headers = field_validator("headers")(check_custom_headers)


class MessageAccepted(BaseModel):
    """The stored message; ``duplicate`` when a repeat returned the first result."""

    id: str = Field(description="the event id (webhook-id)")
    message_id: int
    event_type: str
    timestamp: datetime
    channels: list[str] | None
    ordering_key: str | None = None
    deliveries: int = Field(description="deliveries the message fanned out to")
    duplicate: bool


class RelayAccepted(MessageAccepted):
    """The relayed message and the delivery to follow it by."""

    delivery_id: int | None
    endpoint_id: uuid.UUID | None
    secret: str | None = Field(description="the generated signing secret, shown only once")


class BatchItemResult(BaseModel):
    """What became of one message of a batch: ``message`` when accepted (status 202, or a
    repeat), ``error`` when refused (413 or 422, as a single publish would answer)."""

    index: int = Field(description="position of the message in the request")
    status: int
    message: MessageAccepted | None = None
    error: Problem | None = None


class MessageBatchAccepted(BaseModel):
    """Per-message results of a batch, in request order."""

    accepted: int = Field(description="messages stored by this request")
    duplicates: int = Field(description="repeats answered with the first result")
    refused: int
    results: list[BatchItemResult]


def _accepted(result: ingest.Accepted) -> dict[str, Any]:
    message = result.message
    return MessageAccepted(
        id=message.event_id,
        message_id=message.id,
        event_type=message.event_type,
        timestamp=message.occurred_at,
        channels=message.channels,
        ordering_key=message.ordering_key,
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
    settings = runtime().settings
    publication = ingest.prepare_publication(
        settings,
        event_type=body.event_type,
        payload=body.payload,
        event_id=body.event_id,
        channels=body.channels,
        timestamp=body.timestamp,
        ordering_key=body.ordering_key,
        idempotency_key=_idempotency_key(header),
        body=_raw_body(),
    )
    result = ingest.publish_message(runtime().sessions, settings, app_id, publication)
    return jsonify(_accepted(result)), 202


@bp.post("/messages/batch", responses={200: MessageBatchAccepted})
def publish_message_batch(path: ApplicationPath, body: MessageBatchIn) -> tuple[Response, int]:
    """Publish up to 100 messages in one request and one transaction (200).

    Each message is treated as a single publish would treat it, with its own
    ``idempotency_key`` and its own result: accepted (202), a repeat returning the first
    result, or refused (413, 422) without affecting the others, also when the message
    itself breaks the field or JSON rules (its result names the fields, relative to the
    message).  Only a request that is not a list of 1 to 100 messages is refused whole (422).
    """
    app_id = authorize_application(path.app_id)
    settings = runtime().settings
    prepared: list[ingest.Publication | DomainError] = []
    for raw in _raw_body().get("messages", []):
        try:
            prepared.append(_prepare_batch_item(settings, raw))
        except DomainError as exc:
            prepared.append(exc)
    outcomes = ingest.publish_messages(runtime().sessions, settings, app_id, prepared)
    results = [_batch_item(index, outcome) for index, outcome in enumerate(outcomes)]
    view = MessageBatchAccepted(
        accepted=sum(1 for r in results if r.message is not None and not r.message.duplicate),
        duplicates=sum(1 for r in results if r.message is not None and r.message.duplicate),
        refused=sum(1 for r in results if r.error is not None),
        results=results,
    )
    answer = view.model_dump(mode="json")
    for result in answer["results"]:  # each has its message or its error, not both
        for absent in [key for key in ("message", "error") if result[key] is None]:
            del result[absent]
    return jsonify(answer), 200


judge_items_in_view(f"{bp.name}.{publish_message_batch.__name__}", "messages")


class InvalidItem(InvalidField):
    """A message of a batch breaking the field rules, with every field error."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("the message has invalid fields")
        self.errors = errors


def _prepare_batch_item(settings: APISettings, raw: Any) -> ingest.Publication:
    json_problems = json_input.problems(raw)
    if json_problems:
        raise InvalidItem([FieldError(field=p.field, message=p.message) for p in json_problems])
    try:
        item = BatchMessageIn.model_validate(raw)
    except ValidationError as exc:
        raise InvalidItem(field_errors(exc)) from None
    if item.idempotency_key is not None and not item.idempotency_key.isprintable():
        raise InvalidField("must be printable text", field="idempotency_key")
    return ingest.prepare_publication(
        settings,
        event_type=item.event_type,
        payload=item.payload,
        event_id=item.event_id,
        channels=item.channels,
        timestamp=item.timestamp,
        ordering_key=item.ordering_key,
        idempotency_key=item.idempotency_key,
        body={k: v for k, v in raw.items() if k != "idempotency_key"},
    )


def _batch_item(index: int, outcome: ingest.Accepted | DomainError) -> BatchItemResult:
    if isinstance(outcome, ingest.Accepted):
        message = MessageAccepted.model_validate(_accepted(outcome))
        return BatchItemResult(index=index, status=202, message=message)
    if isinstance(outcome, InvalidItem):
        errors = outcome.errors
    else:
        errors = [FieldError(field=outcome.field, message=outcome.detail)] if outcome.field else []
    problem = Problem(
        title=outcome.title, status=outcome.status, detail=outcome.detail, errors=errors
    )
    return BatchItemResult(index=index, status=outcome.status, error=problem)


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
