"""HTTP ingestion: POST /api/v1/applications/{id}/messages."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.models import Delivery, IdempotencyKey, Message

ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}
PERSON_SCHEMA = {
    "type": "object",
    "required": ["person"],
    "properties": {
        "person": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        }
    },
}


def count(sessions: sessionmaker[Session], model: Any) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def publish(client: FlaskClient, tenant: Any, body: dict[str, Any], **headers: str) -> Any:
    return client.post(tenant.path("/messages"), json=body, headers={**tenant.headers, **headers})


def test_publish_stores_and_fans_out(
    client: FlaskClient, tenant: Any, endpoint: str, db: sessionmaker[Session]
) -> None:
    response = publish(
        client, tenant, {"event_type": "person.created", "payload": {"person": {"name": "Ada"}}}
    )
    assert response.status_code == 202, response.json
    body = response.json
    assert body["id"].startswith("msg_")
    assert body["event_type"] == "person.created"
    assert body["deliveries"] == 1
    assert body["duplicate"] is False
    with db() as session:
        message = session.scalars(select(Message)).one()
        delivery = session.scalars(select(Delivery)).one()
    assert message.event_id == body["id"]
    assert message.source == "http"
    assert str(message.application_id) == tenant.id
    assert message.payload == {"person": {"name": "Ada"}}
    assert str(delivery.endpoint_id) == endpoint
    assert delivery.state == "pending"


def test_data_alias_channels_and_caller_event_id(
    client: FlaskClient, tenant: Any, event_types: list[str], db: sessionmaker[Session]
) -> None:
    body = {
        "event_type": "person.updated",
        "data": {"x": 1},
        "event_id": "evt_caller_1",
        "channels": ["eu"],
        "timestamp": "2026-01-02T03:04:05Z",
    }
    first = publish(client, tenant, body)
    assert first.status_code == 202, first.json
    assert first.json["id"] == "evt_caller_1"
    assert first.json["channels"] == ["eu"]
    assert first.json["timestamp"].startswith("2026-01-02T03:04:05")
    # The same event id again is not stored twice (with or without an idempotency key).
    again = publish(client, tenant, body)
    assert again.status_code == 202
    assert again.json["duplicate"] is True
    assert again.json["message_id"] == first.json["message_id"]
    assert count(db, Message) == 1


def test_idempotency_key_replay_returns_the_first_result(
    client: FlaskClient, tenant: Any, endpoint: str, db: sessionmaker[Session]
) -> None:
    body = {"event_type": "person.created", "payload": {"person": {"name": "Ada"}}}
    first = publish(client, tenant, body, **{"Idempotency-Key": "order-42"})
    assert first.status_code == 202
    replay = publish(client, tenant, body, **{"Idempotency-Key": "order-42"})
    assert replay.status_code == 202
    assert replay.json["id"] == first.json["id"]
    assert replay.json["message_id"] == first.json["message_id"]
    assert replay.json["duplicate"] is True
    assert replay.json["deliveries"] == 1
    assert count(db, Message) == 1
    assert count(db, Delivery) == 1

    # The same key with another body is refused, and stores nothing.
    other = {"event_type": "person.created", "payload": {"person": {"name": "Bob"}}}
    reused = publish(client, tenant, other, **{"Idempotency-Key": "order-42"})
    assert reused.status_code == 422
    assert reused.json["errors"][0]["field"] == "Idempotency-Key"
    assert count(db, Message) == 1

    # Another key is another message.
    fresh = publish(client, tenant, body, **{"Idempotency-Key": "order-43"})
    assert fresh.json["id"] != first.json["id"]
    assert count(db, Message) == 2


def test_idempotency_keys_are_per_application(
    client: FlaskClient, tenant: Any, other_tenant: Any, event_types: list[str]
) -> None:
    body = {"event_type": "person.created", "payload": {}}
    mine = publish(client, tenant, body, **{"Idempotency-Key": "k"})
    theirs = publish(client, other_tenant, body, **{"Idempotency-Key": "k"})
    assert mine.json["id"] != theirs.json["id"]


def test_expired_idempotency_key_starts_over(
    client: FlaskClient, tenant: Any, event_types: list[str], db: sessionmaker[Session]
) -> None:
    body = {"event_type": "person.created", "payload": {}}
    first = publish(client, tenant, body, **{"Idempotency-Key": "old"})
    with db.begin() as session:
        key = session.scalars(select(IdempotencyKey)).one()
        key.created_at = key.created_at.replace(year=key.created_at.year - 1)
    second = publish(client, tenant, body, **{"Idempotency-Key": "old"})
    assert second.status_code == 202
    assert second.json["id"] != first.json["id"]
    assert second.json["duplicate"] is False


def test_unknown_and_archived_event_types_are_422(
    client: FlaskClient, tenant: Any, event_types: list[str], field_errors: Any
) -> None:
    unknown = publish(client, tenant, {"event_type": "nobody.knows", "payload": {}})
    assert unknown.status_code == 422
    assert "event_type" in field_errors(unknown)
    assert client.delete("/api/v1/event-types/person.deleted", headers=ADMIN).status_code == 200
    archived = publish(client, tenant, {"event_type": "person.deleted", "payload": {}})
    assert archived.status_code == 422
    assert "archived" in field_errors(archived)["event_type"]


def test_payload_checked_against_the_schema(
    client: FlaskClient, tenant: Any, field_errors: Any, db: sessionmaker[Session]
) -> None:
    created = client.post(
        "/api/v1/event-types",
        json={"name": "person.created", "schema": PERSON_SCHEMA},
        headers=ADMIN,
    )
    assert created.status_code == 201, created.json
    bad = publish(
        client,
        tenant,
        {"event_type": "person.created", "payload": {"person": {"name": "Ada", "age": "old"}}},
    )
    assert bad.status_code == 422
    assert "payload.person.age" in field_errors(bad)
    missing = publish(client, tenant, {"event_type": "person.created", "payload": {}})
    assert "payload" in field_errors(missing)
    good = publish(
        client,
        tenant,
        {"event_type": "person.created", "payload": {"person": {"name": "Ada", "age": 36}}},
    )
    assert good.status_code == 202
    assert count(db, Message) == 1


def test_payload_too_large_is_413(
    client: FlaskClient, tenant: Any, event_types: list[str], settings: Any
) -> None:
    big = {"blob": "x" * settings.max_payload_bytes}
    response = publish(client, tenant, {"event_type": "person.created", "payload": big})
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"


def test_bad_requests(
    client: FlaskClient, tenant: Any, event_types: list[str], field_errors: Any
) -> None:
    assert "payload" in field_errors(publish(client, tenant, {"event_type": "person.created"}))
    assert "event_type" in field_errors(publish(client, tenant, {"payload": {}}))
    not_object = publish(client, tenant, {"event_type": "person.created", "payload": [1]})
    assert "payload" in field_errors(not_object)
    bad_id = publish(
        client, tenant, {"event_type": "person.created", "payload": {}, "event_id": "a b"}
    )
    assert "event_id" in field_errors(bad_id)
    extra = publish(client, tenant, {"event_type": "person.created", "payload": {}, "x": 1})
    assert "x" in field_errors(extra)
    long_key = publish(
        client,
        tenant,
        {"event_type": "person.created", "payload": {}},
        **{"Idempotency-Key": "k" * 300},
    )
    assert long_key.status_code == 422


def test_access_control(
    client: FlaskClient, tenant: Any, other_tenant: Any, event_types: list[str]
) -> None:
    body = {"event_type": "person.created", "payload": {}}
    foreign = client.post(tenant.path("/messages"), json=body, headers=other_tenant.headers)
    assert foreign.status_code == 404
    assert client.post(tenant.path("/messages"), json=body).status_code == 401
    as_admin = client.post(tenant.path("/messages"), json=body, headers=ADMIN)
    assert as_admin.status_code == 202
    missing = client.post(f"/api/v1/applications/{uuid.uuid4()}/messages", json=body, headers=ADMIN)
    assert missing.status_code == 404


def test_documented_in_openapi(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").json["paths"]
    assert "post" in paths["/api/v1/applications/{app_id}/messages"]
    assert "post" in paths["/api/v1/applications/{app_id}/relay"]


def test_concurrent_repeats_of_one_key_store_one_message(
    app: Any, tenant: Any, endpoint: str, db: sessionmaker[Session]
) -> None:
    body = {"event_type": "person.created", "payload": {"person": {"name": "Ada"}}}
    barrier = threading.Barrier(8)

    def send() -> Any:
        client = app.test_client()
        barrier.wait()
        return publish(client, tenant, body, **{"Idempotency-Key": "racing"})

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda _: send(), range(8)))
    assert {response.status_code for response in responses} == {202}
    assert len({response.json["id"] for response in responses}) == 1
    assert sorted(response.json["duplicate"] for response in responses) == [False] + [True] * 7
    assert count(db, Message) == 1
    assert count(db, Delivery) == 1
