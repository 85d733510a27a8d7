"""Delivering one leased batch: take the lease, send, record everything in one transaction.

:func:`deliver_batch` is what the ``delivery.deliver`` task calls.  Round trips per batch, not
per delivery.  A session-level advisory lock on the lease token, held for the whole batch on
one database connection, makes a second run of the same task (a redelivery while the first
still runs) find the batch busy and do nothing; if the worker dies, PostgreSQL drops the lock
with its connection and RabbitMQ's redelivery of the task sends the batch at once.  One query
tries that lock and takes the batch (re-checking state and lease token; no row is written)
with its endpoints and their secrets, then the requests go out one after another on a pooled
keep-alive connection, and one transaction records the endpoint's health (first: endpoint rows are
locked before delivery rows everywhere) and, when the endpoint must be disabled, the
cancellation of its open deliveries and the ``endpoint.disabled`` event, then the attempts (one
multi-row INSERT), the deliveries' new states (one UPDATE ... FROM unnest) and dead letters.
Dead letters are published to RabbitMQ only after that commit.

Within a batch, sending stops early (the rest is released, due at once, not counted as an
attempt) when a request timed out, when the endpoint answered 410, when the breaker's
threshold is reached, or when the lease would run out before another request could finish.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from delivery.clock import Clock
from delivery.policy import Verdict, judge, next_delay, parse_retry_after
from delivery.sender import USER_AGENT, OutboundRequest, Sender, SendResult
from webhooks_core.db import transaction
from webhooks_core.envelope import Envelope, utcnow, webhook_body
from webhooks_core.models import DeliveryState, cancel_open_deliveries
from webhooks_core.observability import (
    ATTEMPT_DURATION,
    ATTEMPTS,
    DEAD_LETTERED,
    DELIVERY_LAG,
    ENDPOINTS_DISABLED,
    RETRIES_SCHEDULED,
)
from webhooks_core.settings import Settings
from webhooks_core.signing import secret_key, signature_header

logger = logging.getLogger("delivery.attempt")

# Stop starting requests this long before the lease ends, on top of one request's deadline.
_LEASE_MARGIN_SECONDS = 1.0
# A healthy endpoint's row is rewritten at most this often (last_success_at), not per batch.
_HEALTHY_TOUCH_SECONDS = 5.0


class DeadLetterPublisher(Protocol):
    """Publishes dead-lettered deliveries for operators (the ``webhooks.dead-letters`` queue)."""

    def publish(self, records: list[dict[str, Any]]) -> None:
        """Publish each record persistently; raise if the broker did not take one."""
        ...


@dataclass(frozen=True)
class DeliveryRuntime:
    """What delivering needs, built once per worker process."""

    settings: Settings
    engine: Engine
    sender: Sender
    clock: Clock
    dead_letters: DeadLetterPublisher


@dataclass
class BatchReport:
    """What one batch did, for the task's log line and for tests."""

    taken: int = 0
    delivered: int = 0
    retrying: int = 0
    dead: int = 0
    cancelled: int = 0
    released: int = 0
    outcomes: list[str] = field(default_factory=list)


@dataclass
class _Leased:
    id: int
    endpoint_id: uuid.UUID
    attempt_count: int
    next_trigger: str | None
    lease_expires_at: datetime
    event_id: str
    event_type: str
    occurred_at: datetime
    payload: dict[str, Any]
    accepted_at: datetime


@dataclass
class _Endpoint:
    id: uuid.UUID
    application_id: uuid.UUID
    url: str
    headers: dict[str, str]
    active: bool
    retry_schedule: list[int] | None
    consecutive_failures: int
    failing_since: datetime | None
    circuit_open_until: datetime | None
    last_success_at: datetime | None
    keys: list[bytes]


@dataclass
class _Change:
    """The new state of one delivery; ``attempted_at`` is None when no request was sent."""

    id: int
    state: str
    attempt_count: int
    next_attempt_at: datetime | None = None
    attempted_at: datetime | None = None
    status_code: int | None = None
    error: str | None = None


