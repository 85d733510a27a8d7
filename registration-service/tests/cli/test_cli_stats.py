"""``webhooks stats`` against the running API, over summaries the recording path keeps."""

from __future__ import annotations

import json

from sqlalchemy import select, update

from registration.cli.stats import sparkline
from webhooks_core.db import transaction
from webhooks_core.messages.envelope import Envelope, utcnow
from webhooks_core.messages.fanout import accept_message
from webhooks_core.models import Delivery
from webhooks_core.statistics import summarise_attempts


def test_stats_prints_totals_trends_and_types(webhooks, tenant, db, endpoint_for) -> None:
    endpoint_id = endpoint_for(tenant)
    with transaction(db) as session:
        for n in range(2):
            envelope = Envelope(type="person.created", data={"n": n})
            accept_message(session, envelope, source="http", application_id=tenant.id)
    with transaction(db) as session:
        ids = list(session.scalars(select(Delivery.id).order_by(Delivery.id)))
        session.execute(update(Delivery).values(state="delivered"))
        summarise_attempts(
            session,
            [
                {"delivery_id": i, "started_at": utcnow(), "latency_ms": 30.0,
                 "status_code": 200, "outcome": "success"}
                for i in ids
            ],
        )  # fmt: skip

    shown = webhooks("stats", "--window", "1h")
    assert shown.exit_code == 0, shown.output
    assert "messages accepted  2" in shown.stdout
    assert "success rate       100.0%" in shown.stdout
    assert "p50 50 ms" in shown.stdout
    assert "person.created" in shown.stdout

    as_json = webhooks("stats", "--endpoint", str(endpoint_id), "--json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["totals"]["attempts"] == 2

    refused = webhooks("stats", "--service")
    assert refused.exit_code == 1
    assert "403" in refused.stderr


def test_sparkline_scales_to_the_largest() -> None:
    assert sparkline([0, 1, 2, None, 4]) == "▁▂▄ █"
    assert sparkline([]) == ""
