"""Endpoint credentials through the API: OAuth 2.0 client credentials and mutual TLS.

Secrets go in and never come out; certificates are checked (parsable, the key is the
certificate's, not expired) and their expiry is shown.  Certificates come from a test CA
(trustme).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trustme
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

HOOK = "https://127.0.0.1:9/hook"
SECRET = "oauth-client-secret-value-0123456789"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def oauth(**fields: Any) -> dict[str, Any]:
    return {
        "token_url": "http://127.0.0.1:9/token",
        "client_id": "platform",
        "client_secret": SECRET,
        "scopes": ["webhooks:write"],
        **fields,
    }


def client_pair(ca: trustme.CA, **kwargs: Any) -> dict[str, str]:
    leaf = ca.issue_cert("client.example", **kwargs)
    return {
        "client_certificate": leaf.cert_chain_pems[0].bytes().decode(),
        "client_key": leaf.private_key_pem.bytes().decode(),
    }


def create(client: FlaskClient, tenant: Any, **fields: Any) -> Any:
    return client.post(
        tenant.path("/endpoints"),
        json={"url": HOOK, "event_types": ["person.created"], **fields},
        headers=tenant.headers,
    )


def test_oauth_credentials_are_stored_and_the_secret_never_returned(
    client: FlaskClient, tenant: Any, event_types: list[str], db: sessionmaker[Session]
) -> None:
    created = create(client, tenant, oauth=oauth(audience="https://api.example"))
    assert created.status_code == 201, created.json
    assert created.json["oauth"] == {
        "token_url": "http://127.0.0.1:9/token",
        "client_id": "platform",
        "scopes": ["webhooks:write"],
        "audience": "https://api.example",
        "auth_method": "client_secret_basic",
    }
    endpoint_path = tenant.path(f"/endpoints/{created.json['id']}")
    for response in (
        client.get(endpoint_path, headers=tenant.headers),
        client.get(tenant.path("/endpoints"), headers=tenant.headers),
    ):
        assert SECRET not in response.get_data(as_text=True)

    # Scopes change without the secret; a new token URL needs it again.
    changed = client.patch(
        endpoint_path,
        json={"oauth": {"token_url": "http://127.0.0.1:9/token", "client_id": "platform",
                        "scopes": ["a", "b"], "auth_method": "client_secret_post"}},
        headers=tenant.headers,
    )  # fmt: skip
    assert changed.status_code == 200, changed.json
    assert changed.json["oauth"]["scopes"] == ["a", "b"]
    assert changed.json["oauth"]["auth_method"] == "client_secret_post"
    moved = client.patch(
        endpoint_path,
        json={"oauth": {"token_url": "http://127.0.0.1:10/token", "client_id": "platform"}},
        headers=tenant.headers,
    )
    assert moved.status_code == 422
    assert moved.json["errors"][0]["field"] == "oauth.client_secret"

    with db() as session:
        stored = session.execute(
            text("SELECT oauth_client_secret FROM endpoints WHERE id = :id"),
            {"id": created.json["id"]},
        ).scalar_one()
    assert stored.startswith("sealed:v1:")  # kept through the scope change, sealed
    assert SECRET not in stored
    removed = client.patch(endpoint_path, json={"oauth": None}, headers=tenant.headers)
    assert removed.status_code == 200
    assert removed.json["oauth"] is None


def test_oauth_input_is_checked_field_by_field(
    client: FlaskClient, tenant: Any, event_types: list[str], field_errors: Any, settings: Any
) -> None:
    cases = [
        (oauth(client_secret=None), "oauth.client_secret"),
        (oauth(token_url="ftp://example.com/token"), "oauth.token_url"),
        (oauth(token_url="http://169.254.169.254/token"), "oauth.token_url"),
        (oauth(scopes=["has space"]), "oauth.scopes.0"),
        (oauth(auth_method="private_key_jwt"), "oauth.auth_method"),
    ]
    for value, field in cases:
        response = create(client, tenant, oauth=value)
        assert response.status_code == 422, (value, response.json)
        assert field in field_errors(response), (field, response.json)


def test_client_certificate_is_checked_and_its_expiry_shown(
    client: FlaskClient, tenant: Any, event_types: list[str], ca: trustme.CA, field_errors: Any,
    db: sessionmaker[Session],
) -> None:  # fmt: skip
    not_after = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    pair = client_pair(ca, not_after=not_after)
    ca_pem = ca.cert_pem.bytes().decode()
    created = create(client, tenant, tls={**pair, "ca_bundle": ca_pem})
    assert created.status_code == 201, created.json
    tls = created.json["tls"]
    assert tls["client_certificate"] == pair["client_certificate"]
    assert tls["ca_bundle"] == ca_pem
    assert datetime.fromisoformat(tls["not_after"]) == not_after
    assert tls["expired"] is False
    assert "client_key" not in tls
    assert "PRIVATE KEY" not in created.get_data(as_text=True)
    with db() as session:
        stored_key, expires = session.execute(
            text("SELECT tls_client_key, tls_certificate_expires_at FROM endpoints"
                 " WHERE id = :id"), {"id": created.json["id"]},
        ).one()  # fmt: skip
    assert expires == not_after
    assert stored_key.startswith("sealed:v1:")
    assert pair["client_key"].splitlines()[1] not in stored_key

    other = client_pair(ca)
    expired = client_pair(
        ca,
        not_before=datetime.now(UTC) - timedelta(days=10),
        not_after=datetime.now(UTC) - timedelta(days=1),
    )
    cases = [
        ({**pair, "client_key": other["client_key"]}, "tls.client_key"),
        ({"client_certificate": pair["client_certificate"]}, "tls.client_key"),
        ({**pair, "client_certificate": "not a certificate"}, "tls.client_certificate"),
        ({**pair, "client_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n"}, "tls.client_key"),
        (expired, "tls.client_certificate"),
        ({"ca_bundle": "nothing"}, "tls.ca_bundle"),
        ({}, "tls"),
    ]
    for value, field in cases:
        response = create(client, tenant, url="https://127.0.0.1:10/other", tls=value)
        assert response.status_code == 422, (value, response.json)
        assert field in field_errors(response), (field, response.json)
    assert (
        "expired at"
        in field_errors(create(client, tenant, url="https://127.0.0.1:10/other", tls=expired))[
            "tls.client_certificate"
        ]
    )


def test_a_ca_bundle_alone_is_allowed_and_null_removes_tls(
    client: FlaskClient, tenant: Any, event_types: list[str], ca: trustme.CA
) -> None:
    created = create(client, tenant, tls={"ca_bundle": ca.cert_pem.bytes().decode()})
    assert created.status_code == 201, created.json
    assert created.json["tls"]["client_certificate"] is None
    assert created.json["tls"]["not_after"] is None
    path = tenant.path(f"/endpoints/{created.json['id']}")
    removed = client.patch(path, json={"tls": None}, headers=tenant.headers)
    assert removed.status_code == 200
    assert removed.json["tls"] is None


def test_oauth_and_basic_or_bearer_auth_exclude_each_other(
    client: FlaskClient, tenant: Any, event_types: list[str], field_errors: Any
) -> None:
    bearer = {"type": "bearer", "token": "static-token-0123456789"}
    both = create(client, tenant, oauth=oauth(), auth=bearer)
    assert both.status_code == 422
    assert "oauth" in field_errors(both)
    created = create(client, tenant, auth=bearer)
    assert created.status_code == 201, created.json
    path = tenant.path(f"/endpoints/{created.json['id']}")
    added = client.patch(path, json={"oauth": oauth()}, headers=tenant.headers)
    assert added.status_code == 422
    assert "oauth" in field_errors(added)
    swapped = client.patch(path, json={"oauth": oauth(), "auth": None}, headers=tenant.headers)
    assert swapped.status_code == 200, swapped.json
    assert swapped.json["oauth"]["client_id"] == "platform"