_UNLOCK = text("SELECT pg_advisory_unlock(:key)")
# One round trip: try the batch's lock (the CTE runs first and once); when it is held, the
# deliveries still leased under the token, each with its message, and on each endpoint's
# first row that endpoint with its current secrets (not repeated: fewer values to decode).
# One row with ``held`` and NULLs when nothing is left or the lock is taken.
_TAKE = text(
    """
    WITH batch_lock AS MATERIALIZED (SELECT pg_try_advisory_lock(:key) AS held),
    leased AS (
        SELECT d.id, d.endpoint_id, d.attempt_count, d.next_trigger, d.lease_expires_at,
               m.event_id, m.event_type, m.occurred_at, m.payload, m.created_at
        FROM batch_lock, deliveries AS d JOIN messages AS m ON m.id = d.message_id
        WHERE batch_lock.held AND d.id = ANY(CAST(:ids AS bigint[]))
          AND d.lease_token = :token AND d.state = 'sending'
    ),
    batch_endpoints AS (
        SELECT e.id, e.application_id, e.url, e.headers,
               e.enabled AND e.deleted_at IS NULL AS active, e.retry_schedule,
               e.consecutive_failures, e.failing_since, e.circuit_open_until,
               e.last_success_at,
               coalesce(array_agg(s.secret ORDER BY s.created_at DESC)
                        FILTER (WHERE s.id IS NOT NULL), '{}') AS secrets
        FROM endpoints e
        LEFT JOIN endpoint_secrets s ON s.endpoint_id = e.id
             AND (s.expires_at IS NULL OR s.expires_at > now())
        WHERE e.id IN (SELECT endpoint_id FROM leased)
        GROUP BY e.id
    )
    SELECT b.held, l.id, l.endpoint_id, l.attempt_count, l.next_trigger, l.lease_expires_at,
           l.event_id, l.event_type, l.occurred_at, l.payload, l.created_at,
           e.id AS e_id, e.application_id AS e_application_id, e.url AS e_url,
           e.headers AS e_headers, e.active AS e_active, e.retry_schedule AS e_retry_schedule,
           e.consecutive_failures AS e_consecutive_failures,
           e.failing_since AS e_failing_since, e.circuit_open_until AS e_circuit_open_until,
           e.last_success_at AS e_last_success_at, e.secrets AS e_secrets
    FROM batch_lock b
         LEFT JOIN (SELECT leased.*, row_number() OVER (PARTITION BY endpoint_id ORDER BY id)
                    AS nth FROM leased) l ON true
         LEFT JOIN batch_endpoints e ON e.id = l.endpoint_id AND l.nth = 1
    ORDER BY l.id
    """
).bindparams(bindparam("token", type_=UUID(as_uuid=True)))
# A delivery cancelled while this run sent it (its endpoint was disabled meanwhile) keeps
# this run's token: its attempt is still recorded, and it stays cancelled unless it was in
# fact delivered.  A delivery re-leased to another run (this run outlived its lease) has
# another token and is not this run's to record.
_RECORD = text(
    """
    UPDATE deliveries AS d SET
        state = CASE WHEN d.state = 'cancelled' AND v.state <> 'delivered' THEN d.state
                     ELSE v.state END,
        attempt_count = v.attempt_count,
        next_attempt_at = CASE WHEN d.state = 'cancelled' THEN NULL
                               ELSE v.next_attempt_at END,
        last_attempt_at = coalesce(v.attempted_at, d.last_attempt_at),
        last_status_code = CASE WHEN v.attempted_at IS NULL THEN d.last_status_code
                                ELSE v.status_code END,
        last_error = CASE WHEN v.attempted_at IS NULL THEN coalesce(v.error, d.last_error)
                          ELSE v.error END,
        delivered_at = CASE WHEN v.state = 'delivered' THEN v.attempted_at
                            ELSE d.delivered_at END,
        next_trigger = CASE WHEN v.attempted_at IS NULL THEN d.next_trigger END,
        lease_token = NULL, lease_expires_at = NULL, updated_at = now()
    FROM unnest(CAST(:ids AS bigint[]), CAST(:states AS text[]), CAST(:counts AS int[]),
                CAST(:next AS timestamptz[]), CAST(:attempted AS timestamptz[]),
                CAST(:codes AS int[]), CAST(:errors AS text[]))
         AS v(id, state, attempt_count, next_attempt_at, attempted_at, status_code, error)
    WHERE d.id = v.id AND d.lease_token = :token AND d.state IN ('sending', 'cancelled')
    RETURNING d.id, d.state
    """
).bindparams(bindparam("token", type_=UUID(as_uuid=True)))
_INSERT_ATTEMPTS = text(
    """
    INSERT INTO attempts (delivery_id, endpoint_id, started_at, latency_ms, status_code,
                          outcome, error, response_body, trigger)
    SELECT * FROM unnest(CAST(:delivery_ids AS bigint[]), CAST(:endpoint_ids AS uuid[]),
                         CAST(:started AS timestamptz[]), CAST(:latencies AS float8[]),
                         CAST(:codes AS smallint[]), CAST(:outcomes AS text[]),
                         CAST(:errors AS text[]), CAST(:bodies AS text[]),
                         CAST(:triggers AS text[]))
    """
)
_END_LEASE = text("DELETE FROM delivery_leases WHERE token = :token").bindparams(
    bindparam("token", type_=UUID(as_uuid=True))
)
_DEAD_LETTER = text(
    """
    INSERT INTO dead_letters (delivery_id, endpoint_id, application_id, reason)
    SELECT d.id, d.endpoint_id, d.application_id, coalesce(d.last_error, 'retries exhausted')
    FROM deliveries d WHERE d.id = ANY(CAST(:ids AS bigint[]))
    ON CONFLICT (delivery_id) WHERE redriven_at IS NULL DO NOTHING
    RETURNING id, delivery_id, endpoint_id, application_id, reason, created_at
    """
)
_HEALTH = text(
    """
    UPDATE endpoints SET
        last_attempt_at = :last_attempt_at,
        last_success_at = coalesce(CAST(:last_success_at AS timestamptz), last_success_at),
        consecutive_failures = CASE WHEN :had_success THEN :trailing
                                    ELSE consecutive_failures + :trailing END,
        failing_since = CASE WHEN :trailing = 0 THEN NULL
                             WHEN :had_success THEN CAST(:first_failure_at AS timestamptz)
                             ELSE coalesce(failing_since, CAST(:first_failure_at AS timestamptz))
                        END,
        circuit_open_until = CASE
            WHEN :trailing = 0 THEN NULL
            WHEN (CASE WHEN :had_success THEN :trailing
                       ELSE consecutive_failures + :trailing END) >= :threshold
                THEN CAST(:reopen_at AS timestamptz)
            ELSE circuit_open_until END
    WHERE id = :id
    RETURNING enabled, failing_since
    """
)
_DISABLE = text(
    """
    UPDATE endpoints SET enabled = false, disabled_reason = :reason, disabled_at = :now,
                         circuit_open_until = NULL, updated_at = now()
    WHERE id = :id AND enabled
    RETURNING id
    """
)


