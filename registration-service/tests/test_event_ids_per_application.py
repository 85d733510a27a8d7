"""Event ids are unique per application: no application can take, find or probe another's.

Two applications publishing the same ``event_id`` each get their own message and deliveries;
a repeat within one application is still a duplicate; and every route that takes an event id
answers an application the same whether or not another application uses that id.
"""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.models import Delivery, Message

ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}


def publish(client: FlaskClient, tenant: Any, event_id: str, **extra: Any) -> Any:
    body = {"event_type": "person.created", "payload": {"person": {"name": "Ada"}}, **extra}
    return client.post(
        tenant.path("/messages"), json={**body, "event_id": event_id}, headers=tenant.headers
    )


def endpoint_of(client: FlaskClient, tenant: Any, name: str) -> str:
    response = client.post(
        tenant.path("/endpoints"),
        json={"url": f"https://{name}.example.com/hook", "event_types": ["person.created"]},
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.json
    return str(response.json["id"])


def test_two_applications_publish_the_same_event_id(
    client: FlaskClient, tenant: Any, other_tenant: Any, event_types: list[str], db: Any
) -> None:
    mine, theirs = endpoint_of(client, tenant, "acme"), endpoint_of(client, other_tenant, "globex")
    first = publish(client, tenant, "order-42")
    second = publish(client, other_tenant, "order-42")
    for response in (first, second):
        assert response.status_code == 202, response.json
        assert response.json["duplicate"] is False
        assert response.json["deliveries"] == 1
    assert first.json["message_id"] != second.json["message_id"]

    # A repeat within one application is still a duplicate of its own message.
    repeat = publish(client, other_tenant, "order-42")
    assert repeat.status_code == 202
    assert repeat.json["duplicate"] is True
    assert repeat.json["message_id"] == second.json["message_id"]

    with db() as session:
        messages = session.execute(
            select(Message.application_id, Message.id).where(Message.event_id == "order-42")
        ).all()
        deliveries = session.execute(
            select(Delivery.message_id, Delivery.endpoint_id)
            .join(Message, Message.id == Delivery.message_id)
            .where(Message.event_id == "order-42")
        ).all()
    assert sorted(str(app) for app, _ in messages) == sorted([tenant.id, other_tenant.id])
    assert sorted((m, str(e)) for m, e in deliveries) == sorted(
        [(first.json["message_id"], mine), (second.json["message_id"], theirs)]
    )

    # Each application sees its own message under the id, with its own delivery only.
    for who, endpoint in ((tenant, mine), (other_tenant, theirs)):
        shown = client.get(who.path("/messages/order-42"), headers=who.headers)
        assert shown.status_code == 200
        assert shown.json["application_id"] == who.id
        assert [d["endpoint_id"] for d in shown.json["deliveries"]] == [endpoint]
        listed = client.get(who.path("/deliveries?event_id=order-42"), headers=who.headers)
        assert [d["endpoint_id"] for d in listed.json["data"]] == [endpoint]

    # The admin's filter across applications finds both.
    both = client.get("/api/v1/deliveries?event_id=order-42", headers=ADMIN)
    assert both.status_code == 200
    assert sorted(d["endpoint_id"] for d in both.json["data"]) == sorted([mine, theirs])


def _answers(client: FlaskClient, tenant: Any, event_id: str) -> list[tuple[int, Any]]:
    """What every event-id route answers ``tenant`` about ``event_id``, with the id blanked."""
    calls = [
        client.get(tenant.path(f"/messages/{event_id}"), headers=tenant.headers),
        client.post(tenant.path(f"/messages/{event_id}/resend"), headers=tenant.headers),
        client.get(tenant.path(f"/deliveries?event_id={event_id}"), headers=tenant.headers),
    ]
    return [(r.status_code, r.get_data(as_text=True).replace(event_id, "<id>")) for r in calls]


def test_an_application_cannot_probe_another_applications_event_ids(
    client: FlaskClient, tenant: Any, other_tenant: Any, event_types: list[str]
) -> None:
    endpoint_of(client, other_tenant, "globex")
    assert publish(client, other_tenant, "evt_secret_1").status_code == 202

    used_by_other = _answers(client, tenant, "evt_secret_1")
    used_by_nobody = _answers(client, tenant, "evt_secret_2")
    assert used_by_other == used_by_nobody
    assert [status for status, _ in used_by_other] == [404, 404, 200]

    # Publishing the other application's id is an ordinary new message, as for a fresh id.
    taken, fresh = publish(client, tenant, "evt_secret_1"), publish(client, tenant, "evt_new_1")
    assert (taken.status_code, taken.json["duplicate"]) == (202, False)
    assert (fresh.status_code, fresh.json["duplicate"]) == (202, False)
    # ... and the other application's message under that id is untouched.
    theirs = client.get(other_tenant.path("/messages/evt_secret_1"), headers=other_tenant.headers)
    assert theirs.status_code == 200
    assert theirs.json["application_id"] == other_tenant.id


def test_resend_by_event_id_touches_only_the_callers_message(
    client: FlaskClient,
    tenant: Any,
    other_tenant: Any,
    event_types: list[str],
    db: sessionmaker[Session],
) -> None:
    endpoint_of(client, tenant, "acme")
    endpoint_of(client, other_tenant, "globex")
    publish(client, tenant, "evt_shared")
    publish(client, other_tenant, "evt_shared")
    shared = select(Message.id).where(Message.event_id == "evt_shared")
    with db.begin() as session:  # both delivered, so a resend has something to requeue
        session.execute(
            update(Delivery).where(Delivery.message_id.in_(shared)).values(state="delivered")
        )
    replay = client.post(tenant.path("/messages/evt_shared/resend"), headers=tenant.headers)
    assert replay.status_code == 202
    assert replay.json["deliveries_requeued"] == 1
    with db() as session:
        rows = session.execute(
            select(Delivery.application_id, Delivery.state).where(Delivery.message_id.in_(shared))
        ).all()
    states = {str(app): state for app, state in rows}
    assert states == {
        tenant.id: "pending",
        other_tenant.id: "delivered",
    }
