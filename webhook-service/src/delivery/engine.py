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

import logging
import time
import uuid
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from delivery.batch import (
    BatchEndpoint,
    BatchReport,
    Change,
    DeadLetterPublisher,
    DeliveryRuntime,
    Leased,
)
from delivery.batch_take import BatchLock, batch_connection, take
from delivery.recording import _DEAD_LETTER, END_LEASE, _dead_letter_body, record, storable
from delivery.sending import EndpointRun, RunOutput, send_run, send_runs
from webhooks_core.db import Attempt, retry_lost_connection, run_transaction
from webhooks_core.deliveries.states import DeliveryState
from webhooks_core.endpoints.disable import disable_endpoint
from webhooks_core.observability import (
    ATTEMPT_DURATION,
    ATTEMPTS,
    DEAD_LETTERED,
    DELIVERY_LAG,
    RETRIES_SCHEDULED,
)

logger = logging.getLogger("delivery.attempt")

# Kept importable from here: the task, the scheduler and the tests import them by these names.
_Change = Change
_record = record
__all__ = [
    "_DEAD_LETTER",
    "BatchReport",
    "DeadLetterPublisher",
    "DeliveryRuntime",
    "_Change",
    "_dead_letter_body",
    "_record",
    "deliver_batch",
    "disable_endpoint",
    "storable",
]

# Stop starting requests this long before the lease ends, on top of one request's deadline.
_LEASE_MARGIN_SECONDS = 1.0


def deliver_batch(rt: DeliveryRuntime, lease_token: uuid.UUID, ids: list[int]) -> BatchReport:
    """Send the deliveries still leased under ``lease_token``; safe to call twice.

    Under the lost-connection policy (:mod:`webhooks_core.db`): a connection found dead by
    the take (the database restarted) is replaced and the batch taken again at once; once
    the batch is taken (before its first request), it is never run again here: a connection
    lost while recording leaves the deliveries leased, and the scheduler gives them out again
    when the lease expires (at least once).
    """

    def batch(attempt: Attempt) -> BatchReport:
        with batch_connection(rt, lease_token) as (sessions, lock):
            return _deliver_locked(rt, sessions, lock, lease_token, ids, attempt)

    return retry_lost_connection(batch, what=f"batch {lease_token}")


def _deliver_locked(
    rt: DeliveryRuntime,
    sessions: sessionmaker[Session],
    lock: BatchLock,
    token: uuid.UUID,
    ids: list[int],
    attempt: Attempt,
) -> BatchReport:
    report = BatchReport()
    acquired, leased, endpoints = _take_batch(sessions, lock, token, ids)
    attempt.point_of_no_return()  # requests go out from here on
    if not acquired:
        logger.info("batch %s is being sent by another run of its task", token)
        return report
    report.taken = len(leased)
    if not leased:
        return report
    # Start no request that could still run when the lease ends (the scheduler would give
    # the batch to another worker: a duplicate, harmless but wasteful).
    lease_left = min(item.lease_expires_at for item in leased) - rt.clock.now()
    margin = rt.settings.total_timeout_seconds + _LEASE_MARGIN_SECONDS
    send_until = time.monotonic() + lease_left.total_seconds() - margin

    changes, groups = _by_endpoint(leased, endpoints)
    outputs = _send_groups(rt, endpoints, groups, send_until)
    attempts: list[dict[str, Any]] = []
    runs: dict[uuid.UUID, EndpointRun] = {}
    lags: list[float] = []
    for output in outputs:
        changes += output.changes
        attempts += output.attempts
        lags += output.lags
        runs[output.run.endpoint.id] = output.run
        report.released += output.released
        report.outcomes += [result.outcome for _, result in output.run.results]
        report.outcomes += ["error"] * output.unbuildable

    keys = sorted({(i.endpoint_id, i.ordering_key) for i in leased if i.ordering_key is not None})
    dead_records = record(rt, sessions, token, changes, attempts, runs, report, keys)
    _observe(runs, sum(output.unbuildable for output in outputs), lags, report, dead_records)
    if dead_records:
        try:
            rt.dead_letters.publish(dead_records)
        except Exception:
            # The dead letter is stored and listed by the API; only the queue copy is missing.
            logger.exception("publishing %d dead letters failed", len(dead_records))
    return report


def _take_batch(
    sessions: sessionmaker[Session], lock: BatchLock, token: uuid.UUID, ids: list[int]
) -> tuple[bool, list[Leased], dict[uuid.UUID, BatchEndpoint]]:
    """Try the lock and take the batch; with nothing left, free its slot and the lock.

    Returns whether the lock was acquired, the deliveries and their endpoints.  Tried once:
    :func:`deliver_batch` runs the take again when its connection was dead.
    """

    def work(session: Session) -> tuple[bool, list[Leased], dict[uuid.UUID, BatchEndpoint]]:
        leased, endpoints = take(session, lock, token, ids)
        acquired = lock.held
        if acquired and not leased:
            session.execute(END_LEASE, {"token": token})  # nothing left: free the slot
            lock.release(session)
        return acquired, leased, endpoints

    return run_transaction(sessions, work, retry=False)


def _by_endpoint(
    leased: list[Leased], endpoints: dict[uuid.UUID, BatchEndpoint]
) -> tuple[list[Change], dict[uuid.UUID, list[Leased]]]:
    """Cancel the deliveries of endpoints no longer active; group the rest by endpoint."""
    changes: list[Change] = []
    groups: dict[uuid.UUID, list[Leased]] = {}
    for item in leased:
        endpoint = endpoints.get(item.endpoint_id)
        if endpoint is None or not endpoint.active:
            changes.append(
                Change(
                    item.id, DeliveryState.CANCELLED, item.attempt_count, error="endpoint disabled"
                )
            )
        else:
            groups.setdefault(endpoint.id, []).append(item)
    return changes, groups


def _send_groups(
    rt: DeliveryRuntime,
    endpoints: dict[uuid.UUID, BatchEndpoint],
    groups: dict[uuid.UUID, list[Leased]],
    send_until: float,
) -> list[RunOutput]:
    """Send each endpoint's deliveries; several endpoints side by side."""
    if len(groups) <= 1:
        return [send_run(rt, endpoints[eid], items, send_until) for eid, items in groups.items()]
    # A batch of several endpoints (a fan-out): each endpoint's deliveries go out one
    # after another, the endpoints side by side, so a slow one delays only its own.
    return send_runs(rt, [(endpoints[eid], items) for eid, items in groups.items()], send_until)


def _observe(
    runs: dict[uuid.UUID, EndpointRun],
    unbuildable: int,
    lags: list[float],
    report: BatchReport,
    dead_records: list[dict[str, Any]],
) -> None:
    """The batch's metrics, once it is recorded."""
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
