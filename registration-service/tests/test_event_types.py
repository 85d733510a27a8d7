"""The event type catalogue."""

from __future__ import annotations

from flask.testing import FlaskClient

ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}

SCHEMA = {
    "type": "object",
    "properties": {"id": {"type": "integer"}, "name": {"type": "string"}},
    "required": ["id"],
}


def test_create_get_list_update_archive(client: FlaskClient, tenant) -> None:
    created = client.post(
        "/api/v1/event-types",
        json={
            "name": "invoice.paid",
            "description": "An invoice was paid",
            "schema": SCHEMA,
            "example": {"id": 1},
        },
        headers=ADMIN,
    )
    assert created.status_code == 201
    assert created.json["schema"] == SCHEMA

    # Application tokens read the catalogue.
    fetched = client.get("/api/v1/event-types/invoice.paid", headers=tenant.headers)
    assert fetched.json["description"] == "An invoice was paid"

    updated = client.patch(
        "/api/v1/event-types/invoice.paid", json={"description": "Paid"}, headers=ADMIN
    )
    assert updated.json["description"] == "Paid"
    assert updated.json["schema"] == SCHEMA

    archived = client.delete("/api/v1/event-types/invoice.paid", headers=ADMIN)
    assert archived.status_code == 200
    assert archived.json["archived"] is True
    assert client.get("/api/v1/event-types", headers=ADMIN).json["data"] == []
    with_archived = client.get("/api/v1/event-types?include_archived=true", headers=ADMIN).json[
        "data"
    ]
    assert [item["name"] for item in with_archived] == ["invoice.paid"]

    unarchived = client.patch(
        "/api/v1/event-types/invoice.paid", json={"archived": False}, headers=ADMIN
    )
    assert unarchived.json["archived"] is False


def test_bad_names_schemas_and_examples_are_field_errors(client: FlaskClient, field_errors) -> None:
    bad_name = client.post("/api/v1/event-types", json={"name": "Not A Type"}, headers=ADMIN)
    assert bad_name.status_code == 422
    assert "name" in field_errors(bad_name)

    bad_schema = client.post(
        "/api/v1/event-types", json={"name": "a.b", "schema": {"type": "nonsense"}}, headers=ADMIN
    )
    assert bad_schema.status_code == 422
    assert "schema" in field_errors(bad_schema)

    bad_example = client.post(
        "/api/v1/event-types",
        json={"name": "a.b", "schema": SCHEMA, "example": {"name": "x"}},
        headers=ADMIN,
    )
    assert bad_example.status_code == 422
    assert "required" in field_errors(bad_example)["example"]


def test_duplicate_and_unknown(client: FlaskClient, field_errors) -> None:
    assert (
        client.post("/api/v1/event-types", json={"name": "a.b"}, headers=ADMIN).status_code == 201
    )
    duplicate = client.post("/api/v1/event-types", json={"name": "a.b"}, headers=ADMIN)
    assert duplicate.status_code == 409
    assert "name" in field_errors(duplicate)
    assert client.get("/api/v1/event-types/no.such", headers=ADMIN).status_code == 404
    assert client.patch("/api/v1/event-types/no.such", json={}, headers=ADMIN).status_code == 404
