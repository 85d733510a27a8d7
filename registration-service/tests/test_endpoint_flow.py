"""An endpoint's current limits (adaptive flow control) in the API and the console."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from webhooks_core.db import transaction
from webhooks_core.messages.envelope import utcnow
from webhooks_core.models import EndpointFlow


def _endpoint(client: Any, tenant: Any, **body: Any) -> str:
    made = client.post(
        tenant.path("/endpoints"),
        json={"url": "http://127.0.0.1:9/hook", **body},
        headers=tenant.headers,
    )
    assert made.status_code == 201, made.json
    return str(made.json["id"])


def test_the_current_limits_are_in_the_endpoint_read(client: Any, tenant: Any, db: Any) -> None:
    endpoint_id = _endpoint(client, tenant, max_in_flight=6, rate_limit=50)
    path = tenant.path(f"/endpoints/{endpoint_id}")
    fresh = client.get(path, headers=tenant.headers).json["flow"]
    assert fresh == {
        "max_in_flight": 6,
        "rate_limit": 50.0,
        "throttled_until": None,
        "reason": None,
        "adapted": False,
    }
    until = utcnow() + timedelta(seconds=30)
    with transaction(db) as session:
        session.add(
            EndpointFlow(
                endpoint_id=uuid.UUID(endpoint_id),
                max_in_flight=2.4,
                rate_limit=12.345,
                throttled_until=until,
                reason="retry-after",
            )
        )
    read = client.get(path, headers=tenant.headers).json["flow"]
    assert read["max_in_flight"] == 2
    assert read["rate_limit"] == 12.35
    assert read["reason"] == "retry-after"
    assert read["adapted"] is True
    assert read["throttled_until"] is not None
    listed = client.get(tenant.path("/endpoints"), headers=tenant.headers).json["data"]
    assert listed[0]["flow"] == read


def test_a_rate_imposed_on_an_endpoint_without_one_is_shown(
    client: Any, tenant: Any, db: Any
) -> None:
    endpoint_id = _endpoint(client, tenant)
    with transaction(db) as session:
        session.add(
            EndpointFlow(endpoint_id=uuid.UUID(endpoint_id), rate_limit=140.0, reason="429")
        )
    read = client.get(tenant.path(f"/endpoints/{endpoint_id}"), headers=tenant.headers).json
    assert read["flow"]["max_in_flight"] is None  # the platform default, untouched
    assert read["flow"]["rate_limit"] == 140.0
    assert read["flow"]["reason"] == "429"
    assert read["rate_limit"] is None  # the configured value is unchanged


def test_flow_control_can_be_turned_off_for_an_endpoint(client: Any, tenant: Any, db: Any) -> None:
    endpoint_id = _endpoint(client, tenant, max_in_flight=6)
    path = tenant.path(f"/endpoints/{endpoint_id}")
    assert client.get(path, headers=tenant.headers).json["adaptive_flow"] is True
    with transaction(db) as session:
        session.add(
            EndpointFlow(endpoint_id=uuid.UUID(endpoint_id), max_in_flight=2.0, reason="503")
        )
    assert client.get(path, headers=tenant.headers).json["flow"]["adapted"] is True

    off = client.patch(path, json={"adaptive_flow": False}, headers=tenant.headers)
    assert off.status_code == 200, off.json
    assert off.json["adaptive_flow"] is False
    # Its configured limits only, and what was learnt is dropped.
    assert off.json["flow"] == {
        "max_in_flight": 6,
        "rate_limit": None,
        "throttled_until": None,
        "reason": None,
        "adapted": False,
    }
    with db() as session:
        assert session.get(EndpointFlow, uuid.UUID(endpoint_id)) is None
    listed = client.get(tenant.path("/endpoints"), headers=tenant.headers).json["data"]
    assert listed[0]["adaptive_flow"] is False

    on = client.patch(path, json={"adaptive_flow": True}, headers=tenant.headers)
    assert on.status_code == 200, on.json
    assert on.json["adaptive_flow"] is True


def test_a_stored_state_is_not_shown_while_flow_control_is_off(
    client: Any, tenant: Any, db: Any
) -> None:
    endpoint_id = _endpoint(client, tenant, adaptive_flow=False, rate_limit=20)
    # A row a batch in flight when it was turned off may still write (the claim ignores it).
    with transaction(db) as session:
        session.add(EndpointFlow(endpoint_id=uuid.UUID(endpoint_id), rate_limit=3.0, reason="429"))
    read = client.get(tenant.path(f"/endpoints/{endpoint_id}"), headers=tenant.headers).json
    assert read["adaptive_flow"] is False
    assert read["flow"]["rate_limit"] == 20.0
    assert read["flow"]["adapted"] is False


def test_adaptive_flow_must_be_a_boolean(client: Any, tenant: Any, field_errors: Any) -> None:
    for value in ("yes", "false", 1, 0, None, {}):
        made = client.post(
            tenant.path("/endpoints"),
            json={"url": "http://127.0.0.1:9/strict", "adaptive_flow": value},
            headers=tenant.headers,
        )
        assert made.status_code == 422, (value, made.json)
        assert "adaptive_flow" in field_errors(made)
    endpoint_id = _endpoint(client, tenant)
    patched = client.patch(
        tenant.path(f"/endpoints/{endpoint_id}"),
        json={"adaptive_flow": "off"},
        headers=tenant.headers,
    )
    assert patched.status_code == 422, patched.json
    assert field_errors(patched) == {"adaptive_flow": "Input should be a valid boolean"}


def test_the_openapi_document_describes_the_switch(client: Any) -> None:
    schemas = client.get("/openapi.json").json["components"]["schemas"]
    for name in ("EndpointIn", "EndpointPatch", "EndpointOut"):
        field = schemas[name]["properties"]["adaptive_flow"]
        assert field["type"] == "boolean", (name, field)
        assert "configured" in field["description"]
