"""Ordering keys through the API: publish (single and batch), read back, refuse bad keys,
the endpoint's key_failure_policy and its waiting keys."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.models import Delivery, Message


def _publish(client: FlaskClient, tenant: Any, **fields: Any) -> Any:
    body = {"event_type": "person.created", "payload": {"n": 1}, **fields}
    return client.post(tenant.path("/messages"), json=body, headers=tenant.headers)


def test_a_key_is_stored_copied_to_deliveries_and_read_back(
    client: FlaskClient, tenant: Any, endpoint: str, db: sessionmaker[Session]
) -> None:
    response = _publish(client, tenant, ordering_key="person-42")
    assert response.status_code == 202, response.json
    assert response.json["ordering_key"] == "person-42"
    with db() as session:
        assert session.scalars(select(Message.ordering_key)).one() == "person-42"
        assert session.scalars(select(Delivery.ordering_key)).one() == "person-42"
    event_id = response.json["id"]
    read = client.get(tenant.path(f"/messages/{event_id}"), headers=tenant.headers)
    assert read.json["ordering_key"] == "person-42"
    assert read.json["deliveries"][0]["ordering_key"] == "person-42"
    listed = client.get(tenant.path("/deliveries"), headers=tenant.headers)
    assert listed.json["data"][0]["ordering_key"] == "person-42"
    unkeyed = _publish(client, tenant)
    assert unkeyed.json["ordering_key"] is None


@pytest.mark.parametrize(
    "key", ["", "x" * 257, "line\nbreak", "tab\there", "nul\x00", 7, ["a"]], ids=repr
)
def test_a_bad_key_is_422_naming_the_field(
    client: FlaskClient, tenant: Any, endpoint: str, field_errors: Any, key: Any
) -> None:
    response = _publish(client, tenant, ordering_key=key)
    assert response.status_code == 422, response.json
    assert "ordering_key" in field_errors(response)


def test_a_batch_keeps_request_order_and_refuses_a_bad_key_alone(
    client: FlaskClient, tenant: Any, endpoint: str, db: sessionmaker[Session]
) -> None:
    messages = [
        {"event_type": "person.created", "payload": {"n": n}, "ordering_key": "k"} for n in range(5)
    ]
    # Idempotency keys sorting the other way than the request must not reorder the messages.
    for n, message in enumerate(messages):
        message["idempotency_key"] = f"z{9 - n}"
    messages.insert(2, {"event_type": "person.created", "payload": {}, "ordering_key": ""})
    response = client.post(
        tenant.path("/messages/batch"), json={"messages": messages}, headers=tenant.headers
    )
    assert response.status_code == 200, response.json
    results = response.json["results"]
    assert [r["status"] for r in results] == [202, 202, 422, 202, 202, 202]
    assert results[2]["error"]["errors"][0]["field"] == "ordering_key"
    with db() as session:
        payloads = session.scalars(
            select(Message.payload)
            .join(Delivery, Delivery.message_id == Message.id)
            .where(Delivery.ordering_key == "k")
            .order_by(Delivery.id)
        ).all()
    assert [p["n"] for p in payloads] == list(range(5))


def test_key_failure_policy_is_set_changed_and_refused_when_unknown(
    client: FlaskClient, tenant: Any, event_types: list[str], field_errors: Any
) -> None:
    created = client.post(
        tenant.path("/endpoints"),
        json={"url": "http://127.0.0.1:9/ordered", "key_failure_policy": "block"},
        headers=tenant.headers,
    )
    assert created.status_code == 201, created.json
    assert created.json["key_failure_policy"] == "block"
    path = tenant.path(f"/endpoints/{created.json['id']}")
    patched = client.patch(path, json={"key_failure_policy": "skip"}, headers=tenant.headers)
    assert patched.json["key_failure_policy"] == "skip"
    bad = client.patch(path, json={"key_failure_policy": "wait"}, headers=tenant.headers)
    assert bad.status_code == 422
    assert "key_failure_policy" in field_errors(bad)
    null = client.patch(path, json={"key_failure_policy": None}, headers=tenant.headers)
    assert null.status_code == 422


def test_waiting_keys_lists_retrying_heads_and_blocked_keys(
    client: FlaskClient, tenant: Any, endpoint: str, db: sessionmaker[Session]
) -> None:
    for key in ("a", "a", "b", "b", "c"):
        assert _publish(client, tenant, ordering_key=key).status_code == 202
    path = tenant.path(f"/endpoints/{endpoint}/waiting-keys")
    assert client.get(path, headers=tenant.headers).json == {"keys_waiting": 0, "keys": []}
    with db.begin() as session:
        ids = {
            key: session.scalars(
                select(Delivery.id).where(Delivery.ordering_key == key).order_by(Delivery.id)
            ).all()
            for key in ("a", "b")
        }
        session.execute(
            text("UPDATE deliveries SET state = 'retrying', attempt_count = 1 WHERE id = :id"),
            {"id": ids["a"][0]},
        )
        session.execute(
            text("UPDATE deliveries SET state = 'dead' WHERE id = :id"), {"id": ids["b"][0]}
        )
        session.execute(
            text("UPDATE endpoints SET key_failure_policy = 'block' WHERE id = :id"),
            {"id": endpoint},
        )
    body = client.get(path, headers=tenant.headers).json
    assert body["keys_waiting"] == 2
    by_key = {k["ordering_key"]: k for k in body["keys"]}
    assert by_key["a"]["head_state"] == "retrying"
    assert by_key["a"]["open_deliveries"] == 2
    assert by_key["b"]["blocked_by"] == ids["b"][0]
    assert by_key["b"]["head_delivery_id"] == ids["b"][1]
