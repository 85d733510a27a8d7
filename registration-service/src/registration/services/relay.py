"""Relay mode: send one webhook to a URL without a subscription."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from registration.config import APISettings
from registration.services.errors import InvalidField
from registration.services.idempotency import (
    claim_key,
    remember_key,
    request_hash,
)
from registration.services.publishing import (
    Accepted,
    StoredMessage,
    check_payload_size,
    known_event,
    require_application,
)
from webhooks_core.db import run_transaction
from webhooks_core.endpoints import credentials, sealing
from webhooks_core.messages.envelope import Envelope
from webhooks_core.messages.fanout import (
    AcceptResult,
    accept_message,
    deliver_to,
    record_accepted,
    record_duplicate,
)
from webhooks_core.models import (
    Delivery,
    Endpoint,
    EndpointKind,
    EndpointSecret,
    Message,
)
from webhooks_core.signing import is_valid_secret, new_secret
from webhooks_core.targets import TargetRefused, check_url

RELAY_EVENT_TYPE = "relay.message"


def relay_message(
    sessions: sessionmaker[Session],
    settings: APISettings,
    app_id: uuid.UUID,
    *,
    url: str,
    payload: dict[str, Any],
    event_type: str | None = None,
    headers: dict[str, str] | None = None,
    secret: str | None = None,
    event_id: str | None = None,
    idempotency_key: str | None = None,
    body: dict[str, Any] | None = None,
) -> Accepted:
    """Send ``payload`` once to ``url`` without a subscription (relay mode).

    Stores a relay endpoint (``kind='relay'``, never matched by fan-out) with its signing
    secret, the message (``source='relay'``) and its single delivery, which the delivery
    engine sends with the usual signing, retries and attempt log.
    """
    try:
        check_url(url, settings.allowed_networks)
    except TargetRefused as exc:
        raise InvalidField(str(exc), field="url") from None
    if secret is not None and not is_valid_secret(secret):
        raise InvalidField("must be whsec_ followed by base64 of 24 to 64 bytes", field="secret")
    check_payload_size(settings, payload)
    event_type = event_type or RELAY_EVENT_TYPE
    envelope = Envelope(
        type=event_type, data=payload, **({"id": event_id} if event_id is not None else {})
    )
    digest = request_hash(body if body is not None else {"url": url, "payload": payload})

    def work(session: Session) -> Accepted:
        require_application(session, app_id)
        if idempotency_key is not None:
            first = claim_key(session, settings, app_id, idempotency_key, digest)
            if first is not None:
                return _relay_view(session, first, duplicate=True)
        result = accept_message(session, envelope, source="relay", application_id=app_id)
        if not result.created:
            message = known_event(session, app_id, result)
            return _relay_view(session, message, duplicate=True)
        plain_headers, sensitive_headers = credentials.split_headers(headers or {})
        endpoint = Endpoint(
            application_id=app_id,
            kind=EndpointKind.RELAY.value,
            url=url,
            description="relay mode",
            event_types=[event_type],
            headers=plain_headers,
            sealed_headers=credentials.seal_json(sensitive_headers),
        )
        session.add(endpoint)
        session.flush()
        signing_secret = secret if secret is not None else new_secret()
        generated = None if secret is not None else signing_secret
        session.add(EndpointSecret(endpoint_id=endpoint.id, secret=sealing.seal(signing_secret)))
        delivery_id = deliver_to(session, result.message_id, endpoint, event_type)
        if idempotency_key is not None:
            remember_key(session, app_id, idempotency_key, digest, result.message_id)
        stored = session.get(Message, result.message_id)
        assert stored is not None
        return Accepted(
            StoredMessage.of(stored),
            1,
            duplicate=False,
            delivery_id=delivery_id,
            endpoint_id=endpoint.id,
            secret=generated,
        )

    # Counted after the commit: a transaction run again must not count twice.
    accepted = run_transaction(sessions, work)
    if accepted.duplicate:
        record_duplicate("relay")
    else:
        stored = accepted.message
        record_accepted(event_type, AcceptResult(stored.id, stored.event_id, True, 1), "relay")
    return accepted


def _relay_view(session: Session, message: Message, *, duplicate: bool) -> Accepted:
    delivery = session.scalars(
        select(Delivery).where(Delivery.message_id == message.id).order_by(Delivery.id).limit(1)
    ).first()
    return Accepted(
        StoredMessage.of(message),
        1 if delivery else 0,
        duplicate=duplicate,
        delivery_id=delivery.id if delivery else None,
        endpoint_id=delivery.endpoint_id if delivery else None,
    )
