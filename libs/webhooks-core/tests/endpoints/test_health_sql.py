"""The breaker reading in SQL (metrics over many endpoints) agrees with the pure function."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.db import transaction
from webhooks_core.endpoints.health import HEALTH_STATE_SQL, HEALTH_STATES, endpoint_condition
from webhooks_core.models import Application, Endpoint

THRESHOLD = 5


def test_sql_reading_matches_endpoint_condition(db: sessionmaker[Session]) -> None:
    with transaction(db) as session:
        now = session.scalar(select(text("now()")))
        app = Application(name="acme")
        session.add(app)
        session.flush()
        before, after = now - timedelta(minutes=1), now + timedelta(minutes=1)
        cases = [
            {},
            {"consecutive_failures": 1, "failing_since": before},
            {"failing_since": before},
            {"consecutive_failures": 5, "failing_since": before, "circuit_open_until": after},
            {"consecutive_failures": 5, "failing_since": before, "circuit_open_until": before},
            {"consecutive_failures": 2, "circuit_open_until": before},
            {"enabled": False, "consecutive_failures": 9, "circuit_open_until": after},
        ]
        endpoints = [
            Endpoint(application_id=app.id, url=f"http://127.0.0.1:9/{i}", **fields)
            for i, fields in enumerate(cases)
        ]
        session.add_all(endpoints)
        session.flush()
        for endpoint in endpoints:
            in_sql = session.execute(
                text(f"SELECT {HEALTH_STATE_SQL} FROM endpoints WHERE id = :id"),  # noqa: S608
                {"id": endpoint.id, "threshold": THRESHOLD},
            ).scalar_one()
            in_python = endpoint_condition(
                endpoint, threshold=THRESHOLD, auto_disable_after_seconds=3600, now=now
            ).state
            assert in_sql == in_python, (endpoint.url, in_sql, in_python)
        seen = {
            endpoint_condition(e, threshold=THRESHOLD, auto_disable_after_seconds=1, now=now).state
            for e in endpoints
        }
        assert seen == set(HEALTH_STATES)
