"""Secrets sealed at rest: the database alone reveals none of them; the API shows them masked."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.signing import new_secret

HOOK = "http://127.0.0.1:9/hook"


def raw_dump(db: sessionmaker[Session]) -> str:
    """Every row of the endpoint tables, every column as text."""
    with db() as session:
        rows = [
            row
            for table in ("endpoints", "endpoint_secrets")
            for row in session.scalars(text(f"SELECT CAST(t AS text) FROM {table} t"))  # noqa: S608
        ]
    return "\n".join(rows)


def test_no_secret_is_stored_in_clear(
    client: FlaskClient, tenant: Any, event_types: list[str], db: sessionmaker[Session]
) -> None:
    secret, rotated, relay_secret = new_secret(), new_secret(), new_secret()
    token = "tok-0123456789abcdef-cookie"
    created = client.post(
        tenant.path("/endpoints"),
        json={
            "url": HOOK,
            "event_types": ["person.created"],
            "secret": secret,
            "headers": {"X-Team": "billing", "Authorization": "Bearer header-secret-123456789"},
        },
        headers=tenant.headers,
    )
    assert created.status_code == 201, created.json
    path = tenant.path(f"/endpoints/{created.json['id']}")
    patched = client.patch(
        path,
        json={"headers": {"X-Team": "billing", "Cookie": token, "X-Api-Key": "key-abc"}},
        headers=tenant.headers,
    )
    assert patched.status_code == 200, patched.json
    rotate = client.post(f"{path}/secret/rotate", json={"key": rotated}, headers=tenant.headers)
    assert rotate.status_code == 200, rotate.json
    relay = client.post(
        tenant.path("/relay"),
        json={"url": HOOK, "payload": {}, "secret": relay_secret, "headers": {"Cookie": "c=1"}},
        headers=tenant.headers,
    )

    assert relay.status_code == 202, relay.json
    dump = raw_dump(db)
    for clear in (secret, rotated, relay_secret, token, "key-abc", "header-secret-123456789"):
        assert clear not in dump
        # Nor the key bytes of a whsec_ secret, however encoded.
        assert clear.removeprefix("whsec_") not in dump
    assert "c=1" not in dump
    assert "billing" in dump, dump  # plain custom headers stay plain

    # The API shows credential headers masked, and the secrets only through /secret.
    shown = client.get(path, headers=tenant.headers).json
    assert shown["headers"] == {
        "X-Team": "billing",
        "Cookie": "********" + token[-4:],
        "X-Api-Key": "********",
    }
    assert client.get(f"{path}/secret", headers=tenant.headers).json["key"] == rotated


def test_a_masked_header_sent_back_keeps_its_stored_value(
    client: FlaskClient, tenant: Any, event_types: list[str], db: sessionmaker[Session]
) -> None:
    from webhooks_core.endpoints.credentials import unseal_json

    created = client.post(
        tenant.path("/endpoints"),
        json={"url": HOOK, "headers": {"X-Auth-Token": "very-secret-token-value"}},
        headers=tenant.headers,
    )
    path = tenant.path(f"/endpoints/{created.json['id']}")
    shown = created.json["headers"]
    assert shown == {"X-Auth-Token": "********alue"}
    # An edit form filled from a read sends the mask back: the credential stays.
    client.patch(path, json={"headers": {**shown, "X-Env": "prod"}}, headers=tenant.headers)
    with db() as session:
        stored = session.execute(
            text("SELECT headers, sealed_headers FROM endpoints WHERE id = :id"),
            {"id": created.json["id"]},
        ).one()
    assert stored.headers == {"X-Env": "prod"}
    assert unseal_json(stored.sealed_headers) == {"X-Auth-Token": "very-secret-token-value"}
