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
