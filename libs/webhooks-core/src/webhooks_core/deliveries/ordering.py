"""Ordered delivery per key: the one home of the rule, as SQL for the claim and as pure code.

A message may carry an ``ordering_key``; fan-out copies it to each of its deliveries.  For
one endpoint, the deliveries with the same key go in acceptance order (delivery id order),
one key's at a time, while different keys (and unkeyed deliveries) go side by side:

* **the head rule** (:data:`IS_HEAD_SQL`, :data:`NOT_BLOCKED_SQL`): a keyed delivery may
  be claimed only when no delivery of the same endpoint and key with a smaller id is open
  (``pending``, ``sending``, ``retrying``), nor, when the endpoint's ``key_failure_policy``
  is ``block``, ``dead`` (its dead letter open: a redrive is what makes it ``pending``
  again).  Under ``skip`` (the default) a dead delivery no longer holds its key back;
* **parking** (:func:`first_due_at`, :data:`FIRST_DUE_SQL`, :data:`PARKED_SQL`): a keyed
  delivery created behind an open one of its key, or handed back behind its key's failed
  head, waits *parked* (``pending``/``retrying`` with no ``next_attempt_at``), out of the
  claim's due index, so a claim reads only the deliveries that may go: its cost follows
  what is due, not how many keys are open or how long their backlogs are;
* **waking** (:data:`WAKE_KEYS_SQL`, :data:`SWEEP_PARKED_SQL`): when a batch is recorded,
  the first parked delivery of each of its keys becomes due if it now heads its key (the
  recording takes the keys' locks first, the ones fan-out parks under, so a delivery is
  never parked behind a head that has just ended).  The scheduler's sweep does the same for
  every key in turn, for the paths that end a delivery without waking its key (a lease
  that ran out into a dead letter, a cancel, a retention delete).  Parking is a hint for
  the claim's cost, never its correctness: the head rule is checked on every claim;
* **runs** (:func:`run_limits`, :data:`RUNS_SQL`, :func:`fill_batches`): the claim takes,
  after a key's head,
  the next deliveries of that key that are due or parked, consecutive and never leased
  before (a delivery whose lease ran out goes alone), into the head's batch.  A batch is
  sent in id order per endpoint, one request after another, so a run keeps its order;
* **the worker** (:func:`holds_key`) stops sending a key within a batch at its first
  attempt that did not deliver, and parks the rest of that key unattempted: they wait
  behind their head, which retries by its schedule;
* **acceptance order is commit order** (:func:`lock_ordering_keys`): storing a keyed message
  takes a transaction lock on its key, so a key's messages commit in id order;
* a run whose lease skipped one of its rows (another transaction held it) is cut before
  that row (:func:`broken_runs`), so no later delivery of a key goes without an earlier one.

The fragments interpolate only fixed state values (:mod:`.states`), never input.
"""

from __future__ import annotations

import enum
import math
import unicodedata
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, exists, func, null, or_, text
from sqlalchemy.orm import QueryableAttribute, Session, aliased

from webhooks_core.deliveries.states import DEAD_SQL, DUE_SQL, OPEN_SQL, OPEN_STATES
from webhooks_core.models import Delivery

ORDERING_KEY_MAX_LENGTH = 256
_Column = ColumnElement[Any] | QueryableAttribute[Any]


class KeyFailurePolicy(enum.StrEnum):
    """What a dead-lettered head does to the rest of its key."""

    SKIP = "skip"  # the key moves on to its next delivery
    BLOCK = "block"  # the key waits until the dead letter is redriven (or resent)


KEY_FAILURE_POLICIES = tuple(p.value for p in KeyFailurePolicy)
_BLOCK_SQL = f"'{KeyFailurePolicy.BLOCK.value}'"


def check_ordering_key(value: str) -> str:
    """``value`` if it is a valid ordering key: 1 to 256 printable characters (no control,
    separator other than the space, or unassigned characters); raises ``ValueError``."""
    if not 1 <= len(value) <= ORDERING_KEY_MAX_LENGTH:
        raise ValueError(f"an ordering key has 1 to {ORDERING_KEY_MAX_LENGTH} characters")
    for char in value:
        if char != " " and unicodedata.category(char)[0] in "CZ":
            raise ValueError(f"an ordering key has only printable characters, not {char!r}")
    return value


def parked_sql(alias: str) -> str:
    """Over the deliveries row ``alias``: true when it is parked (see the module doc): keyed,
    due by its state, with no time to be due at.  Only a parked delivery has both."""
    return (
        f"{alias}.ordering_key IS NOT NULL AND {alias}.state IN {DUE_SQL}"
        f" AND {alias}.next_attempt_at IS NULL"
    )


