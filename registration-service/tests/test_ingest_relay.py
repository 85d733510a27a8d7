"""Relay mode: POST /api/v1/applications/{id}/relay sends one webhook without a subscription."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.endpoints.sealing import unseal
from webhooks_core.models import Delivery, Endpoint, EndpointSecret, Message
from webhooks_core.signing import is_valid_secret


def relay(client: FlaskClient, tenant: Any, body: dict[str, Any], **headers: str) -> Any:
    return client.post(tenant.path("/relay"), json=body, headers={**tenant.headers, **headers})


def test_relay_creates_one_delivery_to_a_relay_endpoint(
    client: FlaskClient, tenant: Any, db: sessionmaker[Session]
) -> None:
    # A subscription that would match the type must not receive the relayed message.
    subscribed = client.post(
        tenant.path("/endpoints"), json={"url": "http://127.0.0.1:9/all"}, headers=tenant.headers
    )
    assert subscribed.status_code == 201
    response = relay(
        client,
        tenant,
        {
            "url": "http://127.0.0.1:9/once",
            "data": {"hello": "world"},
            "headers": {"X-Trace": "abc"},
        },
    )
    assert response.status_code == 202, response.json
    body = response.json
    assert body["event_type"] == "relay.message"
    assert is_valid_secret(body["secret"])
    with db() as session:
        message = session.scalars(select(Message)).one()
        delivery = session.scalars(select(Delivery)).one()
        endpoint = session.get(Endpoint, delivery.endpoint_id)
        secrets = [
            unseal(sealed)
            for sealed in session.scalars(
                select(EndpointSecret.secret).where(EndpointSecret.endpoint_id == endpoint.id)
            )
        ]
    assert message.event_id == body["id"]
    assert message.source == "relay"
    assert message.payload == {"hello": "world"}
    assert delivery.id == body["delivery_id"]
    assert delivery.state == "pending"
    assert delivery.next_attempt_at is not None
    assert str(endpoint.id) == body["endpoint_id"]
    assert endpoint.kind == "relay"
    assert endpoint.url == "http://127.0.0.1:9/once"
    assert endpoint.headers == {"X-Trace": "abc"}
    assert secrets == [body["secret"]]

    # Relay endpoints are not subscriptions: they are not listed.
    listed = client.get(tenant.path("/endpoints"), headers=tenant.headers).json["data"]
    assert [item["id"] for item in listed] == [subscribed.json["id"]]


def test_relay_with_own_secret_and_type_shows_no_secret(
    client: FlaskClient, tenant: Any, db: sessionmaker[Session]
) -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    response = relay(
        client,
        tenant,
        {
            "url": "http://127.0.0.1:9/x",
            "payload": {},
            "event_type": "invoice.paid",
            "secret": secret,
        },
    )
    assert response.status_code == 202, response.json
    assert response.json["secret"] is None
    assert response.json["event_type"] == "invoice.paid"
    with db() as session:
        assert [unseal(s) for s in session.scalars(select(EndpointSecret.secret))] == [secret]


def test_relay_idempotency_key(client: FlaskClient, tenant: Any, db: sessionmaker[Session]) -> None:
    body = {"url": "http://127.0.0.1:9/x", "payload": {"n": 1}}
    first = relay(client, tenant, body, **{"Idempotency-Key": "send-1"})
    again = relay(client, tenant, body, **{"Idempotency-Key": "send-1"})
    assert again.status_code == 202
    assert again.json["id"] == first.json["id"]
    assert again.json["delivery_id"] == first.json["delivery_id"]
    assert again.json["duplicate"] is True
    assert again.json["secret"] is None  # shown once
    with db() as session:
        assert len(session.scalars(select(Delivery)).all()) == 1


def test_relay_refuses_bad_targets_and_input(
    client: FlaskClient, tenant: Any, field_errors: Any, settings: Any, db: sessionmaker[Session]
) -> None:
    metadata = relay(client, tenant, {"url": "http://169.254.169.254/latest", "payload": {}})
    assert "url" in field_errors(metadata)
    private = relay(client, tenant, {"url": "http://10.1.2.3/x", "payload": {}})
    assert "url" in field_errors(private)
    assert "url" in field_errors(relay(client, tenant, {"url": "ftp://x/y", "payload": {}}))
    assert "payload" in field_errors(relay(client, tenant, {"url": "http://127.0.0.1:9/"}))
    bad_secret = relay(client, tenant, {"url": "http://127.0.0.1:9/", "payload": {}, "secret": "x"})
    assert "secret" in field_errors(bad_secret)
    reserved = relay(
        client,
        tenant,
        {"url": "http://127.0.0.1:9/", "payload": {}, "headers": {"webhook-id": "forged"}},
    )
    assert reserved.status_code == 422
    big = relay(
        client,
        tenant,
        {"url": "http://127.0.0.1:9/", "payload": {"b": "x" * settings.max_payload_bytes}},
    )
    assert big.status_code == 413
    with db() as session:
        assert session.scalars(select(Message)).all() == []
