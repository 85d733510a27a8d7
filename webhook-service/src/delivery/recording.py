"""Recording a batch: endpoint health and flow limits, the deliveries' new states,
attempts, dead letters, and the attempts' statistics (one aggregated upsert,
:mod:`webhooks_core.statistics`).

One transaction per batch (endpoint rows locked before delivery rows everywhere); should it
fail, each delivery is recorded in a transaction of its own, the culprit with a minimal
attempt (docs/delivery.md, *Failure isolation*).  Every text recorded is made storable.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Session, sessionmaker

from delivery.batch import BatchReport, Change, DeliveryRuntime
from delivery.config import DeliverySettings
from delivery.flow_recording import record_flow
from delivery.sending import EndpointRun
from webhooks_core.db import connection_lost, run_transaction
from webhooks_core.deliveries.ordering import lock_ordering_keys, wake_keys
from webhooks_core.deliveries.outcomes import disable_reason, health_change
from webhooks_core.deliveries.states import CANCELLED_SQL, DELIVERED_SQL, SENDING_SQL, DeliveryState
from webhooks_core.endpoints.disable import disable_endpoint
from webhooks_core.endpoints.flow import is_throttled
from webhooks_core.endpoints.flow_limits import flow_control_on
from webhooks_core.statistics import DeliveryFacts, summarise_attempts

logger = logging.getLogger("delivery.attempt")

# A healthy endpoint's row is rewritten at most this often (last_success_at), not per batch.
_HEALTHY_TOUCH_SECONDS = 5.0

# A delivery cancelled while this run sent it (its endpoint was disabled meanwhile) keeps
# this run's token: its attempt is still recorded, and it stays cancelled unless it was in
# fact delivered.  A delivery re-leased to another run (this run outlived its lease) has
# another token and is not this run's to record.
_RECORD = text(
    # Only state constants are interpolated (deliveries.states), never input.
    f"""
    UPDATE deliveries AS d SET
        state = CASE WHEN d.state = {CANCELLED_SQL} AND v.state <> {DELIVERED_SQL} THEN d.state
                     ELSE v.state END,
        attempt_count = v.attempt_count,
        next_attempt_at = CASE WHEN d.state = {CANCELLED_SQL} THEN NULL
                               ELSE v.next_attempt_at END,
        last_attempt_at = coalesce(v.attempted_at, d.last_attempt_at),
        last_status_code = CASE WHEN v.attempted_at IS NULL THEN d.last_status_code
                                ELSE v.status_code END,
        last_error = CASE WHEN v.attempted_at IS NULL THEN coalesce(v.error, d.last_error)
                          ELSE v.error END,
        delivered_at = CASE WHEN v.state = {DELIVERED_SQL} THEN v.attempted_at
                            ELSE d.delivered_at END,
        next_trigger = CASE WHEN v.attempted_at IS NULL THEN d.next_trigger END,
        lease_token = NULL, lease_expires_at = NULL, updated_at = now()
    FROM unnest(CAST(:ids AS bigint[]), CAST(:states AS text[]), CAST(:counts AS int[]),
                CAST(:next AS timestamptz[]), CAST(:attempted AS timestamptz[]),
                CAST(:codes AS int[]), CAST(:errors AS text[]))
         AS v(id, state, attempt_count, next_attempt_at, attempted_at, status_code, error)
    WHERE d.id = v.id AND d.lease_token = :token AND d.state IN ({SENDING_SQL}, {CANCELLED_SQL})
    RETURNING d.id, d.state
    """  # noqa: S608
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
END_LEASE = text("DELETE FROM delivery_leases WHERE token = :token").bindparams(
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


def record(
    rt: DeliveryRuntime,
    sessions: sessionmaker[Session],
    token: uuid.UUID,
    changes: list[Change],
    attempts: list[dict[str, Any]],
    runs: dict[uuid.UUID, EndpointRun],
    report: BatchReport,
    keys: Sequence[tuple[uuid.UUID, str]] = (),
) -> list[dict[str, Any]]:
    """Write the batch's outcome in one transaction; return the dead letters to publish.

    ``keys`` are the batch's ordering keys (endpoint id, key): their next parked
    deliveries are woken in the same transaction when they now head their key.

    Should that transaction fail (a value PostgreSQL refuses that sanitising did not
    foresee), each delivery is recorded on its own instead (:func:`_record_each`): one
    row's problem never leaves the others ``sending``.  Every transaction here is tried
    once (the requests were sent: past the batch's point of no return, see
    :mod:`webhooks_core.db`); a lost connection propagates, and the lease expires.
    """

    def work(session: Session) -> tuple[dict[int, str], list[dict[str, Any]]]:
        written = _write(rt, session, token, changes, attempts, runs, keys)
        session.execute(END_LEASE, {"token": token})
        return written

    try:
        updated, dead_records = run_transaction(sessions, work, retry=False)
    except Exception as exc:
        if connection_lost(exc):
            raise  # the database is gone: nothing can be recorded, the lease will expire
        logger.exception("batch %s: recording it failed; recording each delivery alone", token)
        return _record_each(rt, sessions, token, changes, attempts, runs, report)
    _count(report, updated, changes)
    # The lock goes after the commit (in batch_connection): released before it, a second
    # run of the task could still see the rows leased and send them again.
    return [_dead_letter_body(record) for record in dead_records]


def _record_each(
    rt: DeliveryRuntime,
    sessions: sessionmaker[Session],
    token: uuid.UUID,
    changes: list[Change],
    attempts: list[dict[str, Any]],
    runs: dict[uuid.UUID, EndpointRun],
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
            _record_health(sessions, rt.settings, runs[endpoint_id], now)
        except Exception as exc:
            if connection_lost(exc):
                raise
            logger.exception("endpoint %s: recording its health failed", endpoint_id)
    by_delivery = {a["delivery_id"]: a for a in attempts}
    dead_records: list[dict[str, Any]] = []
    for change in changes:
        recorded = _record_one(rt, sessions, token, change, by_delivery.get(change.id))
        if recorded is not None:
            _count(report, recorded[0], [change])
            dead_records += recorded[1]
    run_transaction(
        sessions, lambda session: session.execute(END_LEASE, {"token": token}), retry=False
    )
    return [_dead_letter_body(record) for record in dead_records]


def _record_health(
    sessions: sessionmaker[Session], settings: DeliverySettings, run: EndpointRun, now: datetime
) -> None:
    """One endpoint's health and flow limits in a transaction of its own."""

    def work(session: Session) -> None:
        update_health(session, settings, run, now)
        record_flow(session, settings, {run.endpoint.id: run}, now)

    run_transaction(sessions, work, retry=False)


