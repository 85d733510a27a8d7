"""Basic and bearer auth as endpoint settings; v1a (Ed25519) signing keys and their rotation."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.endpoints.credentials import unseal_json
from webhooks_core.signing import new_signing_key, public_key

HOOK = "http://127.0.0.1:9/hook"


def create(client: FlaskClient, tenant: Any, **fields: Any) -> Any:
    return client.post(
        tenant.path("/endpoints"), json={"url": HOOK, **fields}, headers=tenant.headers
    )


def field_errors(response: Any) -> dict[str, str]:
    return {e["field"]: e["message"] for e in response.json["errors"]}


def test_basic_and_bearer_auth_are_stored_sealed_and_shown_masked(
    client: FlaskClient, tenant: Any, db: sessionmaker[Session]
) -> None:
    basic = create(
        client,
        tenant,
        auth={"type": "basic", "username": "ada", "password": "correct-horse-battery"},
    )
    assert basic.status_code == 201, basic.json
    assert basic.json["auth"] == {
        "type": "basic",
        "username": "ada",
        "password": "********tery",
        "token": None,
    }
    bearer = create(
        client,
        tenant,
        url=HOOK + "/2",
        auth={"type": "bearer", "token": "abc.def-ghi_jkl~mno/pq+=="},
    )
    assert bearer.status_code == 201, bearer.json
    assert bearer.json["auth"]["token"] == "********q+=="
    with db() as session:
        stored = dict(session.execute(text("SELECT id::text, auth FROM endpoints")).all())
    assert "correct-horse-battery" not in str(stored)
    assert "abc.def-ghi_jkl~mno/pq+==" not in str(stored)
    assert unseal_json(stored[basic.json["id"]])["password"] == "correct-horse-battery"

    # Sent back masked (a read, edited), the password stays; null removes the setting.
    path = tenant.path(f"/endpoints/{basic.json['id']}")
    same = client.patch(
        path, json={"auth": basic.json["auth"] | {"token": None}}, headers=tenant.headers
    )
    assert same.status_code == 422  # token is not a basic auth field
    kept = client.patch(
        path,
        json={"auth": {"type": "basic", "username": "ada2", "password": "********tery"}},
        headers=tenant.headers,
    )
    assert kept.status_code == 200, kept.json
    with db() as session:
        auth = session.scalar(
            text("SELECT auth FROM endpoints WHERE id = :id"), {"id": basic.json["id"]}
        )
    assert unseal_json(auth) == {
        "type": "basic",
        "username": "ada2",
        "password": "correct-horse-battery",
    }
    removed = client.patch(path, json={"auth": None}, headers=tenant.headers)
    assert removed.json["auth"] is None


@pytest.mark.parametrize(
    ("auth", "headers", "field", "message"),
    [
        (
            {"type": "basic", "username": "a:b", "password": "p"},
            {},
            "auth.basic.username",
            "colon",
        ),
        ({"type": "bearer", "token": "has space"}, {}, "auth.bearer.token", "b64token"),
        ({"type": "digest", "token": "x"}, {}, "auth", "tag"),
        ({"type": "basic", "username": "a"}, {}, "auth.basic.password", "required"),
        ({"type": "bearer", "token": "t"}, {"Authorization": "Bearer x"}, "auth", "both"),
        (
            {"type": "basic", "username": "a", "password": "p\n"},
            {},
            "auth.basic.password",
            "control",
        ),
    ],
)
def test_bad_auth_is_a_422_naming_the_field(
    client: FlaskClient, tenant: Any, auth: Any, headers: Any, field: str, message: str
) -> None:
    response = create(client, tenant, auth=auth, headers=headers)
    assert response.status_code == 422, response.json
    assert response.headers["Content-Type"] == "application/problem+json"
    errors = field_errors(response)
    assert field in errors, errors
    assert message in errors[field].lower()


def test_v1a_keys_are_generated_served_as_public_keys_and_rotated_with_grace(
    client: FlaskClient, tenant: Any, db: sessionmaker[Session]
) -> None:
    plain = create(client, tenant)
    assert plain.json["signature_schemes"] == ["v1"]
    none = client.get(
        tenant.path(f"/endpoints/{plain.json['id']}/signing-key"), headers=tenant.headers
    )
    assert none.status_code == 404
    assert "v1a" in none.json["detail"]

    both = create(client, tenant, url=HOOK + "/both", signature_schemes=["v1", "v1a"])
    assert both.status_code == 201, both.json
    path = tenant.path(f"/endpoints/{both.json['id']}/signing-key")
    first = client.get(path, headers=tenant.headers).json
    assert first["public_key"].startswith("whpk_")
    assert len(base64.b64decode(first["public_key"][5:])) == 32
    assert first["previous"] == []

    chosen = new_signing_key()
    rotated = client.post(f"{path}/rotate", json={"key": chosen}, headers=tenant.headers)
    assert rotated.status_code == 200, rotated.json
    assert rotated.json["public_key"] == public_key(chosen)
    assert [p["public_key"] for p in rotated.json["previous"]] == [first["public_key"]]
    # The same key again changes nothing; the previous one again would sign twice: 409.
    again = client.post(f"{path}/rotate", json={"key": chosen}, headers=tenant.headers)
    assert again.json == rotated.json
    bad = client.post(f"{path}/rotate", json={"key": "whsk_short"}, headers=tenant.headers)
    assert bad.status_code == 422
    assert "key" in field_errors(bad)
    fresh = client.post(f"{path}/rotate", json={}, headers=tenant.headers).json
    assert [p["public_key"] for p in fresh["previous"]] == [public_key(chosen)]

    # The whsk_ keys never leave, and are sealed at rest.
    with db() as session:
        dump = str(session.execute(text("SELECT secret, scheme FROM endpoint_secrets")).all())
    assert chosen not in dump
    assert chosen.removeprefix("whsk_") not in dump
    assert "whsk_" not in client.get(path, headers=tenant.headers).get_data(as_text=True)


def test_a_given_signing_key_of_32_bytes_and_schemes_by_patch(
    client: FlaskClient, tenant: Any
) -> None:
    seed_key = Ed25519PrivateKey.generate()
    seed = seed_key.private_bytes_raw()
    given = "whsk_" + base64.b64encode(seed).decode()
    created = create(client, tenant, signature_schemes=["v1a"], signing_key=given)
    assert created.status_code == 201, created.json
    served = client.get(
        tenant.path(f"/endpoints/{created.json['id']}/signing-key"), headers=tenant.headers
    ).json
    raw = seed_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert served["public_key"] == "whpk_" + base64.b64encode(raw).decode()

    other = create(client, tenant, url=HOOK + "/later")
    path = tenant.path(f"/endpoints/{other.json['id']}")
    patched = client.patch(path, json={"signature_schemes": ["v1", "v1a"]}, headers=tenant.headers)
    assert patched.json["signature_schemes"] == ["v1", "v1a"]
    assert client.get(f"{path}/signing-key", headers=tenant.headers).status_code == 200

    for bad, field in (
        ({"signature_schemes": []}, "signature_schemes"),
        ({"signature_schemes": ["v1", "v1"]}, "signature_schemes"),
        ({"signature_schemes": ["v2"]}, "signature_schemes.0"),
        ({"signing_key": "whsk_" + base64.b64encode(b"x" * 64).decode()}, "signing_key"),
    ):
        response = create(client, tenant, url=HOOK + "/bad", **bad)
        assert response.status_code == 422, (bad, response.json)
        assert field in field_errors(response), (bad, response.json)
