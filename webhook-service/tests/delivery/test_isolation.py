"""Per-delivery failure isolation: one batch that mixes healthy deliveries of several
applications with poison ones (odd bytes in answers, stored values the worker cannot use)
records every healthy delivery once and ends each poison one in a proper state.

The batch is leased here, in one transaction with the data (as the scheduler would lease
it, but all in one batch whatever the scheduler's batching rules), and its task is published
to the real worker through RabbitMQ.  The lease is long, so a batch that failed as a whole
would stay ``sending`` for the whole test instead of being retried in smaller batches.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from sqlalchemy import select, text

from delivery.broker import DELIVER_QUEUE_NAME
from delivery.celery_app import create_celery
from delivery.config import DeliverySettings
from delivery.scheduling import DELIVER_TASK
from delivery.testing import create_test_celery
from webhooks_core.db import transaction
from webhooks_core.endpoints.sealing import seal
from webhooks_core.messages.envelope import Envelope
from webhooks_core.messages.fanout import accept_message
from webhooks_core.models import (
    Application,
    Attempt,
    DeadLetter,
    Delivery,
    Endpoint,
    EndpointSecret,
    Message,
)
from webhooks_core.signing import new_secret

LEASE = timedelta(minutes=5)


@dataclass
class Case:
    """One delivery of the batch and what must become of it."""

    name: str
    state: str  # the state it must end in
    outcome: str  # its one attempt's outcome
    reason: str = ""  # in its last error (and dead letter) when it does not succeed
    requests: int = 1  # requests its receiver must get
    delivery_id: int = 0
    endpoint_id: uuid.UUID | None = None
    receiver: Any = None


def raw(reply: bytes) -> Callable[[BaseHTTPRequestHandler], None]:
    """A receiver handler that writes ``reply`` as is and hangs up."""

    def handler(request: BaseHTTPRequestHandler) -> None:
        request.wfile.write(reply)
        request.wfile.flush()
        request.close_connection = True

    return handler


@pytest.fixture
def lease_batch(
    engine_settings: DeliverySettings, lease_rows: Callable[[Any, list[int]], uuid.UUID]
) -> Iterator[Callable[[Any, list[int]], uuid.UUID]]:
    """``lease_batch(session, ids)`` leases the rows as one batch; then ``publish``."""
    app = create_celery(engine_settings)

    def lease(session: Any, ids: list[int]) -> uuid.UUID:
        return lease_rows(session, ids)

    lease.publish = lambda token, ids: app.send_task(  # type: ignore[attr-defined]
        DELIVER_TASK, args=[str(token), ids], queue=DELIVER_QUEUE_NAME
    )
    yield lease
    app.close()


def deliveries_by_id(platform: Any) -> dict[int, Delivery]:
    return {d.id: d for d in platform.deliveries()}


def attempts_by_delivery(platform: Any) -> dict[int, list[Attempt]]:
    found: dict[int, list[Attempt]] = {}
    with platform.sessions() as session:
        for attempt in session.scalars(select(Attempt).order_by(Attempt.id)):
            found.setdefault(attempt.delivery_id, []).append(attempt)
    return found


def test_one_batch_of_healthy_and_poison_deliveries_of_several_applications(
    platform: Any, receiver: Any, wait_for: Any, lease_batch: Any, processes: Any
) -> None:
    healthy_server = receiver(lambda got, _n: {"body": b"thanks " + got.path.encode()})
    # Answers a 2xx with bytes PostgreSQL text refuses (NUL) and invalid UTF-8.
    nul_body = receiver(lambda _got, _n: {"body": b"ok\x00\xff\xfe\xed\xa0\x80 done"})
    # A 503 whose Retry-After is a digit float() refuses ("²".isdigit() is True).
    odd_retry_after = receiver(
        lambda _got, _n: {"status": 503, "headers": {"Retry-After": "\u00b2"}, "body": b"x"}
    )
    cut_head = receiver(lambda _got, _n: {"handler": raw(b"HTTP/1.1 200 OK\r\nContent-Le")})
    never = receiver()  # the endpoints whose requests cannot be built

    cases: list[Case] = []
    healthy: list[Case] = []
    with transaction(platform.sessions) as session:

        def endpoint(app_id: uuid.UUID, url: str, **fields: Any) -> uuid.UUID:
            secret = fields.pop("secret", None) or new_secret()
            row = Endpoint(application_id=app_id, url=url, **fields)
            session.add(row)
            session.flush()
            session.add(EndpointSecret(endpoint_id=row.id, secret=seal(secret)))
            session.flush()
            return row.id

        def publish(app_id: uuid.UUID, data: Any = None, event_type: str = "thing.done") -> int:
            envelope = Envelope(type=event_type, data=data or {"n": 1})
            accept_message(session, envelope, source="http", application_id=app_id)
            session.flush()
            return int(
                session.execute(
                    text(
                        "SELECT d.id FROM deliveries d JOIN messages m ON m.id = d.message_id"
                        " WHERE m.event_id = :event_id"
                    ),
                    {"event_id": envelope.id},
                ).scalar_one()
            )

        # Three healthy applications, two endpoints each, two messages each.
        for a in range(3):
            app = Application(name=f"healthy-{a}")
            session.add(app)
            session.flush()
            for e in range(2):
                endpoint(app.id, f"{healthy_server.url}?app={a}&endpoint={e}")
            for m in range(2):
                envelope = Envelope(type="thing.done", data={"app": a, "m": m})
                accept_message(session, envelope, source="http", application_id=app.id)
        session.flush()
        for (delivery_id,) in session.execute(text("SELECT id FROM deliveries ORDER BY id")):
            healthy.append(Case("healthy", "delivered", "success", delivery_id=delivery_id))

        poisoned = Application(name="poisoned")
        session.add(poisoned)
        session.flush()
        pid = poisoned.id

        # Endpoint-level poison: each its own endpoint, subscribed to its own event type.
        for name, fields in [
            ("headers JSON null", {}),
            ("header value with CR LF", {"headers": {"X-Bad": "a\r\nInjected: yes"}}),
            ("header value beyond Latin-1", {"headers": {"X-Euro": "\u20ac"}}),
            ("header name not a token", {"headers": {"Bad Name": "v"}}),
            ("secret that does not decode", {"secret": "whsec_!!!not-base64!!!"}),
            ("URL with a port out of range", {"url": "http://127.0.0.1:99999/hook"}),
            ("URL without a host", {"url": "http:///hook"}),
        ]:
            event_type = "poison." + name.replace(" ", "-").lower()
            url = fields.pop("url", never.url)
            eid = endpoint(pid, url, event_types=[event_type], **fields)
            if name == "headers JSON null":
                session.execute(
                    text("UPDATE endpoints SET headers = 'null'::jsonb WHERE id = :id"),
                    {"id": eid},
                )
            case = Case(name, "dead", "error", "could not build the request", requests=0)
            case.delivery_id = publish(pid, event_type=event_type)
            cases.append(case)

        # Message-level poison, all for one otherwise healthy endpoint of the poisoned app.
        message_endpoint = endpoint(pid, never.url, event_types=["poison.message"])
        for name, column, value in [
            ("occurred_at infinity", "occurred_at", "'infinity'"),
            ("occurred_at -infinity", "occurred_at", "'-infinity'"),
            ("occurred_at year 10000", "occurred_at", "'10000-01-01 00:00:00+00'"),
            ("occurred_at 4713 BC", "occurred_at", "'4713-01-01 00:00:00+00 BC'"),
            (
                "payload number of 5000 digits",
                "payload",
                "jsonb_build_object('n', CAST(repeat('9', 5000) AS numeric))",
            ),
            (
                "payload nested 5000 deep",
                "payload",
                "CAST(repeat('[', 5000) || repeat(']', 5000) AS jsonb)",
            ),
            ("message id with CR LF", "event_id", "event_id || E'\\r\\nX-Injected: yes'"),
        ]:
            case = Case(name, "dead", "error", "could not build the request", requests=0)
            case.delivery_id = publish(pid, event_type="poison.message")
            session.execute(
                text(
                    f"UPDATE messages SET {column} = {value} WHERE id ="  # noqa: S608
                    " (SELECT message_id FROM deliveries WHERE id = :id)"
                ),
                {"id": case.delivery_id},
            )
            case.endpoint_id = message_endpoint
            cases.append(case)

        # A created_at the worker cannot read only loses the lag metric: delivered.
        created = Case("created_at infinity", "delivered", "success")
        created_endpoint = endpoint(pid, healthy_server.url + "?poisoned", event_types=["poison.c"])
        created.delivery_id = publish(pid, event_type="poison.c")
        session.execute(
            text(
                "UPDATE messages SET created_at = 'infinity' WHERE id ="
                " (SELECT message_id FROM deliveries WHERE id = :id)"
            ),
            {"id": created.delivery_id},
        )
        created.endpoint_id = created_endpoint
        cases.append(created)

        # Answer-level poison: each its own receiver.
        for case, server, event_type in [
            (
                Case("NUL and invalid UTF-8 in the body", "delivered", "success"),
                nul_body,
                "poison.b",
            ),
            (
                Case("Retry-After '\u00b2'", "retrying", "http_5xx", "HTTP 503"),
                odd_retry_after,
                "poison.r",
            ),
            (Case("head cut off", "retrying", "connect_error", "cut off"), cut_head, "poison.h"),
        ]:
            case.endpoint_id = endpoint(pid, server.url, event_types=[event_type])
            case.receiver = server
            case.delivery_id = publish(pid, event_type=event_type)
            cases.append(case)

        ids = [c.delivery_id for c in healthy + cases]
        token = lease_batch(session, ids)
    worker_log = processes.logs / "worker.log"
    logged_before = worker_log.stat().st_size
    lease_batch.publish(token, ids)

    everything = healthy + cases
    wait_for(
        lambda: all(d.state != "sending" for d in platform.deliveries()),
        timeout=30,
        message="the batch recorded",
    )
    time.sleep(0.5)  # anything sent twice would show by now
    rows = deliveries_by_id(platform)
    attempts = attempts_by_delivery(platform)
    with platform.sessions() as session:
        letters = {d.delivery_id: d for d in session.scalars(select(DeadLetter))}

    assert len(rows) == len(everything)
    problems = []
    for case in everything:
        row = rows[case.delivery_id]
        got = attempts.get(case.delivery_id, [])
        outcome = [a.outcome for a in got]
        if row.state != case.state or outcome != [case.outcome]:
            problems.append(f"{case.name}: {row.state} {outcome} {row.last_error!r}")
            continue
        if case.reason and case.reason not in (row.last_error or ""):
            problems.append(f"{case.name}: last_error {row.last_error!r}")
        if case.state == "dead":
            letter = letters.get(case.delivery_id)
            if letter is None or case.reason not in letter.reason:
                problems.append(f"{case.name}: dead letter {letter and letter.reason!r}")
        if case.state == "retrying" and row.next_attempt_at is None:
            problems.append(f"{case.name}: retrying without a next attempt")
    assert problems == []

    # Every healthy delivery went out exactly once (the created_at case shares the receiver):
    # two messages to each of the six healthy endpoints, one to the created_at one.
    sent = Counter((got.path, got.headers["webhook-id"]) for got in healthy_server.received)
    assert sorted(sent.values()) == [1] * (len(healthy) + 1)
    per_path = Counter(path for path, _ in sent)
    assert sorted(per_path.values()) == [1] + [2] * 6
    assert never.received == []
    for case in cases:
        if case.receiver is not None:
            assert len(case.receiver.received) == case.requests, case.name

    # The stored answer: NUL and invalid sequences replaced, the rest kept.
    (nul_case,) = [c for c in cases if c.name.startswith("NUL")]
    (stored,) = attempts[nul_case.delivery_id]
    assert stored.response_body is not None
    assert "\x00" not in stored.response_body
    assert stored.response_body.startswith("ok")
    assert stored.response_body.endswith(" done")
    # No request was built for the dead ones: their attempts say why, with no status.
    for case in cases:
        if case.state == "dead":
            (attempt,) = attempts[case.delivery_id]
            assert attempt.status_code is None
            assert (attempt.error or "").startswith("could not build the request: ")
    # One log line per attempt: INFO delivered, WARNING failed, ERROR dead.
    levels: dict[int, str] = {}
    with worker_log.open("rb") as log:
        log.seek(logged_before)
        for line in log.read().decode("utf-8", errors="replace").splitlines():
            if '"delivery attempt ' in line:
                record = json.loads(line)
                levels[record["delivery_id"]] = record["level"]
    expected_level = {"delivered": "info", "retrying": "warning", "dead": "error"}
    assert levels == {case.delivery_id: expected_level[case.state] for case in everything}
    report = {
        "deliveries": len(everything),
        "applications": 4,
        "healthy": len(healthy) + 1,
        "poison_classes": len(cases) - 1,
    }
    print("isolation:", json.dumps(report))


def test_a_value_the_database_refuses_spoils_only_its_own_delivery(
    platform: Any, receiver: Any, wait_for: Any, lease_batch: Any, engine: Any
) -> None:
    # Sanitising covers the refusals known today; whatever else PostgreSQL may refuse (here
    # a constraint on one answer's text) must not cost the batch: the batch's transaction
    # fails, each delivery is then recorded on its own, and the culprit gets a minimal
    # attempt without the refused text.
    server = receiver(lambda got, _n: {"body": b"refuse-me" if b'"bad"' in got.body else b"fine"})
    with engine.begin() as conn:
        conn.execute(
            text(
                "ALTER TABLE attempts ADD CONSTRAINT test_refuse CHECK"
                " (response_body IS NULL OR response_body NOT LIKE '%refuse-me%') NOT VALID"
            )
        )
    try:
        with transaction(platform.sessions) as session:
            app_id = platform.application()
            for n in range(3):
                row = Endpoint(application_id=app_id, url=f"{server.url}?e={n}")
                session.add(row)
                session.flush()
                session.add(EndpointSecret(endpoint_id=row.id, secret=seal(new_secret())))
            for data in ({"n": 1}, {"bad": True}, {"n": 2}):
                accept_message(
                    session,
                    Envelope(type="thing.done", data=data),
                    source="http",
                    application_id=app_id,
                )
            session.flush()
            ids = list(session.scalars(select(Delivery.id).order_by(Delivery.id)))
            token = lease_batch(session, ids)
        lease_batch.publish(token, ids)
        wait_for(
            lambda: all(d.state != "sending" for d in platform.deliveries()),
            timeout=30,
            message="the batch recorded",
        )
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE attempts DROP CONSTRAINT test_refuse"))

    assert len(server.received) == 9
    assert {d.state for d in platform.deliveries()} == {"delivered"}
    attempts = attempts_by_delivery(platform)
    assert sorted(len(a) for a in attempts.values()) == [1] * 9
    bodies = sorted(a[0].response_body or "" for a in attempts.values())
    assert bodies == [""] * 3 + ["fine"] * 6
    culprits = [a[0] for a in attempts.values() if a[0].response_body is None]
    assert all("could not be recorded" in (a.error or "") for a in culprits)
    with platform.sessions() as session:
        bad = session.scalar(select(Message).where(Message.payload["bad"].as_boolean()))
    assert bad is not None


@dataclass
class ExplodingSender:
    """The real sender, except that it raises for URLs containing ``explode`` (a bug)."""

    real: Any

    def send(self, request: Any) -> Any:
        if "explode" in request.url:
            raise RuntimeError("a bug in the sender")
        return self.real.send(request)


def test_a_sender_that_raises_fails_only_its_own_delivery(
    platform: Any, receiver: Any, lease_batch: Any, engine_settings: DeliverySettings
) -> None:
    from delivery.engine import deliver_batch
    from delivery.runtime import runtime_for

    real = runtime_for(create_test_celery(engine_settings))
    runtime = dataclasses.replace(real, sender=ExplodingSender(real.sender))
    server = receiver()
    with transaction(platform.sessions) as session:
        app_id = platform.application()
        for url in (f"{server.url}?fine", f"{server.url}?explode"):
            row = Endpoint(application_id=app_id, url=url)
            session.add(row)
            session.flush()
            session.add(EndpointSecret(endpoint_id=row.id, secret=seal(new_secret())))
        accept_message(
            session, Envelope(type="thing.done", data={}), source="http", application_id=app_id
        )
        session.flush()
        ids = list(session.scalars(select(Delivery.id).order_by(Delivery.id)))
        token = lease_batch(session, ids)

    report = deliver_batch(runtime, token, ids)  # in this process, with the sender above

    assert (report.delivered, report.retrying) == (1, 1)
    states = {d.id: d.state for d in platform.deliveries()}
    attempts = attempts_by_delivery(platform)
    exploded = [i for i in ids if attempts[i][0].outcome == "error"]
    assert len(exploded) == 1
    assert states[exploded[0]] == "retrying"
    assert attempts[exploded[0]][0].error == "the sender failed: RuntimeError: a bug in the sender"
    assert [got.path for got in server.received] == ["/webhook?fine"]
