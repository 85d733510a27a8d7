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

One delivery never fails its batch (docs/delivery.md, *Failure isolation*): the take reads
nothing that can fail to decode, a delivery whose request cannot be built from what is stored
is dead at once with the reason (an ``error`` attempt, no request), every text recorded is
made storable, and a batch whose recording transaction fails anyway is recorded again one
delivery per transaction, the culprit with a minimal attempt.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from delivery.clock import Clock
from delivery.policy import Verdict, judge, next_delay, parse_retry_after
from delivery.sender import USER_AGENT, OutboundRequest, Sender, SendResult, url_problem
from webhooks_core.db import transaction
from webhooks_core.endpoints.disable import disable_endpoint
from webhooks_core.envelope import utcnow, webhook_body
from webhooks_core.models import DeliveryState
from webhooks_core.observability import (
    ATTEMPT_DURATION,
    ATTEMPTS,
    DEAD_LETTERED,
    DELIVERY_LAG,
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
    """A leased delivery with its message; ``problem`` says why no request can be built."""

    id: int
    endpoint_id: uuid.UUID
    attempt_count: int
    next_trigger: str | None
    lease_expires_at: datetime
    event_id: str
    event_type: str
    occurred_at: datetime | None
    payload: Any
    accepted_at: datetime | None
    problem: str | None = None


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
    problem: str | None = None  # why none of its requests can be built


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
# Nothing here may fail to decode, or one row would fail the whole batch: a message's
# timestamps come only when Python's datetime can hold them in any session time zone (else
# NULL, with the stored text), JSON comes as text and is decoded row by row.
_TAKE = text(
    """
    WITH batch_lock AS MATERIALIZED (SELECT pg_try_advisory_lock(:key) AS held),
    leased AS (
        SELECT d.id, d.endpoint_id, d.attempt_count, d.next_trigger, d.lease_expires_at,
               m.event_id, m.event_type,
               CASE WHEN m.occurred_at BETWEEN :earliest AND :latest THEN m.occurred_at
               END AS occurred_at,
               CASE WHEN m.occurred_at BETWEEN :earliest AND :latest THEN NULL
                    ELSE CAST(m.occurred_at AS text) END AS unreadable_occurred_at,
               CAST(m.payload AS text) AS payload,
               CASE WHEN m.created_at BETWEEN :earliest AND :latest THEN m.created_at
               END AS created_at
        FROM batch_lock, deliveries AS d JOIN messages AS m ON m.id = d.message_id
        WHERE batch_lock.held AND d.id = ANY(CAST(:ids AS bigint[]))
          AND d.lease_token = :token AND d.state = 'sending'
    ),
    batch_endpoints AS (
        SELECT e.id, e.application_id, e.url, CAST(e.headers AS text) AS headers,
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
           l.event_id, l.event_type, l.occurred_at, l.unreadable_occurred_at, l.payload,
           l.created_at,
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
# The timestamps a datetime holds whatever the session's time zone (a day inside its range).
_EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
_LATEST = datetime(9999, 12, 30, tzinfo=UTC)
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
    """Try the batch's lock; when held, its leased deliveries and their endpoints.

    A row whose stored values cannot make a request (see :func:`_message_problem` and
    :func:`_endpoint_problem`) is taken all the same, with its ``problem``: it is recorded
    like any other delivery, never left ``sending``.
    """
    rows = session.execute(
        _TAKE,
        {"key": lock.key, "ids": ids, "token": token, "earliest": _EARLIEST, "latest": _LATEST},
    ).all()
    lock.held = bool(rows[0].held)
    leased: list[_Leased] = []
    endpoints: dict[uuid.UUID, _Endpoint] = {}
    for row in rows:
        if row.id is None:
            continue
        item = _Leased(
            row.id,
            row.endpoint_id,
            row.attempt_count,
            row.next_trigger,
            row.lease_expires_at,
            row.event_id,
            row.event_type,
            row.occurred_at,
            None,
            row.created_at,
        )
        item.payload, item.problem = _message_problem(row.payload, row.unreadable_occurred_at)
        leased.append(item)
        if row.e_id is not None and row.e_id not in endpoints:
            headers, keys, problem = _endpoint_problem(row.e_url, row.e_headers, row.e_secrets)
            endpoints[row.e_id] = _Endpoint(
                id=row.e_id,
                application_id=row.e_application_id,
                url=row.e_url,
                headers=headers,
                active=row.e_active,
                retry_schedule=row.e_retry_schedule,
                consecutive_failures=row.e_consecutive_failures,
                failing_since=row.e_failing_since,
                circuit_open_until=row.e_circuit_open_until,
                last_success_at=row.e_last_success_at,
                keys=keys,
                problem=problem,
            )
    return leased, endpoints


def _message_problem(payload: str, unreadable_occurred_at: str | None) -> tuple[Any, str | None]:
    """The message's decoded payload, and why no request can be made of it (or None)."""
    if unreadable_occurred_at is not None:
        return None, f"the message's timestamp {unreadable_occurred_at!r} is out of range"
    try:
        return json.loads(payload), None
    except (ValueError, RecursionError) as exc:
        # A number of more than 4,300 digits, or nesting deeper than Python's recursion.
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return None, f"the message's payload cannot be decoded ({reason})"


# RFC 9110 field names (tokens), and values http.client sends as they are (Latin-1, no
# control characters but tab): anything else would fail in the sender, or be reinterpreted.
_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


def _endpoint_problem(
    url: str, headers_json: str | None, secrets: list[str]
) -> tuple[dict[str, str], list[bytes], str | None]:
    """The endpoint's custom headers and signing keys, and why no request can be built."""
    problem = url_problem(url)
    if problem is not None:
        return {}, [], f"the endpoint's URL cannot be used ({problem})"
    try:
        headers = json.loads(headers_json) if headers_json is not None else {}
    except (ValueError, RecursionError):
        headers = None
    if not isinstance(headers, dict) or not all(
        isinstance(value, str) for value in headers.values()
    ):
        shown = "null" if headers is None else type(headers).__name__
        return {}, [], f"the endpoint's custom headers are not an object of strings ({shown})"
    for name, value in headers.items():
        if not _FIELD_NAME.fullmatch(name):
            return {}, [], f"the endpoint's custom header name {name!r} is not an HTTP token"
        if not _FIELD_VALUE.fullmatch(value):
            return (
                {},
                [],
                f"the endpoint's custom header {name!r} holds control characters or characters"
                " beyond Latin-1",
            )
    keys: list[bytes] = []
    for secret in secrets:
        try:
            keys.append(secret_key(secret))
        except ValueError:
            return {}, [], "a signing secret of the endpoint cannot be decoded"
    return headers, keys, None


class _Unbuildable(Exception):
    """The delivery's request cannot be built from what is stored: no request goes out."""


def _request(endpoint: _Endpoint, item: _Leased) -> OutboundRequest:
    """The signed request of one delivery; raises :class:`_Unbuildable` if none can be made."""
    problem = endpoint.problem or item.problem
    if problem is not None:
        raise _Unbuildable(problem)
    if not _FIELD_VALUE.fullmatch(item.event_id):
        raise _Unbuildable("the message's id cannot be sent as the webhook-id header")
    assert item.occurred_at is not None  # else item.problem says why
    try:
        body = webhook_body(item.event_type, item.occurred_at, item.payload)
    except (ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise _Unbuildable(f"the message cannot be serialised ({exc})") from None
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
    unbuildable: int = 0  # attempts that sent no request (counted as outcome "error")


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
    """Send one endpoint's deliveries in order; stop early as the module doc says.

    Nothing one delivery does raises out of here: a request that cannot be built is a
    failed attempt that dead-letters its delivery at once (its stored values will not
    change by waiting), a sender that raises is a failed attempt retried by schedule.
    """
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
        count = item.attempt_count + 1
        try:
            request = _request(endpoint, item)
        except Exception as exc:  # noqa: BLE001 - whatever it is, it is this delivery's
            _unbuildable(output, endpoint, item, attempted_at, exc)
            continue
        result = _send(rt.sender, request)
        verdict = judge(result, settings)
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
            if item.accepted_at is not None:
                output.lags.append((attempted_at - item.accepted_at).total_seconds())
        elif verdict is Verdict.GONE:
            change.state = DeliveryState.CANCELLED
            change.error = "endpoint answered 410 Gone"
            run.gone = True
            stopped = True
        else:
            next_at = None
            if verdict is Verdict.RETRY:
                next_at = _next_attempt_at(rt, endpoint, count, result)
            if next_at is None:
                change.state = DeliveryState.DEAD
            else:
                change.state = DeliveryState.RETRYING
                change.next_attempt_at = next_at
        output.changes.append(change)
        _log_attempt(item, endpoint, result, change)
        if result.outcome == "timeout" or _breaker_tripped(run, settings):
            stopped = True
    return output


def _send(sender: Sender, request: OutboundRequest) -> SendResult:
    """``sender.send``, with anything it raises made a failed attempt (retried)."""
    started = time.perf_counter()
    try:
        return sender.send(request)
    except Exception as exc:
        logger.exception("the sender raised for %s", request.url)
        return SendResult(
            "error",
            (time.perf_counter() - started) * 1000,
            error=f"the sender failed: {type(exc).__name__}: {exc}",
        )


def _next_attempt_at(
    rt: DeliveryRuntime, endpoint: _Endpoint, count: int, result: SendResult
) -> datetime | None:
    """When to try again after ``count`` attempts, or None when the schedule is exhausted."""
    settings = rt.settings
    delay = next_delay(
        count,
        endpoint.retry_schedule or settings.retry_schedule,
        jitter=settings.retry_jitter,
        # An HTTP date in Retry-After is the receiver's real time, not ours.
        retry_after=parse_retry_after(result.retry_after, utcnow()),
        retry_after_max=settings.retry_after_max_seconds,
    )
    return None if delay is None else rt.clock.now() + timedelta(seconds=delay)


def _unbuildable(
    output: _RunOutput,
    endpoint: _Endpoint,
    item: _Leased,
    attempted_at: datetime,
    exc: Exception,
) -> None:
    """Record a delivery whose request could not be built: an attempt, then dead at once.

    Not counted in the endpoint's health (the receiver was never asked), and not retried:
    the stored message or endpoint that made it fail will be the same on every try.  Fix
    the endpoint (or nothing, for a message) and redrive the dead letter.
    """
    reason = str(exc) if isinstance(exc, _Unbuildable) else f"{type(exc).__name__}: {exc}"
    error = f"could not build the request: {reason}"
    output.attempts.append(
        {
            "delivery_id": item.id,
            "endpoint_id": endpoint.id,
            "started_at": attempted_at,
            "latency_ms": 0.0,
            "status_code": None,
            "outcome": "error",
            "error": error,
            "response_body": None,
            "trigger": item.next_trigger or "scheduled",
        }
    )
    change = _Change(
        item.id, DeliveryState.DEAD, item.attempt_count + 1, attempted_at=attempted_at, error=error
    )
    output.changes.append(change)
    output.unbuildable += 1
    _log_attempt(item, endpoint, SendResult("error", 0.0, error=error), change)


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
    unbuildable = 0
    for output in outputs:
        changes += output.changes
        attempts += output.attempts
        lags += output.lags
        runs[output.run.endpoint.id] = output.run
        report.released += output.released
        report.outcomes += [result.outcome for _, result in output.run.results]
        report.outcomes += ["error"] * output.unbuildable
        unbuildable += output.unbuildable

    dead_records = _record(rt, sessions, token, changes, attempts, runs, report)
    for run in runs.values():
        for _, result in run.results:
            ATTEMPTS.labels(result.outcome).inc()
            ATTEMPT_DURATION.observe(result.latency_ms / 1000)
    if unbuildable:
        ATTEMPTS.labels("error").inc(unbuildable)
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
    # INFO when it succeeded, WARNING when it failed, ERROR when its delivery is now dead.
    if change.state == DeliveryState.DEAD:
        level = logging.ERROR
    elif result.succeeded:
        level = logging.INFO
    else:
        level = logging.WARNING
    logger.log(
        level,
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
    """Write the batch's outcome in one transaction; return the dead letters to publish.

    Should that transaction fail (a value PostgreSQL refuses that sanitising did not
    foresee), each delivery is recorded on its own instead (:func:`_record_each`): one
    row's problem never leaves the others ``sending``.
    """
    try:
        with transaction(sessions) as session:
            updated, dead_records = _write(rt, session, token, changes, attempts, runs)
            session.execute(_END_LEASE, {"token": token})
    except Exception as exc:
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            raise  # the database is gone: nothing can be recorded, the lease will expire
        logger.exception("batch %s: recording it failed; recording each delivery alone", token)
        return _record_each(rt, sessions, token, changes, attempts, runs, report)
    _count(report, updated, changes)
    # The lock goes after the commit (in _batch_connection): released before it, a second
    # run of the task could still see the rows leased and send them again.
    return [_dead_letter_body(record) for record in dead_records]


def _record_each(
    rt: DeliveryRuntime,
    sessions: sessionmaker[Session],
    token: uuid.UUID,
    changes: list[_Change],
    attempts: list[dict[str, Any]],
    runs: dict[uuid.UUID, _EndpointRun],
    report: BatchReport,
) -> list[dict[str, Any]]:
    """Record a batch one transaction per endpoint's health and per delivery.

    A delivery that cannot be recorded as it is gets a minimal record instead: its state
    change and an attempt with the status and outcome but no response text, and an error
    that says the rest could not be stored.
    """
    now = rt.clock.now()
    for endpoint_id in sorted(runs):
        try:
            with transaction(sessions) as session:
                _update_health(session, rt.settings, runs[endpoint_id], now)
        except Exception as exc:
            if isinstance(exc, DBAPIError) and exc.connection_invalidated:
                raise
            logger.exception("endpoint %s: recording its health failed", endpoint_id)
    by_delivery = {a["delivery_id"]: a for a in attempts}
    dead_records: list[dict[str, Any]] = []
    for change in changes:
        attempt = by_delivery.get(change.id)
        for version in (_as_is, _minimal):
            one_change, one_attempt = version(change, attempt)
            try:
                with transaction(sessions) as session:
                    updated, dead = _write(
                        rt, session, token, [one_change], [one_attempt] if one_attempt else [], {}
                    )
            except Exception as exc:
                if isinstance(exc, DBAPIError) and exc.connection_invalidated:
                    raise
                logger.exception("delivery %s: recording it failed", change.id)
                continue
            _count(report, updated, [one_change])
            dead_records += dead
            break
    with transaction(sessions) as session:
        session.execute(_END_LEASE, {"token": token})
    return [_dead_letter_body(record) for record in dead_records]


_UNSTORED = "the attempt could not be recorded in full (its response and error are not stored)"


def _as_is(
    change: _Change, attempt: dict[str, Any] | None
) -> tuple[_Change, dict[str, Any] | None]:
    return change, attempt


def _minimal(
    change: _Change, attempt: dict[str, Any] | None
) -> tuple[_Change, dict[str, Any] | None]:
    """The same state change and attempt without any text that came from outside."""
    error = _UNSTORED if change.attempted_at is not None else change.error and _UNSTORED
    smaller = _Change(
        change.id,
        change.state,
        change.attempt_count,
        change.next_attempt_at,
        change.attempted_at,
        change.status_code,
        error,
    )
    if attempt is None:
        return smaller, None
    return smaller, {**attempt, "error": _UNSTORED, "response_body": None}


def _write(
    rt: DeliveryRuntime,
    session: Session,
    token: uuid.UUID,
    changes: list[_Change],
    attempts: list[dict[str, Any]],
    runs: dict[uuid.UUID, _EndpointRun],
) -> tuple[dict[int, str], list[dict[str, Any]]]:
    """Record endpoint health, the deliveries' changes, their attempts and dead letters.

    Returns the new state of each delivery recorded (those still leased under ``token``)
    and the dead letters opened.  Every text from outside is made storable first.
    """
    settings, now = rt.settings, rt.clock.now()
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
                "errors": [storable(c.error, ERROR_MAX_CHARS) for c in changes],
            },
        ).all()
    )
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
                "errors": [storable(a["error"], ERROR_MAX_CHARS) for a in attempts],
                "bodies": [storable(a["response_body"]) for a in attempts],
                "triggers": [a["trigger"] for a in attempts],
            },
        )
    dead_ids = [i for i, state in updated.items() if state == DeliveryState.DEAD]
    dead_records: list[dict[str, Any]] = []
    if dead_ids:
        dead_records = [
            dict(row) for row in session.execute(_DEAD_LETTER, {"ids": dead_ids}).mappings()
        ]
    return updated, dead_records


def _count(report: BatchReport, updated: dict[int, str], changes: list[_Change]) -> None:
    """Add what a committed record did to the batch's report."""
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


# Longest error text stored per attempt (an exception's message can be any length).
ERROR_MAX_CHARS = 1000
_SURROGATES = re.compile("[\ud800-\udfff]")


def storable(value: str | None, max_chars: int | None = None) -> str | None:
    """``value`` as PostgreSQL text takes it: NUL and lone surrogates become U+FFFD.

    A PostgreSQL text value cannot hold NUL, and psycopg2 cannot encode a lone surrogate to
    UTF-8; bytes that were not UTF-8 became U+FFFD when the response was decoded.
    """
    if value is None:
        return None
    if max_chars is not None and len(value) > max_chars:
        value = value[: max_chars - 1] + "\u2026"
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if not value.isascii():
        value = _SURROGATES.sub("\ufffd", value)
    return value


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
