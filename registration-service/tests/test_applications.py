"""Applications and tokens: the admin's bootstrap flow."""

from __future__ import annotations

from flask.testing import FlaskClient

ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}


def test_create_get_update_delete_application(client: FlaskClient) -> None:
    created = client.post(
        "/api/v1/applications",
        json={"name": "Acme", "uid": "acme", "metadata": {"tier": "gold"}},
        headers=ADMIN,
    )
    assert created.status_code == 201
    app_id = created.json["id"]
    assert created.json["metadata"] == {"tier": "gold"}

    fetched = client.get(f"/api/v1/applications/{app_id}", headers=ADMIN)
    assert fetched.json["name"] == "Acme"

    renamed = client.patch(
        f"/api/v1/applications/{app_id}", json={"name": "Acme Inc"}, headers=ADMIN
    )
    assert renamed.status_code == 200
    assert renamed.json["name"] == "Acme Inc"
    assert renamed.json["uid"] == "acme"

    assert client.delete(f"/api/v1/applications/{app_id}", headers=ADMIN).status_code == 204
    assert client.get(f"/api/v1/applications/{app_id}", headers=ADMIN).status_code == 404


def test_duplicate_uid_is_409_on_the_field(client: FlaskClient, field_errors) -> None:
    assert (
        client.post(
            "/api/v1/applications", json={"name": "a", "uid": "same"}, headers=ADMIN
        ).status_code
        == 201
    )
    again = client.post("/api/v1/applications", json={"name": "b", "uid": "same"}, headers=ADMIN)
    assert again.status_code == 409
    assert "uid" in field_errors(again)


def test_token_is_shown_once_and_only_its_hash_is_stored(
    client: FlaskClient, tenant, sessions
) -> None:
    from sqlalchemy import select

    from webhooks_core.models import ApiToken

    with sessions() as session:
        stored = session.scalars(select(ApiToken.token_hash)).all()
    assert tenant.token.startswith("wh_")
    assert tenant.token not in stored
    listed = client.get(tenant.path("/tokens"), headers=ADMIN).json["data"]
    assert all("token" not in item for item in listed)
    assert listed[0]["prefix"] == tenant.token[:10]


def test_unknown_application_is_404(client: FlaskClient) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    response = client.get(f"/api/v1/applications/{missing}", headers=ADMIN)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert (
        client.post(f"/api/v1/applications/{missing}/tokens", json={}, headers=ADMIN).status_code
        == 404
    )


def test_malformed_id_is_a_field_error(client: FlaskClient, field_errors) -> None:
    response = client.get("/api/v1/applications/not-a-uuid", headers=ADMIN)
    assert response.status_code == 422
    assert "app_id" in field_errors(response)


def test_applications_paginate_without_overlap(client: FlaskClient) -> None:
    for n in range(5):
        client.post("/api/v1/applications", json={"name": f"app{n}"}, headers=ADMIN)
    seen: list[str] = []
    iterator = None
    pages = 0
    while True:
        query = "?limit=2" + (f"&iterator={iterator}" if iterator else "")
        body = client.get(f"/api/v1/applications{query}", headers=ADMIN).json
        seen += [item["name"] for item in body["data"]]
        pages += 1
        if body["done"]:
            assert body["iterator"] is None
            break
        iterator = body["iterator"]
    assert pages == 3
    assert sorted(seen) == [f"app{n}" for n in range(5)]
    assert seen == [f"app{n}" for n in reversed(range(5))]  # newest first


def test_tampered_iterator_is_a_field_error(client: FlaskClient, field_errors) -> None:
    response = client.get("/api/v1/applications?iterator=garbage", headers=ADMIN)
    assert response.status_code == 422
    assert "iterator" in field_errors(response)


def test_retention_is_set_shown_changed_and_reset(client: FlaskClient) -> None:
    created = client.post(
        "/api/v1/applications",
        json={"name": "Brief", "retention": {"attempts_days": 7, "payload_days": 3}},
        headers=ADMIN,
    )
    assert created.status_code == 201, created.json
    app_id = created.json["id"]
    assert created.json["retention"] == {
        "attempts_days": 7,
        "messages_days": None,
        "payload_days": 3,
    }

    changed = client.patch(
        f"/api/v1/applications/{app_id}",
        json={"retention": {"messages_days": 14, "payload_days": None}},
        headers=ADMIN,
    )
    assert changed.status_code == 200, changed.json
    assert changed.json["retention"] == {
        "attempts_days": 7,
        "messages_days": 14,
        "payload_days": None,
    }
    plain = client.post("/api/v1/applications", json={"name": "Plain"}, headers=ADMIN)
    assert plain.json["retention"] == {
        "attempts_days": None,
        "messages_days": None,
        "payload_days": None,
    }


def test_bad_retention_values_are_422_on_the_field(client: FlaskClient, field_errors) -> None:
    cases = [
        ({"attempts_days": 0}, "retention.attempts_days"),
        ({"messages_days": 5000}, "retention.messages_days"),
        ({"attempts_days": "soon"}, "retention.attempts_days"),
        ({"forever": True}, "retention.forever"),
        # Attempts and payloads are kept no longer than their messages (90 days by default).
        ({"attempts_days": 120}, "retention.attempts_days"),
        ({"messages_days": 10, "payload_days": 20}, "retention.payload_days"),
    ]
    for retention, field in cases:
        response = client.post(
            "/api/v1/applications", json={"name": "x", "retention": retention}, headers=ADMIN
        )
        assert response.status_code == 422, (retention, response.json)
        assert field in field_errors(response), (retention, field_errors(response))
    app_id = client.post("/api/v1/applications", json={"name": "y"}, headers=ADMIN).json["id"]
    shorter = client.patch(
        f"/api/v1/applications/{app_id}", json={"retention": {"messages_days": 10}}, headers=ADMIN
    )
    assert shorter.status_code == 200
    longer = client.patch(
        f"/api/v1/applications/{app_id}", json={"retention": {"attempts_days": 11}}, headers=ADMIN
    )
    assert longer.status_code == 422
    assert "retention.attempts_days" in field_errors(longer)
    kept = client.get(f"/api/v1/applications/{app_id}", headers=ADMIN)
    assert kept.json["retention"]["attempts_days"] is None
