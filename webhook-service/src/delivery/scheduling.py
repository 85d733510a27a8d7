"""Claiming due deliveries from PostgreSQL and handing them to workers.

PostgreSQL is the only place a delivery waits: ``next_attempt_at`` holds retries for hours,
never a Celery ETA.  A claim cycle, in one transaction:

1. takes the claim lock (an advisory lock, so several schedulers take turns instead of
   racing on the per-endpoint limits; each can take over when another dies);
2. counts in-flight batches per endpoint and per application (``delivery_leases``, one
   row per batch and endpoint) and reads which breakers are open; those endpoints, and the
   applications at ``application_max_in_flight``, are left out of the scan, so a slow or
   failing endpoint's (or tenant's) backlog never fills the batch that healthy ones need;
3. reads the due rows of the other endpoints, up to ``scheduler_claim_limit``: each
   application's oldest, the applications that waited longest first (:func:`claim_applications`
   of them a cycle), so one tenant's backlog never hides another's due deliveries; and
   when an endpoint filled its application's share with rows it cannot all take (its rate,
   its slots), the other endpoints' oldest rows of that application too, so one endpoint's
   backlog never hides its siblings';
4. cuts each endpoint's rows (a pure decision, :mod:`webhooks_core.deliveries.planning`)
   into batches of at most ``delivery_batch_size``, no more
   batches than the endpoint's free in-flight slots (one while the endpoint is failing; a
   half-open breaker gets one probe of one delivery) nor than its application's free
   slots (fair share: one tenant's slow endpoints cannot hold every worker), a delivery
   whose lease ran out before in a batch of its own, and leases them in one UPDATE over
   exactly those rows ``FOR UPDATE SKIP LOCKED`` (a row another transaction is changing
   right now is left for the next cycle):
   state ``sending``, a fresh ``lease_token`` per batch, ``lease_expires_at``, and one
   ``delivery_leases`` row per batch.  Rows that did not fit stay due and are not locked.

After the commit each batch is published as one ``delivery.deliver`` task (publisher
confirms).  A batch whose publish fails, or whose worker dies, comes back when its lease
expires (:func:`expire_leases`); a delivery whose lease runs out
``max_lease_expiries`` times in a row with nothing recorded is a poison delivery, and is
dead-lettered instead.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Session

from delivery.claim_keys import key_runs, unlease_broken_runs
from delivery.config import DeliverySettings
from delivery.engine import _DEAD_LETTER, _dead_letter_body
from delivery.rate_buckets import save_buckets, stored_buckets
from webhooks_core.deliveries.ordering import IS_HEAD_SQL, NOT_BLOCKED_SQL, fill_batches
from webhooks_core.deliveries.planning import (
    Capacity,
    DueRow,
    Plan,
    RateLimiter,
    plan_batches,
    rate_wait_sql,
    read_capacity,
)
from webhooks_core.deliveries.states import (
    DEAD_SQL,
    DUE_SQL,
    RELEASED_STATE_SQL,
    SENDING_SQL,
    first_due_by_application,
)
from webhooks_core.endpoints.flow_limits import (
    FLOW_ON_SQL,
    THROTTLED_SQL,
    effective_in_flight,
    effective_in_flight_sql,
    effective_rate,
    effective_rate_sql,
)
from webhooks_core.endpoints.health import is_half_open
from webhooks_core.endpoints.pause import PAUSED_SQL
from webhooks_core.models import DeliveryState

logger = logging.getLogger(__name__)

# Arbitrary but fixed: the key of the advisory lock schedulers take turns on.
CLAIM_LOCK_KEY = 0x5745_4248_4F4F_4B53  # "WEBHOOKS"
NOTIFY_CHANNEL = "webhooks_deliveries"
DELIVER_TASK = "delivery.deliver"


@dataclass(frozen=True)
class ClaimResult:
    """The batches leased by one cycle, and whether due work waits for a free slot."""

    claims: list[Claim]
    saturated: bool
    wake_in: float | None = None  # seconds until rate-limited deliveries may go


@dataclass(frozen=True)
class Expiry:
    """What one lease-expiry pass did: deliveries due again, and poison ones dead-lettered.

    ``dead_letters`` are the bodies to publish to ``webhooks.dead-letters`` after the commit.
    """

    released: list[int]
    dead_letters: list[dict[str, Any]]


@dataclass(frozen=True)
class Claim:
    """One leased batch, sent by one task: each endpoint's deliveries one after another.

    ``endpoint_id`` is None for a batch that gathers a few deliveries of many healthy
    endpoints (a fan-out); the worker sends those endpoints side by side.
    """

    lease_token: uuid.UUID
    endpoint_id: uuid.UUID | None
    delivery_ids: list[int]


class ClaimPublisher(Protocol):
    """Hands leased batches to workers."""

    def publish(self, claims: list[Claim]) -> None:
        """Publish every claim; raise if the broker did not confirm one (:class:`PublishFailed`
        when it can tell which were not published)."""
        ...


class PublishFailed(Exception):
    """The broker did not confirm ``unpublished`` (the claims before them went out)."""

    def __init__(self, unpublished: list[Claim]) -> None:
        super().__init__(f"{len(unpublished)} batches not published")
        self.unpublished = unpublished


# One round trip: take the claim lock (the CTE runs first and once), then read the batches
# in flight per endpoint, per application, and the endpoints whose breaker is open or that
# are paused (webhooks_core.endpoints.pause: held like an open breaker's).  An endpoint's
# ``endpoint_flow`` row counts only while flow control is on for it (FLOW_ON_SQL).
# The claim commits without waiting for its WAL flush (synchronous_commit off, this
# transaction only): a claim lost in a crash leaves its rows due and its task finds no lease
# to send, and a worker's record of the batch, which does wait, flushes the claim first.
# No bitmap scans in the claim (this transaction only): the due rows must be read in the due
# index's order and cut at the limit.  No JIT either: the planner's cost of reading due rows
# with their head probes passes jit_above_cost, and compiling took 1.4 s of a 1.4 s claim
# (bench.claim_keys; 9 ms without).  With statistics older than a mass of new due rows
# (next_attempt_at past the histogram's end), the planner estimated 120 due rows of 207,000
# and chose a bitmap scan of all of them, sorted, each with its head probe: 1.7 s per claim
# in make chaos, against 22 ms in index order.
_IN_FLIGHT = text(
    f"""
    WITH claim_lock AS MATERIALIZED (
        SELECT pg_advisory_xact_lock(:key), set_config('synchronous_commit', 'off', true),
               set_config('enable_bitmapscan', 'off', true), set_config('jit', 'off', true)),
    rated AS (
        SELECT b.endpoint_id, b.tokens, b.stamp, e.rate_limit AS configured_rate,
               f.rate_limit AS adaptive_rate
        FROM claim_lock, endpoint_rate_buckets b JOIN endpoints e ON e.id = b.endpoint_id
             LEFT JOIN endpoint_flow f ON f.endpoint_id = b.endpoint_id AND {FLOW_ON_SQL})
    SELECT 'endpoint' AS kind, l.endpoint_id AS id, count(*) AS batches,
           CASE WHEN e.consecutive_failures > 0 THEN 1
                ELSE {effective_in_flight_sql("coalesce(e.max_in_flight, :default_limit)")}
           END AS max_in_flight
    FROM claim_lock, delivery_leases l JOIN endpoints e ON e.id = l.endpoint_id
         LEFT JOIN endpoint_flow f ON f.endpoint_id = l.endpoint_id AND {FLOW_ON_SQL}
    GROUP BY l.endpoint_id, e.max_in_flight, e.consecutive_failures, f.max_in_flight
    UNION ALL
    SELECT 'application', l.application_id, count(DISTINCT l.token), :application_limit
    FROM claim_lock, delivery_leases l
    GROUP BY l.application_id
    UNION ALL
    SELECT 'open', e.id, 0, 0 FROM claim_lock, endpoints e
    WHERE e.circuit_open_until > :now OR {PAUSED_SQL}
    UNION ALL
    SELECT 'open', f.endpoint_id, 0, 0
    FROM claim_lock, endpoint_flow f JOIN endpoints e ON e.id = f.endpoint_id AND {FLOW_ON_SQL}
    WHERE {THROTTLED_SQL}
    UNION ALL
    {rate_wait_sql(effective_rate_sql("b.configured_rate", "b.adaptive_rate"))}
    """  # noqa: S608 - a constant fragment
)
_EXPIRE_LEASES = text("DELETE FROM delivery_leases WHERE expires_at < :now")
# A due row the claim may take, of ``deliveries d``: due by :now, and a keyed delivery only
# when it heads its key (webhooks_core.deliveries.ordering; those behind a head are parked,
# out of the due indexes, but for a few handed back).
_TAKEABLE = f"""d.state IN {DUE_SQL}
              AND d.next_attempt_at IS NOT NULL AND d.next_attempt_at <= :now
              AND NOT (d.endpoint_id = ANY(:excluded))
              AND (d.ordering_key IS NULL OR ({IS_HEAD_SQL} AND {NOT_BLOCKED_SQL}))"""
_DUE_COLUMNS = (
    "d.id, d.endpoint_id, d.application_id, d.lease_expiries, d.next_attempt_at, d.ordering_key"
)


def _with_endpoints(*columns: str) -> str:
    """The rows of ``due`` with what the plan needs of their endpoints, oldest first (and
    ``columns`` of ``due``)."""
    more = "".join(f", due.{column}" for column in columns)
    return f"""
    SELECT due.id, due.endpoint_id, due.application_id, due.lease_expiries,
           coalesce(e.max_in_flight, :default_limit) AS max_in_flight,
           e.consecutive_failures, e.circuit_open_until, e.rate_limit,
           f.max_in_flight AS adaptive_in_flight, f.rate_limit AS adaptive_rate,
           b.tokens, b.stamp, due.ordering_key, due.next_attempt_at{more}
    FROM due JOIN endpoints e ON e.id = due.endpoint_id
         LEFT JOIN endpoint_flow f ON f.endpoint_id = due.endpoint_id AND {FLOW_ON_SQL}
         LEFT JOIN endpoint_rate_buckets b ON b.endpoint_id = due.endpoint_id
    ORDER BY due.next_attempt_at
    """  # noqa: S608 - a constant fragment


_EXCLUDED = bindparam("excluded", type_=ARRAY(UUID(as_uuid=True)))
# The due rows are read first, alone, in the due index's order and cut at the limit; only
# those are joined to their endpoints.  As one join, a planner whose statistics predate a
# mass release (all of a recovered backlog due at once) joined and sorted every due row on
# each cycle: 231,000 of them in the benchmark, PostgreSQL at a full core.
#
# Each application's oldest, not the oldest of all: ``active`` walks
# ix_deliveries_due_application (one descent per application with due rows, however long
# its backlog) for each application's first due time; ``chosen`` keeps the
# ``:applications`` that have waited longest, leaving out those at their in-flight limit;
# each of those gets its own oldest rows, its share of the limit (at least a batch, at most
# the limit; ``share`` on each row).  Read as the oldest rows of all, one
# application's backlog of older rows filled the limit while it waited for a free slot,
# and another's deliveries, due behind it, waited for that backlog to drain (107 s in
# make chaos, and two healthy endpoints auto-disabled).
_CANDIDATES = text(
    f"""
    WITH RECURSIVE active AS ({first_due_by_application("active")}
    ), chosen AS MATERIALIZED (
        SELECT a.application_id FROM active a
        WHERE a.next_attempt_at <= :now
          AND NOT (a.application_id = ANY(:excluded_applications))
        ORDER BY a.next_attempt_at
        LIMIT :applications
    ), share AS MATERIALIZED (
        SELECT least(:limit, greatest(:batch_size, :limit / nullif(count(*), 0))) AS n
        FROM chosen
    ), due AS MATERIALIZED (
        SELECT d.*, share.n AS share
        FROM share, chosen c CROSS JOIN LATERAL (
            SELECT {_DUE_COLUMNS}
            FROM deliveries d
            WHERE d.application_id = c.application_id AND {_TAKEABLE}
            ORDER BY d.next_attempt_at
            LIMIT share.n
        ) d
    )
    {_with_endpoints("share")}
    """  # noqa: S608 - state constants
).bindparams(_EXCLUDED, bindparam("excluded_applications", type_=ARRAY(UUID(as_uuid=True))))
# The second read, for the applications whose share an endpoint filled with more rows than
# it could take (``Plan.capped``; those endpoints are now in ``:excluded``): each other
# endpoint's oldest rows, a batch at most, by ix_deliveries_due_endpoint.  The application's
# index holds its rows by time alone, so reading past the capped endpoint's backlog there
# would cost a heap read per row of that backlog on every cycle.
_SIBLINGS = text(
    f"""
    WITH due AS MATERIALIZED (
        SELECT d.*
        FROM endpoints e CROSS JOIN LATERAL (
            SELECT {_DUE_COLUMNS}
            FROM deliveries d
            WHERE d.endpoint_id = e.id AND {_TAKEABLE}
            ORDER BY d.next_attempt_at
            LIMIT :batch_size
        ) d
        WHERE e.application_id = ANY(:applications) AND NOT (e.id = ANY(:excluded))
        ORDER BY d.next_attempt_at
        LIMIT :limit
    )
    {_with_endpoints()}
    """  # noqa: S608 - state constants
).bindparams(_EXCLUDED, bindparam("applications", type_=ARRAY(UUID(as_uuid=True))))
# One round trip: lease the chosen rows (skipping any another transaction holds) and write
# one delivery_leases row per batch that got at least one of them.
_LEASE = text(
    f"""
    WITH leased AS (
        UPDATE deliveries AS d
        SET state = {SENDING_SQL}, lease_token = v.token, lease_expires_at = :until,
            updated_at = now()
        FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS uuid[])) AS v(id, token)
        WHERE d.id = v.id AND d.id IN (
            SELECT id FROM deliveries
            WHERE id = ANY(CAST(:ids AS bigint[])) AND state IN {DUE_SQL}
              AND (next_attempt_at <= :now OR next_attempt_at IS NULL)  -- or parked, in a run
            FOR UPDATE SKIP LOCKED)
        RETURNING d.id, d.lease_token, d.endpoint_id, d.application_id
    ), batches AS (
        INSERT INTO delivery_leases (token, endpoint_id, application_id, expires_at)
        SELECT DISTINCT lease_token, endpoint_id, application_id, CAST(:until AS timestamptz)
        FROM leased
    )
    SELECT id FROM leased
    """  # noqa: S608 - state constants
)
# Batches whose task never reached the broker go back at once, and uncounted: their lease
# did not run out in a worker.  By id (no index on lease_token), then the token re-checked.
_RELEASE = text(
    f"""
    WITH released AS (
        UPDATE deliveries
        SET state = {RELEASED_STATE_SQL},
            next_attempt_at = :now, lease_token = NULL, lease_expires_at = NULL,
            updated_at = now()
        WHERE id = ANY(CAST(:ids AS bigint[])) AND lease_token = ANY(CAST(:tokens AS uuid[]))
          AND state = {SENDING_SQL}
        RETURNING id
    ), freed AS (
        DELETE FROM delivery_leases WHERE token = ANY(CAST(:tokens AS uuid[]))
    )
    SELECT id FROM released
    """  # noqa: S608 - state constants
)
# Each expiry is counted; the one that reaches the limit ends the delivery instead (the
# SET expressions read the row's old values).  A recorded attempt resets the count (a
# trigger, see migration 0005).
_EXPIRE = text(
    f"""
    UPDATE deliveries
    SET lease_expiries = lease_expiries + 1,
        state = CASE WHEN lease_expiries + 1 >= :max_expiries THEN {DEAD_SQL}
                     ELSE {RELEASED_STATE_SQL} END,
        next_attempt_at = CASE WHEN lease_expiries + 1 >= :max_expiries THEN NULL
                               ELSE CAST(:now AS timestamptz) END,
        last_error = CASE WHEN lease_expiries + 1 >= :max_expiries THEN :reason
                          ELSE last_error END,
        lease_token = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE state = {SENDING_SQL} AND lease_expires_at < :now
    RETURNING id, state
    """  # noqa: S608 - state constants
)


def claim_applications(settings: DeliverySettings) -> int:
    """How many applications one claim reads due rows of: enough for each to fill a batch
    of the claim limit's rows (20 with the defaults).  The ones that waited longest go first;
    the others, in a later cycle."""
    return max(1, -(-settings.scheduler_claim_limit // settings.delivery_batch_size))


def claim_due(session: Session, settings: DeliverySettings, now: datetime) -> list[Claim]:
    """Lease due deliveries into batches (see the module doc); the caller commits."""
    return claim_cycle(session, settings, now).claims


def _due_row(row: Any, settings: DeliverySettings, now: datetime) -> DueRow:
    failures, open_until = row.consecutive_failures, row.circuit_open_until
    return DueRow(
        row.id,
        row.endpoint_id,
        row.application_id,
        max_in_flight=effective_in_flight(row.max_in_flight, row.adaptive_in_flight),
        lease_expiries=row.lease_expiries,
        failing=failures > 0,
        half_open=is_half_open(failures, open_until, settings.circuit_breaker_threshold, now),
        rate_limit=effective_rate(row.rate_limit, row.adaptive_rate),
    )


def claim_cycle(session: Session, settings: DeliverySettings, now: datetime) -> ClaimResult:
    """:func:`claim_due`, also telling whether endpoints at their limit held work back.

    Three round trips: what is in flight (taking the claim lock), the due rows, the lease;
    :func:`~webhooks_core.deliveries.planning.plan_batches` decides in between.  A fourth
    when an endpoint filled its application's share with rows it could not all take: the
    other endpoints' oldest rows of that application (:data:`_SIBLINGS`), then the plan
    again over both reads.  A fifth when keyed deliveries were planned: the runs that
    follow their keys' heads (:mod:`webhooks_core.deliveries.ordering`).
    """
    default_limit = settings.endpoint_max_in_flight
    in_flight: Iterable[tuple[str, uuid.UUID, int, int]] = session.execute(
        _IN_FLIGHT,
        {
            "key": CLAIM_LOCK_KEY,
            "default_limit": default_limit,
            "application_limit": settings.application_max_in_flight,
            "now": now,
            "batch_size": settings.delivery_batch_size,
        },
    )
    capacity = read_capacity(in_flight, settings.application_max_in_flight)
    excluded = list(capacity.excluded_endpoints)
    params = {
        "now": now,
        "excluded": excluded,
        "limit": settings.scheduler_claim_limit,
        "batch_size": settings.delivery_batch_size,
        "default_limit": default_limit,
    }
    rows: list[Any] = list(
        session.execute(
            _CANDIDATES,
            {
                **params,
                "excluded_applications": list(capacity.full_applications),
                "applications": claim_applications(settings),
            },
        )
    )
    buckets, due_rows, plan = _plan(rows, capacity, settings, now)
    filled = _filled_applications(rows, plan.capped)
    if filled:
        # An endpoint took part of its application's share, and the rest of the share was
        # its own rows too: the application's other endpoints may have due rows behind
        # them.  Read those and plan both reads together.
        params["excluded"] = excluded + list(plan.capped)
        seen = {row.id for row in rows}
        more = session.execute(_SIBLINGS, {**params, "applications": filled})
        rows += [row for row in more if row.id not in seen]
        rows.sort(key=lambda row: row.next_attempt_at)
        buckets, due_rows, plan = _plan(rows, capacity, settings, now)
    save_buckets(session, buckets)
    batches = [b.delivery_ids for b in plan.batches]
    runs, keys = key_runs(session, rows, due_rows, batches, settings.delivery_batch_size, now)
    filled_batches = fill_batches(batches, runs, settings.delivery_batch_size)
    claims = [
        Claim(uuid.uuid4(), b.endpoint_id, ids)
        for b, ids in zip(plan.batches, filled_batches, strict=True)
    ]
    return ClaimResult(_lease(session, claims, settings, now, keys), plan.saturated, plan.wake_in)


def _plan(
    rows: list[Any], capacity: Capacity, settings: DeliverySettings, now: datetime
) -> tuple[RateLimiter, list[DueRow], Plan]:
    """The plan of ``rows``, with the rate buckets it read and spent (to save)."""
    buckets = RateLimiter(now.timestamp, stored_buckets(rows))
    due_rows = [_due_row(row, settings, now) for row in rows]
    plan = plan_batches(due_rows, capacity, settings.delivery_batch_size, buckets)
    return buckets, due_rows, plan


def _filled_applications(rows: list[Any], capped: frozenset[uuid.UUID]) -> list[uuid.UUID]:
    """The applications whose share of the read was all read (more rows may be due) and
    that have an endpoint left with rows it could not take."""
    read: dict[uuid.UUID, int] = {}
    for row in rows:
        read[row.application_id] = read.get(row.application_id, 0) + 1
    apps = {row.application_id for row in rows if row.endpoint_id in capped}
    return [app for app in apps if read[app] >= rows[0].share]


def _lease(
    session: Session,
    claims: list[Claim],
    settings: DeliverySettings,
    now: datetime,
    keys: dict[int, str | None] | None = None,
) -> list[Claim]:
    """Lease the claims' rows in one round trip; the claims of the rows that were leased."""
    if not claims:
        return claims
    ids = [i for claim in claims for i in claim.delivery_ids]
    tokens = [str(claim.lease_token) for claim in claims for _ in claim.delivery_ids]
    until = now + timedelta(seconds=settings.lease_seconds)
    leased = set(
        session.scalars(_LEASE, {"ids": ids, "tokens": tokens, "until": until, "now": now})
    )
    if len(leased) == len(ids):
        return claims
    # A key's later delivery leased without an earlier one of its batch would overtake it.
    leased = unlease_broken_runs(session, claims, leased, keys or {}, now)
    # Rows being changed by someone else (a replay, a cancel): left for next time.
    kept = [
        Claim(c.lease_token, c.endpoint_id, [i for i in c.delivery_ids if i in leased])
        for c in claims
    ]
    return [c for c in kept if c.delivery_ids]


