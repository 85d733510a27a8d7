"""The ordering rule in the scheduler: the runs that follow keys' heads, runs the lease broke,
and the sweep that wakes parked deliveries.

The rule itself (which delivery heads its key, how far a run may go, when a run is broken)
is :mod:`webhooks_core.deliveries.ordering`; this is the claim's use of it, in the claim's
transaction (:mod:`delivery.scheduling`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.orm import Session

from webhooks_core.deliveries.ordering import (
    KEYS_START,
    RUNS_SQL,
    SWEEP_PARKED_SQL,
    broken_runs,
    run_after,
    run_limits,
)
from webhooks_core.deliveries.planning import DueRow
from webhooks_core.deliveries.states import RELEASED_STATE_SQL, SENDING_SQL

_RUNS = text(RUNS_SQL)
_SWEEP = text(SWEEP_PARKED_SQL)


class ParkedSweep:
    """Wakes parked deliveries whose key's head has ended, ``window`` keys at a time, in
    (endpoint, key) order, each sweep after the last one's, back to the start after the end.

    The recording of a batch wakes its own keys; this is for the paths that end a delivery
    without waking its key (a lease run out into a dead letter, a cancel, a replay, a
    retention delete, a batch recorded one delivery at a time).  Only keys with parked
    deliveries are read, so a sweep's cost follows the backlogs, not the open keys.  The
    position is this process's (each scheduler turns its own); it is only where to look
    next, never a correctness matter.
    """

    def __init__(self) -> None:
        self._after: tuple[str, str] = KEYS_START

    def sweep(self, session: Session, window: int, now: datetime) -> int:
        """Look at the next ``window`` keys with parked deliveries; how many were woken."""
        endpoint, key = self._after
        row = session.execute(
            _SWEEP,
            {"after_endpoint": endpoint, "after_key": key, "window": window, "now": now},
        ).one()
        if row.keys >= window and row.endpoint_id is not None:
            self._after = (str(row.endpoint_id), row.ordering_key)
        else:
            self._after = KEYS_START
        return int(row.woken)


# Leased rows handed back within the claim's transaction (a key's run cut short: parked
# again, behind the row the lease skipped), and the
# delivery_leases rows of batches left with nothing (else they would hold a slot until they
# expire; a batch left with some rows frees its rows when it is recorded).
_UNLEASE = text(
    f"""
    WITH unleased AS (
        UPDATE deliveries
        SET state = {RELEASED_STATE_SQL}, next_attempt_at = NULL, lease_token = NULL,
            lease_expires_at = NULL
        WHERE id = ANY(CAST(:ids AS bigint[])) AND state = {SENDING_SQL}
        RETURNING id
    ), freed AS (
        DELETE FROM delivery_leases WHERE token = ANY(CAST(:emptied AS uuid[]))
    )
    SELECT count(*) FROM unleased
    """  # noqa: S608 - state constants
)


class _Leasing(Protocol):
    """A claimed batch (:class:`delivery.scheduling.Claim`), as far as this module reads it."""

    @property
    def lease_token(self) -> uuid.UUID: ...

    @property
    def delivery_ids(self) -> list[int]: ...


def key_runs(
    session: Session,
    rows: Sequence[Any],
    due_rows: Sequence[DueRow],
    batches: Sequence[Sequence[int]],
    batch_size: int,
    now: datetime,
) -> tuple[dict[int, list[int]], dict[int, str | None]]:
    """The runs that may follow the planned heads of keys (webhooks_core.deliveries.ordering),
    read in one more round trip when there are any, and the key of every keyed id.  No run
    for a delivery whose lease ran out before (it goes alone), a half-open probe (one
    delivery) or a rate-limited endpoint (its tokens were counted for the heads)."""
    keys: dict[int, str | None] = {}
    endpoints: dict[int, str] = {}
    for row, due in zip(rows, due_rows, strict=True):
        key = row.ordering_key
        if key is None:
            continue
        keys[due.delivery_id] = key
        if not (due.lease_expiries or due.half_open or due.rate_limit):
            endpoints[due.delivery_id] = str(due.endpoint_id)
    limits = run_limits(batches, endpoints, batch_size)
    if not limits:
        return {}, keys
    runs: dict[int, list[int]] = {}
    params = {
        "heads": list(limits),
        "endpoints": [endpoints[head] for head in limits],
        "keys": [keys[head] for head in limits],
        "limits": list(limits.values()),
        "now": now,
    }
    for head, run_ids, run_ok in session.execute(_RUNS, params):
        runs[head] = run_after(run_ids, run_ok)
        keys.update(dict.fromkeys(runs[head], keys[head]))
    return runs, keys


def unlease_broken_runs(
    session: Session,
    claims: Sequence[_Leasing],
    leased: set[int],
    keys: dict[int, str | None],
    now: datetime,
) -> set[int]:
    """The leased ids less those handed back: a key's later delivery leased without an
    earlier one of its batch (a row another transaction held) would overtake it."""
    back = broken_runs([c.delivery_ids for c in claims], leased, keys)
    if not back:
        return leased
    leased = leased - back
    emptied = [str(c.lease_token) for c in claims if not leased.intersection(c.delivery_ids)]
    session.execute(_UNLEASE, {"ids": list(back), "now": now, "emptied": emptied})
    return leased
