"""The ordering rule in the claim: the runs that follow keys' heads, and runs the lease broke.

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
    KEY_HEADS_SQL,
    KEYS_START,
    RUNS_SQL,
    broken_runs,
    run_after,
    run_limits,
)
from webhooks_core.deliveries.planning import DueRow
from webhooks_core.deliveries.states import RELEASED_STATE_SQL, SENDING_SQL

_RUNS = text(RUNS_SQL)
_KEY_HEADS = text(KEY_HEADS_SQL)


class KeyWindow:
    """Which ordering keys' heads a claim looks at: ``window`` keys at a time, in (endpoint,
    key) order, each claim after the last one's, back to the start after the end.

    A claim's cost stays bounded however many keys are open, and every key's head is
    looked at within ``open keys / window`` claims.  The position is this process's (each
    scheduler turns its own); it is only where to look next, never a correctness matter:
    whichever heads a claim sees, only heads are claimed.
    """

    def __init__(self) -> None:
        self._after: tuple[str, str] = KEYS_START

    def heads(self, session: Session, window: int) -> list[int]:
        """The ids of the heads of the next ``window`` open keys (due or not)."""
        endpoint, key = self._after
        rows = session.execute(
            _KEY_HEADS, {"after_endpoint": endpoint, "after_key": key, "window": window}
        ).all()
        self._after = (str(rows[-1][0]), rows[-1][1]) if len(rows) >= window else KEYS_START
        return [row[2] for row in rows]


KEY_WINDOW = KeyWindow()
# Leased rows handed back within the claim's transaction (a key's run cut short), and the
# delivery_leases rows of batches left with nothing (else they would hold a slot until they
# expire; a batch left with some rows frees its rows when it is recorded).
_UNLEASE = text(
    f"""
    WITH unleased AS (
        UPDATE deliveries
        SET state = {RELEASED_STATE_SQL}, next_attempt_at = :now, lease_token = NULL,
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
