"""Ordered delivery per key: the one home of the rule, as SQL for the claim and as pure code.

A message may carry an ``ordering_key``; fan-out copies it to each of its deliveries.  For
one endpoint, the deliveries with the same key go in acceptance order (delivery id order),
one key's at a time, while different keys (and unkeyed deliveries) go side by side:

* **the head rule** (:data:`KEY_HEADS_SQL`, :data:`NOT_BLOCKED_SQL`): a keyed delivery may
  be claimed only when no
  delivery of the same endpoint and key with a smaller id is open (``pending``,
  ``sending``, ``retrying``), nor, when the endpoint's ``key_failure_policy`` is
  ``block``, ``dead`` (its dead letter open: a redrive is what makes it ``pending`` again).
  Under ``skip`` (the default) a dead delivery no longer holds its key back;
* **runs** (:func:`run_limits`, :data:`RUNS_SQL`, :func:`fill_batches`): the claim takes,
  after a key's head,
  the next deliveries of that key that are due too, consecutive and never leased before
  (a delivery whose lease ran out goes alone), into the head's batch.  A batch is sent in
  id order per endpoint, one request after another, so a run keeps its order;
* **the worker** (:func:`holds_key`) stops sending a key within a batch at its first
  attempt that did not deliver, and releases the rest of that key unattempted: they wait
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
from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import text
from sqlalchemy.orm import Session

from webhooks_core.deliveries.states import DEAD_SQL, DUE_SQL, OPEN_SQL

ORDERING_KEY_MAX_LENGTH = 256


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


# The oldest open delivery of each of at most ``:window`` keys (endpoint, key), in key order
# after (``:after_endpoint``, ``:after_key``): a loose scan of the partial index
# ix_deliveries_ordering_open, one descent per key, however long each key's backlog.  (Read
# through the due rows instead, every delivery waiting behind a head would be read and
# probed on every claim: 200 ms for 20,000 of them in the benchmark.)  A claim reads one
# window and the next claim goes on after it, back to the start at the end, so a claim's
# cost is bounded however many keys are open (all of them each claim: 0.1 to 0.5 s with
# 200,000 open keys in make chaos) and every key's head is looked at in turn.
KEY_HEADS_SQL = f"""
WITH RECURSIVE key_heads(endpoint_id, ordering_key, id, n) AS (
    (SELECT o.endpoint_id, o.ordering_key, o.id, 1 FROM deliveries o
     WHERE o.ordering_key IS NOT NULL AND o.state IN {OPEN_SQL}
       AND (o.endpoint_id, o.ordering_key)
           > (CAST(:after_endpoint AS uuid), CAST(:after_key AS text))
     ORDER BY o.endpoint_id, o.ordering_key, o.id LIMIT 1)
    UNION ALL
    SELECT n.endpoint_id, n.ordering_key, n.id, k.n + 1
    FROM key_heads k CROSS JOIN LATERAL (
        SELECT o.endpoint_id, o.ordering_key, o.id FROM deliveries o
        WHERE o.ordering_key IS NOT NULL AND o.state IN {OPEN_SQL}
          AND (o.endpoint_id, o.ordering_key) > (k.endpoint_id, k.ordering_key)
        ORDER BY o.endpoint_id, o.ordering_key, o.id LIMIT 1) n
    WHERE k.n < :window
)
SELECT endpoint_id, ordering_key, id FROM key_heads ORDER BY n
"""  # noqa: S608 - constants
# Where a window of keys starts when none was read before: before every (endpoint, key).
KEYS_START = ("00000000-0000-0000-0000-000000000000", "")

# Over a key's head ``d``: true unless, under the endpoint's ``block`` policy, an earlier
# dead delivery of its key holds it (one probe of ix_deliveries_ordering_dead).
NOT_BLOCKED_SQL = f"""NOT EXISTS (
    SELECT 1 FROM deliveries o JOIN endpoints pe ON pe.id = o.endpoint_id
    WHERE o.endpoint_id = d.endpoint_id AND o.ordering_key = d.ordering_key
      AND o.id < d.id AND o.state = {DEAD_SQL}
      AND pe.key_failure_policy = {_BLOCK_SQL})"""  # noqa: S608 - constants

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
        (SELECT o.id, o.state IN {DUE_SQL} AND o.next_attempt_at <= :now
                      AND o.lease_expiries = 0 AS ok
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
