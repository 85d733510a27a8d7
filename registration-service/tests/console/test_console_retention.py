"""The console's retention page: what is kept for how long; the admin changes it."""

from __future__ import annotations

import re

from registration.app import create_app
from registration.services import applications

ADMIN_TOKEN = "test-admin-token-0123456789"


def _csrf(page: bytes) -> str:
    found = re.search(rb'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert found, page
    return found.group(1).decode()


def test_admin_sees_and_changes_retention_with_field_errors(settings, db) -> None:
    app = applications.create_application(db, name="Acme", uid=None, metadata={})
    client = create_app(settings.model_copy(update={"console_secret_key": "k" * 32})).test_client()
    signed = client.post(
        "/console/sign-in",
        data={"token": ADMIN_TOKEN, "csrf_token": _csrf(client.get("/console/sign-in").data)},
    )
    assert signed.status_code == 302
    page = client.get("/console/retention")
    assert page.status_code == 200
    text = page.data.decode()
    assert "30 days" in text
    assert "90 days" in text
    assert "as long as the message" in text

    saved = client.post(
        "/console/retention",
        data={
            "attempts_days": "7",
            "messages_days": "",
            "payload_days": "3",
            "csrf_token": _csrf(page.data),
        },
    )
    assert saved.status_code == 200
    assert "Retention saved." in saved.data.decode()
    stored = applications.get_application(db, app.id)
    assert (stored.retention_attempts_days, stored.retention_payload_days) == (7, 3)
    assert stored.retention_messages_days is None

    refused = client.post(
        "/console/retention",
        data={
            "attempts_days": "7",
            "messages_days": "2",
            "payload_days": "",
            "csrf_token": _csrf(page.data),
        },
    )
    assert "attempts are kept no longer than their messages" in refused.data.decode()
    assert applications.get_application(db, app.id).retention_messages_days is None
