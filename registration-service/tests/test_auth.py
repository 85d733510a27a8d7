"""Bearer-token authentication and application scoping."""

from __future__ import annotations

from flask.testing import FlaskClient

ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}


def test_no_token_is_401_with_problem(client: FlaskClient) -> None:
    response = client.get("/api/v1/applications")
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_bad_token_is_401(client: FlaskClient) -> None:
    response = client.get("/api/v1/event-types", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    basic = client.get("/api/v1/event-types", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert basic.status_code == 401


def test_health_metrics_and_docs_need_no_token(client: FlaskClient) -> None:
    assert client.get("/health").json == {"status": "ok", "database": "ok"}
    assert client.get("/metrics").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs/swagger").status_code == 200


def test_application_token_cannot_administer(client: FlaskClient, tenant) -> None:
    response = client.post("/api/v1/applications", json={"name": "x"}, headers=tenant.headers)
    assert response.status_code == 403
    assert client.get("/api/v1/applications", headers=tenant.headers).status_code == 403
    denied = client.post("/api/v1/event-types", json={"name": "a.b"}, headers=tenant.headers)
    assert denied.status_code == 403


def test_application_token_reads_own_application_only(
    client: FlaskClient, tenant, other_tenant
) -> None:
    assert client.get(tenant.path(), headers=tenant.headers).json["id"] == tenant.id
    assert client.get(other_tenant.path(), headers=tenant.headers).status_code == 404
    assert client.get(other_tenant.path("/endpoints"), headers=tenant.headers).status_code == 404


def test_other_applications_endpoint_is_invisible(
    client: FlaskClient, tenant, other_tenant, event_types
) -> None:
    created = client.post(
        other_tenant.path("/endpoints"),
        json={"url": "http://127.0.0.1:9/h", "event_types": ["person.created"]},
        headers=other_tenant.headers,
    )
    assert created.status_code == 201
    endpoint_id = created.json["id"]
    # Through the other application's path, or smuggled under its own application id.
    assert (
        client.get(
            other_tenant.path(f"/endpoints/{endpoint_id}"), headers=tenant.headers
        ).status_code
        == 404
    )
    assert (
        client.get(tenant.path(f"/endpoints/{endpoint_id}"), headers=tenant.headers).status_code
        == 404
    )
    assert (
        client.get(
            tenant.path(f"/endpoints/{endpoint_id}/secret"), headers=tenant.headers
        ).status_code
        == 404
    )


def test_revoked_token_stops_working(client: FlaskClient, tenant) -> None:
    tokens = client.get(tenant.path("/tokens"), headers=ADMIN).json["data"]
    assert len(tokens) == 1
    assert "token" not in tokens[0]
    assert (
        client.delete(tenant.path(f"/tokens/{tokens[0]['id']}"), headers=ADMIN).status_code == 204
    )
    assert client.get(tenant.path(), headers=tenant.headers).status_code == 401
