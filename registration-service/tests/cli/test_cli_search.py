"""``webhooks search`` against the running API."""

from __future__ import annotations

import json

from sqlalchemy import update

from webhooks_core.db import transaction
from webhooks_core.messages.envelope import Envelope
from webhooks_core.messages.fanout import accept_message
from webhooks_core.models import Delivery


def test_search_deliveries_by_field_and_status(webhooks, tenant, db, endpoint_for) -> None:
    endpoint_for(tenant)
    with transaction(db) as session:
        for n in range(3):
            envelope = Envelope(type="person.created", data={"person": {"id": n}})
            accept_message(session, envelope, source="http", application_id=tenant.id)
        session.flush()
        session.execute(update(Delivery).values(last_status_code=200))
        session.execute(update(Delivery).where(Delivery.id == 2).values(last_status_code=503))

    found = webhooks("search", "deliveries", "--field", "data.person.id=1")
    assert found.exit_code == 0, found.output
    rows = found.stdout.splitlines()
    assert rows[0].split()[:3] == ["ID", "STATE", "STATUS"]
    assert [row.split()[0] for row in rows[1:]] == ["2"]
    by_status = webhooks("search", "deliveries", "--status-code", "200", "--limit", "1", "--json")
    assert by_status.exit_code == 0, by_status.output
    page = json.loads(by_status.stdout)
    assert [d["id"] for d in page["data"]] == [3]
    assert page["done"] is False
    rest = webhooks("search", "deliveries", "--status-code", "200", "--after", page["iterator"])
    assert [row.split()[0] for row in rest.stdout.splitlines()[1:]] == ["1"]

    wrong = webhooks("search", "deliveries", "--field", "data.person.id")
    assert wrong.exit_code == 2
    assert "PATH=VALUE" in wrong.stderr
    empty = webhooks("search", "attempts", "--status-code", "503")
    assert empty.exit_code == 0, empty.output
    assert empty.stdout.strip() == "(none)"
