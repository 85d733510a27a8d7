"""``webhooks send --ordering-key``, ``endpoints create --key-failure-policy`` and
``endpoints waiting-keys``, against the running API."""

from __future__ import annotations

import json

from sqlalchemy import select, text

from registration.services import event_types
from webhooks_core.db import transaction
from webhooks_core.models import Delivery


def test_send_with_a_key_and_list_the_waiting_keys(webhooks, tenant, db) -> None:
    event_types.create_event_type(
        db, name="person.updated", description="", schema=None, example=None
    )
    created = webhooks(
        "endpoints", "create", "http://127.0.0.1:9/ordered", "--type", "person.updated",
        "--key-failure-policy", "block", "--json",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    endpoint = json.loads(created.stdout)
    assert endpoint["key_failure_policy"] == "block"

    for n in range(2):
        sent = webhooks(
            "send", "person.updated", "--data", json.dumps({"n": n}),
            "--ordering-key", "person-7", "--json",
        )  # fmt: skip
        assert sent.exit_code == 0, sent.output
        assert json.loads(sent.stdout)["ordering_key"] == "person-7"
    bad = webhooks("send", "person.updated", "--data", "{}", "--ordering-key", "a\tb")
    assert bad.exit_code != 0
    assert "ordering_key" in bad.output

    empty = webhooks("endpoints", "waiting-keys", endpoint["id"])
    assert empty.exit_code == 0, empty.output
    assert empty.stdout.splitlines() == ["0 keys waiting"]
    with transaction(db) as session:
        head = session.scalars(select(Delivery.id).order_by(Delivery.id)).first()
        session.execute(text("UPDATE deliveries SET state = 'dead' WHERE id = :id"), {"id": head})
    waiting = webhooks("endpoints", "waiting-keys", endpoint["id"])
    assert waiting.exit_code == 0, waiting.output
    lines = waiting.stdout.splitlines()
    assert lines[0] == "1 keys waiting"
    assert lines[1].split() == ["KEY", "HEAD", "WHY", "NEXT", "ATTEMPT", "OPEN"]
    assert lines[2].split()[:2] == ["person-7", str(head + 1)]
    assert f"blocked by dead delivery {head}" in lines[2]