@dataclass
class _BatchLock:
    """The session-level advisory lock on a lease token (it outlives transactions).

    Tried by the batch's first statement (``_TAKE``, no round trip of its own); released
    after the last transaction commits.
    """

    key: int
    held: bool = False

    def release(self, session: Session) -> None:
        if self.held:
            session.execute(_UNLOCK, {"key": self.key})
            self.held = False


@contextmanager
def _batch_connection(
    rt: DeliveryRuntime, token: uuid.UUID
) -> Iterator[tuple[sessionmaker[Session], _BatchLock]]:
    """Sessions on one connection for the whole batch, and the batch's lock on it."""
    lock = _BatchLock(int.from_bytes(token.bytes[:8], "big", signed=True))
    with rt.engine.connect() as conn:
        try:
            yield sessionmaker(bind=conn, expire_on_commit=False), lock
        finally:
            if lock.held:  # unlock before the pool gets the connection back
                try:
                    conn.rollback()
                    _unlock(conn, lock.key)
                except Exception:
                    # A connection that cannot unlock must not go back to the pool holding it.
                    conn.invalidate()
                    raise


def _unlock(conn: Connection, key: int) -> None:
    """Release the batch's lock in one round trip (autocommit: no BEGIN, no COMMIT)."""
    driver = conn.connection.dbapi_connection
    assert driver is not None
    driver.autocommit = True
    try:
        cursor = driver.cursor()
        try:
            cursor.execute("SELECT pg_advisory_unlock(%s)", (key,))
        finally:
            cursor.close()
    finally:
        driver.autocommit = False


