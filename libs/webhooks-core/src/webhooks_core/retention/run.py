"""One retention run and the scheduler's thread that repeats it (see the package's docstring)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

from prometheus_client import Counter, Gauge
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.db import make_session_factory, run_transaction
from webhooks_core.periodic import start_periodic
from webhooks_core.retention import partitions, rows
from webhooks_core.retention.policy import cutoff, day_expired
from webhooks_core.settings import CoreSettings

log = logging.getLogger(__name__)

DROPPED_PARTITIONS = Counter(
    "webhooks_retention_dropped_partitions_total", "Day partitions of attempts dropped"
)
DELETED_ROWS = Counter(
    "webhooks_retention_deleted_rows_total",
    "Rows deleted (attempts, messages) or emptied (payloads) by retention batches",
    ["kind"],
)
PARTITIONS = Gauge("webhooks_retention_partitions", "Day partitions of attempts, after a run")
KEPT_PARTITIONS = Gauge(
    "webhooks_retention_kept_partitions",
    "Expired day partitions kept because they hold an attempt of an open delivery",
)
LAST_RUN = Gauge(
    "webhooks_retention_last_run_timestamp_seconds", "When the last retention run ended"
)


@dataclass
class RetentionReport:
    """What one run did."""

    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    attempts_deleted: int = 0
    messages_deleted: int = 0
    payloads_dropped: int = 0
    partitions: int = 0

    def line(self) -> str:
        """One line for a log or the command's output."""
        return (
            f"retention: created={len(self.created)} dropped={len(self.dropped)} "
            f"kept_open={len(self.kept)} skipped_locked={len(self.skipped)} "
            f"attempts_deleted={self.attempts_deleted} messages_deleted={self.messages_deleted} "
            f"payloads_dropped={self.payloads_dropped} partitions={self.partitions}"
        )


@dataclass(frozen=True)
class Spans:
    """The bounds over every application (and the defaults), in days."""

    attempts_min: int
    attempts_max: int
    messages_min: int
    messages_max: int
    payload_min: int | None


def spans(session: Session, settings: CoreSettings) -> Spans:
    """The shortest and longest retention over the applications and the defaults."""
    row = session.execute(
        text(
            "SELECT min(coalesce(retention_attempts_days, :a)), "
            "max(coalesce(retention_attempts_days, :a)), "
            "min(coalesce(retention_messages_days, :m)), "
            "max(coalesce(retention_messages_days, :m)), "
            "min(coalesce(retention_payload_days, :p)) "
            "FROM applications"
        ),
        {
            "a": settings.retention_attempts_days,
            "m": settings.retention_messages_days,
            "p": settings.retention_payload_days,
        },
    ).one()
    if row[0] is None:  # no application yet: the defaults
        a, m = settings.retention_attempts_days, settings.retention_messages_days
        return Spans(a, a, m, m, settings.retention_payload_days)
    # Over the applications only (each with its values or the defaults): the defaults alone
    # keep nothing longer than an application would.
    return Spans(row[0], row[1], row[2], row[3], row[4])


def _drop_expired(
    sessions: sessionmaker[Session],
    settings: CoreSettings,
    now: datetime,
    keep_days: int,
    report: RetentionReport,
) -> None:
    existing = run_transaction(sessions, partitions.day_partitions, what="list partitions")
    for partition in existing:
        if not day_expired(partition.day, now, keep_days):
            continue
        try:
            dropped = run_transaction(
                sessions,
                partial(
                    partitions.drop_partition,
                    partition=partition,
                    lock_timeout_ms=settings.retention_lock_timeout_ms,
                ),
                what="drop partition",
                retry=False,
            )
        except DBAPIError as exc:  # lock_timeout, or another scheduler's run dropped it first
            log.warning("retention: %s not dropped now (%s)", partition.name, exc.orig)
            report.skipped.append(partition.name)
            continue
        (report.dropped if dropped else report.kept).append(partition.name)


def run_retention(
    sessions: sessionmaker[Session],
    settings: CoreSettings,
    now: datetime | None = None,
    max_batches: int = 1000,
) -> RetentionReport:
    """One retention run (see the module's docstring); what it did."""
    now = now or datetime.now(UTC)
    report = RetentionReport()
    made = partitions.ensure_ahead(
        sessions,
        now.date(),
        settings.retention_partitions_ahead_days,
        settings.retention_lock_timeout_ms,
    )
    report.created = [p.name for p in made]
    span = run_transaction(sessions, lambda s: spans(s, settings), what="retention spans")
    _drop_expired(sessions, settings, now, span.attempts_max, report)
    batch = settings.retention_batch_size
    if span.attempts_min < span.attempts_max:
        report.attempts_deleted = rows.delete_attempts(
            sessions,
            now,
            cutoff(now, span.attempts_min),
            settings.retention_attempts_days,
            batch,
            max_batches,
        )
    report.messages_deleted = rows.delete_messages(
        sessions,
        now,
        cutoff(now, span.messages_min),
        (settings.retention_messages_days, span.messages_max),
        batch,
        max_batches,
    )
    if span.payload_min is not None:
        report.payloads_dropped = rows.drop_payloads(
            sessions,
            now,
            cutoff(now, span.payload_min),
            (settings.retention_payload_days, span.messages_max),
            batch,
            max_batches,
        )
    report.partitions = len(
        run_transaction(sessions, partitions.day_partitions, what="list partitions")
    )
    _observe(report)
    return report


def _observe(report: RetentionReport) -> None:
    DROPPED_PARTITIONS.inc(len(report.dropped))
    DELETED_ROWS.labels("attempts").inc(report.attempts_deleted)
    DELETED_ROWS.labels("messages").inc(report.messages_deleted)
    DELETED_ROWS.labels("payloads").inc(report.payloads_dropped)
    PARTITIONS.set(report.partitions)
    KEPT_PARTITIONS.set(len(report.kept))
    LAST_RUN.set_to_current_time()


def start_retention(
    engine: Engine, settings: CoreSettings, interval: float
) -> threading.Event | None:
    """A daemon thread running retention now and every ``interval`` seconds (None when 0); its
    stop.  A failed run is logged and tried again at the next interval."""
    sessions = make_session_factory(engine)

    def run_once() -> None:
        log.info(run_retention(sessions, settings).line())

    return start_periodic(
        run_once, interval, name="retention", logger=log, what="retention run", at_start=True
    )
