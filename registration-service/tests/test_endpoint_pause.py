"""Pause and resume through the API; recovering what a disable cancelled, once re-enabled."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from webhooks_core.messages.envelope import utcnow
from webhooks_core.models import Delivery


def _endpoint(client: Any, tenant: Any, url: str = "http://127.0.0.1:9/hook") -> str:
    made = client.post(tenant.path("/endpoints"), json={"url": url}, headers=tenant.headers)
    assert made.status_code == 201, made.json
    return str(made.json["id"])


def _publish(client: Any, tenant: Any, n: int) -> None:
    body = {"event_type": "person.created", "payload": {"n": n}}
    response = client.post(tenant.path("/messages"), json=body, headers=tenant.headers)
    assert response.status_code == 202, response.json


def _states(db: Any) -> list[tuple[str, int]]:
    with db() as session:
        rows = session.execute(
            select(Delivery.state, Delivery.attempt_count).order_by(Delivery.id)
        ).all()
    return [(state, count) for state, count in rows]


def test_pause_holds_and_resume_releases_through_the_api(
    client: Any, tenant: Any, event_types: list[str], db: Any
) -> None:
    endpoint_id = _endpoint(client, tenant)
    path = tenant.path(f"/endpoints/{endpoint_id}")

    paused = client.post(f"{path}/pause", headers=tenant.headers)
    assert paused.status_code == 200, paused.json
    assert paused.json["paused_at"] is not None
    assert paused.json["enabled"] is True
    again = client.post(f"{path}/pause", headers=tenant.headers)
    assert again.json["paused_at"] == paused.json["paused_at"]  # pausing twice changes nothing

    _publish(client, tenant, 1)  # still accepted, and a delivery is created for it
    assert _states(db) == [("pending", 0)]
    listed = client.get(tenant.path("/endpoints"), headers=tenant.headers)
    assert listed.json["data"][0]["paused_at"] == paused.json["paused_at"]

    resumed = client.post(f"{path}/resume", headers=tenant.headers)
    assert resumed.status_code == 200
    assert resumed.json["paused_at"] is None
    assert _states(db) == [("pending", 0)]


def test_pause_of_an_unknown_endpoint_is_404(client: Any, tenant: Any) -> None:
    missing = client.post(
        tenant.path("/endpoints/00000000-0000-0000-0000-000000000000/pause"),
        headers=tenant.headers,
    )
    assert missing.status_code == 404
    assert missing.content_type == "application/problem+json"


def test_recover_brings_back_what_a_disable_cancelled(
    client: Any, tenant: Any, event_types: list[str], db: Any
) -> None:
    endpoint_id = _endpoint(client, tenant)
    path = tenant.path(f"/endpoints/{endpoint_id}")
    since = (utcnow() - timedelta(minutes=1)).isoformat()
    _publish(client, tenant, 1)
    _publish(client, tenant, 2)
    assert client.post(f"{path}/disable", json={}, headers=tenant.headers).status_code == 200
    assert [state for state, _ in _states(db)] == ["cancelled", "cancelled"]
    body = {"since": since, "include_cancelled": True}

    refused = client.post(f"{path}/recover", json=body, headers=tenant.headers)
    assert refused.status_code == 409  # enable it first

    assert client.post(f"{path}/enable", headers=tenant.headers).status_code == 200
    failed_only = client.post(f"{path}/recover", json={"since": since}, headers=tenant.headers)
    assert failed_only.json["deliveries_requeued"] == 0  # cancelled is not "failed"
    recovered = client.post(f"{path}/recover", json=body, headers=tenant.headers)

    assert recovered.status_code == 202, recovered.json
    assert recovered.json["deliveries_requeued"] == 2
    assert recovered.json["criteria"]["include_cancelled"] == "True"
    assert _states(db) == [("pending", 0), ("pending", 0)]