def _record_one(
    rt: DeliveryRuntime,
    sessions: sessionmaker[Session],
    token: uuid.UUID,
    change: Change,
    attempt: dict[str, Any] | None,
) -> tuple[dict[int, str], list[dict[str, Any]]] | None:
    """One delivery in a transaction of its own, as it is or else minimal; None when neither
    could be recorded."""
    for version in (_as_is, _minimal):
        one_change, one_attempt = version(change, attempt)
        one = [one_attempt] if one_attempt else []
        try:
            return run_transaction(
                sessions,
                partial(_write, rt, token=token, changes=[one_change], attempts=one, runs={}),
                retry=False,
            )
        except Exception as exc:
            if connection_lost(exc):
                raise
            logger.exception("delivery %s: recording it failed", change.id)
    return None


_UNSTORED = "the attempt could not be recorded in full (its response and error are not stored)"


def _as_is(change: Change, attempt: dict[str, Any] | None) -> tuple[Change, dict[str, Any] | None]:
    return change, attempt


def _minimal(
    change: Change, attempt: dict[str, Any] | None
) -> tuple[Change, dict[str, Any] | None]:
    """The same state change and attempt without any text that came from outside."""
    error = _UNSTORED if change.attempted_at is not None else change.error and _UNSTORED
    smaller = Change(
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
    changes: list[Change],
    attempts: list[dict[str, Any]],
    runs: dict[uuid.UUID, EndpointRun],
    keys: Sequence[tuple[uuid.UUID, str]] = (),
) -> tuple[dict[int, str], list[dict[str, Any]]]:
    """Record endpoint health, the deliveries' changes, their attempts and dead letters,
    and wake the deliveries parked behind ``keys`` that now head their key.

    Returns the new state of each delivery recorded (those still leased under ``token``)
    and the dead letters opened.  Every text from outside is made storable first.  (A
    delivery recorded alone wakes no key: the scheduler's sweep does.)
    """
    settings, now = rt.settings, rt.clock.now()
    # The keys' locks first, before any row lock (fan-out takes them before its rows too):
    # a delivery a fan-out parks behind this batch's keys is committed before the wake below
    # reads, or parks after this batch is recorded and sees its head ended.
    lock_ordering_keys(session, [key for _, key in keys])
    # Endpoint rows before delivery rows, endpoints in id order: disabling an endpoint
    # (here or in the API) locks it and then cancels its deliveries, so taking locks in
    # the other order could deadlock with a batch of the same endpoint recording at once.
    for endpoint_id in sorted(runs):
        update_health(session, settings, runs[endpoint_id], now)
    record_flow(session, settings, runs, now)  # its rows next, in the same order
    updated = _write_changes(session, token, changes)
    wake_keys(session, keys, now)
    recorded = [a for a in attempts if a["delivery_id"] in updated]
    _insert_attempts(session, recorded)
    # One aggregated upsert per batch (after the new states: it reads them).
    summarise_attempts(session, recorded, _facts(recorded, updated, runs))
    dead_ids = [i for i, state in updated.items() if state == DeliveryState.DEAD]
    dead_records: list[dict[str, Any]] = []
    if dead_ids:
        dead_records = [
            dict(row) for row in session.execute(_DEAD_LETTER, {"ids": dead_ids}).mappings()
        ]
    return updated, dead_records


