"""Statistics through the API, read from the summaries the engine and the trigger keep."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text, update

from webhooks_core.db import transaction
from webhooks_core.messages.envelope import utcnow
from webhooks_core.models import Delivery
from webhooks_core.statistics import summarise_attempts

ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}


def _publish(client: Any, tenant: Any, event_type: str) -> None:
    body = {"event_type": event_type, "payload": {"n": 1}}
    response = client.post(tenant.path("/messages"), json=body, headers=tenant.headers)
    assert response.status_code == 202, response.json


def _record(
    db: Any, results: list[tuple[str, int | None, str, float]], at: datetime | None = None
) -> None:
    """Record one attempt per delivery, in id order, as the engine's batch record does."""
    with transaction(db) as session:
        ids = list(session.scalars(select(Delivery.id).order_by(Delivery.id)))
        attempts = []
        for delivery_id, (state, code, outcome, latency) in zip(ids, results, strict=True):
            session.execute(update(Delivery).where(Delivery.id == delivery_id).values(state=state))
            attempts.append(
                {
                    "delivery_id": delivery_id,
                    "started_at": at or utcnow(),
                    "latency_ms": latency,
                    "status_code": code,
                    "outcome": outcome,
                }
            )
        summarise_attempts(session, attempts)


def test_application_endpoint_and_service_statistics(
    client: Any, tenant: Any, other_tenant: Any, event_types: list[str], db: Any
) -> None:
    made = client.post(
        tenant.path("/endpoints"), json={"url": "http://127.0.0.1:9/all"}, headers=tenant.headers
    )
    endpoint = made.json["id"]
    for event_type in ("person.created", "person.created", "person.updated"):
        _publish(client, tenant, event_type)
    _record(
        db,
        [
            ("delivered", 200, "success", 3.0),
            ("delivered", 200, "success", 30.0),
            ("retrying", 503, "http_5xx", 700.0),
        ],
    )
    _record(db, [("delivered", 200, "success", 40.0), ("delivered", 200, "success", 4.0),
                 ("dead", None, "timeout", 700.0)])  # fmt: skip

    app = client.get(tenant.path("/statistics?window=1h"), headers=tenant.headers)

    assert app.status_code == 200, app.json
    totals = app.json["totals"]
    assert totals["messages_accepted"] == 3
    assert totals["attempts"] == 6
    assert totals["attempts_by_outcome"] == {"success": 4, "http_5xx": 1, "timeout": 1}
    assert totals["attempts_by_status_class"] == {"2xx": 4, "5xx": 1, "none": 1}
    assert totals["deliveries_by_final_state"] == {"delivered": 4, "dead": 1, "cancelled": 0}
    assert totals["retries_scheduled"] == 1
    assert totals["dead_letters"] == 1
    assert abs(totals["success_rate"] - 4 / 6) < 1e-9
    # 3, 4 ms < 5; 30, 40 ms < 50; 700, 700 ms < 1000: to the bucket's upper bound.
    assert totals["latency_ms"]["p50"] == 50
    assert totals["latency_ms"]["p99"] == 1000
    assert abs(totals["latency_ms"]["mean"] - 1477 / 6) < 1e-9
    assert app.json["bucket"] == "minute"
    assert 60 <= len(app.json["series"]) <= 62  # every minute of the hour, empty ones too
    assert sum(point["attempts"] for point in app.json["series"]) == 6
    assert app.json["event_types"] == [
        {"event_type": "person.created", "messages": 2, "attempts": 4},
        {"event_type": "person.updated", "messages": 1, "attempts": 2},
    ]

    one = client.get(
        tenant.path(f"/endpoints/{endpoint}/statistics?window=7d"), headers=tenant.headers
    )
    assert one.status_code == 200, one.json
    assert one.json["bucket"] == "day"
    assert one.json["totals"]["attempts"] == 6
    assert one.json["totals"]["messages_accepted"] is None

    service = client.get("/api/v1/statistics?window=24h", headers=ADMIN)
    assert service.status_code == 200, service.json
    assert service.json["totals"]["attempts"] == 6
    assert service.json["totals"]["messages_accepted"] == 3

    # Another tenant sees neither this endpoint nor the service's totals.
    hidden = client.get(
        other_tenant.path(f"/endpoints/{endpoint}/statistics"), headers=other_tenant.headers
    )
    assert hidden.status_code == 404
    assert client.get("/api/v1/statistics", headers=tenant.headers).status_code == 403
    empty = client.get(other_tenant.path("/statistics"), headers=other_tenant.headers)
    assert empty.json["totals"]["attempts"] == 0
    assert empty.json["totals"]["success_rate"] is None


def test_day_buckets_are_summed_from_day_rows_that_match_the_hours(
    client: Any, tenant: Any, event_types: list[str], db: Any
) -> None:
    made = client.post(
        tenant.path("/endpoints"), json={"url": "http://127.0.0.1:9/all"}, headers=tenant.headers
    )
    assert made.status_code == 201, made.json
    for event_type in ("person.created", "person.updated"):
        _publish(client, tenant, event_type)
    now = utcnow()
    # Three days of the window: two attempts each, then the last hour's.
    for days_ago, latency in ((5, 3.0), (2, 700.0), (0, 30.0)):
        _record(
            db,
            [("retrying", 503, "http_5xx", latency), ("delivered", 200, "success", latency)],
            at=now - timedelta(days=days_ago),
        )
    path = tenant.path("/statistics?window=7d")

    by_day = client.get(path, headers=tenant.headers)
    by_hour = client.get(f"{path}&bucket=hour", headers=tenant.headers)

    assert by_day.status_code == by_hour.status_code == 200, by_day.json
    assert by_day.json["bucket"] == "day"
    assert by_day.json["totals"] == by_hour.json["totals"]
    assert by_day.json["totals"]["attempts"] == 6
    assert by_day.json["totals"]["messages_accepted"] == 2
    assert by_day.json["event_types"] == by_hour.json["event_types"]
    for point in by_day.json["series"]:
        hours = [h for h in by_hour.json["series"] if h["start"][:10] == point["start"][:10]]
        assert point["attempts"] == sum(h["attempts"] for h in hours)
        assert point["messages_accepted"] == sum(h["messages_accepted"] for h in hours)
    assert [p["attempts"] for p in by_day.json["series"] if p["attempts"]] == [2, 2, 2]

    # The day buckets come from the day rows alone: without the hour rows they still add up.
    with transaction(db) as session:
        session.execute(text("DELETE FROM attempt_stats WHERE width = 3600"))
        session.execute(text("DELETE FROM message_stats WHERE width = 3600"))
    again = client.get(path, headers=tenant.headers)
    assert again.json["totals"] == by_day.json["totals"]
    assert again.json["series"] == by_day.json["series"]
    hourless = client.get(f"{path}&bucket=hour", headers=tenant.headers)
    assert hourless.json["totals"]["attempts"] == 0


def test_bad_windows_and_buckets_are_field_errors(
    client: Any, tenant: Any, field_errors: Any
) -> None:
    bad = client.get(tenant.path("/statistics?window=1y"), headers=tenant.headers)
    assert bad.status_code == 422
    assert "window" in field_errors(bad)
    too_many = client.get(
        tenant.path("/statistics?window=7d&bucket=minute"), headers=tenant.headers
    )
    assert too_many.status_code == 422
    assert too_many.content_type == "application/problem+json"
    assert "bucket" in field_errors(too_many)
