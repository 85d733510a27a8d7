"""The transactional outbox against the real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from delivery import broker
from delivery.ingest import ingest_body
from outbox import OUTBOX, publish
from outbox import topology as outbox_topology
from outbox.relay import RabbitPublisher, Relay
from producer.config import ProducerSettings
from webhooks_core.messages.envelope import Envelope
from webhooks_core.models import Message


def unsent(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(OUTBOX).where(OUTBOX.c.sent_at.is_(None))
            ).scalar_one()
        )


def wait_until(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def commit_events(sessions: sessionmaker[Session], count: int, prefix: str = "evt") -> list[str]:
    ids = []
    with sessions.begin() as session:
        for n in range(count):
            ids.append(
                publish(
                    session,
                    Envelope(id=f"{prefix}_{n}", type="person.created", data={"n": n}),
                )
            )
    return ids


@pytest.fixture
def relay(producer_engine: Engine, settings: ProducerSettings) -> Any:
    publisher = RabbitPublisher(settings.broker_url)
    yield Relay(producer_engine, publisher, batch_size=50)
    publisher.close()


def test_committed_event_is_published_and_marked_sent(
    producer_db: sessionmaker[Session], producer_engine: Engine, relay: Relay, tap: Any
) -> None:
    envelope = Envelope(
        type="person.created", data={"name": "Ada"}, channels=["eu"], ordering_key="person-1"
    )
    with producer_db.begin() as session:
        assert publish(session, envelope) == envelope.id

    assert relay.relay_batch() == 1

    (seen,) = tap.take(1)
    assert seen.routing_key == "person.created"
    assert Envelope.model_validate(seen.body) == envelope
    assert seen.properties["delivery_mode"] == 2
    assert seen.properties["content_type"] == "application/json"
    assert seen.properties["message_id"] == envelope.id
    assert unsent(producer_engine) == 0
    assert relay.relay_batch() == 0


def test_rolled_back_event_is_never_published(
    producer_db: sessionmaker[Session], producer_engine: Engine, relay: Relay, tap: Any
) -> None:
    session = producer_db()
    session.begin()
    publish(session, Envelope(type="person.created", data={"name": "Ghost"}))
    session.rollback()
    session.close()

    assert relay.relay_batch() == 0
    with producer_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(OUTBOX)).scalar_one() == 0
    assert tap.drain() == []


def test_same_event_id_is_stored_once(
    producer_db: sessionmaker[Session], producer_engine: Engine
) -> None:
    envelope = Envelope(type="person.created", data={})
    for _ in range(2):
        with producer_db.begin() as session:
            publish(session, envelope)
    with producer_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(OUTBOX)).scalar_one() == 1


def test_relay_process_publishes_after_commit(
    producer_db: sessionmaker[Session], producer_engine: Engine, start_relay: Any, tap: Any
) -> None:
    relay = start_relay()
    relay.wait_for_log("relaying")
    ids = commit_events(producer_db, 3)
    assert sorted(seen.body["id"] for seen in tap.take(3)) == sorted(ids)
    wait_until(lambda: unsent(producer_engine) == 0, what="rows marked sent")


def test_relay_killed_between_publish_and_mark_sent_gives_one_stored_message(
    producer_db: sessionmaker[Session],
    producer_engine: Engine,
    db: sessionmaker[Session],
    start_relay: Any,
    tap: Any,
) -> None:
    (event_id,) = commit_events(producer_db, 1, prefix="crash")
    with producer_engine.connect() as blocker:
        # SHARE mode lets the relay claim rows (FOR UPDATE) and publish them, but blocks
        # its UPDATE ... SET sent_at: the relay is stuck right after publishing.
        blocker.execute(text("LOCK TABLE outbox IN SHARE MODE"))
        doomed = start_relay()
        (first,) = tap.take(1)
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait(timeout=10)
        blocker.rollback()
    assert first.body["id"] == event_id
    assert unsent(producer_engine) == 1

    start_relay()
    (second,) = tap.take(1)
    assert second.body["id"] == event_id
    wait_until(lambda: unsent(producer_engine) == 0, what="row marked sent")

    # Ingestion sees the event twice and stores it once.  (In a full test session another
    # suite's worker may also be consuming this vhost's ingest queue: it is one more ingester,
    # so at most one of these calls creates the message.)
    results = [ingest_body(db, copy.raw) for copy in (first, second)]
    assert [result.created for result in results] in ([True, False], [False, False])
    assert len({result.message_id for result in results}) == 1
    with db() as session:
        stored = session.scalars(select(Message.event_id)).all()
    assert stored == [event_id]


def test_broker_unreachable_then_back_loses_nothing(
    producer_db: sessionmaker[Session],
    producer_engine: Engine,
    start_relay: Any,
    tap: Any,
    closed_port: int,
) -> None:
    stranded = start_relay(broker_url=f"amqp://guest:guest@127.0.0.1:{closed_port}/nowhere")
    ids = commit_events(producer_db, 5, prefix="outage")
    # Producers keep committing while the relay cannot reach the broker...
    ids += commit_events(producer_db, 5, prefix="outage_more")
    stranded.wait_for_log("RabbitMQ unavailable")
    assert unsent(producer_engine) == 10
    stranded.process.terminate()
    assert stranded.process.wait(timeout=10) == 0

    # ...and the backlog drains once a relay reaches RabbitMQ.
    start_relay()
    assert sorted(seen.body["id"] for seen in tap.take(10)) == sorted(ids)
    wait_until(lambda: unsent(producer_engine) == 0, what="backlog drained")


def test_several_relays_share_the_work_without_duplicates(
    producer_db: sessionmaker[Session], producer_engine: Engine, start_relay: Any, tap: Any
) -> None:
    relays = [start_relay(WEBHOOKS_OUTBOX_BATCH_SIZE="5") for _ in range(3)]
    for relay in relays:
        relay.wait_for_log("relaying")
    ids: list[str] = []
    for batch in range(10):
        ids += commit_events(producer_db, 10, prefix=f"many_{batch}")
    seen = tap.take(100)
    wait_until(lambda: unsent(producer_engine) == 0, what="all rows sent")
    seen += tap.drain()
    assert sorted(item.body["id"] for item in seen) == sorted(ids)


def test_relay_declares_the_platform_topology() -> None:
    assert outbox_topology.EVENTS_EXCHANGE == broker.EVENTS_EXCHANGE
    assert outbox_topology.INGEST_DEAD_EXCHANGE == broker.INGEST_DEAD_EXCHANGE
    for mine, theirs in (
        (outbox_topology.INGEST_QUEUE, broker.INGEST_QUEUE),
        (outbox_topology.INGEST_DEAD_QUEUE, broker.INGEST_DEAD_QUEUE),
    ):
        assert (mine.name, mine.exchange, mine.routing_key, mine.durable) == (
            theirs.name,
            theirs.exchange,
            theirs.routing_key,
            theirs.durable,
        )
        assert mine.queue_arguments == theirs.queue_arguments
