"""The generated OpenAPI spec, request limits, malformed bodies and start-up failures."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient
from flask_openapi3 import OpenAPI
from openapi_spec_validator import validate

from registration.app import create_app
from registration.config import APISettings
from webhooks_core.settings import SettingsError


def test_spec_is_valid_openapi_31_and_covers_every_api_route(
    app: OpenAPI, client: FlaskClient
) -> None:
    spec = client.get("/openapi.json").json
    assert spec["openapi"].startswith("3.1")
    validate(spec)
    documented = {
        (path, method.upper())
        for path, item in spec["paths"].items()
        for method in item
        if method != "parameters"
    }
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in documented, (path, method)
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_docs_ui_is_served(client: FlaskClient) -> None:
    assert client.get("/docs").status_code == 302
    page = client.get("/docs/swagger")
    assert page.status_code == 200
    assert b"swagger" in page.data.lower()


def test_oversized_body_is_413_problem(settings: APISettings, db, tenant) -> None:
    small = create_app(APISettings.from_env(**{**settings.model_dump(), "max_request_bytes": 2048}))
    response = small.test_client().post(
        tenant.path("/endpoints"),
        json={"url": "http://127.0.0.1:9/x", "description": "x" * 5000},
        headers=tenant.headers,
    )
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"


def test_malformed_json_and_wrong_types_are_4xx(client: FlaskClient, tenant, field_errors) -> None:
    broken = client.post(
        tenant.path("/endpoints"),
        data="{nope",
        content_type="application/json",
        headers=tenant.headers,
    )
    assert broken.status_code == 400
    assert broken.mimetype == "application/problem+json"
    not_object = client.post(tenant.path("/endpoints"), json=[1, 2], headers=tenant.headers)
    assert not_object.status_code == 422
    wrong_type = client.post(tenant.path("/endpoints"), json={"url": 5}, headers=tenant.headers)
    assert wrong_type.status_code == 422
    assert "url" in field_errors(wrong_type)


def test_unknown_route_and_method_are_problems(client: FlaskClient, tenant) -> None:
    missing = client.get("/api/v1/nothing-here", headers=tenant.headers)
    assert missing.status_code == 404
    assert missing.mimetype == "application/problem+json"
    wrong_method = client.put(tenant.path(), headers=tenant.headers)
    assert wrong_method.status_code == 405
    assert wrong_method.mimetype == "application/problem+json"


def test_unreachable_database_fails_at_start_naming_the_variable(settings: APISettings) -> None:
    settings = APISettings.from_env(
        database_url="postgresql+psycopg2://nobody:secretpw@127.0.0.1:1/none",
        broker_url=settings.broker_url,
        database_startup_wait_seconds=1,  # refused all along: it gives up after the wait
    )
    with pytest.raises(SettingsError) as raised:
        create_app(settings)
    message = str(raised.value)
    assert "WEBHOOKS_DATABASE_URL" in message
    assert "secretpw" not in message


def test_bad_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, settings: APISettings
) -> None:
    # The retry schedule and the lease are delivery settings now: their half of this test
    # is webhook-service/tests/delivery/test_delivery_settings.py.
    urls = {"database_url": settings.database_url, "broker_url": settings.broker_url}
    monkeypatch.setenv("WEBHOOKS_ALLOWED_TARGET_NETWORKS", "127.0.0.0/8, not-a-network")
    with pytest.raises(SettingsError, match="WEBHOOKS_ALLOWED_TARGET_NETWORKS"):
        APISettings.from_env(**urls)
    monkeypatch.setenv("WEBHOOKS_ALLOWED_TARGET_NETWORKS", "127.0.0.0/8,::1/128")
    parsed = APISettings.from_env(**urls)
    assert len(parsed.allowed_networks) == 2
