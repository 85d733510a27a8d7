"""The one-statement publish path: same answers as the general path, and survives dead
connections (no pre-ping).  See registration.services.ingest."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from registration.app import create_app
from registration.config import APISettings
from webhooks_core.messages.envelope import Envelope
from webhooks_core.messages.fanout import accept_message
from webhooks_core.models import Delivery, Message

ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}


def publish(client: FlaskClient, tenant: Any, body: dict[str, Any], key: str | None = None) -> Any:
    headers = {**tenant.headers, **({"Idempotency-Key": key} if key else {})}
    return client.post(tenant.path("/messages"), json=body, headers=headers)


def count(sessions: sessionmaker[Session], model: Any) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def statements(engine: Engine) -> list[str]:
    """Every statement the engine sends from now on (watched, not changed)."""
    seen: list[str] = []

    def watch(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", watch)
    return seen


def test_a_publish_of_a_known_type_is_one_statement(
    app: Any, client: FlaskClient, tenant: Any, event_types: list[str], db: Any
) -> None:
    body = {"event_type": "person.created", "payload": {"n": 1}}
    assert publish(client, tenant, body, "warm").status_code == 202  # reads the catalogue
    seen = statements(app.extensions["webhooks"].engine)
    response = client.post(  # the admin token: an application token is one more statement
        tenant.path("/messages"), json=body, headers={**ADMIN, "Idempotency-Key": "fast"}
    )
    assert response.status_code == 202, response.json
    assert response.json["duplicate"] is False
    # One statement; a connection that never ran it prepares it first (once per connection).
    executed = [statement for statement in seen if not statement.startswith("PREPARE")]
    assert len(executed) == 1, seen
    assert count(db, Message) == 2


def test_catalogue_changes_apply_at_once(
    client: FlaskClient, tenant: Any, event_types: list[str], field_errors: Any, db: Any
) -> None:
    body = {"event_type": "person.created", "payload": {"name": 1}}
    assert publish(client, tenant, body, "before").status_code == 202  # cached: no schema
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    patched = client.patch(
        "/api/v1/event-types/person.created", json={"schema": schema}, headers=ADMIN
    )
    assert patched.status_code == 200, patched.json
    refused = publish(client, tenant, body)
    assert refused.status_code == 422
    assert "payload.name" in field_errors(refused)
    # A repeat of a request accepted before the change still gets its first result.
    repeat = publish(client, tenant, body, "before")
    assert repeat.status_code == 202
    assert repeat.json["duplicate"] is True
    assert client.delete("/api/v1/event-types/person.created", headers=ADMIN).status_code == 200
    archived = publish(client, tenant, {"event_type": "person.created", "payload": {"name": "a"}})
    assert archived.status_code == 422
    assert "archived" in field_errors(archived)["event_type"]
    assert count(db, Message) == 1


def _endpoint(client: FlaskClient, tenant: Any, **fields: Any) -> str:
    body = {"url": f"http://127.0.0.1:9/{uuid.uuid4().hex}", **fields}
    response = client.post(tenant.path("/endpoints"), json=body, headers=tenant.headers)
    assert response.status_code == 201, response.json
    return str(response.json["id"])


@pytest.mark.parametrize("channels", [None, ["eu"], ["us", "eu"]])
def test_fan_out_matches_the_shared_rules(
    client: FlaskClient,
    tenant: Any,
    other_tenant: Any,
    event_types: list[str],
    db: sessionmaker[Session],
    channels: list[str] | None,
) -> None:
    _endpoint(client, tenant)
    _endpoint(client, tenant, event_types=["person.created"])
    _endpoint(client, tenant, event_types=["person.updated"])
    _endpoint(client, tenant, channels=["eu"])
    _endpoint(client, tenant, channels=["asia"])
    _endpoint(client, tenant, event_types=["person.created"], channels=["us"])
    disabled = _endpoint(client, tenant)
    client.patch(tenant.path(f"/endpoints/{disabled}"), json={"enabled": False}, headers=ADMIN)
    deleted = _endpoint(client, tenant)
    client.delete(tenant.path(f"/endpoints/{deleted}"), headers=ADMIN)
    _endpoint(client, other_tenant)
    body: dict[str, Any] = {"event_type": "person.created", "payload": {}, "channels": channels}
    assert publish(client, tenant, body).status_code == 202  # warms the catalogue
    fast = publish(client, tenant, body)
    assert fast.status_code == 202
    with db.begin() as session:
        general = accept_message(
            session,
            Envelope(type="person.created", data={}, channels=channels),
            source="http",
            application_id=uuid.UUID(tenant.id),
        )

        def endpoints_of(message_id: int) -> set[uuid.UUID]:
            found = select(Delivery.endpoint_id).where(Delivery.message_id == message_id)
            return set(session.scalars(found))

        assert endpoints_of(fast.json["message_id"]) == endpoints_of(general.message_id)
    assert fast.json["deliveries"] == general.deliveries > 0


@pytest.fixture
def restricted_role(engine: Engine) -> Iterator[str]:
    """A login role of the test database's own, so a test can refuse it new connections."""
    role = f"ingest_probe_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
        conn.execute(text(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"))
        conn.execute(text(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"))
    yield role
    with engine.begin() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"),
            {"r": role},
        )
        conn.execute(text(f"DROP OWNED BY {role}"))
        conn.execute(text(f"DROP ROLE {role}"))


def test_dead_connections_are_retried_or_answered_503(
    engine: Engine,
    settings: APISettings,
    tenant: Any,
    event_types: list[str],
    db: Any,
    restricted_role: str,
) -> None:
    url = settings.database_url.replace("postgres@", f"{restricted_role}@")
    client = create_app(settings.model_copy(update={"database_url": url})).test_client()
    body = {"event_type": "person.created", "payload": {}}

    def kill_backends() -> None:
        with engine.begin() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE usename = :r"
                ),
                {"r": restricted_role},
            ).scalar_one()
        assert killed >= 1

    assert publish(client, tenant, body, "one").status_code == 202
    # The pooled connection dies (as in a database restart): the publish runs again on a
    # new connection, once.
    kill_backends()
    retried = publish(client, tenant, body, "two")
    assert retried.status_code == 202, retried.json
    assert count(db, Message) == 2

    # The database refuses new connections for a while: 503 with Retry-After, nothing stored.
    with engine.begin() as conn:
        conn.execute(text(f"ALTER ROLE {restricted_role} NOLOGIN"))
    kill_backends()
    refused = publish(client, tenant, body, "three")
    assert refused.status_code == 503
    assert refused.mimetype == "application/problem+json"
    assert refused.headers["Retry-After"] == "1"
    with engine.begin() as conn:
        conn.execute(text(f"ALTER ROLE {restricted_role} LOGIN"))
    again = publish(client, tenant, body, "three")
    assert again.status_code == 202
    assert again.json["duplicate"] is False
    assert count(db, Message) == 3
