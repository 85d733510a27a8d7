"""The people demo API: CRUD, the events each change fires, and bad input."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from producer.catalogue import EVENT_TYPES, register_event_types
from producer.config import ProducerSettings
from webhooks_core.models import EventType

Client = Any


def create(client: Client, **fields: Any) -> dict[str, Any]:
    response = client.post("/people", json={"name": "Ada Lovelace", **fields})
    assert response.status_code == 201, response.json
    return dict(response.json)


def errors(response: Any) -> dict[str, str]:
    assert response.mimetype == "application/problem+json", response.data
    return {err["field"]: err["message"] for err in response.json["errors"]}


def test_create_fires_person_created_with_the_full_resource(
    producer_client: Client, outbox_events: Any
) -> None:
    person = create(producer_client, email="ada@example.com")
    assert person["name"] == "Ada Lovelace"
    assert person["email"] == "ada@example.com"
    assert person["phone"] is None
    (event,) = outbox_events()
    assert event["id"] == person["event_id"]
    assert event["type"] == "person.created"
    assert "application" not in event  # broadcast
    assert event["ordering_key"] == person["id"]  # one person's events go in order
    del person["event_id"]
    assert event["data"] == {"person": person}


def test_get_and_list_paginated(producer_client: Client) -> None:
    created = [create(producer_client, name=f"Person {n}")["id"] for n in range(5)]
    assert producer_client.get(f"/people/{created[0]}").json["name"] == "Person 0"

    seen: list[str] = []
    iterator = None
    while True:
        query = "?limit=2" + (f"&iterator={iterator}" if iterator else "")
        page = producer_client.get(f"/people{query}").json
        assert len(page["data"]) <= 2
        seen += [person["id"] for person in page["data"]]
        iterator = page["iterator"]
        if page["done"]:
            break
    assert seen == list(reversed(created))


def test_patch_fires_person_updated_with_changed_fields(
    producer_client: Client, outbox_events: Any
) -> None:
    person = create(producer_client, email="ada@old.example.com", phone="+44 1234")
    response = producer_client.patch(
        f"/people/{person['id']}", json={"email": "ada@example.com", "phone": "+44 1234"}
    )
    assert response.status_code == 200
    assert response.json["email"] == "ada@example.com"
    updated = outbox_events()[-1]
    assert updated["type"] == "person.updated"
    assert updated["id"] == response.json["event_id"]
    assert updated["data"]["changed_fields"] == ["email"]
    assert updated["data"]["previous"] == {"email": "ada@old.example.com"}
    assert updated["data"]["person"]["email"] == "ada@example.com"
    assert updated["data"]["person"]["phone"] == "+44 1234"


def test_put_replaces_and_unchanged_update_fires_nothing(
    producer_client: Client, outbox_events: Any
) -> None:
    person = create(producer_client, email="ada@example.com")
    replaced = producer_client.put(f"/people/{person['id']}", json={"name": "Ada King"})
    assert replaced.status_code == 200
    assert replaced.json["email"] is None
    assert outbox_events()[-1]["data"]["changed_fields"] == ["email", "name"]

    same = producer_client.put(f"/people/{person['id']}", json={"name": "Ada King"})
    assert same.status_code == 200
    assert same.json["event_id"] is None
    assert len(outbox_events()) == 2


def test_delete_fires_person_deleted_then_404(producer_client: Client, outbox_events: Any) -> None:
    person = create(producer_client)
    deleted = producer_client.delete(f"/people/{person['id']}")
    assert deleted.status_code == 200
    event = outbox_events()[-1]
    assert event["type"] == "person.deleted"
    assert event["data"]["person"]["id"] == person["id"]
    assert event["ordering_key"] == person["id"]
    assert producer_client.get(f"/people/{person['id']}").status_code == 404
    assert producer_client.delete(f"/people/{person['id']}").status_code == 404


def test_unknown_ids_are_404_problems(producer_client: Client) -> None:
    missing = uuid.uuid4()
    for method in ("get", "delete"):
        response = getattr(producer_client, method)(f"/people/{missing}")
        assert response.status_code == 404
        assert response.mimetype == "application/problem+json"
    assert producer_client.patch(f"/people/{missing}", json={"name": "x"}).status_code == 404
    assert producer_client.put(f"/people/{missing}", json={"name": "x"}).status_code == 404


def test_bad_input_is_a_422_naming_the_field(producer_client: Client, outbox_events: Any) -> None:
    assert "name" in errors(producer_client.post("/people", json={}))
    assert "email" in errors(producer_client.post("/people", json={"name": "A", "email": "nope"}))
    assert "shoe_size" in errors(
        producer_client.post("/people", json={"name": "A", "shoe_size": 4})
    )
    assert "name" in errors(producer_client.post("/people", json={"name": ""}))
    person = create(producer_client)
    assert "name" in errors(producer_client.patch(f"/people/{person['id']}", json={"name": None}))
    assert producer_client.get("/people/not-a-uuid").status_code == 422
    assert "iterator" in errors(producer_client.get("/people?iterator=garbage"))
    assert "limit" in errors(producer_client.get("/people?limit=0"))
    assert len(outbox_events()) == 1


def test_malformed_json_is_a_400_problem(producer_client: Client) -> None:
    response = producer_client.post(
        "/people", data="{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"


def test_event_types_registered_in_the_catalogue_once(
    producer_client: Client, producer_settings: ProducerSettings, db: sessionmaker[Session]
) -> None:
    with db() as session:
        names = set(session.scalars(select(EventType.name)))
    assert names >= {event_type["name"] for event_type in EVENT_TYPES}
    assert register_event_types(producer_settings.database_url) == []


def test_health_metrics_and_openapi(producer_client: Client) -> None:
    assert producer_client.get("/health").json == {"status": "ok", "database": "ok"}
    create(producer_client)
    metrics = producer_client.get("/metrics").data.decode()
    assert (
        'webhooks_http_requests_total{method="POST",route="/people",service="producer",'
        'status_class="2xx"}' in metrics
    )
    paths = producer_client.get("/openapi.json").json["paths"]
    assert {"/people", "/people/{person_id}", "/uploads"} <= set(paths)
