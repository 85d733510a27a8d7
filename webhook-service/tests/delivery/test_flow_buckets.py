"""Limits that hold with several schedulers: the rate bucket and the adaptive in-flight
limit live in PostgreSQL, so two claims from two sessions (two scheduler processes) share
them.  No engine runs in this module: the claims here are the only ones (but for a
scheduler started alone to see what it does at start)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from delivery.config import DeliverySettings
from delivery.scheduling import claim_cycle
from webhooks_core.db import transaction
from webhooks_core.messages.envelope import Envelope, utcnow
from webhooks_core.messages.fanout import accept_message
from webhooks_core.models import Application, Endpoint, EndpointFlow


def _endpoint_with_due(
    sessions: sessionmaker[Session],
    due: int,
    beside: uuid.UUID | None = None,
    **fields: object,
) -> uuid.UUID:
    """A new endpoint with ``due`` messages due for it, in a new application or in the
    application of the endpoint ``beside`` (whose endpoints get the messages too)."""
    with transaction(sessions) as session:
        if beside is None:
            app = Application(name="buckets")
            session.add(app)
            session.flush()
            app_id = app.id
        else:
            app_id = session.get_one(Endpoint, beside).application_id
        url = f"http://127.0.0.1:9/hook?{uuid.uuid4().hex}"
        endpoint = Endpoint(application_id=app_id, url=url, **fields)
        session.add(endpoint)
        session.flush()
        for n in range(due):
            accept_message(
                session,
                Envelope(type="person.created", data={"n": n}),
                source="http",
                application_id=app_id,
            )
        return endpoint.id


def _claim(sessions: sessionmaker[Session], settings: DeliverySettings, at: object) -> int:
    with transaction(sessions) as session:
        result = claim_cycle(session, settings, at)  # type: ignore[arg-type]
        return sum(len(claim.delivery_ids) for claim in result.claims)


def test_a_rate_limit_holds_across_two_schedulers(
    db: sessionmaker[Session], settings: DeliverySettings
) -> None:
    _endpoint_with_due(db, 40, rate_limit=10, max_in_flight=50)
    now = utcnow()
    # Two schedulers, one after the other on the claim lock: the second finds the bucket
    # the first spent (a scheduler of its own would have given another 10).
    first = _claim(db, settings, now)
    second = _claim(db, settings, now + timedelta(milliseconds=10))
    assert first == 10
    assert second == 0
    # Half a second later, half a second's tokens, whichever scheduler claims.
    assert _claim(db, settings, now + timedelta(milliseconds=510)) == 5
    with db() as session:
        tokens = session.execute(text("SELECT tokens FROM endpoint_rate_buckets")).scalar_one()
    assert 0 <= tokens < 1


def test_the_adaptive_limits_bound_every_claim(
    db: sessionmaker[Session], settings: DeliverySettings
) -> None:
    endpoint_id = _endpoint_with_due(db, 30, max_in_flight=4)
    with transaction(db) as session:
        session.add(EndpointFlow(endpoint_id=endpoint_id, max_in_flight=1.6, rate_limit=12.0))
    now = utcnow()
    # One batch in flight at most (1.6 rounds down), of at most the 12 tokens of the rate.
    assert _claim(db, settings, now) == 12
    assert _claim(db, settings, now + timedelta(seconds=5)) == 0  # that batch is in flight
    with db() as session:
        leases = session.execute(text("SELECT count(*) FROM delivery_leases")).scalar_one()
    assert leases == 1


def test_a_held_endpoint_is_left_out_of_the_claim(
    db: sessionmaker[Session], settings: DeliverySettings
) -> None:
    endpoint_id = _endpoint_with_due(db, 3)
    now = utcnow()
    with transaction(db) as session:
        session.add(
            EndpointFlow(endpoint_id=endpoint_id, throttled_until=now + timedelta(seconds=30))
        )
    assert _claim(db, settings, now) == 0
    assert _claim(db, settings, now + timedelta(seconds=31)) == 3


def test_a_rate_limited_backlog_does_not_hide_its_siblings_due_rows(
    db: sessionmaker[Session], settings: DeliverySettings
) -> None:
    small = settings.model_copy(update={"scheduler_claim_limit": 20})
    backlog = _endpoint_with_due(db, 40, rate_limit=10, max_in_flight=50)
    # Of the same application (another's rows are read apart), due after the whole backlog.
    other = _endpoint_with_due(db, 3, beside=backlog)
    now = utcnow() + timedelta(seconds=1)
    # The application's share (20 rows) is all the backlog's, which may take 10 of them:
    # the other endpoint's 3, due behind it, are read apart and claimed in the same cycle.
    assert _claim(db, small, now) == 13
    with db() as session:
        leased = session.execute(
            text(
                "SELECT endpoint_id, count(*) FROM deliveries WHERE state = 'sending' "
                "GROUP BY endpoint_id"
            )
        ).all()
    assert dict(leased) == {backlog: 10, other: 3}
    # Without tokens the backlog is left out of the scan: the next cycle claims nothing.
    assert _claim(db, small, now + timedelta(milliseconds=10)) == 0


def test_an_endpoint_with_flow_control_off_is_claimed_at_its_configured_limits(
    db: sessionmaker[Session], settings: DeliverySettings
) -> None:
    endpoint_id = _endpoint_with_due(db, 30, max_in_flight=4, adaptive_flow=False)
    now = utcnow()
    # What the engine learnt while flow control was on for it (a hold, one batch, 1/s):
    # ignored now, every due delivery is claimed.
    with transaction(db) as session:
        session.add(
            EndpointFlow(
                endpoint_id=endpoint_id,
                max_in_flight=1.0,
                rate_limit=1.0,
                throttled_until=now + timedelta(seconds=30),
                reason="retry-after",
            )
        )
    assert _claim(db, settings, now) == 30
    with db() as session:
        buckets = session.execute(text("SELECT count(*) FROM endpoint_rate_buckets")).scalar_one()
    assert buckets == 0  # no rate: no bucket spent


def test_a_scheduler_started_with_flow_control_off_forgets_learnt_limits(
    db: sessionmaker[Session], settings: DeliverySettings, tmp_path: Path
) -> None:
    """With WEBHOOKS_FLOW_CONTROL=false nothing learns any more: what was learnt before
    would bound the claim for ever, so the scheduler deletes it when it starts."""
    endpoint_id = _endpoint_with_due(db, 0)
    with transaction(db) as session:
        session.add(EndpointFlow(endpoint_id=endpoint_id, max_in_flight=1.0, rate_limit=2.0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOKS_")}
    env |= {
        "WEBHOOKS_DATABASE_URL": settings.database_url,
        "WEBHOOKS_BROKER_URL": settings.broker_url,
        "WEBHOOKS_SEALING_KEYS": os.environ["WEBHOOKS_SEALING_KEYS"],
        "WEBHOOKS_METRICS_PORT": "0",
        "WEBHOOKS_FLOW_CONTROL": "false",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (tmp_path / "scheduler.log").open("wb")
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "delivery.scheduler"], env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 60
        left = 1
        while left and time.monotonic() < deadline and scheduler.poll() is None:
            time.sleep(0.2)
            with db() as session:
                left = session.scalar(text("SELECT count(*) FROM endpoint_flow")) or 0
    finally:
        scheduler.terminate()
        scheduler.wait(30)
    assert left == 0, (tmp_path / "scheduler.log").read_text()[-3000:]
    assert "learnt limits of 1 endpoints forgotten" in (tmp_path / "scheduler.log").read_text()
