"""Fair share across applications: one tenant's hanging endpoints never hold every worker.

The worker here has 8 threads and an application may hold 4 batches in flight.  Hanging
receivers keep their requests open until the test lets them go (the read timeout is 40 s,
far longer than the test needs), so "still hanging" is a state the test observes, never a
time it measures.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, text

from delivery.config import DeliverySettings
from delivery.scheduling import claim_cycle
from webhooks_core.messages.envelope import Envelope
from webhooks_core.messages.fanout import accept_message
from webhooks_core.models import Attempt, Delivery, Endpoint

APPLICATION_MAX_IN_FLIGHT = 4
ENGINE_ENV_EXTRA = {
    "WEBHOOKS_APPLICATION_MAX_IN_FLIGHT": str(APPLICATION_MAX_IN_FLIGHT),
    "WEBHOOKS_READ_TIMEOUT_SECONDS": "40",
    "WEBHOOKS_TOTAL_TIMEOUT_SECONDS": "45",
    "WEBHOOKS_LEASE_SECONDS": "60",
}
IN_FLIGHT_OF_APPLICATION = text(
    "SELECT count(DISTINCT token) FROM delivery_leases WHERE application_id = :app"
)


def _publish_many(platform: Any, app_id: uuid.UUID, count: int) -> None:
    """``count`` messages accepted in one transaction (due together)."""
    with platform.sessions() as session, session.begin():
        for n in range(count):
            envelope = Envelope(type="person.created", data={"n": n})
            accept_message(session, envelope, source="http", application_id=app_id)


def _of(platform: Any) -> list[Delivery]:
    """The deliveries of the platform's application."""
    return [d for d in platform.deliveries() if d.application_id == platform.app_id]


def _hog_and_other(platform: Any, server: Any) -> tuple[Any, Any]:
    """The platform's application with 8 endpoints (the hog) and another with 1, all on
    ``server``."""
    for n in range(8):
        platform.endpoint(f"{server.url}?hog={n}")
    other = type(platform)(platform.sessions)
    other.endpoint(f"{server.url}?other")
    return platform, other


def test_hanging_endpoints_of_one_application_leave_workers_to_another(
    platform: Any, receiver: Any, wait_for: Any
) -> None:
    answered: list[str] = []

    def hang(got: Any, _n: int) -> dict[str, Any]:
        def respond(handler: Any) -> None:
            hanging.release.wait(60)
            answered.append(got.path)
            handler.send_response(200)
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        return {"handler": respond}

    hanging = receiver(hang)
    healthy = receiver()
    hog = platform
    for n in range(8):  # more than the worker's 8 threads would hold without a share
        hog.endpoint(f"{hanging.url}?endpoint={n}")
    assert hog.app_id is not None
    _publish_many(hog, hog.app_id, 6)  # 6 due per endpoint: not gathered, one batch each
    wait_for(
        lambda: len(hanging.received) >= APPLICATION_MAX_IN_FLIGHT,
        message="the hog's requests hanging",
    )

    other = type(platform)(platform.sessions)
    other_endpoint, _ = other.endpoint(healthy.url)
    event_id = other.publish({"tenant": "other"})
    delivered = wait_for(
        lambda: [d for d in other.deliveries(other_endpoint) if d.state == "delivered"],
        timeout=60,
        message="the other application's delivery",
    )
    # Delivered while every request of the hog still hangs: none answered, none timed out
    # (no attempt recorded), and the hog never held more than its share of the workers.
    with platform.sessions() as session:
        hog_attempts = session.scalar(
            select(func.count()).select_from(Attempt).where(Attempt.endpoint_id != other_endpoint)
        )
        hog_in_flight = session.scalar(IN_FLIGHT_OF_APPLICATION, {"app": hog.app_id})
    assert answered == []
    assert hog_attempts == 0
    assert len(hanging.received) == APPLICATION_MAX_IN_FLIGHT
    assert hog_in_flight == APPLICATION_MAX_IN_FLIGHT
    assert [got.headers["webhook-id"] for got in healthy.received] == [event_id]
    assert delivered[0].attempt_count == 1

    # Let go, the hog's backlog drains too, within its share.
    hanging.release.set()

    def hog_drained() -> list[Delivery] | None:
        rows = _of(hog)
        return rows if all(d.state == "delivered" for d in rows) else None

    hog_deliveries = wait_for(hog_drained, timeout=60, message="the hog's deliveries")
    assert len(hog_deliveries) == 48


def test_claim_never_mixes_applications_in_one_batch(
    platform: Any, receiver: Any, clock: Any, engine_settings: DeliverySettings
) -> None:
    server = receiver()
    hog = platform
    for n in range(9):
        hog.endpoint(f"{server.url}?hog={n}")
    other = type(platform)(platform.sessions)
    for n in range(2):
        other.endpoint(f"{server.url}?other={n}")
    with platform.sessions() as session:
        session.begin()
        # Accepted and claimed in one transaction that is rolled back: the running scheduler
        # never sees these rows.
        for app_id in (hog.app_id, other.app_id):
            envelope = Envelope(type="person.created", data={"fan": "out"})
            accept_message(session, envelope, source="http", application_id=app_id)
            session.flush()
        result = claim_cycle(session, engine_settings, clock.now() + timedelta(seconds=1))
        apps = dict(session.execute(select(Delivery.id, Delivery.application_id)).all())
        session.rollback()
    # Eleven endpoints with one row each share batches, but only within an application.
    assert sorted(len(c.delivery_ids) for c in result.claims) == [2, 9]
    for claim in result.claims:
        assert claim.endpoint_id is None
        assert len({apps[i] for i in claim.delivery_ids}) == 1


