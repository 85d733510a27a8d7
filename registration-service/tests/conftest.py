"""Fixtures of the registration service tests: the real app on the test database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient
from flask_openapi3 import OpenAPI
from sqlalchemy.orm import Session, sessionmaker

from registration.app import create_app
from registration.config import APISettings

ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}


@dataclass
class Tenant:
    """An application with a token of its own."""

    id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def path(self, rest: str = "") -> str:
        return f"/api/v1/applications/{self.id}{rest}"


@pytest.fixture(scope="session")
def settings(make_settings: Callable[..., APISettings]) -> APISettings:
    """The API's settings on the test database and vhost."""
    return make_settings(APISettings)


@pytest.fixture
def app(settings: APISettings, db: sessionmaker[Session]) -> OpenAPI:
    return create_app(settings)


@pytest.fixture
def client(app: OpenAPI) -> FlaskClient:
    return app.test_client()


def make_tenant(client: FlaskClient, name: str = "acme") -> Tenant:
    created = client.post("/api/v1/applications", json={"name": name}, headers=ADMIN)
    assert created.status_code == 201, created.json
    issued = client.post(
        f"/api/v1/applications/{created.json['id']}/tokens", json={}, headers=ADMIN
    )
    assert issued.status_code == 201, issued.json
    return Tenant(created.json["id"], issued.json["token"])


@pytest.fixture
def tenant(client: FlaskClient) -> Tenant:
    return make_tenant(client)


@pytest.fixture
def other_tenant(client: FlaskClient) -> Tenant:
    return make_tenant(client, "globex")


@pytest.fixture
def event_types(client: FlaskClient) -> list[str]:
    names = ["person.created", "person.updated", "person.deleted"]
    for name in names:
        response = client.post("/api/v1/event-types", json={"name": name}, headers=ADMIN)
        assert response.status_code == 201, response.json
    return names


@pytest.fixture
def endpoint(client: FlaskClient, tenant: Tenant, event_types: list[str]) -> str:
    """The id of the tenant's endpoint subscribed to ``person.created``."""
    response = client.post(
        tenant.path("/endpoints"),
        json={"url": "http://127.0.0.1:9/hook", "event_types": ["person.created"]},
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.json
    return str(response.json["id"])


@pytest.fixture
def field_errors() -> Any:
    """``{field: message}`` of a problem+json response."""

    def parse(response: Any) -> dict[str, str]:
        assert response.mimetype == "application/problem+json", response.data
        return {err["field"]: err["message"] for err in response.json["errors"]}

    return parse