def _facts(
    attempts: list[dict[str, Any]], states: dict[int, str], runs: dict[uuid.UUID, EndpointRun]
) -> dict[int, DeliveryFacts] | None:
    """What the statistics key each recorded attempt by, from what the batch already holds
    (no query): its endpoint, application, event type and the delivery's new state.  None
    when the batch's endpoints are not given (a delivery recorded alone): the statistics
    then read them from the deliveries rows."""
    if any(a["endpoint_id"] not in runs for a in attempts):
        return None
    return {
        a["delivery_id"]: DeliveryFacts(
            a["endpoint_id"],
            runs[a["endpoint_id"]].endpoint.application_id,
            a["event_type"],
            states[a["delivery_id"]],
        )
        for a in attempts
    }


def _write_changes(session: Session, token: uuid.UUID, changes: list[Change]) -> dict[int, str]:
    """The deliveries' new states in one UPDATE; the state of each row still leased."""
    return dict(
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


def _insert_attempts(session: Session, attempts: list[dict[str, Any]]) -> None:
    """The attempts in one multi-row INSERT."""
    if not attempts:
        return
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


def _count(report: BatchReport, updated: dict[int, str], changes: list[Change]) -> None:
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


def update_health(
    session: Session, settings: DeliverySettings, run: EndpointRun, now: datetime
) -> None:
    """Consecutive failures, failing-since, breaker; disable on 410 or long failure."""
    endpoint = run.endpoint
    results = run.results
    if flow_control_on(endpoint.adaptive_flow, settings.flow_control):
        # A 429 lowers the rate, not the health (endpoints.flow).
        results = [(at, result) for at, result in results if not is_throttled(result)]
    change = health_change(results)
    if change is None:
        return
    healthy_before = endpoint.consecutive_failures == 0 and endpoint.failing_since is None
    if (
        change.trailing == 0
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
            "last_attempt_at": change.last_attempt_at,
            "last_success_at": change.last_success_at,
            "had_success": change.had_success,
            "trailing": change.trailing,
            "first_failure_at": change.first_failure_at,
            "threshold": settings.circuit_breaker_threshold,
            "reopen_at": now + timedelta(seconds=settings.circuit_breaker_cooldown_seconds),
        },
    ).one_or_none()
    if row is None or not row.enabled:
        return
    reason = disable_reason(run.gone, row.failing_since, now, settings.auto_disable_after_seconds)
    if reason is not None:
        disable_endpoint(session, endpoint.id, endpoint.application_id, reason, now)