# Over a keyed delivery ``d``: true when no earlier delivery of its endpoint and key is open
# (one probe of ix_deliveries_ordering_open).
IS_HEAD_SQL = f"""NOT EXISTS (
    SELECT 1 FROM deliveries o
    WHERE o.endpoint_id = d.endpoint_id AND o.ordering_key = d.ordering_key
      AND o.id < d.id AND o.state IN {OPEN_SQL})"""  # noqa: S608 - constants

# Over a key's head ``d``: true unless, under the endpoint's ``block`` policy, an earlier
# dead delivery of its key holds it (one probe of ix_deliveries_ordering_dead).
NOT_BLOCKED_SQL = f"""NOT EXISTS (
    SELECT 1 FROM deliveries o JOIN endpoints pe ON pe.id = o.endpoint_id
    WHERE o.endpoint_id = d.endpoint_id AND o.ordering_key = d.ordering_key
      AND o.id < d.id AND o.state = {DEAD_SQL}
      AND pe.key_failure_policy = {_BLOCK_SQL})"""  # noqa: S608 - constants


def first_due_sql(endpoint: str, key: str) -> str:
    """When a new delivery to ``endpoint`` with ``key`` (SQL expressions) is due: now, or
    never (parked) while an open delivery of its endpoint and key exists (an earlier one: a
    key's deliveries are created under its lock, in id order)."""
    return f"""CASE WHEN {key} IS NOT NULL AND EXISTS (
        SELECT 1 FROM deliveries o
        WHERE o.endpoint_id = {endpoint} AND o.ordering_key = {key} AND o.state IN {OPEN_SQL})
        THEN NULL ELSE now() END"""  # noqa: S608 - the caller's column names


def first_due_at(
    endpoint_id: _Column,
    ordering_key: _Column,
    earlier_in_statement: ColumnElement[bool] | None = None,
) -> ColumnElement[Any]:
    """:func:`first_due_sql` as an expression, for statements built with SQLAlchemy.

    ``earlier_in_statement``: true for a row that an earlier row of the same INSERT, of its
    endpoint and key, precedes (a statement does not see its own rows).
    """
    other = aliased(Delivery)
    waits: ColumnElement[bool] = exists().where(
        other.endpoint_id == endpoint_id,
        other.ordering_key == ordering_key,
        other.state.in_(OPEN_STATES),
    )
    if earlier_in_statement is not None:
        waits = or_(earlier_in_statement, waits)
    return case((and_(ordering_key.is_not(None), waits), null()), else_=func.now())


# Waking: the first parked delivery of each key of ``keys`` (a CTE of endpoint_id,
# ordering_key) becomes due at ``:now`` when it now heads its key and is not blocked.
_WAKE = f"""
, first_parked AS (
    SELECT p.id FROM keys k CROSS JOIN LATERAL (
        SELECT o.id FROM deliveries o
        WHERE o.endpoint_id = k.endpoint_id AND o.ordering_key = k.ordering_key
          AND {parked_sql("o")}
        ORDER BY o.id LIMIT 1) p
), woken AS (
    UPDATE deliveries d SET next_attempt_at = :now
    FROM first_parked f
    WHERE d.id = f.id AND {parked_sql("d")} AND {IS_HEAD_SQL} AND {NOT_BLOCKED_SQL}
    RETURNING d.id
)
"""  # noqa: S608 - constants
# For the keys ``:endpoints`` x ``:keys`` (pairwise), whose locks the caller holds: the ids
# woken.
WAKE_KEYS_SQL = f"""
WITH keys AS (
    SELECT DISTINCT endpoint_id, ordering_key
    FROM unnest(CAST(:endpoints AS uuid[]), CAST(:keys AS text[])) AS k(endpoint_id, ordering_key)
) {_WAKE}
SELECT id FROM woken
"""  # noqa: S608 - constants
# The sweep: the same for at most ``:window`` keys that have parked deliveries, in (endpoint,
# key) order after (``:after_endpoint``, ``:after_key``), read by a loose scan of
# ix_deliveries_parked (one descent per key, however long its backlog).  Returns how many
# were woken, how many keys were looked at and the last of them (where the next sweep goes
# on).  No lock: waking only ever makes due a delivery that heads its key now, and the claim
# checks the head rule again.
SWEEP_PARKED_SQL = f"""
WITH RECURSIVE parked_keys(endpoint_id, ordering_key, n) AS (
    (SELECT o.endpoint_id, o.ordering_key, 1 FROM deliveries o
     WHERE {parked_sql("o")}
       AND (o.endpoint_id, o.ordering_key)
           > (CAST(:after_endpoint AS uuid), CAST(:after_key AS text))
     ORDER BY o.endpoint_id, o.ordering_key LIMIT 1)
    UNION ALL
    SELECT n.endpoint_id, n.ordering_key, k.n + 1
    FROM parked_keys k CROSS JOIN LATERAL (
        SELECT o.endpoint_id, o.ordering_key FROM deliveries o
        WHERE {parked_sql("o")}
          AND (o.endpoint_id, o.ordering_key) > (k.endpoint_id, k.ordering_key)
        ORDER BY o.endpoint_id, o.ordering_key LIMIT 1) n
    WHERE k.n < :window
), keys AS (SELECT endpoint_id, ordering_key FROM parked_keys) {_WAKE}
SELECT (SELECT count(*) FROM woken) AS woken, (SELECT count(*) FROM keys) AS keys,
       last.endpoint_id, last.ordering_key
FROM (SELECT 1) one LEFT JOIN LATERAL (
    SELECT endpoint_id, ordering_key FROM parked_keys ORDER BY n DESC LIMIT 1) last ON true
"""  # noqa: S608 - constants
# Where a sweep starts when none was made before: before every (endpoint, key).
KEYS_START = ("00000000-0000-0000-0000-000000000000", "")
_WAKE_KEYS = text(WAKE_KEYS_SQL)

