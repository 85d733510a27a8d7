# ruff: noqa: S608 - statements built from constants and dates made here, never from input
"""The day partitions of ``attempts``: made ahead, dropped when expired.

``attempts`` is partitioned by ``RANGE (started_at)``: ``attempts_pYYYYMMDD`` holds one UTC
day, ``attempts_default`` whatever no day partition covers (an insert never fails because the
retention task did not run).  A partition is made as a plain table and then attached, which
locks the parent only in ``SHARE UPDATE EXCLUSIVE`` (inserts go on); rows the default
partition caught for that day are moved into it first.  Dropping takes an ``ACCESS
EXCLUSIVE`` lock on the parent for a moment, under ``lock_timeout``: a drop that would wait
behind a long query gives up until the next run instead of queueing the engine's inserts.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.db import run_transaction
from webhooks_core.deliveries.states import OPEN_SQL

log = logging.getLogger(__name__)

PARENT = "attempts"
DEFAULT = "attempts_default"
_NAME = re.compile(r"^attempts_p(\d{8})$")
COLUMNS = (
    "id, delivery_id, endpoint_id, started_at, latency_ms, status_code, outcome, error, "
    "response_body, trigger"
)


@dataclass(frozen=True)
class DayPartition:
    """One day partition of ``attempts``."""

    day: date

    @property
    def name(self) -> str:
        return f"attempts_p{self.day:%Y%m%d}"

    @property
    def bounds(self) -> tuple[str, str]:
        end = self.day + timedelta(days=1)
        return f"{self.day.isoformat()} 00:00:00+00", f"{end.isoformat()} 00:00:00+00"


def day_partitions(session: Session) -> list[DayPartition]:
    """The day partitions attached to ``attempts``, oldest first."""
    rows = session.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'attempts'::regclass"
        )
    ).scalars()
    days = [datetime.strptime(m.group(1), "%Y%m%d").date() for r in rows if (m := _NAME.match(r))]
    return [DayPartition(day) for day in sorted(days)]


def _lock_timeout(session: Session, lock_timeout_ms: int) -> None:
    session.execute(text(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}"))


def create_partition(session: Session, partition: DayPartition, lock_timeout_ms: int) -> int:
    """Make and attach ``partition``, moving the default partition's rows of its day into
    it; the number of rows moved."""
    _lock_timeout(session, lock_timeout_ms)
    low, high = partition.bounds
    session.execute(
        text(
            f"CREATE TABLE {partition.name} (LIKE {PARENT} INCLUDING DEFAULTS"
            " INCLUDING CONSTRAINTS)"
        )
    )
    moved = session.execute(
        text(
            f"WITH moved AS (DELETE FROM {DEFAULT} WHERE started_at >= :low AND started_at < :high "
            f"RETURNING {COLUMNS}) INSERT INTO {partition.name} ({COLUMNS}) "
            f"SELECT {COLUMNS} FROM moved"
        ),
        {"low": low, "high": high},
    ).rowcount  # type: ignore[attr-defined]
    session.execute(
        text(
            f"ALTER TABLE {PARENT} ATTACH PARTITION {partition.name} "
            f"FOR VALUES FROM ('{low}') TO ('{high}')"
        )
    )
    return int(moved or 0)


def ensure_ahead(
    sessions: sessionmaker[Session], today: date, ahead_days: int, lock_timeout_ms: int
) -> list[DayPartition]:
    """Make the missing day partitions from yesterday to ``ahead_days`` after ``today``, and
    those of the days the default partition caught (moving its rows into them)."""
    existing = {p.day for p in run_transaction(sessions, day_partitions, what="list partitions")}
    wanted = {today + timedelta(days=offset) for offset in range(-1, ahead_days + 1)}
    wanted |= set(run_transaction(sessions, _default_days, what="default partition days"))
    made = []
    for day in sorted(wanted - existing):
        partition = DayPartition(day)
        try:
            run_transaction(
                sessions,
                partial(create_partition, partition=partition, lock_timeout_ms=lock_timeout_ms),
                what="create partition",
                retry=False,
            )
        except DBAPIError as exc:  # lock_timeout, or another scheduler's run made it first
            log.warning("retention: %s not made now (%s)", partition.name, exc.orig)
            continue
        made.append(partition)
    return made


def _default_days(session: Session) -> list[date]:
    """The UTC days of the rows in the default partition (none, but after a long outage)."""
    return list(
        session.execute(
            text(f"SELECT DISTINCT (started_at AT TIME ZONE 'UTC')::date FROM {DEFAULT}")
        ).scalars()
    )


def holds_open_delivery(session: Session, partition: DayPartition) -> bool:
    """Whether an attempt in ``partition`` belongs to a delivery not yet terminal.

    Reads the open deliveries (the backlog, ``ix_deliveries_open_created``) and probes the
    partition's delivery index for each, not the partition's rows.  Only those created
    before the day ended (a day later, for the workers' clocks): an attempt starts after its
    delivery is made, so a younger delivery has none in the day.  An expired day is weeks
    old and few open deliveries are, so the check reads a handful of rows, not the backlog
    (each a heap page read, cold after a load: 1.7 s for 1,030 in the retention bench).
    """
    _, end = partition.bounds
    return bool(
        session.scalar(
            text(
                f"SELECT EXISTS (SELECT 1 FROM deliveries d WHERE d.state IN {OPEN_SQL} "
                "AND d.created_at < CAST(:end AS timestamptz) + interval '1 day' "
                f"AND EXISTS (SELECT 1 FROM {partition.name} a WHERE a.delivery_id = d.id))"
            ),
            {"end": end},
        )
    )


def drop_partition(session: Session, partition: DayPartition, lock_timeout_ms: int) -> bool:
    """Drop ``partition`` unless it holds an attempt of an open delivery; whether it did.

    No new attempt lands in an expired day (attempts start now); a delivery can reopen
    between the check and the drop only if it is replayed in that instant (docs/retention.md).
    The check runs before the drop takes its lock, so inserts wait only for the drop itself.
    """
    _lock_timeout(session, lock_timeout_ms)
    if holds_open_delivery(session, partition):
        return False
    session.execute(text(f"DROP TABLE {partition.name}"))
    return True