def test_claim_holds_an_application_to_its_share_and_scans_past_its_backlog(
    platform: Any, receiver: Any, clock: Any, engine_settings: DeliverySettings
) -> None:
    hog, other = _hog_and_other(platform, receiver())
    settings = engine_settings.model_copy(update={"application_max_in_flight": 3})
    now = clock.now() + timedelta(seconds=1)
    with platform.sessions() as session:
        session.begin()
        for n in range(6):  # 48 rows, 6 per endpoint: one batch per endpoint each
            envelope = Envelope(type="person.created", data={"n": n})
            accept_message(session, envelope, source="http", application_id=hog.app_id)
        session.flush()
        first = claim_cycle(session, settings, now)
        # The other application's message comes after the hog's whole backlog: only a scan
        # that leaves the hog out reaches it within the claim limit of 10 rows.
        envelope = Envelope(type="person.created", data={"other": True})
        accept_message(session, envelope, source="http", application_id=other.app_id)
        session.flush()
        narrow = settings.model_copy(update={"scheduler_claim_limit": 10})
        second = claim_cycle(session, narrow, now + timedelta(seconds=1))
        apps = dict(session.execute(select(Delivery.id, Delivery.application_id)).all())
        hog_in_flight = session.scalar(IN_FLIGHT_OF_APPLICATION, {"app": hog.app_id})
        session.rollback()
    assert len(first.claims) == 3  # not one per endpoint (8), not two per endpoint (16)
    assert first.saturated
    assert {apps[i] for c in first.claims for i in c.delivery_ids} == {hog.app_id}
    assert hog_in_flight == 3
    (claim,) = second.claims
    assert [apps[i] for i in claim.delivery_ids] == [other.app_id]
    assert second.saturated


def test_claim_reads_each_applications_oldest_rows_not_the_oldest_of_all(
    platform: Any, receiver: Any, clock: Any, engine_settings: DeliverySettings
) -> None:
    hog, other = _hog_and_other(platform, receiver())
    # The hog is far from its limit: only the rows a claim reads can keep the other out.
    settings = engine_settings.model_copy(
        update={"scheduler_claim_limit": 10, "delivery_batch_size": 5}
    )
    now = clock.now() + timedelta(seconds=1)
    with platform.sessions() as session:
        session.begin()
        for n in range(6):  # 48 rows, all older than the other application's one
            envelope = Envelope(type="person.created", data={"n": n})
            accept_message(session, envelope, source="http", application_id=hog.app_id)
        session.flush()
        session.execute(
            text("UPDATE deliveries SET next_attempt_at = :t"), {"t": now - timedelta(hours=1)}
        )
        envelope = Envelope(type="person.created", data={"other": True})
        accept_message(session, envelope, source="http", application_id=other.app_id)
        session.flush()
        result = claim_cycle(session, settings, now)
        apps = dict(session.execute(select(Delivery.id, Delivery.application_id)).all())
        session.rollback()
    claimed = [apps[i] for c in result.claims for i in c.delivery_ids]
    # The ten rows of the limit: the other application's one and the hog's oldest, not
    # the hog's ten oldest.
    assert claimed.count(other.app_id) == 1
    assert claimed.count(hog.app_id) >= 5
    assert len(claimed) <= 10


def test_an_endpoint_at_its_slots_does_not_hide_its_siblings_due_rows(
    platform: Any, receiver: Any, clock: Any, engine_settings: DeliverySettings
) -> None:
    server = receiver()
    hog, _ = platform.endpoint(f"{server.url}?hog", max_in_flight=1)
    settings = engine_settings.model_copy(
        update={"scheduler_claim_limit": 10, "delivery_batch_size": 5}
    )
    now = clock.now() + timedelta(seconds=1)
    with platform.sessions() as session:
        session.begin()
        for n in range(12):  # the hog's backlog: more than the application's 10 rows
            envelope = Envelope(type="person.created", data={"n": n})
            accept_message(session, envelope, source="http", application_id=platform.app_id)
        sibling = Endpoint(application_id=platform.app_id, url=f"{server.url}?sibling")
        session.add(sibling)
        session.flush()
        envelope = Envelope(type="person.created", data={"last": True})
        accept_message(session, envelope, source="http", application_id=platform.app_id)
        session.flush()
        result = claim_cycle(session, settings, now)
        endpoints = dict(session.execute(select(Delivery.id, Delivery.endpoint_id)).all())
        session.rollback()
    claimed = [endpoints[i] for c in result.claims for i in c.delivery_ids]
    # The hog's one slot takes a batch of its 10 rows read; the sibling's row, due behind
    # the hog's 13, is read apart and claimed in the same cycle.
    assert claimed.count(hog) == 5
    assert claimed.count(sibling.id) == 1
