"""A delivery whose lease keeps running out with nothing recorded ends dead (a poison delivery).

The scheduler runs alone here (``ENGINE_WORKER = False``): every batch it leases is published
to a queue nobody consumes, exactly what a worker that dies on (or wedges on) a delivery
looks like from the database.  The offset clock moves past each lease instead of sleeping.
"""

from __future__ import annotations

import re
import urllib.request
import uuid
from typing import Any

from kombu import Connection
from sqlalchemy import select, text

from delivery.broker import DEAD_LETTER_QUEUE
from delivery.config import DeliverySettings
from delivery.engine import DeliveryRuntime, deliver_batch
from delivery.sender import HttpSender
from webhooks_core.db import make_engine, transaction
from webhooks_core.messages.envelope import Envelope
from webhooks_core.messages.fanout import accept_message
from webhooks_core.models import DeadLetter, Delivery

ENGINE_WORKER = False
MAX_EXPIRIES = 3
ENGINE_ENV_EXTRA = {"WEBHOOKS_MAX_LEASE_EXPIRIES": str(MAX_EXPIRIES)}
REASON = f"lease expired {MAX_EXPIRIES} times without a recorded attempt (poison delivery)"


def _row(platform: Any, delivery_id: int) -> Delivery:
    with platform.sessions() as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        return row


def _leased(platform: Any, wait_for: Any, delivery_id: int, expiries: int) -> Delivery:
    """Wait until the scheduler has leased the delivery again after ``expiries`` expiries."""
    return wait_for(
        lambda: (
            (row := _row(platform, delivery_id)).state == "sending"
            and row.lease_expiries == expiries
            and row
        ),
        message=f"leased after {expiries} expiries",
    )


def _scheduler_metric(processes: Any, wait_for: Any, name: str) -> float:
    """The scheduler's own exposition of ``name`` (its port is in its log)."""
    log = processes.logs / "scheduler.log"
    ports = wait_for(
        lambda: re.findall(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", log.read_text()),
        message="scheduler serving metrics",
    )
    port = ports[-1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    match = re.search(rf"^{name} (\S+)$", body, re.MULTILINE)
    assert match, f"{name} not exported"
    return float(match.group(1))


def test_a_lease_that_keeps_running_out_ends_dead_with_its_reason(
    platform: Any,
    receiver: Any,
    wait_for: Any,
    clock: Any,
    processes: Any,
    engine_settings: DeliverySettings,
) -> None:
    from registration.services import replays

    poison_before = _scheduler_metric(processes, wait_for, "webhooks_poison_deliveries_total")
    dead_before = _scheduler_metric(processes, wait_for, "webhooks_dead_letters_total")
    server = receiver()
    endpoint_id, _ = platform.endpoint(server.url)
    platform.publish({"poison": True})
    (delivery,) = platform.deliveries()

    tokens = set()
    for expiries in range(MAX_EXPIRIES):
        row = _leased(platform, wait_for, delivery.id, expiries)
        tokens.add(row.lease_token)
        clock.advance(engine_settings.lease_seconds + 1)

    dead = wait_for(lambda: (row := _row(platform, delivery.id)).state == "dead" and row)
    assert len(tokens) == MAX_EXPIRIES  # leased afresh each time
    assert dead.lease_expiries == MAX_EXPIRIES
    assert dead.last_error == REASON
    assert dead.attempt_count == 0
    assert dead.next_attempt_at is None
    assert dead.lease_token is None
    assert server.received == []
    with platform.sessions() as session:
        (letter,) = session.scalars(select(DeadLetter))
        leases = session.scalar(text("SELECT count(*) FROM delivery_leases"))
    assert (letter.delivery_id, letter.endpoint_id, letter.reason) == (
        delivery.id,
        endpoint_id,
        REASON,
    )
    assert leases == 0  # its slot is free

    with Connection(engine_settings.broker_url) as conn:
        queue = DEAD_LETTER_QUEUE(conn.default_channel)
        published = wait_for(lambda: queue.get(no_ack=True), message="dead letter published")
    assert published.payload["delivery_id"] == delivery.id
    assert published.payload["reason"] == REASON
    assert (
        _scheduler_metric(processes, wait_for, "webhooks_poison_deliveries_total")
        == poison_before + 1
    )
    assert _scheduler_metric(processes, wait_for, "webhooks_dead_letters_total") == dead_before + 1

    # Redriven (the receiver was fixed), it starts counting again from zero.
    replays.redrive_dead_letters(
        platform.sessions, application_id=platform.application(), requested_by="test"
    )
    assert _leased(platform, wait_for, delivery.id, 0).lease_expiries == 0


def test_batch_mates_are_leased_apart_and_a_recorded_attempt_resets_the_count(
    platform: Any,
    receiver: Any,
    wait_for: Any,
    clock: Any,
    engine_settings: DeliverySettings,
) -> None:
    server = receiver()
    # One slot: both deliveries go in one batch, as the mates of a poison delivery do.
    platform.endpoint(server.url, max_in_flight=1)
    with transaction(platform.sessions) as session:  # due together, so batched together
        for n in (1, 2):
            envelope = Envelope(type="person.created", data={"n": n})
            accept_message(session, envelope, source="http", application_id=platform.app_id)

    def leased_rows() -> list[Delivery]:
        return [d for d in platform.deliveries() if d.state == "sending"]

    together = wait_for(lambda: len(leased_rows()) == 2 and leased_rows(), message="leased")
    assert together[0].lease_token == together[1].lease_token
    clock.advance(engine_settings.lease_seconds + 1)

    # Each comes back in a batch of its own: the endpoint's one slot holds one of them.
    (alone,) = wait_for(
        lambda: [d for d in leased_rows() if d.lease_expiries == 1], message="leased again"
    )
    (waiting,) = [d for d in platform.deliveries() if d.id != alone.id]
    assert waiting.state == "pending"
    assert waiting.lease_expiries == 1

    # A worker takes that batch and records it; nobody ever takes the other's.
    rt = DeliveryRuntime(
        settings=engine_settings,
        engine=make_engine(engine_settings),
        sender=engine_settings.sender() or HttpSender(engine_settings),
        clock=engine_settings.clock(),
        dead_letters=_NoDeadLetters(),
    )
    assert alone.lease_token is not None
    try:
        report = deliver_batch(rt, uuid.UUID(str(alone.lease_token)), [alone.id])
    finally:
        rt.engine.dispose()
    assert report.delivered == 1
    delivered = _row(platform, alone.id)
    assert (delivered.state, delivered.lease_expiries) == ("delivered", 0)  # reset

    for expiries in range(1, MAX_EXPIRIES):
        _leased(platform, wait_for, waiting.id, expiries)
        clock.advance(engine_settings.lease_seconds + 1)
    dead = wait_for(lambda: (row := _row(platform, waiting.id)).state == "dead" and row)
    assert dead.last_error == REASON
    assert _row(platform, alone.id).state == "delivered"
    assert len(server.received) == 1


class _NoDeadLetters:
    def publish(self, records: list[dict[str, Any]]) -> None:
        raise AssertionError(f"no dead letter expected here: {records}")
