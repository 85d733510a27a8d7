"""Replays: resend a delivery or a message, recover an endpoint; idempotent and audited."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from webhooks_core.db import transaction
from webhooks_core.messages.envelope import utcnow
from webhooks_core.models import Delivery, Replay


def make_endpoint(client: Any, tenant: Any, url: str) -> str:
    response = client.post(tenant.path("/endpoints"), json={"url": url}, headers=tenant.headers)
    assert response.status_code == 201, response.json
    return str(response.json["id"])


def publish(client: Any, tenant: Any, n: int) -> str:
    body = {"event_type": "person.created", "payload": {"n": n}}
    response = client.post(tenant.path("/messages"), json=body, headers=tenant.headers)
    assert response.status_code == 202, response.json
    return str(response.json["id"])


def set_state(db: Any, state: str, **where: Any) -> None:
    with transaction(db) as session:
        session.execute(
            update(Delivery)
            .filter_by(**where)
            .values(state=state, attempt_count=3, next_attempt_at=None, last_error="HTTP 500")
        )


def delivery_rows(db: Any) -> list[Delivery]:
    with db() as session:
        return list(session.scalars(select(Delivery).order_by(Delivery.id)))


@pytest.fixture
def two_endpoints(client: Any, tenant: Any, event_types: Any) -> tuple[str, str]:
    return (
        make_endpoint(client, tenant, "https://a.example.com/hook"),
        make_endpoint(client, tenant, "https://b.example.com/hook"),
    )


def test_resend_a_delivery_once_while_it_is_pending(
    client: Any, tenant: Any, two_endpoints: Any, db: Any
) -> None:
    publish(client, tenant, 1)
    first = delivery_rows(db)[0]
    set_state(db, "delivered", id=first.id)
    path = tenant.path(f"/deliveries/{first.id}/resend")

    response = client.post(path, headers=tenant.headers)
    assert response.status_code == 202
    assert response.json["kind"] == "delivery"
    assert response.json["deliveries_requeued"] == 1
    assert response.json["requested_by"] == f"app:{tenant.id}"
    again = client.post(path, headers=tenant.headers)
    assert again.json["deliveries_requeued"] == 0  # still pending: not queued twice

    row = delivery_rows(db)[0]
    assert (row.state, row.attempt_count, row.next_trigger) == ("pending", 0, "replay")
    assert row.next_attempt_at is not None
    with db() as session:
        assert session.scalar(select(Replay.deliveries_requeued).order_by(Replay.created_at)) == 1
        assert len(list(session.scalars(select(Replay)))) == 2


def test_resend_a_whole_message(client: Any, tenant: Any, two_endpoints: Any, db: Any) -> None:
    event_id = publish(client, tenant, 1)
    set_state(db, "dead")
    response = client.post(tenant.path(f"/messages/{event_id}/resend"), headers=tenant.headers)
    assert response.status_code == 202
    assert response.json["deliveries_requeued"] == 2
    assert {row.state for row in delivery_rows(db)} == {"pending"}


def test_resend_to_a_disabled_endpoint_is_a_conflict(
    client: Any, tenant: Any, two_endpoints: Any, db: Any
) -> None:
    publish(client, tenant, 1)
    endpoint_a, _ = two_endpoints
    client.post(tenant.path(f"/endpoints/{endpoint_a}/disable"), json={}, headers=tenant.headers)
    cancelled = next(row for row in delivery_rows(db) if str(row.endpoint_id) == endpoint_a)
    response = client.post(
        tenant.path(f"/deliveries/{cancelled.id}/resend"), headers=tenant.headers
    )
    assert response.status_code == 409
    assert response.mimetype == "application/problem+json"


def test_recover_resends_failures_since_a_time(
    client: Any, tenant: Any, two_endpoints: Any, db: Any
) -> None:
    endpoint_a, _ = two_endpoints
    for n in range(3):
        publish(client, tenant, n)
    rows = [row for row in delivery_rows(db) if str(row.endpoint_id) == endpoint_a]
    set_state(db, "dead", id=rows[0].id)
    set_state(db, "dead", id=rows[1].id)
    set_state(db, "delivered", id=rows[2].id)
    with transaction(db) as session:  # the first failure is older than the window
        session.execute(
            update(Delivery)
            .where(Delivery.id == rows[0].id)
            .values(created_at=utcnow() - timedelta(days=2))
        )

    since = (utcnow() - timedelta(days=1)).isoformat()
    response = client.post(
        tenant.path(f"/endpoints/{endpoint_a}/recover"),
        json={"since": since},
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.json
    assert response.json["kind"] == "recover"
    assert response.json["deliveries_requeued"] == 1
    states = {row.id: row.state for row in delivery_rows(db)}
    assert (states[rows[0].id], states[rows[1].id], states[rows[2].id]) == (
        "dead",
        "pending",
        "delivered",
    )


def test_recover_needs_since(
    client: Any, tenant: Any, two_endpoints: Any, field_errors: Any
) -> None:
    endpoint_a, _ = two_endpoints
    response = client.post(
        tenant.path(f"/endpoints/{endpoint_a}/recover"), json={}, headers=tenant.headers
    )
    assert response.status_code == 422
    assert "since" in field_errors(response)


def test_another_application_cannot_replay(
    client: Any, tenant: Any, other_tenant: Any, two_endpoints: Any, db: Any
) -> None:
    event_id = publish(client, tenant, 1)
    delivery = delivery_rows(db)[0]
    headers = other_tenant.headers
    assert (
        client.post(
            other_tenant.path(f"/deliveries/{delivery.id}/resend"), headers=headers
        ).status_code
        == 404
    )
    assert (
        client.post(other_tenant.path(f"/messages/{event_id}/resend"), headers=headers).status_code
        == 404
    )
    assert (
        client.post(tenant.path(f"/deliveries/{delivery.id}/resend"), headers=headers).status_code
        == 404
    )


def test_replays_are_listed_as_an_audit_log(
    client: Any, tenant: Any, two_endpoints: Any, db: Any
) -> None:
    event_id = publish(client, tenant, 1)
    client.post(tenant.path(f"/messages/{event_id}/resend"), headers=tenant.headers)
    replays = client.get(tenant.path("/replays"), headers=tenant.headers).json["data"]
    assert [(r["kind"], r["criteria"]) for r in replays] == [("message", {"event_id": event_id})]


def test_a_message_whose_payload_retention_dropped_is_not_sent_again(
    client: Any, tenant: Any, two_endpoints: Any, db: Any
) -> None:
    from webhooks_core.models import Message

    event_id = publish(client, tenant, 1)
    set_state(db, "delivered")
    with transaction(db) as session:  # what retention does to a finished message's payload
        session.execute(update(Message).values(payload={}, payload_dropped_at=utcnow()))
    message = client.get(tenant.path(f"/messages/{event_id}"), headers=tenant.headers)
    assert message.json["payload"] == {}
    assert message.json["payload_dropped_at"] is not None

    first = delivery_rows(db)[0]
    one = client.post(tenant.path(f"/deliveries/{first.id}/resend"), headers=tenant.headers)
    assert one.status_code == 409
    assert "payload" in one.json["detail"]
    whole = client.post(tenant.path(f"/messages/{event_id}/resend"), headers=tenant.headers)
    assert whole.json["deliveries_requeued"] == 0
    assert {row.state for row in delivery_rows(db)} == {"delivered"}
