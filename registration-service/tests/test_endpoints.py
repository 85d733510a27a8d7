"""Endpoints: upsert by (URL, event types), validation, listing, lifecycle and secrets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from registration.app import create_app
from registration.config import APISettings
from webhooks_core.models import Delivery, DeliveryState, Message
from webhooks_core.signing import new_secret

HOOK = "http://127.0.0.1:9/hook"


def body(**fields: Any) -> dict[str, Any]:
    return {"url": HOOK, "event_types": ["person.created"], **fields}


@pytest.fixture
def endpoint(client: FlaskClient, tenant, event_types) -> dict[str, Any]:
    created = client.post(tenant.path("/endpoints"), json=body(), headers=tenant.headers)
    assert created.status_code == 201
    return created.json  # type: ignore[no-any-return]


def test_posting_same_url_and_types_updates_instead_of_duplicating(
    client: FlaskClient, tenant, event_types
) -> None:
    first = client.post(
        tenant.path("/endpoints"),
        json=body(event_types=["person.updated", "person.created"], description="v1"),
        headers=tenant.headers,
    )
    assert first.status_code == 201
    assert first.json["event_types"] == ["person.created", "person.updated"]  # stored sorted
    again = client.post(
        tenant.path("/endpoints"),
        json=body(event_types=["person.created", "person.updated"], description="v2", rate_limit=5),
        headers=tenant.headers,
    )
    assert again.status_code == 200
    assert again.json["id"] == first.json["id"]
    assert again.json["description"] == "v2"
    assert again.json["rate_limit"] == 5
    # Another event type for the same URL is another subscription.
    other = client.post(
        tenant.path("/endpoints"), json=body(event_types=["person.deleted"]), headers=tenant.headers
    )
    assert other.status_code == 201
    listed = client.get(tenant.path("/endpoints"), headers=tenant.headers).json["data"]
    assert len(listed) == 2


def test_same_url_in_two_applications_is_two_endpoints(
    client: FlaskClient, tenant, other_tenant, event_types
) -> None:
    mine = client.post(tenant.path("/endpoints"), json=body(), headers=tenant.headers)
    theirs = client.post(other_tenant.path("/endpoints"), json=body(), headers=other_tenant.headers)
    assert mine.status_code == theirs.status_code == 201
    assert mine.json["id"] != theirs.json["id"]


@pytest.mark.parametrize(
    ("url", "message_part"),
    [
        ("ftp://example.com/x", "http or https"),
        ("https://user:pw@example.com/x", "credentials"),
        ("not a url", "http or https"),
        ("http:///nohost", "host"),
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://10.1.2.3/hook", "private"),
        ("http://[::ffff:10.0.0.1]/hook", "private"),
        ("http://[2002:a9fe:a9fe::]/hook", "metadata address embedded in a 6to4 address"),
        ("http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/", "private address embedded in a Teredo"),
        ("http://[64:ff9b::a00:1]/hook", "private address embedded in a NAT64 address"),
        ("http://100.64.0.1/hook", "CGNAT"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://example.com:99999/", "valid URL"),
    ],
)
def test_bad_urls_are_field_errors(
    client: FlaskClient, tenant, event_types, field_errors, url: str, message_part: str
) -> None:
    response = client.post(tenant.path("/endpoints"), json=body(url=url), headers=tenant.headers)
    assert response.status_code == 422
    assert message_part in field_errors(response)["url"]


def test_loopback_is_refused_unless_settings_allow_it(
    settings: APISettings, db, event_types, tenant, field_errors
) -> None:
    strict = APISettings.from_env(**{**settings.model_dump(), "allowed_target_networks": []})
    client = create_app(strict).test_client()
    for url in ("http://127.0.0.1:8002/webhook", "http://localhost/x", "http://[::1]/x"):
        response = client.post(
            tenant.path("/endpoints"), json=body(url=url), headers=tenant.headers
        )
        assert response.status_code == 422, url
        assert "loopback" in field_errors(response)["url"]


def test_field_validation(client: FlaskClient, tenant, event_types, field_errors) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        (body(event_types=["no.such"]), "event_types"),
        (body(event_types=["Bad Type"]), "event_types.0"),
        (body(headers={"webhook-signature": "x"}), "headers"),
        (body(headers={"X-Ok": "a\r\nInjected: 1"}), "headers"),
        (body(rate_limit=0), "rate_limit"),
        (body(retry_schedule=[]), "retry_schedule"),
        (body(retry_schedule=[-1]), "retry_schedule.0"),
        (body(channels=["bad channel!"]), "channels.0"),
        (body(secret="not-a-secret"), "secret"),
        (body(unknown_field=1), "unknown_field"),
        ({"event_types": ["person.created"]}, "url"),
    ]
    for payload, field in cases:
        response = client.post(tenant.path("/endpoints"), json=payload, headers=tenant.headers)
        assert response.status_code == 422, (payload, response.json)
        assert field in field_errors(response), (payload, response.json)


def test_archived_event_type_cannot_be_subscribed(
    client: FlaskClient, tenant, event_types, field_errors
) -> None:
    admin = {"Authorization": "Bearer test-admin-token-0123456789"}
    client.delete("/api/v1/event-types/person.deleted", headers=admin)
    response = client.post(
        tenant.path("/endpoints"), json=body(event_types=["person.deleted"]), headers=tenant.headers
    )
    assert response.status_code == 422
    assert "archived" in field_errors(response)["event_types"]


def test_list_filters_and_pagination(client: FlaskClient, tenant, event_types) -> None:
    for n in range(3):
        client.post(tenant.path("/endpoints"), json=body(url=f"{HOOK}/{n}"), headers=tenant.headers)
    wildcard = client.post(
        tenant.path("/endpoints"),
        json=body(url=f"{HOOK}/all", event_types=[]),
        headers=tenant.headers,
    ).json
    updated_only = client.post(
        tenant.path("/endpoints"),
        json=body(url=f"{HOOK}/u", event_types=["person.updated"]),
        headers=tenant.headers,
    ).json
    client.post(
        tenant.path(f"/endpoints/{updated_only['id']}/disable"), json={}, headers=tenant.headers
    )

    by_type = client.get(
        tenant.path("/endpoints?event_type=person.updated"), headers=tenant.headers
    ).json["data"]
    assert {item["id"] for item in by_type} == {wildcard["id"], updated_only["id"]}
    disabled = client.get(tenant.path("/endpoints?state=disabled"), headers=tenant.headers).json[
        "data"
    ]
    assert [item["id"] for item in disabled] == [updated_only["id"]]
    enabled = client.get(
        tenant.path("/endpoints?state=enabled&limit=2"), headers=tenant.headers
    ).json
    assert len(enabled["data"]) == 2
    assert not enabled["done"]
    rest = client.get(
        tenant.path(f"/endpoints?state=enabled&limit=2&iterator={enabled['iterator']}"),
        headers=tenant.headers,
    ).json
    assert len(rest["data"]) == 2
    assert rest["done"]
    bad_state = client.get(tenant.path("/endpoints?state=sleepy"), headers=tenant.headers)
    assert bad_state.status_code == 422


def test_patch_changes_fields_and_refuses_collisions(
    client: FlaskClient, tenant, event_types, endpoint, field_errors
) -> None:
    path = tenant.path(f"/endpoints/{endpoint['id']}")
    patched = client.patch(
        path,
        json={
            "headers": {"X-Team": "billing"},
            "channels": ["eu"],
            "max_in_flight": 2,
            "metadata": {"k": "v"},
        },
        headers=tenant.headers,
    )
    assert patched.status_code == 200
    assert patched.json["headers"] == {"X-Team": "billing"}
    assert patched.json["channels"] == ["eu"]
    assert patched.json["url"] == HOOK
    other = client.post(
        tenant.path("/endpoints"), json=body(url=f"{HOOK}/2"), headers=tenant.headers
    ).json
    collision = client.patch(
        tenant.path(f"/endpoints/{other['id']}"), json={"url": HOOK}, headers=tenant.headers
    )
    assert collision.status_code == 409
    assert "url" in field_errors(collision)
    bad_url = client.patch(path, json={"url": "gopher://x"}, headers=tenant.headers)
    assert bad_url.status_code == 422


def _delivery_for(sessions, endpoint: dict[str, Any], state: str) -> int:
    with sessions.begin() as session:
        message = Message(
            event_id=f"msg_{state}_{endpoint['id'][:8]}",
            application_id=endpoint["application_id"],
            event_type="person.created",
            payload={"id": 1},
            occurred_at=datetime.now(UTC),
            source="http",
        )
        session.add(message)
        session.flush()
        delivery = Delivery(
            message_id=message.id,
            endpoint_id=endpoint["id"],
            application_id=endpoint["application_id"],
            event_type="person.created",
            state=state,
        )
        session.add(delivery)
        session.flush()
        return delivery.id


def _state(sessions, delivery_id: int) -> str:
    with sessions() as session:
        return session.scalar(select(Delivery.state).where(Delivery.id == delivery_id))  # type: ignore[no-any-return]


def test_disable_cancels_open_deliveries_and_enable_resets_health(
    client: FlaskClient, tenant, endpoint, sessions
) -> None:
    pending = _delivery_for(sessions, endpoint, DeliveryState.PENDING)
    path = tenant.path(f"/endpoints/{endpoint['id']}")
    disabled = client.post(
        f"{path}/disable", json={"reason": "maintenance"}, headers=tenant.headers
    )
    assert disabled.json["enabled"] is False
    assert disabled.json["disabled_reason"] == "maintenance"
    assert _state(sessions, pending) == DeliveryState.CANCELLED
    enabled = client.post(f"{path}/enable", headers=tenant.headers)
    assert enabled.json["enabled"] is True
    assert enabled.json["disabled_reason"] is None
    assert enabled.json["consecutive_failures"] == 0


def test_delete_hides_endpoint_keeps_history_and_frees_the_key(
    client: FlaskClient, tenant, endpoint, sessions
) -> None:
    delivered = _delivery_for(sessions, endpoint, DeliveryState.DELIVERED)
    retrying = _delivery_for(sessions, endpoint, DeliveryState.RETRYING)
    path = tenant.path(f"/endpoints/{endpoint['id']}")
    assert client.delete(path, headers=tenant.headers).status_code == 204
    assert client.get(path, headers=tenant.headers).status_code == 404
    assert client.delete(path, headers=tenant.headers).status_code == 404
    assert _state(sessions, delivered) == DeliveryState.DELIVERED
    assert _state(sessions, retrying) == DeliveryState.CANCELLED
    recreated = client.post(tenant.path("/endpoints"), json=body(), headers=tenant.headers)
    assert recreated.status_code == 201
    assert recreated.json["id"] != endpoint["id"]


def test_secret_reveal_and_rotation_with_grace(client: FlaskClient, tenant, endpoint) -> None:
    path = tenant.path(f"/endpoints/{endpoint['id']}/secret")
    # Secrets never appear in endpoint bodies.
    assert "secret" not in endpoint
    assert "key" not in endpoint
    first = client.get(path, headers=tenant.headers).json
    assert first["key"].startswith("whsec_")
    assert first["previous"] == []

    rotated = client.post(f"{path}/rotate", json={}, headers=tenant.headers).json
    assert rotated["key"] != first["key"]
    assert [item["key"] for item in rotated["previous"]] == [first["key"]]

    chosen = new_secret()
    again = client.post(f"{path}/rotate", json={"key": chosen}, headers=tenant.headers).json
    assert again["key"] == chosen
    # Only the previous secret keeps signing: the one before it stopped at this rotation.
    assert [item["key"] for item in again["previous"]] == [rotated["key"]]
    assert client.get(path, headers=tenant.headers).json["key"] == chosen

    invalid = client.post(f"{path}/rotate", json={"key": "whsec_short"}, headers=tenant.headers)
    assert invalid.status_code == 422


def test_rotations_keep_one_previous_secret_and_refuse_a_known_one(
    client: FlaskClient, tenant, endpoint, field_errors
) -> None:
    path = tenant.path(f"/endpoints/{endpoint['id']}/secret")
    for _ in range(4):
        view = client.post(f"{path}/rotate", json={}, headers=tenant.headers).json
        assert len(view["previous"]) == 1
    current, previous = view["key"], view["previous"][0]["key"]

    # The current secret again: a no-op (a repeated request), nothing rotates.
    same = client.post(f"{path}/rotate", json={"key": current}, headers=tenant.headers)
    assert same.status_code == 200
    assert same.json == view

    # The previous secret, still signing: refused, it would sign twice.
    back = client.post(f"{path}/rotate", json={"key": previous}, headers=tenant.headers)
    assert back.status_code == 409
    assert back.mimetype == "application/problem+json"
    assert "previous secret" in field_errors(back)["key"]
    assert client.get(path, headers=tenant.headers).json == view


def test_upserting_again_with_the_same_secret_does_not_rotate(
    client: FlaskClient, tenant, event_types, field_errors
) -> None:
    chosen = new_secret()
    created = client.post(
        tenant.path("/endpoints"), json=body(secret=chosen), headers=tenant.headers
    )
    path = tenant.path(f"/endpoints/{created.json['id']}/secret")
    for _ in range(3):
        again = client.post(
            tenant.path("/endpoints"), json=body(secret=chosen), headers=tenant.headers
        )
        assert again.status_code == 200
    assert client.get(path, headers=tenant.headers).json == {"key": chosen, "previous": []}

    newer = new_secret()
    client.post(tenant.path("/endpoints"), json=body(secret=newer), headers=tenant.headers)
    view = client.get(path, headers=tenant.headers).json
    assert (view["key"], [p["key"] for p in view["previous"]]) == (newer, [chosen])
    back = client.post(tenant.path("/endpoints"), json=body(secret=chosen), headers=tenant.headers)
    assert back.status_code == 409
    assert "previous secret" in field_errors(back)["secret"]


def test_rotation_grace_zero_drops_old_secret(
    settings: APISettings, db, tenant, event_types
) -> None:
    client = create_app(
        APISettings.from_env(**{**settings.model_dump(), "secret_rotation_grace_seconds": 0})
    ).test_client()
    created = client.post(tenant.path("/endpoints"), json=body(), headers=tenant.headers).json
    rotated = client.post(
        tenant.path(f"/endpoints/{created['id']}/secret/rotate"), json={}, headers=tenant.headers
    )
    assert rotated.json["previous"] == []


def test_supplied_secret_is_used(client: FlaskClient, tenant, event_types) -> None:
    chosen = new_secret()
    created = client.post(
        tenant.path("/endpoints"), json=body(secret=chosen), headers=tenant.headers
    ).json
    revealed = client.get(
        tenant.path(f"/endpoints/{created['id']}/secret"), headers=tenant.headers
    ).json
    assert revealed["key"] == chosen


def test_unknown_endpoint_is_404_everywhere(client: FlaskClient, tenant) -> None:
    missing = tenant.path("/endpoints/00000000-0000-4000-8000-000000000000")
    for method, suffix in [
        ("get", ""),
        ("patch", ""),
        ("delete", ""),
        ("post", "/disable"),
        ("post", "/enable"),
        ("get", "/secret"),
        ("post", "/secret/rotate"),
    ]:
        response = getattr(client, method)(missing + suffix, json={}, headers=tenant.headers)
        assert response.status_code == 404, (method, suffix)
        assert response.mimetype == "application/problem+json"
