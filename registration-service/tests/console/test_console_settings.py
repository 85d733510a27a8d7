"""The console's cookie and key settings (no browser needed)."""

from __future__ import annotations

import logging
import re

from registration.app import create_app

ADMIN_TOKEN = "test-admin-token-0123456789"


def _sign_in(client) -> str:
    page = client.get("/console/sign-in")
    csrf = re.search(rb'name="csrf_token" type="hidden" value="([^"]+)"', page.data).group(1)
    response = client.post(
        "/console/sign-in", data={"token": ADMIN_TOKEN, "csrf_token": csrf.decode()}
    )
    assert response.status_code == 302
    return response.headers["Set-Cookie"]


def _copy_session(source, target) -> None:
    cookie = source.get_cookie("webhooks_console", path="/console")
    assert cookie is not None
    target.set_cookie("webhooks_console", cookie.value, path="/console")


def test_secure_cookie_when_configured(settings, db) -> None:
    secure = settings.model_copy(
        update={"console_secret_key": "k" * 32, "console_cookie_secure": True}
    )
    cookie = _sign_in(create_app(secure).test_client())
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/console" in cookie


def test_a_generated_key_is_announced_and_sessions_do_not_cross_processes(
    settings, db, caplog
) -> None:
    unset = settings.model_copy(update={"console_secret_key": None})
    with caplog.at_level(logging.WARNING):
        first, second = create_app(unset), create_app(unset)
    assert "WEBHOOKS_CONSOLE_SECRET_KEY is not set" in caplog.text
    client = first.test_client()
    _sign_in(client)
    assert client.get("/console/endpoints").status_code == 200
    # The same cookie means nothing to a process with another generated key.
    other = second.test_client()
    _copy_session(client, other)
    assert other.get("/console/endpoints").status_code == 302


def test_a_shared_key_keeps_sessions_across_processes(settings, db) -> None:
    shared = settings.model_copy(update={"console_secret_key": "s" * 32})
    client = create_app(shared).test_client()
    _sign_in(client)
    other = create_app(shared).test_client()
    _copy_session(client, other)
    assert other.get("/console/endpoints").status_code == 200


def test_the_api_needs_no_csrf_token_and_the_console_does(settings, db) -> None:
    client = create_app(settings.model_copy(update={"console_secret_key": "c" * 32})).test_client()
    api = client.post(
        "/api/v1/applications",
        json={"name": "Acme"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert api.status_code == 201
    refused = client.post("/console/sign-in", data={"token": ADMIN_TOKEN})
    assert refused.status_code == 400
    assert b"security token" in refused.data