def expire_leases(session: Session, settings: DeliverySettings, now: datetime) -> Expiry:
    """Make deliveries whose lease ran out due again; the caller commits, then publishes
    the returned dead letters.

    A lease runs out when its worker died mid-batch (or its task was never published).  The
    receiver may or may not have got the request: sending again is what at-least-once means,
    and ``webhook-id`` lets the receiver drop the duplicate.  A delivery whose lease runs out
    ``max_lease_expiries`` times in a row with no attempt recorded kills or wedges every
    worker that takes it: it is dead-lettered, with that reason, instead of looping for ever.
    """
    limit = settings.max_lease_expiries
    reason = f"lease expired {limit} times without a recorded attempt (poison delivery)"
    session.execute(_EXPIRE_LEASES, {"now": now})
    rows = session.execute(_EXPIRE, {"now": now, "max_expiries": limit, "reason": reason}).all()
    released = [i for i, state in rows if state != DeliveryState.DEAD]
    dead = [i for i, state in rows if state == DeliveryState.DEAD]
    records: list[dict[str, Any]] = []
    if dead:
        # The same dead letters as the engine's (retries exhausted), with this reason.
        records = [
            _dead_letter_body(dict(row))
            for row in session.execute(_DEAD_LETTER, {"ids": dead}).mappings()
        ]
    return Expiry(released, records)


def release_claims(session: Session, claims: list[Claim], now: datetime) -> list[int]:
    """Make the deliveries of batches that were never published due again; the caller
    commits.

    Not a lease expiry: nothing was handed to a worker, so it is not counted towards a
    poison delivery (a broker outage longer than a few leases would otherwise dead-letter
    every delivery the scheduler claimed meanwhile).
    """
    if not claims:
        return []
    params = {
        "ids": [i for claim in claims for i in claim.delivery_ids],
        "tokens": [str(claim.lease_token) for claim in claims],
        "now": now,
    }
    return list(session.scalars(_RELEASE, params))
