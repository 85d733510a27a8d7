"""``webhooks endpoints ...`` and error reporting, against the running API."""

from __future__ import annotations

import json
import subprocess
import sys

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from registration.services import endpoint_secrets, endpoints, event_types
from webhooks_core.db import transaction
from webhooks_core.messages.envelope import utcnow
from webhooks_core.models import Endpoint, EndpointFlow


def test_create_list_secret_rotate_disable_enable(webhooks, tenant, db) -> None:
    event_types.create_event_type(
        db, name="person.created", description="", schema=None, example=None
    )
    created = webhooks(
        "endpoints", "create", "http://127.0.0.1:9/hook",
        "--type", "person.created", "--header", "X-Team: people", "--rate-limit", "5",
        "--json",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    endpoint = json.loads(created.stdout)
    assert endpoint["event_types"] == ["person.created"]
    assert endpoint["headers"] == {"X-Team": "people"}
    endpoint_id = endpoint["id"]

    listed = webhooks("endpoints", "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "URL", "TYPES", "STATE", "HEALTH", "FAILURES", "LIMITS"]
    assert lines[1].split() == [
        endpoint_id,
        "http://127.0.0.1:9/hook",
        "person.created",
        "enabled",
        "healthy",
        "0",
        "configured",
    ]
    # Failures as the engine leaves them show in the HEALTH column (issue 13, item 1).
    with transaction(db) as session:
        session.execute(
            update(Endpoint).where(Endpoint.id == endpoint_id)
            .values(consecutive_failures=3, failing_since=utcnow())
        )  # fmt: skip
    assert webhooks("endpoints", "list").stdout.splitlines()[1].split()[4:6] == ["failing", "3"]
    # Flow control's current limits (docs/delivery.md, Flow control).
    with transaction(db) as session:
        session.add(EndpointFlow(endpoint_id=endpoint_id, rate_limit=3.5, reason="429"))
    assert webhooks("endpoints", "list").stdout.splitlines()[1].split()[6] == "-,3.5/s,429"

    secret = webhooks("endpoints", "secret", endpoint_id)
    assert secret.exit_code == 0
    assert secret.stdout.strip() == endpoint_secrets.get_secret(db, tenant.id, endpoint_id).key

    rotated = webhooks("endpoints", "rotate-secret", endpoint_id)
    assert rotated.exit_code == 0, rotated.output
    new_key = rotated.stdout.strip()
    assert new_key.startswith("whsec_")
    assert new_key != secret.stdout.strip()
    assert secret.stdout.strip() in rotated.stderr  # the previous one, still signing

    disabled = webhooks("endpoints", "disable", endpoint_id, "--reason", "maintenance")
    assert disabled.exit_code == 0, disabled.output
    assert "disabled (maintenance)" in disabled.stdout
    assert webhooks("endpoints", "list", "--state", "enabled").stdout.strip() == "(none)"
    enabled = webhooks("endpoints", "enable", endpoint_id)
    assert enabled.exit_code == 0
    assert endpoints.get_endpoint(db, tenant.id, endpoint_id).enabled is True


def test_field_errors_are_shown_with_exit_code_1(webhooks) -> None:
    result = webhooks("endpoints", "create", "http://169.254.169.254/x", "--header", "Host: x")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: 422 Validation failed")
    assert "  body.headers: " in result.stderr or "  headers: " in result.stderr


def test_unknown_endpoint_and_bad_token(webhooks) -> None:
    missing = webhooks("endpoints", "enable", "00000000-0000-0000-0000-000000000000")
    assert missing.exit_code == 1
    assert "404 Not found" in missing.stderr
    refused = webhooks("endpoints", "list", WEBHOOKS_API_TOKEN="wh_wrong")
    assert refused.exit_code == 1
    assert "401 Unauthorized: the token is not valid" in refused.stderr


def test_usage_errors_exit_2(webhooks) -> None:
    no_app = webhooks("endpoints", "list", WEBHOOKS_APPLICATION="")
    assert no_app.exit_code == 2
    assert "--application" in no_app.stderr
    no_token = webhooks("endpoints", "list", WEBHOOKS_API_TOKEN="")
    assert no_token.exit_code == 2
    assert "WEBHOOKS_API_TOKEN" in no_token.stderr


def test_unreachable_api_exits_3(webhooks) -> None:
    # Port 9 (discard) has no listener here: connection refused.
    result = webhooks("--api-url", "http://127.0.0.1:9", "endpoints", "list")
    assert result.exit_code == 3
    assert "cannot reach http://127.0.0.1:9" in result.stderr


def test_installed_entry_point_runs(api_url, tenant, db: sessionmaker[Session]) -> None:
    # The console_scripts entry point, as a user runs it.
    executable = f"{sys.prefix}/bin/webhooks"
    completed = subprocess.run(
        [executable, "--api-url", api_url, "--token", tenant.token, "-a", str(tenant.id),
         "endpoints", "list"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "(none)"


def test_applications_list_needs_the_admin_token(webhooks, tenant) -> None:
    listed = webhooks("applications", "list", WEBHOOKS_API_TOKEN="test-admin-token-0123456789")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines()[1].split() == [str(tenant.id), "Acme"]
    refused = webhooks("applications", "list")
    assert refused.exit_code == 1
    assert "403 Forbidden" in refused.stderr


def test_pause_and_resume(webhooks, tenant, db) -> None:
    created = webhooks("endpoints", "create", "http://127.0.0.1:9/hook", "--json")
    assert created.exit_code == 0, created.output
    endpoint_id = json.loads(created.stdout)["id"]

    paused = webhooks("endpoints", "pause", endpoint_id)
    assert paused.exit_code == 0, paused.output
    assert "paused" in paused.stdout
    assert endpoints.get_endpoint(db, tenant.id, endpoint_id).paused_at is not None
    assert webhooks("endpoints", "list").stdout.splitlines()[1].split()[3] == "paused"

    resumed = webhooks("endpoints", "resume", endpoint_id)
    assert resumed.exit_code == 0, resumed.output
    assert endpoints.get_endpoint(db, tenant.id, endpoint_id).paused_at is None
    assert webhooks("endpoints", "list").stdout.splitlines()[1].split()[3] == "enabled"


def test_applications_retention_shows_changes_and_resets(webhooks, tenant) -> None:
    admin = {"WEBHOOKS_API_TOKEN": "test-admin-token-0123456789"}
    app = str(tenant.id)
    shown = webhooks("applications", "retention", app, **admin)
    assert shown.exit_code == 0, shown.output
    assert [line.split() for line in shown.stdout.splitlines()[1:]] == [
        ["attempts", "default"],
        ["messages", "default"],
        ["payload", "default"],
    ]
    changed = webhooks(
        "applications", "retention", app, "--attempts-days", "7", "--payload-days", "3",
        "--json", **admin,
    )  # fmt: skip
    assert changed.exit_code == 0, changed.output
    assert json.loads(changed.stdout) == {
        "attempts_days": 7,
        "messages_days": None,
        "payload_days": 3,
    }
    reset = webhooks("applications", "retention", app, "--default", "payload", "--json", **admin)
    assert json.loads(reset.stdout)["payload_days"] is None
    refused = webhooks("applications", "retention", app, "--attempts-days", "200", **admin)
    assert refused.exit_code == 1
    assert "retention.attempts_days" in refused.stderr


def test_flow_control_off_and_on_again(webhooks, tenant, db) -> None:
    created = webhooks(
        "endpoints", "create", "http://127.0.0.1:9/fixed", "--no-adaptive-flow", "--rate-limit",
        "5",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    assert "flow control: off (the configured limits only)" in created.stdout
    listed = webhooks("endpoints", "list").stdout.splitlines()
    row = next(line.split() for line in listed if "/fixed" in line)
    assert row[-1] == "fixed"
    endpoint_id = row[0]

    updated = webhooks(
        "endpoints", "update", endpoint_id, "--adaptive-flow", "--max-in-flight", "3"
    )
    assert updated.exit_code == 0, updated.output
    assert "limits: 3 concurrent, 5/s; flow control: adaptive" in updated.stdout
    listed = webhooks("endpoints", "list").stdout.splitlines()
    assert next(line.split() for line in listed if "/fixed" in line)[-1] == "configured"

    off = webhooks("endpoints", "update", endpoint_id, "--no-adaptive-flow", "--json")
    assert off.exit_code == 0, off.output
    assert json.loads(off.stdout)["adaptive_flow"] is False

    nothing = webhooks("endpoints", "update", endpoint_id)
    assert nothing.exit_code == 2
    assert "nothing to change" in nothing.output
