"""What the engine does with each kind of answer: retries, Retry-After, 410, dead letters,
the breaker, auto-disable, lost workers, slow endpoints, rotation and the SSRF guard."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

from kombu import Connection
from sqlalchemy import func, select, text, update
from standardwebhooks import Webhook

from delivery.broker import DEAD_LETTER_QUEUE
from delivery.config import DeliverySettings
from webhooks_core.db import transaction
from webhooks_core.endpoints.sealing import seal
from webhooks_core.messages.envelope import Envelope, utcnow
from webhooks_core.messages.fanout import accept_message
from webhooks_core.models import (
    Attempt,
    DeadLetter,
    Delivery,
    Endpoint,
    EndpointSecret,
    Message,
)
from webhooks_core.signing import new_secret


def attempts_of(platform: Any, delivery_id: int) -> list[Attempt]:
    with platform.sessions() as session:
        query = select(Attempt).where(Attempt.delivery_id == delivery_id).order_by(Attempt.id)
        return list(session.scalars(query))


def only_delivery(platform: Any, endpoint_id: Any = None) -> Any:
    (delivery,) = platform.deliveries(endpoint_id)
    return delivery


def in_state(platform: Any, state: str) -> Any:
    """The only delivery when it is in ``state``, else None."""
    delivery = only_delivery(platform)
    return delivery if delivery.state == state else None


def test_server_error_is_retried_by_schedule_on_the_injected_clock(
    platform: Any, receiver: Any, wait_for: Any, clock: Any
) -> None:
    server = receiver(lambda _got, n: {"status": 500 if n == 1 else 200, "body": b"boom"})
    platform.endpoint(server.url, retry_schedule=[0, 3600])
    event_id = platform.publish()

    first = wait_for(lambda: in_state(platform, "retrying"))
    assert first.attempt_count == 1
    assert first.last_status_code == 500
    wait_ahead = (first.next_attempt_at - first.last_attempt_at).total_seconds()
    assert 3600 * 0.8 <= wait_ahead <= 3600 * 1.2
    assert len(server.received) == 1

    clock.advance(4400)
    wait_for(lambda: only_delivery(platform).state == "delivered", message="retry delivered")
    assert [got.headers["webhook-id"] for got in server.received] == [event_id, event_id]
    attempts = attempts_of(platform, first.id)
    assert [(a.outcome, a.status_code) for a in attempts] == [("http_5xx", 500), ("success", 200)]
    assert attempts[0].response_body == "boom"
    assert attempts[0].latency_ms > 0


def test_retry_after_is_honoured_up_to_its_bound(
    platform: Any, receiver: Any, wait_for: Any, clock: Any
) -> None:
    server = receiver(
        lambda _got, n: {"status": 429, "headers": {"Retry-After": "7200"}} if n == 1 else {}
    )
    platform.endpoint(server.url, retry_schedule=[0, 5, 5])
    platform.publish()

    first = wait_for(lambda: in_state(platform, "retrying"))
    wait_ahead = (first.next_attempt_at - first.last_attempt_at).total_seconds()
    assert 599 <= wait_ahead <= 601  # Retry-After 7200 capped by RETRY_AFTER_MAX_SECONDS=600
    clock.advance(601)
    wait_for(lambda: only_delivery(platform).state == "delivered")


def test_gone_disables_the_endpoint_cancels_the_rest_and_emits_endpoint_disabled(
    platform: Any, receiver: Any, wait_for: Any
) -> None:
    gone = receiver(lambda _got, _n: {"status": 410})
    ops = receiver()
    gone_id, _ = platform.endpoint(gone.url, event_types=["person.created"], max_in_flight=1)
    platform.endpoint(ops.url, event_types=["endpoint.disabled"])
    for n in range(3):
        platform.publish({"n": n})

    wait_for(lambda: not platform.endpoint_row(gone_id).enabled, message="disabled")
    wait_for(
        lambda: all(d.state == "cancelled" for d in platform.deliveries(gone_id)),
        message="open deliveries cancelled",
    )
    endpoint = platform.endpoint_row(gone_id)
    assert "410" in (endpoint.disabled_reason or "")
    assert len(gone.received) < 3

    wait_for(lambda: len(ops.received) == 1, message="endpoint.disabled delivered")
    event = json.loads(ops.received[0].body)
    assert event["type"] == "endpoint.disabled"
    assert event["data"]["endpoint_id"] == str(gone_id)
    assert event["data"]["reason"] == "gone"


def test_two_batches_answered_410_at_once_record_every_attempt(
    platform: Any, receiver: Any, wait_for: Any
) -> None:
    # Two batches of one endpoint get their 410 at the same moment and record together:
    # each disables the endpoint (locking it, then its deliveries) while recording its own
    # deliveries.  Neither may lose its attempt rows to a deadlock between the two.
    both_in = threading.Barrier(2)

    def gone_together(_got: Any, _n: int) -> dict[str, Any]:
        with contextlib.suppress(threading.BrokenBarrierError):
            both_in.wait(timeout=0.7)
        return {"status": 410}

    gone = receiver(gone_together)
    endpoint_id, _ = platform.endpoint(gone.url, max_in_flight=2)
    with transaction(platform.sessions) as session:  # due in the same claim cycle
        for n in range(4):
            envelope = Envelope(type="person.created", data={"n": n})
            accept_message(session, envelope, source="http", application_id=platform.app_id)

    wait_for(
        lambda: all(d.state == "cancelled" for d in platform.deliveries(endpoint_id)),
        message="every delivery cancelled",
    )
    assert not platform.endpoint_row(endpoint_id).enabled
    time.sleep(0.5)  # a run that failed to record would be retried by now
    with platform.sessions() as session:
        recorded = session.scalars(select(Attempt).where(Attempt.endpoint_id == endpoint_id))
        outcomes = [(a.status_code, a.outcome) for a in recorded]
        disabled = session.scalars(
            select(Message).where(Message.event_type == "endpoint.disabled")
        ).all()
    # Both batches' requests are normally in flight together (the barrier); should one come
    # so late that the other had already disabled the endpoint, it is never sent.
    assert len(gone.received) >= 1
    assert outcomes == [(410, "http_4xx")] * len(gone.received)
    assert [m.payload["endpoint_id"] for m in disabled].count(str(endpoint_id)) == 1


def test_exhausted_retries_dead_letter_then_redrive_delivers(
    platform: Any, receiver: Any, wait_for: Any, engine_settings: DeliverySettings
) -> None:
    from registration.services import replays

    healthy = threading.Event()
    server = receiver(lambda _got, _n: {} if healthy.is_set() else {"status": 503})
    endpoint_id, _ = platform.endpoint(server.url, retry_schedule=[0, 0])
    platform.publish()

    dead = wait_for(lambda: in_state(platform, "dead"))
    assert dead.attempt_count == 2
    with platform.sessions() as session:
        (letter,) = session.scalars(select(DeadLetter))
    assert letter.delivery_id == dead.id
    assert letter.redriven_at is None
    assert "503" in letter.reason

    with Connection(engine_settings.broker_url) as conn:
        queue = DEAD_LETTER_QUEUE(conn.default_channel)
        published = wait_for(lambda: queue.get(no_ack=True), message="dead letter published")
    assert published.payload["delivery_id"] == dead.id
    assert published.payload["endpoint_id"] == str(endpoint_id)
    assert published.properties["delivery_mode"] == 2

    healthy.set()
    result = replays.redrive_dead_letters(
        platform.sessions, application_id=platform.application(), requested_by="test"
    )
    assert result.deliveries_requeued == 1
    wait_for(lambda: only_delivery(platform).state == "delivered", message="redriven")
    assert len(server.received) == 3
    assert attempts_of(platform, dead.id)[-1].trigger == "replay"
    with platform.sessions() as session:
        assert session.scalar(select(DeadLetter.redriven_at)) is not None


def test_breaker_opens_then_a_probe_closes_it(
    platform: Any, receiver: Any, wait_for: Any, clock: Any
) -> None:
    healthy = threading.Event()
    server = receiver(lambda _got, _n: {} if healthy.is_set() else {"status": 500})
    endpoint_id, _ = platform.endpoint(server.url, retry_schedule=[0, 1, 1, 1, 1])
    for n in range(8):
        platform.publish({"n": n})

    opened = wait_for(
        lambda: platform.endpoint_row(endpoint_id).circuit_open_until, message="breaker open"
    )
    assert opened > utcnow() + timedelta(seconds=20)
    # Threshold 3, at most 2 batches in flight: the breaker stops each batch at 3 failures
    # (a batch that started before the breaker opened finishes its own count).
    wait_for(
        lambda: all(d.state != "sending" for d in platform.deliveries(endpoint_id)),
        message="batches in flight finished",
    )
    assert 3 <= len(server.received) <= 6
    seen = len(server.received)
    time.sleep(1.5)  # retries are due after 1 s: the open breaker must hold them back
    assert len(server.received) == seen
    assert platform.endpoint_row(endpoint_id).consecutive_failures >= 3

    healthy.set()
    clock.advance(31)
    wait_for(
        lambda: all(d.state == "delivered" for d in platform.deliveries(endpoint_id)),
        message="all delivered after the probe",
    )
    endpoint = platform.endpoint_row(endpoint_id)
    assert endpoint.circuit_open_until is None
    assert endpoint.consecutive_failures == 0
    assert endpoint.failing_since is None


def test_failing_past_the_window_auto_disables(platform: Any, receiver: Any, wait_for: Any) -> None:
    server = receiver(lambda _got, _n: {"status": 500})
    endpoint_id, _ = platform.endpoint(server.url)
    with transaction(platform.sessions) as session:
        session.execute(
            update(Endpoint)
            .where(Endpoint.id == endpoint_id)
            .values(failing_since=utcnow() - timedelta(hours=2), consecutive_failures=1)
        )
    platform.publish()

    wait_for(lambda: not platform.endpoint_row(endpoint_id).enabled, message="auto-disabled")
    assert only_delivery(platform, endpoint_id).state == "cancelled"
    with platform.sessions() as session:
        message = session.scalar(select(Message).where(Message.event_type == "endpoint.disabled"))
    assert message is not None
    assert message.payload["reason"] == "failing"
    assert message.application_id == platform.application()


def test_worker_killed_mid_attempt_still_delivers(
    platform: Any, receiver: Any, wait_for: Any, clock: Any, processes: Any
) -> None:
    def respond(_got: Any, n: int) -> dict[str, Any]:
        if n == 1:
            return {"handler": lambda _h: server.release.wait(10)}
        return {}

    server = receiver(respond)
    platform.endpoint(server.url)
    event_id = platform.publish()

    wait_for(lambda: len(server.received) == 1, message="first request in flight")
    processes.kill_worker()
    # RabbitMQ hands the unacknowledged task to the next worker; PostgreSQL dropped the dead
    # worker's batch lock with its connection, so the new worker sends the batch again.
    processes.start_worker()
    wait_for(lambda: only_delivery(platform).state == "delivered", timeout=20, message="redone")
    assert {got.headers["webhook-id"] for got in server.received} == {event_id}
    assert len(server.received) == 2


def test_dead_pooled_connection_is_replaced_before_sending(
    platform: Any, receiver: Any, wait_for: Any, processes: Any
) -> None:
    # The worker's pool has no pre-ping: after a database restart its first take finds the
    # connection dead, and the batch runs again at once on a fresh one (not after its lease).
    server = receiver()
    platform.endpoint(server.url)
    platform.publish()
    wait_for(lambda: only_delivery(platform).state == "delivered", message="first delivered")
    with platform.sessions() as session:
        killed = session.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend' AND state = 'idle'"
            )
        ).scalar()
    assert killed
    log = processes.logs / "worker.log"
    logged_before = log.read_text().count("database connection was dead")

    event_id = platform.publish({"after": "restart"})
    wait_for(
        lambda: all(d.state == "delivered" for d in platform.deliveries()),
        message="delivered after the connections died",
    )
    assert [got.headers["webhook-id"] for got in server.received][1:] == [event_id]
    assert log.read_text().count("database connection was dead") == logged_before + 1


def test_lost_task_comes_back_when_its_lease_expires(
    platform: Any, receiver: Any, wait_for: Any, clock: Any, engine_settings: DeliverySettings
) -> None:
    from delivery.scheduling import claim_due

    server = receiver()
    platform.endpoint(server.url)
    app_id = platform.application()
    with transaction(platform.sessions) as session:
        # A scheduler that leased a batch and died before publishing it: no task exists.
        # (Accepted and claimed in one transaction, so the running scheduler never sees it due.)
        envelope = Envelope(type="person.created", data={"lost": True})
        accept_message(session, envelope, source="http", application_id=app_id)
        session.flush()
        claims = claim_due(session, engine_settings, clock.now() + timedelta(seconds=1))
    assert len(claims) == 1
    assert only_delivery(platform).state == "sending"
    clock.advance(engine_settings.lease_seconds + 1)
    wait_for(lambda: only_delivery(platform).state == "delivered", message="lease expired")
    assert len(server.received) == 1


def test_slow_endpoint_does_not_delay_a_fast_one(
    platform: Any, receiver: Any, wait_for: Any
) -> None:
    lock = threading.Lock()
    concurrency = {"now": 0, "max": 0}

    def slow_handler(handler: Any) -> None:
        with lock:
            concurrency["now"] += 1
            concurrency["max"] = max(concurrency["max"], concurrency["now"])
        time.sleep(0.5)
        with lock:
            concurrency["now"] -= 1
        handler.send_response(200)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    slow = receiver(lambda _got, _n: {"handler": slow_handler})
    fast = receiver()
    slow_id, _ = platform.endpoint(slow.url, event_types=["slow.thing"])
    fast_id, _ = platform.endpoint(fast.url, event_types=["fast.thing"])
    for n in range(12):
        platform.publish({"n": n}, event_type="slow.thing")
    for n in range(12):
        platform.publish({"n": n}, event_type="fast.thing")

    wait_for(
        lambda: all(d.state == "delivered" for d in platform.deliveries(fast_id)),
        message="fast endpoint drained",
    )
    slow_delivered = sum(d.state == "delivered" for d in platform.deliveries(slow_id))
    assert slow_delivered < 12  # the fast one finished while the slow one was still going
    wait_for(
        lambda: all(d.state == "delivered" for d in platform.deliveries(slow_id)),
        timeout=20,
        message="slow endpoint drained",
    )
    assert concurrency["max"] <= 2  # WEBHOOKS_ENDPOINT_MAX_IN_FLIGHT
    assert len(fast.received) == 12


def test_many_messages_are_batched_and_each_delivered_once(
    platform: Any, receiver: Any, wait_for: Any
) -> None:
    server = receiver()
    endpoint_id, _ = platform.endpoint(server.url)
    with transaction(platform.sessions) as session:
        ids = [
            accept_message(
                session,
                Envelope(type="person.created", data={"n": n}),
                source="http",
                application_id=platform.application(),
            ).event_id
            for n in range(60)
        ]
    wait_for(
        lambda: all(d.state == "delivered" for d in platform.deliveries(endpoint_id)),
        message="all delivered",
    )
    received = Counter(got.headers["webhook-id"] for got in server.received)
    assert sorted(received) == sorted(ids)
    # One request per attempt: a message is sent again only after an attempt that failed
    # (on a stalled machine the tests' 1 s read timeout can expire on an answered request).
    with platform.sessions() as session:
        attempts = Counter(
            session.scalars(
                select(Message.event_id)
                .join(Delivery, Delivery.message_id == Message.id)
                .join(Attempt, Attempt.delivery_id == Delivery.id)
                .where(Delivery.endpoint_id == endpoint_id)
            )
        )
        failed = session.scalar(
            select(func.count())
            .select_from(Attempt)
            .where(Attempt.endpoint_id == endpoint_id, Attempt.outcome != "success")
        )
    assert received == attempts
    assert sum(received.values()) == len(ids) + failed
    assert len({got.client_port for got in server.received}) <= 4 + failed  # keep-alive


def test_rotation_signs_with_current_and_unexpired_old_secrets(
    platform: Any, receiver: Any, wait_for: Any
) -> None:
    server = receiver()
    old, expired = new_secret(), new_secret()
    endpoint_id, current = platform.endpoint(server.url)
    with transaction(platform.sessions) as session:
        session.add(
            EndpointSecret(
                endpoint_id=endpoint_id,
                secret=seal(old),
                expires_at=utcnow() + timedelta(hours=1),
            )
        )
        session.add(
            EndpointSecret(
                endpoint_id=endpoint_id,
                secret=seal(expired),
                expires_at=utcnow() - timedelta(hours=1),
            )
        )
    platform.publish()

    wait_for(lambda: len(server.received) == 1)
    got = server.received[0]
    assert len(got.headers["webhook-signature"].split()) == 2
    Webhook(current).verify(got.body, got.headers)
    Webhook(old).verify(got.body, got.headers)


def test_blocked_target_is_recorded_and_never_contacted(
    platform: Any, receiver: Any, wait_for: Any
) -> None:
    hidden = receiver(host="127.0.0.2")
    endpoint_id, _ = platform.endpoint(hidden.url)
    platform.publish()

    delivery = wait_for(
        lambda: only_delivery(platform).attempt_count >= 1 and only_delivery(platform)
    )
    (attempt, *_) = attempts_of(platform, delivery.id)
    assert attempt.outcome == "blocked"
    assert "loopback" in (attempt.error or "")
    assert hidden.received == []
    assert platform.endpoint_row(endpoint_id).consecutive_failures >= 1


def test_rate_limit_spreads_deliveries_over_time(
    platform: Any, receiver: Any, wait_for: Any
) -> None:
    server = receiver()
    endpoint_id, _ = platform.endpoint(server.url, rate_limit=2)
    for n in range(7):
        platform.publish({"n": n})

    wait_for(
        lambda: all(d.state == "delivered" for d in platform.deliveries(endpoint_id)),
        timeout=20,
        message="all delivered",
    )
    times = sorted(got.at for got in server.received)
    assert len(times) == 7
    # A bucket of 2 per second (burst 2): no one-second window holds more than 2 + 2.
    for start in times:
        assert sum(start <= t < start + 1.0 for t in times) <= 4
