"""The scheduler's claim of keyed deliveries, on the real database and without an engine
running: only a key's oldest open delivery starts a batch, the next due ones of its key
follow it in that batch, and a run whose lease skipped a row is cut before that row."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, text

from delivery.claim_keys import KEY_WINDOW
from delivery.config import DeliverySettings
from delivery.scheduling import claim_cycle
from webhooks_core.db import transaction
from webhooks_core.deliveries.ordering import KEYS_START
from webhooks_core.messages.envelope import Envelope, utcnow
from webhooks_core.messages.fanout import accept_message
from webhooks_core.models import Application, Delivery, Endpoint


def _setup(db: Any) -> list[int]:
    """An endpoint with four deliveries of key k, one of key j and one unkeyed; their ids in
    order k, k, k, k, j, unkeyed."""
    with transaction(db) as session:
        app = Application(name="claims")
        session.add(app)
        session.flush()
        session.add(Endpoint(application_id=app.id, url="http://127.0.0.1:9/claims"))
        session.flush()
        for key in ("k", "k", "k", "k", "j", None):
            envelope = Envelope(type="person.updated", data={}, ordering_key=key)
            accept_message(session, envelope, source="http", application_id=app.id)
    with db() as session:
        return list(session.scalars(select(Delivery.id).order_by(Delivery.id)))


def test_a_head_takes_its_run_into_its_batch(db: Any, settings: DeliverySettings) -> None:
    ids = _setup(db)
    with transaction(db) as session:
        # A delivery of k that failed and waits holds the whole key.
        session.execute(
            text(
                "UPDATE deliveries SET state = 'retrying', next_attempt_at = :later WHERE id = :id"
            ),
            {"id": ids[0], "later": utcnow() + timedelta(hours=1)},
        )
        held = claim_cycle(session, settings, utcnow() + timedelta(seconds=1)).claims
    assert sorted(i for c in held for i in c.delivery_ids) == ids[4:]
    with transaction(db) as session:
        session.execute(text("UPDATE deliveries SET state = 'pending', lease_token = NULL"))
        session.execute(text("DELETE FROM delivery_leases"))
        session.execute(text("UPDATE deliveries SET next_attempt_at = now() - interval '1 s'"))
        claims = claim_cycle(session, settings, utcnow() + timedelta(seconds=1)).claims
    # Three heads spread over the endpoint's slots; k's run follows its head, in id order.
    batches = sorted(c.delivery_ids for c in claims)
    assert batches == [ids[:4], [ids[4]], [ids[5]]]


def test_a_run_is_cut_before_a_row_the_lease_skipped(db: Any, settings: DeliverySettings) -> None:
    ids = _setup(db)
    blocker = db()
    blocker.execute(text("SELECT id FROM deliveries WHERE id = :id FOR UPDATE"), {"id": ids[1]})
    try:
        with transaction(db) as session:
            claims = claim_cycle(session, settings, utcnow() + timedelta(seconds=1)).claims
    finally:
        blocker.rollback()
        blocker.close()
    assert sorted(c.delivery_ids for c in claims) == [[ids[0]], [ids[4]], [ids[5]]]
    with db() as session:
        states = {row.id: row.state for row in session.execute(select(Delivery.id, Delivery.state))}
        tokens = session.scalars(select(Delivery.lease_token).where(Delivery.id.in_(ids[2:4])))
        assert set(tokens) == {None}
    expected = ["sending", "pending", "pending", "pending", "sending", "sending"]
    assert [states[i] for i in ids] == expected


def test_a_claim_looks_at_a_window_of_keys_in_turn(db: Any, settings: DeliverySettings) -> None:
    """With more open keys than the window, each claim takes the heads of the next window,
    and after the last key it starts again: every key's head is claimed within a turn."""
    with transaction(db) as session:
        app = Application(name="window")
        session.add(app)
        session.flush()
        # Slots for every key at once: only the window limits what one claim takes.
        session.add(
            Endpoint(application_id=app.id, url="http://127.0.0.1:9/window", max_in_flight=10)
        )
        session.flush()
        for key in ("a", "b", "c", "d", "e", "a", "b"):
            envelope = Envelope(type="person.updated", data={}, ordering_key=key)
            accept_message(session, envelope, source="http", application_id=app.id)
    with db() as session:
        heads = {
            key: min(
                i
                for i, k in session.execute(select(Delivery.id, Delivery.ordering_key))
                if k == key
            )
            for key in "abcde"
        }
    windowed = settings.model_copy(update={"ordering_key_window": 2})
    KEY_WINDOW._after = KEYS_START  # a fresh turn for this test
    claimed: list[set[int]] = []
    for _ in range(3):
        with transaction(db) as session:
            claims = claim_cycle(session, windowed, utcnow() + timedelta(seconds=1)).claims
            # Sent and delivered: the endpoint's slots are free again for the next claim.
            session.execute(
                text("UPDATE deliveries SET state = 'delivered' WHERE state = 'sending'")
            )
            session.execute(text("DELETE FROM delivery_leases"))
        claimed.append({i for c in claims for i in c.delivery_ids} & set(heads.values()))
    assert claimed == [{heads["a"], heads["b"]}, {heads["c"], heads["d"]}, {heads["e"]}]
