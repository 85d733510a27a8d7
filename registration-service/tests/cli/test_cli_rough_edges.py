"""The CLI's rough edges of issue 13, item 12, as a user meets them."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from registration.cli.main import cli, hoist_global_options
from registration.services import event_types

MICROSECONDS = re.compile(r"\d\d:\d\d:\d\d\.\d+")


def test_an_upsert_says_whether_it_created_or_updated(webhooks, db) -> None:
    event_types.ensure_event_types(db, {"person.created": ""})
    args = ("endpoints", "create", "http://127.0.0.1:9/hook", "-t", "person.created")
    created = webhooks(*args)
    assert created.exit_code == 0, created.output
    assert " created -> http://127.0.0.1:9/hook" in created.stdout
    updated = webhooks(*args, "--description", "CRM")
    assert updated.exit_code == 0, updated.output
    assert " updated -> http://127.0.0.1:9/hook" in updated.stdout
    assert "existed" in updated.stdout


@pytest.mark.parametrize(
    "placement",
    [
        ["-a", "{app}", "endpoints", "list"],
        ["endpoints", "list", "-a", "{app}"],
        ["endpoints", "-a", "{app}", "list"],
        ["endpoints", "list", "--application", "{app}"],
        ["endpoints", "list", "--application={app}"],
        ["endpoints", "list", "-a{app}"],
    ],
)
def test_the_application_option_works_anywhere(webhooks, tenant, placement) -> None:
    args = [part.format(app=tenant.id) for part in placement]
    result = webhooks(*args, WEBHOOKS_APPLICATION="")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "(none)"


def test_hoisting_leaves_other_arguments_alone() -> None:
    assert hoist_global_options(["send", "t", "--data", "{}", "-a", "X"]) == [
        "-a", "X", "send", "t", "--data", "{}",
    ]  # fmt: skip
    assert hoist_global_options(["verify", "--", "-a"]) == ["verify", "--", "-a"]
    assert hoist_global_options(["dead-letters", "redrive", "--all"]) == [
        "dead-letters", "redrive", "--all",
    ]  # fmt: skip


def test_verify_with_a_malformed_secret_is_bad_usage() -> None:
    result = CliRunner().invoke(cli, ["verify", "--secret", "not-a-secret"], input=b"")
    assert result.exit_code == 2
    assert "--secret" in result.stderr
    assert "whsec_" in result.stderr


def test_api_field_errors_are_said_plainly(webhooks, tenant, endpoint_for) -> None:
    endpoint_for(tenant)
    bad_type = webhooks("send", "Not A Type", "--data", "{}")
    assert bad_type.exit_code == 1
    assert "event_type" in bad_type.stderr
    assert "should match pattern" not in bad_type.stderr
    assert "event_type: must be lower-case words joined by dots" in bad_type.stderr
    assert "Input should be" not in bad_type.stderr


def test_times_are_printed_to_the_second(webhooks, tenant, endpoint_for) -> None:
    endpoint_id = endpoint_for(tenant)
    rotated = webhooks("endpoints", "rotate-secret", str(endpoint_id))
    assert rotated.exit_code == 0, rotated.output
    assert "previous, signing until " in rotated.stderr
    assert not MICROSECONDS.search(rotated.stderr), rotated.stderr
    assert re.search(r"until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", rotated.stderr)

    recovered = webhooks("replay", "--endpoint", str(endpoint_id), "--since", "1h")
    assert recovered.exit_code == 0, recovered.output
    assert not MICROSECONDS.search(recovered.stdout), recovered.stdout
    # Nothing had failed: the hint says so, not "already pending".
    assert "no delivery of this endpoint failed" in recovered.stderr
    assert "already pending" not in recovered.stderr


def test_json_output_is_unchanged(webhooks, db) -> None:
    event_types.ensure_event_types(db, {"person.created": ""})
    created = webhooks("endpoints", "create", "http://127.0.0.1:9/j", "--json")
    assert json.loads(created.stdout)["url"] == "http://127.0.0.1:9/j"