def _take(
    session: Session, lock: _BatchLock, token: uuid.UUID, ids: list[int]
) -> tuple[list[_Leased], dict[uuid.UUID, _Endpoint]]:
    """Try the batch's lock; when held, its leased deliveries and their endpoints."""
    rows = session.execute(_TAKE, {"key": lock.key, "ids": ids, "token": token}).all()
    lock.held = bool(rows[0].held)
    leased: list[_Leased] = []
    endpoints: dict[uuid.UUID, _Endpoint] = {}
    for row in rows:
        if row.id is None:
            continue
        leased.append(
            _Leased(
                row.id,
                row.endpoint_id,
                row.attempt_count,
                row.next_trigger,
                row.lease_expires_at,
                row.event_id,
                row.event_type,
                row.occurred_at,
                row.payload,
                row.created_at,
            )
        )
        if row.e_id is not None and row.e_id not in endpoints:
            endpoints[row.e_id] = _Endpoint(
                id=row.e_id,
                application_id=row.e_application_id,
                url=row.e_url,
                headers=row.e_headers,
                active=row.e_active,
                retry_schedule=row.e_retry_schedule,
                consecutive_failures=row.e_consecutive_failures,
                failing_since=row.e_failing_since,
                circuit_open_until=row.e_circuit_open_until,
                last_success_at=row.e_last_success_at,
                keys=[secret_key(secret) for secret in row.e_secrets],
            )
    return leased, endpoints


def _request(endpoint: _Endpoint, item: _Leased) -> OutboundRequest:
    body = webhook_body(item.event_type, item.occurred_at, item.payload)
    # The real time, not the scheduling clock: receivers check it against their own.
    timestamp = int(time.time())
    headers = dict(endpoint.headers)
    headers.update(
        {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": item.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(endpoint.keys, item.event_id, timestamp, body),
        }
    )
    return OutboundRequest(endpoint.url, headers, body)


@dataclass
class _EndpointRun:
    """The attempts of one endpoint's deliveries within a batch, in order."""

    endpoint: _Endpoint
    results: list[tuple[datetime, SendResult]] = field(default_factory=list)
    gone: bool = False


@dataclass
class _RunOutput:
    """What sending one endpoint's part of a batch produced."""

    run: _EndpointRun
    changes: list[_Change] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    released: int = 0


_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _sender_pool() -> ThreadPoolExecutor:
    """Threads that send the endpoints of a multi-endpoint batch side by side."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="webhook-send")
        return _pool


def _send_run(
    rt: DeliveryRuntime, endpoint: _Endpoint, items: list[_Leased], send_until: float
) -> _RunOutput:
    """Send one endpoint's deliveries in order; stop early as the module doc says."""
    settings, clock = rt.settings, rt.clock
    output = _RunOutput(_EndpointRun(endpoint))
    run = output.run
    stopped = False
    for item in items:
        if stopped or time.monotonic() > send_until:
            retry_state = (
                DeliveryState.PENDING if item.attempt_count == 0 else DeliveryState.RETRYING
            )
            output.changes.append(_Change(item.id, retry_state, item.attempt_count, clock.now()))
            output.released += 1
            continue

        attempted_at = clock.now()
        result = rt.sender.send(_request(endpoint, item))
        verdict = judge(result, settings)
        count = item.attempt_count + 1
        run.results.append((attempted_at, result))
        output.attempts.append(
            {
                "delivery_id": item.id,
                "endpoint_id": endpoint.id,
                "started_at": attempted_at,
                "latency_ms": result.latency_ms,
                "status_code": result.status_code,
                "outcome": result.outcome,
                "error": result.error,
                "response_body": result.body_excerpt,
                "trigger": item.next_trigger or "scheduled",
            }
        )
        change = _Change(
            item.id,
            DeliveryState.DELIVERED,
            count,
            attempted_at=attempted_at,
            status_code=result.status_code,
            error=result.error or _status_error(result),
        )
        if verdict is Verdict.DELIVERED:
            output.lags.append((attempted_at - item.accepted_at).total_seconds())
        elif verdict is Verdict.GONE:
            change.state = DeliveryState.CANCELLED
            change.error = "endpoint answered 410 Gone"
            run.gone = True
            stopped = True
        else:
            delay = None
            if verdict is Verdict.RETRY:
                delay = next_delay(
                    count,
                    endpoint.retry_schedule or settings.retry_schedule,
                    jitter=settings.retry_jitter,
                    # An HTTP date in Retry-After is the receiver's real time, not ours.
                    retry_after=parse_retry_after(result.retry_after, utcnow()),
                    retry_after_max=settings.retry_after_max_seconds,
                )
            if delay is None:
                change.state = DeliveryState.DEAD
            else:
                change.state = DeliveryState.RETRYING
                change.next_attempt_at = clock.now() + timedelta(seconds=delay)
        output.changes.append(change)
        _log_attempt(item, endpoint, result, change)
        if result.outcome == "timeout" or _breaker_tripped(run, settings):
            stopped = True
    return output


