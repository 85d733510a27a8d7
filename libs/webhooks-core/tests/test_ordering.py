"""Ordered delivery's rules (webhooks_core.deliveries.ordering): the pure ones, and the key lock."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import select

from webhooks_core.db import transaction
from webhooks_core.deliveries.ordering import (
    broken_runs,
    check_ordering_key,
    fill_batches,
    holds_key,
    run_after,
    run_limits,
)
from webhooks_core.messages.envelope import Envelope
from webhooks_core.messages.fanout import accept_message
from webhooks_core.models import Application, Delivery, Endpoint, Message


@pytest.mark.parametrize("key", ["a", "person 42", "ü-ключ-鍵", "x" * 256, "a:b/c#d"])
def test_valid_keys(key: str) -> None:
    assert check_ordering_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * 257, "a\nb", "a\tb", "\x00", "a\u2028b", "\u200b"])
def test_invalid_keys(key: str) -> None:
    with pytest.raises(ValueError, match="ordering key"):
        check_ordering_key(key)


def test_a_run_is_the_prefix_of_deliveries_that_may_follow() -> None:
    assert run_after([5, 6, 7, 8], [True, True, False, True]) == [5, 6]
    assert run_after([5], [False]) == []
    assert run_after(None, None) == []


def test_fill_shares_the_room_round_the_heads_and_keeps_each_run_a_prefix() -> None:
    runs = {1: [10, 11, 12, 13], 2: [20], 3: []}
    assert fill_batches([[1, 2, 3, 4]], runs, batch_size=8) == [[1, 2, 3, 4, 10, 11, 12, 20]]
    # Round robin: 10, 20, 11, 12 (in id order: a batch is sent in id order). No room: the
    # heads alone; a run never crosses into another batch.
    assert fill_batches([[1, 2], [3]], runs, batch_size=2) == [[1, 2], [3]]
    assert fill_batches([[1], [2]], runs, batch_size=3) == [[1, 10, 11], [2, 20]]


def test_run_limits_share_the_room_of_each_batch() -> None:
    assert run_limits([[1, 2, 3, 4], [5]], heads=[1, 2, 5], batch_size=10) == {1: 3, 2: 3, 5: 9}
    assert run_limits([[1, 2]], heads=[1, 2], batch_size=2) == {}
    assert run_limits([[1]], heads=[], batch_size=10) == {}


def test_a_run_broken_by_a_row_not_leased_is_cut_after_it() -> None:
    keys = {1: "a", 2: "a", 3: "a", 4: "b", 5: "b", 6: None}
    batches = [[1, 2, 3, 4, 5, 6]]
    assert broken_runs(batches, {1, 2, 3, 4, 5, 6}, keys) == set()
    assert broken_runs(batches, {1, 3, 4, 5, 6}, keys) == {3}
    assert broken_runs(batches, {2, 3, 5, 6}, keys) == {2, 3, 5}


def test_only_a_delivered_attempt_lets_the_key_go_on_in_the_batch() -> None:
    assert not holds_key("delivered", "delivered")
    for state in ("retrying", "dead", "cancelled", "pending"):
        assert holds_key(state, "delivered")


def test_a_keys_messages_commit_in_id_order(db: Any) -> None:
    """A second transaction storing a message of the same key waits for the first to commit,
    so its (larger) ids never become visible before the first's: acceptance order is id
    order.  Another key does not wait."""
    with transaction(db) as session:
        app, other_app = Application(name="ordered"), Application(name="other")
        session.add_all([app, other_app])
        session.flush()
        session.add(Endpoint(application_id=app.id, url="http://127.0.0.1:9/o"))
        app_id, other_app_id = app.id, other_app.id

    def accept(key: str, application_id: Any) -> None:
        with transaction(db) as session:
            envelope = Envelope(type="person.updated", data={}, ordering_key=key)
            accept_message(session, envelope, source="http", application_id=application_id)

    first = db()
    envelope = Envelope(type="person.updated", data={"first": True}, ordering_key="k")
    accept_message(first, envelope, source="http", application_id=app_id)
    same, other = threading.Event(), threading.Event()
    threading.Thread(target=lambda: (accept("k", app_id), same.set()), daemon=True).start()
    # Another key (of another application: the messages' statistics row of one application
    # and type may be shared with the first transaction) goes at once.
    threading.Thread(target=lambda: (accept("j", other_app_id), other.set()), daemon=True).start()
    assert other.wait(10)
    assert not same.wait(0.5)  # the same key waits for the first transaction
    first.commit()
    first.close()
    assert same.wait(10)
    with db() as session:
        rows = session.execute(
            select(Delivery.id, Message.payload)
            .join(Message, Message.id == Delivery.message_id)
            .where(Delivery.ordering_key == "k")
            .order_by(Delivery.id)
        ).all()
    assert [payload for _, payload in rows] == [{"first": True}, {}]