# The runs that may follow claimed heads: for each head of ``:heads`` (its endpoint and key
# in ``:endpoints`` and ``:keys``, its limit in ``:limits``), the ids of its key's next open
# deliveries (and, under ``block``, the next dead one, which ends the run) in id order, each
# with whether it may join the head's batch.
RUNS_SQL = f"""
SELECT hd.id AS head_id, r.run_ids, r.run_ok
FROM unnest(CAST(:heads AS bigint[]), CAST(:endpoints AS uuid[]), CAST(:keys AS text[]),
            CAST(:limits AS int[])) AS hd(id, endpoint_id, ordering_key, n)
JOIN endpoints e ON e.id = hd.endpoint_id
CROSS JOIN LATERAL (
    SELECT array_agg(x.id ORDER BY x.id) AS run_ids, array_agg(x.ok ORDER BY x.id) AS run_ok
    FROM (
        (SELECT o.id, o.state IN {DUE_SQL} AND o.lease_expiries = 0
                      AND (o.next_attempt_at <= :now OR o.next_attempt_at IS NULL) AS ok
         FROM deliveries o
         WHERE o.endpoint_id = hd.endpoint_id AND o.ordering_key = hd.ordering_key
           AND o.id > hd.id AND o.state IN {OPEN_SQL}
         ORDER BY o.id LIMIT hd.n)
        UNION ALL
        (SELECT o.id, false
         FROM deliveries o
         WHERE e.key_failure_policy = {_BLOCK_SQL} AND o.endpoint_id = hd.endpoint_id
           AND o.ordering_key = hd.ordering_key AND o.id > hd.id AND o.state = {DEAD_SQL}
         ORDER BY o.id LIMIT 1)
    ) x
) r
"""  # noqa: S608 - constants


def run_limits(
    batches: Sequence[Sequence[int]], heads: Iterable[int], batch_size: int
) -> dict[int, int]:
    """How many deliveries to read after each head in ``heads`` (those that may have a run):
    its share of the room its batch has left (at least one when there is room)."""
    may = set(heads)
    limits: dict[int, int] = {}
    for batch in batches:
        keyed = [i for i in batch if i in may]
        room = batch_size - len(batch)
        if keyed and room > 0:
            share = max(math.ceil(room / len(keyed)), 1)
            limits.update(dict.fromkeys(keyed, share))
    return limits


def wake_keys(session: Session, keys: Sequence[tuple[uuid.UUID, str]], now: datetime) -> list[int]:
    """Make due the first parked delivery of each of ``keys`` (endpoint id, ordering key)
    that now heads its key (:data:`WAKE_KEYS_SQL`); the ids woken.  The caller took the
    keys' locks (:func:`lock_ordering_keys`) in an earlier statement of its transaction,
    before anything else: then a delivery parked by a fan-out that held them is seen here."""
    if not keys:
        return []
    params = {
        "endpoints": [str(endpoint) for endpoint, _ in keys],
        "keys": [key for _, key in keys],
        "now": now,
    }
    return list(session.scalars(_WAKE_KEYS, params))


