"""Dead letters: listed, redriven one by one, by filter, or all; idempotent."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update

from webhooks_core.db import transaction
from webhooks_core.models import DeadLetter, Delivery

ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}


def make_endpoint(client: Any, tenant: Any, url: str) -> str:
    response = client.post(tenant.path("/endpoints"), json={"url": url}, headers=tenant.headers)
    assert response.status_code == 201, response.json
    return str(response.json["id"])


def publish(client: Any, tenant: Any, event_type: str) -> str:
    body = {"event_type": event_type, "payload": {"name": "Ada"}}
    response = client.post(tenant.path("/messages"), json=body, headers=tenant.headers)
    assert response.status_code == 202, response.json
    return str(response.json["id"])


def kill_everything(db: Any) -> None:
    """What the engine does when retries run out: state dead and an open dead letter."""
    with transaction(db) as session:
        dead = session.scalars(
            update(Delivery)
            .values(state="dead", attempt_count=8, next_attempt_at=None, last_error="HTTP 503")
            .returning(Delivery)
        ).all()
        for delivery in dead:
            session.add(
                DeadLetter(
                    delivery_id=delivery.id,
                    endpoint_id=delivery.endpoint_id,
                    application_id=delivery.application_id,
                    reason="HTTP 503",
                )
            )


@pytest.fixture
def dead(client: Any, tenant: Any, other_tenant: Any, event_types: Any, db: Any) -> dict[str, Any]:
    a = make_endpoint(client, tenant, "https://a.example.com/hook")
    b = make_endpoint(client, tenant, "https://b.example.com/hook")
    make_endpoint(client, other_tenant, "https://c.example.com/hook")
    created = publish(client, tenant, "person.created")
    publish(client, tenant, "person.deleted")
    publish(client, other_tenant, "person.created")
    kill_everything(db)
    return {"a": a, "b": b, "created": created}


def open_letters(db: Any) -> list[DeadLetter]:
    with db() as session:
        return list(session.scalars(select(DeadLetter).where(DeadLetter.redriven_at.is_(None))))


def test_list_dead_letters_with_filters(client: Any, tenant: Any, dead: Any) -> None:
    letters = client.get(tenant.path("/dead-letters"), headers=tenant.headers).json["data"]
    assert len(letters) == 4
    assert all(letter["reason"] == "HTTP 503" for letter in letters)
    assert {letter["event_type"] for letter in letters} == {"person.created", "person.deleted"}
    assert all(letter["attempt_count"] == 8 for letter in letters)
    by_endpoint = client.get(
        tenant.path("/dead-letters"),
        query_string={"endpoint_id": dead["a"]},
        headers=tenant.headers,
    ).json["data"]
    assert {letter["endpoint_id"] for letter in by_endpoint} == {dead["a"]}
    by_type = client.get(
        tenant.path("/dead-letters?event_type=person.deleted"), headers=tenant.headers
    ).json["data"]
    assert len(by_type) == 2


def test_redrive_one(client: Any, tenant: Any, dead: Any, db: Any) -> None:
    letter = client.get(tenant.path("/dead-letters?limit=1"), headers=tenant.headers).json["data"][
        0
    ]
    path = tenant.path(f"/dead-letters/{letter['id']}/redrive")
    response = client.post(path, headers=tenant.headers)
    assert response.status_code == 202
    assert response.json["deliveries_requeued"] == 1
    assert client.post(path, headers=tenant.headers).json["deliveries_requeued"] == 0
    with db() as session:
        delivery = session.get(Delivery, letter["delivery_id"])
        assert delivery is not None
        assert (delivery.state, delivery.attempt_count, delivery.next_trigger) == (
            "pending",
            0,
            "replay",
        )
    assert len(open_letters(db)) == 4  # 5 in all, one redriven
    history = client.get(
        tenant.path("/dead-letters?include_redriven=true"), headers=tenant.headers
    ).json["data"]
    assert len(history) == 4


def test_redrive_by_filter_then_all(client: Any, tenant: Any, dead: Any, db: Any) -> None:
    response = client.post(
        tenant.path("/dead-letters/redrive"),
        json={"endpoint_id": dead["b"], "event_type": "person.created"},
        headers=tenant.headers,
    )
    assert response.json["deliveries_requeued"] == 1
    response = client.post(tenant.path("/dead-letters/redrive"), json={}, headers=tenant.headers)
    assert response.json["deliveries_requeued"] == 3
    assert [letter.application_id for letter in open_letters(db)] != []  # the other tenant's
    assert client.get(tenant.path("/dead-letters"), headers=tenant.headers).json["data"] == []


def test_admin_redrives_across_applications(client: Any, tenant: Any, dead: Any, db: Any) -> None:
    listed = client.get("/api/v1/dead-letters", headers=ADMIN).json["data"]
    assert len(listed) == 5
    response = client.post("/api/v1/dead-letters/redrive", json={}, headers=ADMIN)
    assert response.status_code == 202
    assert response.json["deliveries_requeued"] == 5
    assert response.json["requested_by"] == "admin"
    assert open_letters(db) == []
    assert (
        client.post("/api/v1/dead-letters/redrive", json={}, headers=tenant.headers).status_code
        == 403
    )


def test_redrive_of_unknown_or_foreign_letter_is_not_found(
    client: Any, tenant: Any, other_tenant: Any, dead: Any
) -> None:
    letter = client.get(tenant.path("/dead-letters?limit=1"), headers=tenant.headers).json["data"][
        0
    ]
    foreign = other_tenant.path(f"/dead-letters/{letter['id']}/redrive")
    assert client.post(foreign, headers=other_tenant.headers).status_code == 404
    missing = tenant.path("/dead-letters/999999/redrive")
    assert client.post(missing, headers=tenant.headers).status_code == 404
    bad = client.post(
        tenant.path("/dead-letters/redrive"), json={"endpoint": "x"}, headers=tenant.headers
    )
    assert bad.status_code == 422
