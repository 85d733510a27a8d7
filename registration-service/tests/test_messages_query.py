"""The query API: messages, deliveries, attempts and the undelivered view."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from webhooks_core.db import transaction
from webhooks_core.messages.envelope import utcnow
from webhooks_core.models import Attempt, Delivery

ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}


def make_endpoint(client: Any, tenant: Any, url: str, types: list[str] | None = None) -> str:
    body = {"url": url, "event_types": types or []}
    response = client.post(tenant.path("/endpoints"), json=body, headers=tenant.headers)
    assert response.status_code == 201, response.json
    return str(response.json["id"])


def publish(client: Any, tenant: Any, event_type: str = "person.created", **data: Any) -> str:
    body = {"event_type": event_type, "payload": data or {"name": "Ada"}}
    response = client.post(tenant.path("/messages"), json=body, headers=tenant.headers)
    assert response.status_code == 202, response.json
    return str(response.json["id"])


@pytest.fixture
def world(client: Any, tenant: Any, other_tenant: Any, event_types: Any, db: Any) -> Any:
    """Two endpoints of the tenant, one of another tenant, three messages, some outcomes."""
    a = make_endpoint(client, tenant, "https://a.example.com/hook")
    b = make_endpoint(client, tenant, "https://b.example.com/hook", ["person.deleted"])
    make_endpoint(client, other_tenant, "https://other.example.com/hook")
    created = publish(client, tenant, "person.created", n=1)
    updated = publish(client, tenant, "person.updated", n=2)
    deleted = publish(client, tenant, "person.deleted", n=3)
    publish(client, other_tenant, "person.created", n=4)
    now = utcnow()
    with transaction(db) as session:
        # As the engine would leave them: one delivered with two attempts, one retrying.
        first = session.scalar(
            select(Delivery.id).where(
                Delivery.event_type == "person.created", Delivery.application_id == tenant.id
            )
        )
        session.execute(
            update(Delivery)
            .where(Delivery.id == first)
            .values(state="delivered", attempt_count=2, delivered_at=now, last_status_code=200)
        )
        session.add_all(
            [
                Attempt(
                    delivery_id=first,
                    endpoint_id=a,
                    started_at=now - timedelta(seconds=5),
                    latency_ms=12.5,
                    status_code=500,
                    outcome="http_5xx",
                    error="HTTP 500",
                    response_body="oops",
                ),
                Attempt(
                    delivery_id=first,
                    endpoint_id=a,
                    started_at=now,
                    latency_ms=8.0,
                    status_code=200,
                    outcome="success",
                    response_body="ok",
                ),
            ]
        )
        session.execute(
            update(Delivery)
            .where(Delivery.event_type == "person.updated", Delivery.application_id == tenant.id)
            .values(state="retrying", attempt_count=1, next_attempt_at=now + timedelta(minutes=5))
        )
    return {
        "a": a,
        "b": b,
        "created": created,
        "updated": updated,
        "deleted": deleted,
        "first": first,
    }


def test_messages_list_filters_and_isolation(client: Any, tenant: Any, world: Any) -> None:
    response = client.get(tenant.path("/messages"), headers=tenant.headers)
    assert response.status_code == 200
    ids = [m["id"] for m in response.json["data"]]
    assert ids == [world["deleted"], world["updated"], world["created"]]  # newest first
    typed = client.get(tenant.path("/messages?event_type=person.updated"), headers=tenant.headers)
    assert [m["id"] for m in typed.json["data"]] == [world["updated"]]
    later = (utcnow() + timedelta(minutes=1)).isoformat()
    empty = client.get(
        tenant.path("/messages"), query_string={"since": later}, headers=tenant.headers
    )
    assert empty.json["data"] == []


def test_messages_paginate(client: Any, tenant: Any, world: Any) -> None:
    first = client.get(tenant.path("/messages?limit=2"), headers=tenant.headers).json
    assert len(first["data"]) == 2
    assert first["done"] is False
    rest = client.get(
        tenant.path("/messages"),
        query_string={"limit": 2, "iterator": first["iterator"]},
        headers=tenant.headers,
    ).json
    assert [m["id"] for m in rest["data"]] == [world["created"]]
    assert rest["done"] is True


def test_message_detail_has_its_deliveries(client: Any, tenant: Any, world: Any) -> None:
    response = client.get(tenant.path(f"/messages/{world['deleted']}"), headers=tenant.headers)
    assert response.status_code == 200
    assert response.json["payload"] == {"n": 3}
    assert {d["endpoint_id"] for d in response.json["deliveries"]} == {world["a"], world["b"]}


def test_another_applications_message_is_not_found(
    client: Any, other_tenant: Any, world: Any
) -> None:
    response = client.get(
        other_tenant.path(f"/messages/{world['created']}"), headers=other_tenant.headers
    )
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_deliveries_filter_by_endpoint_state_type_and_message(
    client: Any, tenant: Any, world: Any
) -> None:
    def ids(**query: Any) -> list[str]:
        response = client.get(
            tenant.path("/deliveries"), query_string=query, headers=tenant.headers
        )
        assert response.status_code == 200, response.json
        return [(d["event_type"], d["endpoint_id"], d["state"]) for d in response.json["data"]]

    assert len(ids()) == 4  # a: created, updated, deleted; b: deleted
    assert ids(endpoint_id=world["b"]) == [("person.deleted", world["b"], "pending")]
    assert ids(state="delivered") == [("person.created", world["a"], "delivered")]
    assert len(ids(event_type="person.deleted")) == 2
    assert ids(event_id=world["updated"]) == [("person.updated", world["a"], "retrying")]


def test_delivery_detail_and_its_attempts(client: Any, tenant: Any, world: Any) -> None:
    path = tenant.path(f"/deliveries/{world['first']}")
    delivery = client.get(path, headers=tenant.headers).json
    assert delivery["state"] == "delivered"
    assert delivery["event_id"] == world["created"]
    attempts = client.get(path + "/attempts", headers=tenant.headers).json["data"]
    assert [(a["status_code"], a["outcome"]) for a in attempts] == [
        (200, "success"),
        (500, "http_5xx"),
    ]
    assert attempts[1]["response_body"] == "oops"
    assert attempts[1]["latency_ms"] == 12.5


def test_attempts_filter_by_outcome(client: Any, tenant: Any, world: Any) -> None:
    response = client.get(tenant.path("/attempts?outcome=http_5xx"), headers=tenant.headers)
    assert [a["status_code"] for a in response.json["data"]] == [500]
    bad = client.get(tenant.path("/attempts?outcome=weird"), headers=tenant.headers)
    assert bad.status_code == 422
    assert bad.mimetype == "application/problem+json"


def test_undelivered_view_has_age_and_next_attempt(client: Any, tenant: Any, world: Any) -> None:
    data = client.get(tenant.path("/undelivered"), headers=tenant.headers).json["data"]
    assert {d["state"] for d in data} == {"pending", "retrying"}
    assert len(data) == 3
    assert all(d["age_seconds"] >= 0 for d in data)
    retrying = next(d for d in data if d["state"] == "retrying")
    assert retrying["next_attempt_at"] is not None


def test_admin_sees_every_application(
    client: Any, tenant: Any, other_tenant: Any, world: Any
) -> None:
    everything = client.get("/api/v1/undelivered", headers=ADMIN).json["data"]
    assert {d["application_id"] for d in everything} == {tenant.id, other_tenant.id}
    mine = client.get(
        "/api/v1/deliveries", query_string={"application_id": other_tenant.id}, headers=ADMIN
    )
    assert {d["application_id"] for d in mine.json["data"]} == {other_tenant.id}
    assert client.get("/api/v1/undelivered", headers=tenant.headers).status_code == 403
    other = client.get(tenant.path("/deliveries"), headers=ADMIN).json["data"]
    assert {d["application_id"] for d in other} == {tenant.id}


def test_bad_filters_are_field_errors(
    client: Any, tenant: Any, world: Any, field_errors: Any
) -> None:
    response = client.get(
        tenant.path("/deliveries?state=lost&endpoint_id=x"), headers=tenant.headers
    )
    assert response.status_code == 422
    assert (
        set(field_errors(response)) >= {"query.state", "query.endpoint_id"}
        or len(field_errors(response)) == 2
    )
    response = client.get(tenant.path("/deliveries?iterator=garbage"), headers=tenant.headers)
    assert response.status_code == 422
    assert "iterator" in field_errors(response)
    assert client.get(tenant.path("/deliveries/999999"), headers=tenant.headers).status_code == 404
