"""Fan-out rules of accept_message, on the real database."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.db import transaction
from webhooks_core.messages.envelope import Envelope
from webhooks_core.messages.fanout import accept_message, accept_messages
from webhooks_core.models import Application, Delivery, Endpoint, Message

MakeEndpoint = Callable[..., uuid.UUID]


@pytest.fixture
def apps(db: sessionmaker[Session]) -> tuple[uuid.UUID, uuid.UUID]:
    with transaction(db) as session:
        first, second = Application(name="acme"), Application(name="globex")
        session.add_all([first, second])
        session.flush()
        return first.id, second.id


@pytest.fixture
def endpoint(db: sessionmaker[Session], apps: tuple[uuid.UUID, uuid.UUID]) -> MakeEndpoint:
    def make(app: uuid.UUID | None = None, **fields: Any) -> uuid.UUID:
        with transaction(db) as session:
            row = Endpoint(
                application_id=app or apps[0],
                url=f"http://127.0.0.1:9/{uuid.uuid4()}",
                **fields,
            )
            session.add(row)
            session.flush()
            return row.id

    return make


def accept_one(
    db: sessionmaker[Session],
    event_type: str = "person.created",
    *,
    app: uuid.UUID | None = None,
    channels: list[str] | None = None,
    event_id: str | None = None,
    batch: bool = False,
) -> tuple[set[uuid.UUID], Any]:
    envelope = Envelope(
        type=event_type,
        data={"name": "Ada"},
        channels=channels,
        **({"id": event_id} if event_id else {}),
    )
    with transaction(db) as session:
        if batch:
            # The same envelope twice in one batch: stored and fanned out once.
            result, repeat = accept_messages(
                session, [(envelope, app), (envelope, app)], source="broker"
            )
            assert not repeat.created
            assert repeat.message_id == result.message_id
        else:
            result = accept_message(session, envelope, source="broker", application_id=app)
    with db() as session:
        targets = set(
            session.scalars(
                select(Delivery.endpoint_id).where(Delivery.message_id == result.message_id)
            )
        )
    assert len(targets) == result.deliveries or not result.created
    return targets, result


@pytest.fixture(params=["one at a time", "in a batch"])
def accept(request: pytest.FixtureRequest, db: sessionmaker[Session]) -> Callable[..., Any]:
    """Every rule holds for accept_message and for accept_messages alike."""
    return functools.partial(accept_one, db, batch=request.param == "in a batch")


def test_type_filter(accept: Any, endpoint: MakeEndpoint, db: sessionmaker[Session]) -> None:
    created = endpoint(event_types=["person.created"])
    endpoint(event_types=["person.deleted"])
    targets, result = accept("person.created")
    assert targets == {created}
    assert result.created
    assert result.deliveries == 1


def test_empty_event_types_subscribe_to_everything(
    accept: Any, endpoint: MakeEndpoint, db: sessionmaker[Session]
) -> None:
    everything = endpoint(event_types=[])
    several = endpoint(event_types=["file.uploaded", "person.updated"])
    assert accept("person.updated")[0] == {everything, several}
    assert accept("order.shipped")[0] == {everything}


def test_channels(accept: Any, endpoint: MakeEndpoint, db: sessionmaker[Session]) -> None:
    unfiltered = endpoint()
    eu = endpoint(channels=["eu"])
    us_or_eu = endpoint(channels=["us", "eu"])
    us = endpoint(channels=["us"])
    assert accept(channels=["eu"])[0] == {unfiltered, eu, us_or_eu}
    assert accept(channels=["us", "asia"])[0] == {unfiltered, us_or_eu, us}
    # An endpoint with channels receives only messages that share one.
    assert accept(channels=None)[0] == {unfiltered}


def test_application_scope(
    accept: Any,
    endpoint: MakeEndpoint,
    db: sessionmaker[Session],
    apps: tuple[uuid.UUID, uuid.UUID],
) -> None:
    mine = endpoint(apps[0])
    theirs = endpoint(apps[1])
    targets, _ = accept(app=apps[0])
    assert targets == {mine}
    assert accept(app=apps[1])[0] == {theirs}


def test_broadcast_reaches_every_application(
    accept: Any,
    endpoint: MakeEndpoint,
    db: sessionmaker[Session],
    apps: tuple[uuid.UUID, uuid.UUID],
) -> None:
    mine = endpoint(apps[0], event_types=["person.created"])
    theirs = endpoint(apps[1])
    targets, _ = accept(app=None)
    assert targets == {mine, theirs}
    with db() as session:
        rows = session.scalars(select(Delivery)).all()
    # Each delivery carries its endpoint's application and the message's type.
    assert {(row.endpoint_id, row.application_id) for row in rows} == {
        (mine, apps[0]),
        (theirs, apps[1]),
    }
    assert {row.event_type for row in rows} == {"person.created"}
    assert {row.state for row in rows} == {"pending"}
    assert all(row.next_attempt_at is not None for row in rows)


def test_disabled_deleted_and_relay_endpoints_excluded(
    accept: Any, endpoint: MakeEndpoint, db: sessionmaker[Session]
) -> None:
    live = endpoint()
    endpoint(enabled=False)
    endpoint(deleted_at=datetime.now(UTC))
    endpoint(kind="relay")
    assert accept()[0] == {live}


def test_duplicate_event_id_is_a_no_op(
    accept: Any, endpoint: MakeEndpoint, db: sessionmaker[Session]
) -> None:
    endpoint()
    endpoint()
    _targets, first = accept(event_id="evt_dup_1")
    assert first.created
    assert first.deliveries == 2
    _, second = accept(event_id="evt_dup_1")
    assert not second.created
    assert second.deliveries == 0
    assert second.message_id == first.message_id
    with db() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 1
        assert session.scalar(select(func.count()).select_from(Delivery)) == 2


def test_message_stored_as_published(db: sessionmaker[Session], apps: Any) -> None:
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    envelope = Envelope(
        id="evt_stored", type="file.uploaded", timestamp=stamp, data={"a": 1}, channels=["x"]
    )
    with transaction(db) as session:
        accept_message(session, envelope, source="http", application_id=apps[0])
    with db() as session:
        message = session.scalars(select(Message)).one()
    assert (message.event_id, message.event_type, message.payload) == (
        "evt_stored",
        "file.uploaded",
        {"a": 1},
    )
    assert message.channels == ["x"]
    assert message.occurred_at == stamp
    assert message.source == "http"
    assert message.application_id == apps[0]


def test_unknown_source_refused(db: sessionmaker[Session]) -> None:
    with db() as session, pytest.raises(ValueError, match="source"):
        accept_message(session, Envelope(type="a.b", data={}), source="carrier-pigeon")


@pytest.mark.parametrize("batch", [False, True], ids=["one at a time", "in a batch"])
def test_matching_reads_indexes_not_every_endpoint(
    db: sessionmaker[Session], apps: tuple[uuid.UUID, uuid.UUID], batch: bool
) -> None:
    # An application with thousands of endpoints on other types: the fan-out's "every type
    # OR this one" must be answered by the indexes, not by reading all of them per message.
    with transaction(db) as session:
        session.execute(
            text(
                "INSERT INTO endpoints (id, application_id, url, event_types)"
                " SELECT gen_random_uuid(), :app, 'http://127.0.0.1:9/' || n, ARRAY['other.' || n]"
                " FROM generate_series(1, 3000) AS n"
            ),
            {"app": apps[0]},
        )
        session.execute(
            text(
                "INSERT INTO endpoints (id, application_id, url)"
                " VALUES (gen_random_uuid(), :app, 'http://127.0.0.1:9/all')"
            ),
            {"app": apps[0]},
        )
    with db() as session:
        session.execute(text("ANALYZE endpoints"))
        session.commit()

    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO DELIVERIES"):
            statements.append((statement, parameters))

    envelope = Envelope(type="person.created", data={"name": "Ada"})
    with db() as session:
        event.listen(session.connection(), "before_cursor_execute", capture)
        if batch:
            (result,) = accept_messages(session, [(envelope, apps[0])], source="broker")
        else:
            result = accept_message(session, envelope, source="broker", application_id=apps[0])
        assert result.deliveries == 1  # the all-types endpoint only
        ((statement, parameters),) = statements
        cursor = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute("EXPLAIN " + statement, parameters)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        session.rollback()
    assert "Seq Scan on endpoints" not in plan, plan
    assert "ix_endpoints_all_types" in plan, plan


def test_event_ids_are_unique_per_application_and_among_broadcasts(
    accept: Any, endpoint: MakeEndpoint, apps: tuple[uuid.UUID, uuid.UUID], db: Any
) -> None:
    mine, theirs = endpoint(apps[0]), endpoint(apps[1])
    targets_a, in_a = accept(event_id="evt_shared", app=apps[0])
    targets_b, in_b = accept(event_id="evt_shared", app=apps[1])
    targets_all, broadcast = accept(event_id="evt_shared", app=None)
    assert (in_a.created, in_b.created, broadcast.created) == (True, True, True)
    assert (targets_a, targets_b, targets_all) == ({mine}, {theirs}, {mine, theirs})
    assert len({in_a.message_id, in_b.message_id, broadcast.message_id}) == 3
    # Repeats are no-ops within their own scope: an application's, or the broadcasts'.
    for app, first in ((apps[0], in_a), (apps[1], in_b), (None, broadcast)):
        _, repeat = accept(event_id="evt_shared", app=app)
        assert (repeat.created, repeat.deliveries) == (False, 0)
        assert repeat.message_id == first.message_id
    with db() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 3
        assert session.scalar(select(func.count()).select_from(Delivery)) == 4


def test_a_batch_mixing_applications_under_one_event_id(
    endpoint: MakeEndpoint, apps: tuple[uuid.UUID, uuid.UUID], db: sessionmaker[Session]
) -> None:
    endpoint(apps[0])
    endpoint(apps[1])
    known = Envelope(id="evt_mixed", type="person.created", data={})
    with transaction(db) as session:
        (stored,) = accept_messages(session, [(known, apps[0])], source="broker")
    with transaction(db) as session:
        results = accept_messages(
            session,
            [(known, apps[0]), (known, apps[1]), (known, None), (known, apps[1]), (known, None)],
            source="broker",
        )
    assert [(r.created, r.deliveries) for r in results] == [
        (False, 0),
        (True, 1),
        (True, 2),
        (False, 0),
        (False, 0),
    ]
    assert results[0].message_id == stored.message_id
    assert results[3].message_id == results[1].message_id
    assert results[4].message_id == results[2].message_id
    assert len({stored.message_id, results[1].message_id, results[2].message_id}) == 3
