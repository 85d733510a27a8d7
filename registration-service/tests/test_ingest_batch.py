"""Batch ingestion: POST /api/v1/applications/{id}/messages/batch."""

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
SCHEMA = {
    "type": "object",
    "required": ["person"],
    "properties": {"person": {"type": "object", "required": ["name"]}},
}


def count(sessions: sessionmaker[Session], model: Any) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def batch(client: FlaskClient, tenant: Any, messages: list[dict[str, Any]]) -> Any:
    return client.post(
        tenant.path("/messages/batch"), json={"messages": messages}, headers=tenant.headers
    )


def person(name: str, key: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"event_type": "person.created", "payload": {"person": {"name": name}}}
    if key is not None:
        item["idempotency_key"] = key
    return item


def test_each_message_is_accepted_or_refused_on_its_own(
    client: FlaskClient, tenant: Any, endpoint: str, db: sessionmaker[Session]
) -> None:
    patched = client.patch(
        "/api/v1/event-types/person.created", json={"schema": SCHEMA}, headers=ADMIN
    )
    assert patched.status_code == 200, patched.json
    response = batch(
        client,
        tenant,
        [
            person("Ada", "k-1"),
            {"event_type": "nobody.knows", "payload": {}, "idempotency_key": "k-2"},
            {"event_type": "person.created", "payload": {"person": {}}},
            person("Ada", "k-1"),  # the same key and body again: the first result
            person("Bob", "k-1"),  # the same key, another body
            {"event_type": "person.updated", "payload": {}, "channels": ["eu"]},
        ],
    )
    assert response.status_code == 200, response.json
    body = response.json
    assert (body["accepted"], body["duplicates"], body["refused"]) == (2, 1, 3)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(6))
    assert [r["status"] for r in results] == [202, 422, 422, 202, 422, 202]
    first = results[0]["message"]
    assert first["duplicate"] is False
    assert first["deliveries"] == 1
    assert results[3]["message"]["id"] == first["id"]
    assert results[3]["message"]["duplicate"] is True
    assert results[1]["error"]["errors"][0]["field"] == "event_type"
    assert results[2]["error"]["errors"][0]["field"].startswith("payload")
    assert results[4]["error"]["errors"][0]["field"] == "Idempotency-Key"
    assert results[5]["message"]["channels"] == ["eu"]
    assert results[5]["message"]["deliveries"] == 0
    assert count(db, Message) == 2
    assert count(db, Delivery) == 1
    with db() as session:
        key = session.scalars(select(IdempotencyKey)).one()
    assert key.key == "k-1"


def test_keys_are_shared_with_single_publish(
    client: FlaskClient, tenant: Any, endpoint: str, db: sessionmaker[Session]
) -> None:
    single = client.post(
        tenant.path("/messages"),
        json=person("Ada"),
        headers={**tenant.headers, "Idempotency-Key": "order-1"},
    )
    assert single.status_code == 202
    response = batch(client, tenant, [person("Ada", "order-1"), person("Eve", "order-2")])
    results = response.json["results"]
    assert results[0]["message"]["id"] == single.json["id"]
    assert results[0]["message"]["duplicate"] is True
    assert results[1]["message"]["duplicate"] is False
    again = client.post(
        tenant.path("/messages"),
        json=person("Eve"),
        headers={**tenant.headers, "Idempotency-Key": "order-2"},
    )
    assert again.json["id"] == results[1]["message"]["id"]
    assert again.json["duplicate"] is True
    assert count(db, Message) == 2


def test_caller_event_ids_and_payload_size(
    client: FlaskClient,
    tenant: Any,
    other_tenant: Any,
    event_types: list[str],
    settings: Any,
    db: sessionmaker[Session],
) -> None:
    taken = {"event_type": "person.updated", "payload": {}, "event_id": "evt_theirs"}
    assert batch(client, other_tenant, [taken]).json["results"][0]["status"] == 202
    response = batch(
        client,
        tenant,
        [
            taken,
            {"event_type": "person.updated", "payload": {}, "event_id": "evt_mine"},
            {"event_type": "person.updated", "payload": {}, "event_id": "evt_mine"},
            {"event_type": "person.updated", "payload": {"x": "y" * settings.max_payload_bytes}},
        ],
    )
    statuses = [r["status"] for r in response.json["results"]]
    assert statuses == [202, 202, 202, 413]
    results = response.json["results"]
    # Event ids are per application: the other tenant's id is a new message of this one.
    assert results[0]["message"]["duplicate"] is False
    assert results[2]["message"]["duplicate"] is True
    assert results[2]["message"]["message_id"] == results[1]["message"]["message_id"]
    assert count(db, Message) == 3


def test_malformed_requests_are_refused_whole(
    client: FlaskClient, tenant: Any, event_types: list[str], field_errors: Any, db: Any
) -> None:
    bad_item = batch(client, tenant, [person("Ada"), {"event_type": "Not A Type", "payload": {}}])
    assert bad_item.status_code == 200  # a message breaking the field rules is refused alone
    assert [r["status"] for r in bad_item.json["results"]] == [202, 422]
    assert bad_item.json["results"][1]["error"]["errors"][0]["field"] == "event_type"
    assert count(db, Message) == 1
    not_a_list = client.post(
        tenant.path("/messages/batch"), json={"messages": {"a": 1}}, headers=tenant.headers
    )
    assert not_a_list.status_code == 422
    assert "messages" in field_errors(not_a_list)
    too_many = batch(client, tenant, [person(f"p{n}") for n in range(101)])
    assert too_many.status_code == 422
    assert "messages" in field_errors(too_many)
    assert batch(client, tenant, []).status_code == 422
    unprintable = batch(client, tenant, [person("Ada", "bad\x01key")])
    assert unprintable.json["results"][0]["status"] == 422
    assert count(db, Message) == 1


def test_access_control(
    client: FlaskClient, tenant: Any, other_tenant: Any, event_types: list[str], db: Any
) -> None:
    foreign = client.post(
        tenant.path("/messages/batch"),
        json={"messages": [person("Ada")]},
        headers=other_tenant.headers,
    )
    assert foreign.status_code == 404
    missing = client.post(
        f"/api/v1/applications/{uuid.uuid4()}/messages/batch",
        json={"messages": [person("Ada")]},
        headers=ADMIN,
    )
    assert missing.status_code == 404
    assert missing.mimetype == "application/problem+json"
    assert count(db, Message) == 0


def test_documented_in_openapi(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").json["paths"]
    operation = paths["/api/v1/applications/{app_id}/messages/batch"]["post"]
    assert "200" in operation["responses"]


def test_concurrent_batches_sharing_keys_store_each_once(
    app: Any, tenant: Any, endpoint: str, db: sessionmaker[Session]
) -> None:
    keys = [f"shared-{n}" for n in range(20)]
    barrier = threading.Barrier(6)

    def send(turn: int) -> Any:
        client = app.test_client()
        order = keys if turn % 2 else list(reversed(keys))  # opposite orders: no deadlock
        barrier.wait()
        return batch(client, tenant, [person(key, key) for key in order])

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(send, range(6)))
    assert {response.status_code for response in responses} == {200}
    assert sum(response.json["accepted"] for response in responses) == len(keys)
    assert sum(response.json["duplicates"] for response in responses) == 5 * len(keys)
    ids = {result["message"]["id"] for response in responses for result in response.json["results"]}
    assert len(ids) == len(keys)
    assert count(db, Message) == len(keys)
    assert count(db, Delivery) == len(keys)
