"""Broker ingestion through a real Celery worker: stored once, fanned out, bad input
dead-lettered."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from outbox.relay import RabbitPublisher, Relay
from producer.app import create_app as create_producer
from producer.config import ProducerSettings
from webhooks_core.db import transaction
from webhooks_core.messages.envelope import Envelope
from webhooks_core.models import Application, Delivery, Endpoint, EventType


def add_endpoint(sessions: sessionmaker[Session], app: uuid.UUID, **fields: Any) -> uuid.UUID:
    with transaction(sessions) as session:
        endpoint = Endpoint(
            application_id=app, url=f"http://127.0.0.1:9/{uuid.uuid4().hex}", **fields
        )
        session.add(endpoint)
        session.flush()
        return endpoint.id


def add_application(sessions: sessionmaker[Session], uid: str | None = None) -> uuid.UUID:
    with transaction(sessions) as session:
        app = Application(name=uid or "acme", uid=uid)
        session.add(app)
        session.flush()
        return app.id


def deliveries_of(sessions: sessionmaker[Session], message_id: int) -> set[uuid.UUID]:
    with sessions() as session:
        return set(
            session.scalars(select(Delivery.endpoint_id).where(Delivery.message_id == message_id))
        )


def test_published_event_is_stored_once_and_fanned_out(
    db: sessionmaker[Session], publish_raw: Any, wait_for_messages: Any
) -> None:
    acme, globex = add_application(db, "acme"), add_application(db, "globex")
    wanted = add_endpoint(db, acme, event_types=["person.created"])
    everything = add_endpoint(db, globex)
    add_endpoint(db, acme, event_types=["person.deleted"])
    add_endpoint(db, globex, enabled=False)

    envelope = Envelope(type="person.created", data={"person": {"name": "Ada"}})
    publish_raw(envelope.to_json())
    publish_raw(envelope.to_json())  # a relay that crashed before marking it sent
    marker = Envelope(type="person.deleted", data={})
    publish_raw(marker.to_json(), "person.deleted")

    stored = {message.event_id: message for message in wait_for_messages(2)}
    assert set(stored) == {envelope.id, marker.id}
    first = stored[envelope.id]
    assert first.source == "broker"
    assert first.application_id is None
    assert first.payload == envelope.data
    assert deliveries_of(db, first.id) == {wanted, everything}


def test_envelope_naming_an_application_reaches_only_its_endpoints(
    db: sessionmaker[Session], publish_raw: Any, wait_for_messages: Any
) -> None:
    acme, globex = add_application(db, "acme"), add_application(db, "globex")
    mine = add_endpoint(db, acme)
    add_endpoint(db, globex)
    by_uid = Envelope(type="order.paid", data={}, application="acme")
    by_id = Envelope(type="order.paid", data={}, application=str(acme))
    publish_raw(by_uid.to_json(), "order.paid")
    publish_raw(by_id.to_json(), "order.paid")
    for message in wait_for_messages(2):
        assert message.application_id == acme
        assert deliveries_of(db, message.id) == {mine}


def test_one_event_id_in_two_applications_and_a_broadcast_is_three_messages(
    db: sessionmaker[Session], publish_raw: Any, wait_for_messages: Any
) -> None:
    acme, globex = add_application(db, "acme"), add_application(db, "globex")
    mine, theirs = add_endpoint(db, acme), add_endpoint(db, globex)
    envelopes = [
        Envelope(id="evt_same", type="order.paid", data={}, application="acme"),
        Envelope(id="evt_same", type="order.paid", data={}, application=str(globex)),
        Envelope(id="evt_same", type="order.paid", data={}),
    ]
    for envelope in envelopes * 2:  # each one twice: a repeat is a no-op in its own scope
        publish_raw(envelope.to_json(), "order.paid")
    marker = Envelope(type="order.paid", data={}, application="acme")
    publish_raw(marker.to_json(), "order.paid")  # ingested after every repeat above

    stored = wait_for_messages(4)
    same = {m.application_id: m for m in stored if m.event_id == "evt_same"}
    assert len([m for m in stored if m.event_id == "evt_same"]) == 3
    assert deliveries_of(db, same[acme].id) == {mine}
    assert deliveries_of(db, same[globex].id) == {theirs}
    assert deliveries_of(db, same[None].id) == {mine, theirs}


def test_unparseable_messages_are_dead_lettered_not_dropped(
    db: sessionmaker[Session], publish_raw: Any, dead_letters: Any, wait_for_messages: Any
) -> None:
    bad = [
        b"{not json",
        json.dumps({"id": "x", "data": {}}).encode(),  # no type
        json.dumps([1, 2]).encode(),
        Envelope(type="a.b", data={}, application="nobody").to_json(),
        # JSON the API refuses is refused here too: deep, NUL, NaN, beyond a double's range.
        b'{"type": "a.b", "data": ' + b'{"x": ' * 3000 + b"1" + b"}" * 3000 + b"}",
        b'{"type": "a.b", "data": {"k": "nul \\u0000 here"}}',
        b'{"type": "a.b", "data": {"n": NaN}}',
        b'{"type": "a.b", "data": {"n": 1e400}}',
    ]
    for body in bad:
        publish_raw(body, "garbage.in")
    assert sorted(dead_letters(len(bad))) == sorted(bad)

    # The worker keeps ingesting after rejecting them.
    good = Envelope(type="a.b", data={})
    publish_raw(good.to_json(), "a.b")
    (stored,) = wait_for_messages(1)
    assert stored.event_id == good.id


def test_person_created_through_the_demo_api_becomes_a_message_with_deliveries(
    db: sessionmaker[Session],
    producer_settings: ProducerSettings,
    ingest_worker: Any,
    wait_for_messages: Any,
) -> None:
    """The issue's definition of done: producer API -> outbox -> RabbitMQ -> stored message
    with one delivery per matching endpoint."""
    producer = create_producer(producer_settings)  # registers the person.* event types
    with db() as session:
        assert session.scalar(select(func.count()).select_from(EventType)) >= 3
    acme, globex = add_application(db, "acme"), add_application(db, "globex")
    subscribed = add_endpoint(db, acme, event_types=["person.created", "person.updated"])
    catch_all = add_endpoint(db, globex)
    add_endpoint(db, globex, event_types=["file.uploaded"])

    created = producer.test_client().post("/people", json={"name": "Grace Hopper"})
    assert created.status_code == 201

    publisher = RabbitPublisher(producer_settings.broker_url)
    relay = Relay(producer.extensions["producer"].engine, publisher)
    try:
        assert relay.relay_batch() == 1
    finally:
        publisher.close()

    (message,) = wait_for_messages(1)
    assert message.event_id == created.json["event_id"]
    assert message.event_type == "person.created"
    assert message.payload["person"]["name"] == "Grace Hopper"
    assert deliveries_of(db, message.id) == {subscribed, catch_all}


def test_worker_killed_while_ingesting_loses_and_duplicates_nothing(
    db: sessionmaker[Session],
    engine: Engine,
    publish_raw: Any,
    ingest_worker: Any,
    wait_for_messages: Any,
) -> None:
    envelopes = [Envelope(type="order.paid", data={"n": n}) for n in range(50)]
    with engine.connect() as blocker:
        # Hold the worker inside its transaction: it has the messages, has not committed,
        # has not acknowledged.  Then kill it there.
        blocker.execute(text("LOCK TABLE messages IN SHARE MODE"))
        for envelope in envelopes:
            publish_raw(envelope.to_json(), "order.paid")
        deadline = time.monotonic() + 20
        while not waiting_on_a_lock(engine):
            assert time.monotonic() < deadline, "the worker never reached its INSERT"
            time.sleep(0.05)
        ingest_worker.kill()
        blocker.rollback()
    ingest_worker.start()

    stored = wait_for_messages(len(envelopes), timeout=60)
    assert sorted(message.event_id for message in stored) == sorted(e.id for e in envelopes)


def waiting_on_a_lock(engine: Engine) -> bool:
    with engine.connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    return bool(waiting)
