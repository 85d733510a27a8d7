"""The scheduler's claim of keyed deliveries, on the real database and without an engine
running: only a key's oldest open delivery starts a batch, the next due ones of its key
follow it in that batch, and a run whose lease skipped a row is cut before that row."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, text

from delivery.claim_keys import ParkedSweep
from delivery.config import DeliverySettings
from delivery.scheduling import claim_cycle
from webhooks_core.db import transaction
from webhooks_core.messages.envelope import Envelope, utcnow
from webhooks_core.messages.fanout import accept_message, accept_messages
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


def test_deliveries_behind_their_key_wait_parked(db: Any, settings: DeliverySettings) -> None:
    """Created behind an open delivery of their key, one at a time or several in one
    statement, deliveries wait with no due time, out of the claim's scan."""
    ids = _setup(db)
    with transaction(db) as session:
        app_id = session.scalars(select(Application.id)).one()
        incoming = [
            (Envelope(type="person.updated", data={}, ordering_key=key), app_id)
            for key in ("m", "m", "m", "j")
        ]
        accept_messages(session, incoming, source="broker")
    with db() as session:
        rows = session.execute(
            select(Delivery.id, Delivery.ordering_key, Delivery.next_attempt_at).order_by(
                Delivery.id
            )
        ).all()
    parked = [row.id for row in rows if row.next_attempt_at is None]
    m = [row.id for row in rows if row.ordering_key == "m"]
    j = [row.id for row in rows if row.ordering_key == "j"]
    assert parked == sorted(ids[1:4] + m[1:] + j[1:])
    with transaction(db) as session:
        claims = claim_cycle(session, settings, utcnow() + timedelta(seconds=1)).claims
    # Each key's head, with its parked run; the unkeyed one alone.
    assert sorted(c.delivery_ids for c in claims) == sorted(
        [ids[:4], m, [ids[4], *j[1:]], [ids[5]]]
    )


def test_the_sweep_wakes_keys_in_turn(db: Any, settings: DeliverySettings) -> None:
    """A head that ends by a path that does not wake its key (here a plain UPDATE): the
    scheduler's sweep wakes the next delivery, ``window`` keys at a time, in turn; a key
    whose head is still open stays parked."""
    with transaction(db) as session:
        app = Application(name="sweep")
        session.add(app)
        session.flush()
        session.add(Endpoint(application_id=app.id, url="http://127.0.0.1:9/sweep"))
        session.flush()
        for key in ("a", "b", "c", "d", "e", "f", "a", "b", "c", "d", "e", "f"):
            envelope = Envelope(type="person.updated", data={}, ordering_key=key)
            accept_message(session, envelope, source="http", application_id=app.id)
    with transaction(db) as session:
        session.execute(
            text(
                "UPDATE deliveries SET state = 'cancelled', next_attempt_at = NULL"
                " WHERE ordering_key <> 'f' AND next_attempt_at IS NOT NULL"
            )
        )
    sweep = ParkedSweep()
    woken = []
    for _ in range(4):
        with transaction(db) as session:
            woken.append(sweep.sweep(session, 2, utcnow()))
    # a, b | c, d | e, f (f's head is open: nothing to wake) | a, b again: nothing left.
    assert woken == [2, 2, 1, 0]
    with db() as session:
        waiting = session.execute(
            select(Delivery.ordering_key, Delivery.next_attempt_at).where(
                Delivery.state == "pending"
            )
        ).all()
    assert sorted(key for key, due in waiting if due is None) == ["f"]
    assert sorted(key for key, due in waiting if due is not None) == list("abcdef")