class _StaleConnection(Exception):
    """The batch's connection was dead before anything was sent (the pool has no pre-ping)."""

    def __init__(self, error: DBAPIError) -> None:
        super().__init__(str(error))
        self.error = error


def deliver_batch(rt: DeliveryRuntime, lease_token: uuid.UUID, ids: list[int]) -> BatchReport:
    """Send the deliveries still leased under ``lease_token``; safe to call twice.

    A pooled connection found dead by the take (the database restarted) is replaced once:
    nothing was sent yet, and SQLAlchemy has then dropped every connection of that age.
    """
    for attempt in (1, 2):
        try:
            with _batch_connection(rt, lease_token) as (sessions, lock):
                return _deliver_locked(rt, sessions, lock, lease_token, ids)
        except _StaleConnection as stale:
            if attempt == 2:
                raise stale.error from None
            logger.warning("batch %s: its database connection was dead; once more", lease_token)
    raise AssertionError("unreachable")  # pragma: no cover


def _deliver_locked(
    rt: DeliveryRuntime,
    sessions: sessionmaker[Session],
    lock: _BatchLock,
    token: uuid.UUID,
    ids: list[int],
) -> BatchReport:
    settings, clock = rt.settings, rt.clock
    report = BatchReport()
    try:
        with transaction(sessions) as session:
            leased, endpoints = _take(session, lock, token, ids)
            acquired = lock.held
            if acquired and not leased:
                session.execute(_END_LEASE, {"token": token})  # nothing left: free the slot
                lock.release(session)
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise _StaleConnection(exc) from exc
        raise
    if not acquired:
        logger.info("batch %s is being sent by another run of its task", token)
        return report
    report.taken = len(leased)
    if not leased:
        return report
    # Start no request that could still run when the lease ends (the scheduler would give
    # the batch to another worker: a duplicate, harmless but wasteful).
    lease_left = min(item.lease_expires_at for item in leased) - clock.now()
    margin = settings.total_timeout_seconds + _LEASE_MARGIN_SECONDS
    send_until = time.monotonic() + lease_left.total_seconds() - margin

    changes: list[_Change] = []
    groups: dict[uuid.UUID, list[_Leased]] = {}
    for item in leased:
        endpoint = endpoints.get(item.endpoint_id)
        if endpoint is None or not endpoint.active:
            cancelled = _Change(item.id, DeliveryState.CANCELLED, item.attempt_count)
            cancelled.error = "endpoint disabled"
            changes.append(cancelled)
        else:
            groups.setdefault(endpoint.id, []).append(item)
    if len(groups) <= 1:
        outputs = [
            _send_run(rt, endpoints[eid], items, send_until) for eid, items in groups.items()
        ]
    else:
        # A batch of several endpoints (a fan-out): each endpoint's deliveries go out one
        # after another, the endpoints side by side, so a slow one delays only its own.
        futures = [
            _sender_pool().submit(_send_run, rt, endpoints[eid], items, send_until)
            for eid, items in groups.items()
        ]
        outputs = [future.result() for future in futures]
    attempts: list[dict[str, Any]] = []
    runs: dict[uuid.UUID, _EndpointRun] = {}
    lags: list[float] = []
    for output in outputs:
        changes += output.changes
        attempts += output.attempts
        lags += output.lags
        runs[output.run.endpoint.id] = output.run
        report.released += output.released
        report.outcomes += [result.outcome for _, result in output.run.results]

    dead_records = _record(rt, sessions, token, changes, attempts, runs, report)
    for run in runs.values():
        for _, result in run.results:
            ATTEMPTS.labels(result.outcome).inc()
            ATTEMPT_DURATION.observe(result.latency_ms / 1000)
    for lag in lags:
        DELIVERY_LAG.observe(max(lag, 0.0))
    if report.retrying:
        RETRIES_SCHEDULED.inc(report.retrying)
    if dead_records:
        DEAD_LETTERED.inc(len(dead_records))
        try:
            rt.dead_letters.publish(dead_records)
        except Exception:
            # The dead letter is stored and listed by the API; only the queue copy is missing.
            logger.exception("publishing %d dead letters failed", len(dead_records))
    return report