# Transaction locks on ordering keys, taken (in sorted order) before a keyed message is
# stored and held until its transaction commits: two transactions storing messages of one key
# commit in the order they drew their ids, so acceptance order (id order) is also the order
# in which the messages became visible.  Without it, a message of a key committed after a
# later-numbered one could be claimed after it.  The lock space is the key's text, shared
# by every application (a broadcast reaches them all); idempotency-key locks, when a request
# takes both, come first.
_LOCK_KEYS = text(
    "SELECT pg_advisory_xact_lock(hashtextextended('ordering:' || k, 0))"
    " FROM unnest(CAST(:keys AS text[])) AS k"
)


def lock_ordering_keys(session: Session, keys: Iterable[str | None]) -> None:
    """Take the transaction locks of ``keys`` (None ignored), in sorted order, in one round
    trip; nothing when there is none.  Re-entrant: taking one again is harmless."""
    wanted = sorted({key for key in keys if key is not None})
    if wanted:
        session.execute(_LOCK_KEYS, {"keys": wanted})


def run_after(ids: Sequence[int] | None, ok: Sequence[bool] | None) -> list[int]:
    """The ids that may follow a head in its batch: those before the first that may not."""
    taken: list[int] = []
    for delivery_id, may in zip(ids or (), ok or (), strict=True):
        if not may:
            break
        taken.append(delivery_id)
    return taken


def fill_batches(
    batches: Sequence[Sequence[int]], runs: Mapping[int, Sequence[int]], batch_size: int
) -> list[list[int]]:
    """Each batch's ids with its heads' runs added, up to ``batch_size`` ids a batch.

    ``runs`` maps a head's id to the ids that may follow it (oldest first).  The room left
    in a batch goes round the heads one delivery at a time, so every key moves on.  A run
    is always a prefix: a key never gets a later delivery without the earlier ones.
    """
    filled: list[list[int]] = []
    for batch in batches:
        ids = list(batch)
        pending = [list(runs[i]) for i in batch if runs.get(i)]
        room = batch_size - len(ids)
        while room > 0 and pending:
            for run in list(pending):
                if room <= 0:
                    break
                ids.append(run.pop(0))
                room -= 1
                if not run:
                    pending.remove(run)
        filled.append(sorted(ids))
    return filled


def broken_runs(
    batches: Iterable[Sequence[int]], leased: set[int], keys: Mapping[int, str | None]
) -> set[int]:
    """The leased ids to hand back because an earlier delivery of their key in the same batch
    was not leased (another transaction held it): sent without it, they would overtake it."""
    back: set[int] = set()
    for batch in batches:
        missing: set[str] = set()
        for delivery_id in sorted(batch):
            key = keys.get(delivery_id)
            if key is None:
                continue
            if delivery_id not in leased:
                missing.add(key)
            elif key in missing:
                back.add(delivery_id)
    return back


def holds_key(state: str, delivered: str) -> bool:
    """Whether a keyed delivery's new ``state`` stops the rest of its key in the batch:
    anything but ``delivered`` does (its later deliveries wait for it)."""
    return state != delivered


# The keys of one endpoint (``:endpoint_id``) that wait: their head (oldest open delivery)
# failed and waits for its retry, or, under ``block``, a dead delivery holds them.  One row
# per key (at most ``:limit``, the longest waiting first) with its head and what queues
# behind it; the undelivered view lists the deliveries themselves.
WAITING_KEYS_SQL = f"""
WITH heads AS (
    SELECT DISTINCT ON (d.ordering_key) d.ordering_key, d.id, d.state, d.next_attempt_at,
           d.attempt_count, d.last_error, d.created_at
    FROM deliveries d
    WHERE d.endpoint_id = :endpoint_id AND d.ordering_key IS NOT NULL AND d.state IN {OPEN_SQL}
    ORDER BY d.ordering_key, d.id
), judged AS (
    SELECT h.*,
           (SELECT min(o.id) FROM deliveries o JOIN endpoints pe ON pe.id = o.endpoint_id
            WHERE o.endpoint_id = :endpoint_id AND o.ordering_key = h.ordering_key
              AND o.id < h.id AND o.state = {DEAD_SQL}
              AND pe.key_failure_policy = {_BLOCK_SQL}) AS blocked_by
    FROM heads h
)
SELECT j.ordering_key, j.id AS head_delivery_id, j.state AS head_state, j.next_attempt_at,
       j.attempt_count, j.last_error, j.blocked_by, j.created_at,
       (SELECT count(*) FROM deliveries o
        WHERE o.endpoint_id = :endpoint_id AND o.ordering_key = j.ordering_key
          AND o.state IN {OPEN_SQL}) AS open_deliveries,
       count(*) OVER () AS keys_waiting
FROM judged j
WHERE j.blocked_by IS NOT NULL OR j.state = 'retrying'
ORDER BY j.created_at, j.ordering_key
LIMIT :limit
"""  # noqa: S608 - constants