def _status_error(result: SendResult) -> str | None:
    if result.succeeded or result.status_code is None:
        return None
    return f"HTTP {result.status_code}"


def _breaker_tripped(run: _EndpointRun, settings: Settings) -> bool:
    """True when this batch's trailing failures reach the breaker threshold."""
    trailing = 0
    for _, result in reversed(run.results):
        if result.succeeded:
            return False
        trailing += 1
    base = run.endpoint.consecutive_failures if len(run.results) == trailing else 0
    return base + trailing >= settings.circuit_breaker_threshold


def _log_attempt(item: _Leased, endpoint: _Endpoint, result: SendResult, change: _Change) -> None:
    # One structured line per attempt: JSON fields in containers, key=value on a terminal.
    logger.info(
        "delivery attempt %s",
        result.outcome,
        extra={
            "delivery_id": item.id,
            "endpoint_id": str(endpoint.id),
            "event_id": item.event_id,
            "attempt": change.attempt_count,
            "outcome": result.outcome,
            "status_code": result.status_code,
            "latency_ms": round(result.latency_ms, 1),
            "state": change.state,
            "next_attempt_at": (
                change.next_attempt_at.isoformat() if change.next_attempt_at else None
            ),
            "error": result.error,
        },
    )


def _record(
    rt: DeliveryRuntime,
    sessions: sessionmaker[Session],
    token: uuid.UUID,
    changes: list[_Change],
    attempts: list[dict[str, Any]],
    runs: dict[uuid.UUID, _EndpointRun],
    report: BatchReport,
) -> list[dict[str, Any]]:
    """Write the batch's outcome in one transaction; return the dead letters to publish."""
    settings, now = rt.settings, rt.clock.now()
    dead_records: list[dict[str, Any]] = []
    with transaction(sessions) as session:
        # Endpoint rows before delivery rows, endpoints in id order: disabling an endpoint
        # (here or in the API) locks it and then cancels its deliveries, so taking locks in
        # the other order could deadlock with a batch of the same endpoint recording at once.
        for endpoint_id in sorted(runs):
            _update_health(session, settings, runs[endpoint_id], now)
        updated: dict[int, str] = dict(
            session.execute(
                _RECORD,
                {
                    "token": token,
                    "ids": [c.id for c in changes],
                    "states": [str(c.state) for c in changes],
                    "counts": [c.attempt_count for c in changes],
                    "next": [c.next_attempt_at for c in changes],
                    "attempted": [c.attempted_at for c in changes],
                    "codes": [c.status_code for c in changes],
                    "errors": [c.error for c in changes],
                },
            ).all()
        )
        session.execute(_END_LEASE, {"token": token})
        attempts = [a for a in attempts if a["delivery_id"] in updated]
        if attempts:
            session.execute(
                _INSERT_ATTEMPTS,
                {
                    "delivery_ids": [a["delivery_id"] for a in attempts],
                    "endpoint_ids": [str(a["endpoint_id"]) for a in attempts],
                    "started": [a["started_at"] for a in attempts],
                    "latencies": [a["latency_ms"] for a in attempts],
                    "codes": [a["status_code"] for a in attempts],
                    "outcomes": [a["outcome"] for a in attempts],
                    "errors": [a["error"] for a in attempts],
                    "bodies": [a["response_body"] for a in attempts],
                    "triggers": [a["trigger"] for a in attempts],
                },
            )
        released = {c.id for c in changes if c.attempted_at is None}
        for delivery_id, state in updated.items():
            if delivery_id in released and state != DeliveryState.CANCELLED:
                continue
            if state == DeliveryState.DELIVERED:
                report.delivered += 1
            elif state == DeliveryState.RETRYING:
                report.retrying += 1
            elif state == DeliveryState.DEAD:
                report.dead += 1
            elif state == DeliveryState.CANCELLED:
                report.cancelled += 1
        dead_ids = [i for i, state in updated.items() if state == DeliveryState.DEAD]
        if dead_ids:
            dead_records = [
                dict(row) for row in session.execute(_DEAD_LETTER, {"ids": dead_ids}).mappings()
            ]
    # The lock goes after the commit (in _batch_connection): released before it, a second
    # run of the task could still see the rows leased and send them again.
    return [_dead_letter_body(record) for record in dead_records]


def _dead_letter_body(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "dead_letter_id": record["id"],
        "delivery_id": record["delivery_id"],
        "endpoint_id": str(record["endpoint_id"]),
        "application_id": str(record["application_id"]),
        "reason": record["reason"],
        "dead_at": record["created_at"].isoformat(),
    }


def _update_health(session: Session, settings: Settings, run: _EndpointRun, now: datetime) -> None:
    """Consecutive failures, failing-since, breaker; disable on 410 or long failure."""
    endpoint = run.endpoint
    if not run.results:
        return
    successes = [at for at, result in run.results if result.succeeded]
    trailing: list[datetime] = []
    for at, result in reversed(run.results):
        if result.succeeded:
            break
        trailing.append(at)
    healthy_before = endpoint.consecutive_failures == 0 and endpoint.failing_since is None
    if (
        not trailing
        and healthy_before
        and endpoint.circuit_open_until is None
        and endpoint.last_success_at is not None
        and (now - endpoint.last_success_at).total_seconds() < _HEALTHY_TOUCH_SECONDS
    ):
        # Nothing but a timestamp would change: spare the hot row of a busy endpoint.
        return
    row = session.execute(
        _HEALTH,
        {
            "id": endpoint.id,
            "last_attempt_at": run.results[-1][0],
            "last_success_at": successes[-1] if successes else None,
            "had_success": bool(successes),
            "trailing": len(trailing),
            "first_failure_at": trailing[-1] if trailing else None,
            "threshold": settings.circuit_breaker_threshold,
            "reopen_at": now + timedelta(seconds=settings.circuit_breaker_cooldown_seconds),
        },
    ).one_or_none()
    if row is None:
        return
    enabled, failing_since = row
    if not enabled:
        return
    if run.gone:
        disable_endpoint(session, endpoint.id, endpoint.application_id, "gone", now)
    elif (
        failing_since is not None
        and (now - failing_since).total_seconds() >= settings.auto_disable_after_seconds
    ):
        disable_endpoint(session, endpoint.id, endpoint.application_id, "failing", now)


def disable_endpoint(
    session: Session, endpoint_id: uuid.UUID, application_id: uuid.UUID, reason: str, now: datetime
) -> bool:
    """Disable an endpoint, cancel its open deliveries, emit ``endpoint.disabled``.

    ``reason`` is ``gone`` (it answered 410) or ``failing`` (past the auto-disable window).
    Returns False when another process disabled it first (then it emitted the event).
    """
    detail = (
        "the endpoint answered 410 Gone"
        if reason == "gone"
        else "the endpoint kept failing past the auto-disable window"
    )
    if session.execute(_DISABLE, {"id": endpoint_id, "reason": detail, "now": now}).first() is None:
        return False
    session.execute(cancel_open_deliveries(endpoint_id, f"endpoint disabled: {detail}"))
    from webhooks_core.fanout import accept_message

    envelope = Envelope(
        type="endpoint.disabled",
        data={
            "endpoint_id": str(endpoint_id),
            "application_id": str(application_id),
            "reason": reason,
            "detail": detail,
            "disabled_at": now.isoformat(),
        },
    )
    accept_message(session, envelope, source="platform", application_id=application_id)
    ENDPOINTS_DISABLED.labels(reason).inc()
    logger.warning("endpoint disabled endpoint_id=%s reason=%s", endpoint_id, reason)
    return True
