"""Statistics of an application, an endpoint, or the whole service, over a window.

Read from the summary tables (``attempt_stats``, ``message_stats``; the rules that fill them
are :mod:`webhooks_core.statistics`), never from the raw attempts: a query sums a few
thousand summary rows however many attempts there were.  Each bucket size reads the rows of
its own width (minute buckets minute rows, hour buckets hour rows, day buckets day rows), so
the default 7-day window sums 7 rows per key, not 168.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from registration.services.errors import InvalidField, NotFound
from webhooks_core.db import run_transaction
from webhooks_core.deliveries.states import DeliveryState
from webhooks_core.messages.envelope import utcnow
from webhooks_core.statistics import DAY, HOUR, LATENCY_BOUNDS_MS, MINUTE, percentiles

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}
BUCKETS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
DEFAULT_BUCKET = {"1h": "minute", "24h": "hour", "7d": "day"}
# The summary rows each bucket size is summed from.
WIDTHS = {"minute": MINUTE, "hour": HOUR, "day": DAY}
# At most this many buckets in a series (a 24 h window in minutes: 1,440).
MAX_BUCKETS = 1440
_ORIGIN = datetime.fromisoformat("2000-01-01T00:00:00+00:00")
_SIZE = len(LATENCY_BOUNDS_MS) + 1
_HISTOGRAM_SUM = (
    "ARRAY[" + ", ".join(f"sum(s.latency_histogram[{i + 1}])::bigint" for i in range(_SIZE)) + "]"
)

_ATTEMPTS = f"""
    SELECT date_bin(:step, s.bucket, :origin) AS start, s.event_type, s.outcome,
           s.status_class, s.final_state, sum(s.attempts)::bigint AS attempts,
           sum(s.latency_sum_ms) AS latency_sum_ms, {_HISTOGRAM_SUM} AS histogram
    FROM attempt_stats s
    WHERE s.width = :width AND s.bucket >= :since AND s.bucket < :until AND {{scope}}
    GROUP BY 1, 2, 3, 4, 5
"""  # noqa: S608 - constants; the scope is one of _SCOPES
_MESSAGES = """
    SELECT date_bin(:step, s.bucket, :origin) AS start, s.event_type,
           sum(s.messages)::bigint AS messages
    FROM message_stats s
    WHERE s.width = :width AND s.bucket >= :since AND s.bucket < :until AND {scope}
    GROUP BY 1, 2
"""
_SCOPES = {
    "application": "s.application_id = :scope_id",
    "endpoint": "s.endpoint_id = :scope_id",
    "service": "true",
}
# Plain statements, not ORM loads: nothing to compile on a process's first call.
_ENDPOINT_OWNER = text("SELECT application_id FROM endpoints WHERE id = :id")
_APPLICATION = text("SELECT 1 FROM applications WHERE id = :id")
_PERCENTILES = (0.50, 0.90, 0.99)
# A row of _ATTEMPTS, as a plain tuple (thousands of them for a day in minutes).
_Row = tuple[datetime, str, str, str, str, int, float, Sequence[int]]


@dataclass
class Summary:
    """What happened in one bucket (or the whole window)."""

    messages: int | None = 0
    attempts: int = 0
    by_outcome: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_status_class: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_final_state: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    latency_sum_ms: float = 0.0
    # The rows' histograms, summed once when read (a 24 h window in minutes adds thousands).
    histograms: list[Sequence[int]] = field(default_factory=list)

    def add(self, row: _Row) -> None:
        """Count one summary row in."""
        _, _, outcome, status_class, final_state, attempts, latency_sum_ms, histogram = row
        self.attempts += attempts
        self.by_outcome[outcome] += attempts
        self.by_status_class[status_class] += attempts
        self.by_final_state[final_state] += attempts
        self.latency_sum_ms += latency_sum_ms
        self.histograms.append(histogram)

    @property
    def histogram(self) -> list[int]:
        """The latency histogram of every row counted in."""
        if not self.histograms:
            return [0] * _SIZE
        return [sum(counts) for counts in zip(*self.histograms, strict=True)]

    def as_dict(self) -> dict[str, Any]:
        """The API's shape (see ``StatisticsSummaryOut``)."""
        successes = self.by_status_class.get("2xx", 0)
        terminal = {s: self.by_final_state.get(s, 0) for s in _FINAL}
        p50, p90, p99 = percentiles(self.histogram, _PERCENTILES)
        return {
            "messages_accepted": self.messages,
            "attempts": self.attempts,
            "attempts_by_outcome": dict(self.by_outcome),
            "attempts_by_status_class": dict(self.by_status_class),
            "deliveries_by_final_state": terminal,
            "retries_scheduled": self.by_final_state.get(_RETRYING, 0),
            "dead_letters": terminal[_DEAD],
            "success_rate": successes / self.attempts if self.attempts else None,
            "latency_ms": {
                "mean": self.latency_sum_ms / self.attempts if self.attempts else None,
                "p50": p50,
                "p90": p90,
                "p99": p99,
            },
        }


_FINAL = tuple(
    s.value for s in (DeliveryState.DELIVERED, DeliveryState.DEAD, DeliveryState.CANCELLED)
)
_RETRYING, _DEAD = DeliveryState.RETRYING.value, DeliveryState.DEAD.value


@dataclass(frozen=True)
class Statistics:
    """Totals over the window, a series per bucket, and volume per event type."""

    window: str
    bucket: str
    since: datetime
    until: datetime
    totals: dict[str, Any]
    series: list[dict[str, Any]]
    event_types: list[dict[str, Any]]


def window_bounds(window: str, bucket: str | None, now: datetime) -> tuple[str, datetime, int]:
    """The bucket name, the first bucket's start and the summary width to read."""
    if window not in WINDOWS:
        raise InvalidField(f"window must be one of {', '.join(WINDOWS)}", field="window")
    bucket = bucket or DEFAULT_BUCKET[window]
    if bucket not in BUCKETS:
        raise InvalidField(f"bucket must be one of {', '.join(BUCKETS)}", field="bucket")
    step = BUCKETS[bucket]
    if WINDOWS[window] / step > MAX_BUCKETS:
        raise InvalidField(
            f"a {window} window has too many {bucket} buckets; choose a longer bucket",
            field="bucket",
        )
    start = now - WINDOWS[window]
    # Aligned on the bucket (from the same origin as the summary rows), so the first bucket
    # is whole.
    start = _ORIGIN + ((start - _ORIGIN) // step) * step
    return bucket, start, WIDTHS[bucket]


def statistics(
    sessions: sessionmaker[Session],
    *,
    window: str,
    bucket: str | None = None,
    application_id: uuid.UUID | None = None,
    endpoint_id: uuid.UUID | None = None,
) -> Statistics:
    """Statistics of one endpoint (of ``application_id``), one application, or the service."""
    now = utcnow()
    bucket, since, width = window_bounds(window, bucket, now)
    scope, scope_id = _scope(application_id, endpoint_id)
    params = {
        "step": BUCKETS[bucket],
        "origin": _ORIGIN,
        "width": width,
        "since": since,
        "until": now + timedelta(minutes=1),
        "scope_id": scope_id,
    }

    def work(session: Session) -> tuple[Sequence[Any], Sequence[Any]]:
        _check_scope(session, application_id, endpoint_id)
        attempts = session.execute(text(_ATTEMPTS.format(scope=_SCOPES[scope])), params).all()
        messages: Sequence[Any] = []
        if scope != "endpoint":
            messages = session.execute(text(_MESSAGES.format(scope=_SCOPES[scope])), params).all()
        return attempts, messages

    attempts, messages = run_transaction(sessions, work)
    return _assemble(
        window, bucket, since, now, attempts, messages, per_endpoint=scope == "endpoint"
    )


def _scope(
    application_id: uuid.UUID | None, endpoint_id: uuid.UUID | None
) -> tuple[str, uuid.UUID | None]:
    if endpoint_id is not None:
        return "endpoint", endpoint_id
    if application_id is not None:
        return "application", application_id
    return "service", None


def _check_scope(
    session: Session, application_id: uuid.UUID | None, endpoint_id: uuid.UUID | None
) -> None:
    if endpoint_id is not None:
        owner = session.execute(_ENDPOINT_OWNER, {"id": endpoint_id}).scalar()
        if owner is None or owner != application_id:
            raise NotFound(f"endpoint {endpoint_id} not found")
    elif (
        application_id is not None
        and session.execute(_APPLICATION, {"id": application_id}).scalar() is None
    ):
        raise NotFound(f"application {application_id} not found")


def _assemble(
    window: str,
    bucket: str,
    since: datetime,
    until: datetime,
    attempts: Iterable[Sequence[Any]],
    messages: Iterable[Any],
    *,
    per_endpoint: bool,
) -> Statistics:
    """Totals, the series (every bucket of the window, empty ones included) and types."""
    step = BUCKETS[bucket]
    starts = []
    start = since
    while start <= until:
        starts.append(start)
        start += step
    empty_messages = None if per_endpoint else 0
    buckets = {s: Summary(messages=empty_messages) for s in starts}
    totals = Summary(messages=empty_messages)
    types: dict[str, dict[str, int]] = defaultdict(lambda: {"messages": 0, "attempts": 0})
    for row in attempts:
        values: _Row = tuple(row)
        start, event_type = values[0], values[1]
        summary = buckets.get(start)
        if summary is None:
            summary = buckets[start] = Summary(messages=empty_messages)
        summary.add(values)
        totals.add(values)
        types[event_type]["attempts"] += values[5]
    for row in messages:
        summary = buckets.get(row.start)
        if summary is None:
            summary = buckets[row.start] = Summary()
        summary.messages = (summary.messages or 0) + row.messages
        totals.messages = (totals.messages or 0) + row.messages
        types[row.event_type]["messages"] += row.messages
    series = [{"start": s, **buckets[s].as_dict()} for s in sorted(buckets)]
    return Statistics(
        window=window,
        bucket=bucket,
        since=since,
        until=until,
        totals=totals.as_dict(),
        series=series,
        event_types=[{"event_type": name, **counts} for name, counts in sorted(types.items())],
    )


_TRENDS = text(
    """
    SELECT s.endpoint_id, s.bucket, sum(s.attempts)::bigint AS attempts,
           sum(s.attempts) FILTER (WHERE s.status_class = '2xx')::bigint AS successes
    FROM attempt_stats s
    WHERE s.endpoint_id = ANY(CAST(:ids AS uuid[])) AND s.width = :width
      AND s.bucket >= :since
    GROUP BY 1, 2
    """
)


def success_trends(
    sessions: sessionmaker[Session], endpoint_ids: Iterable[uuid.UUID], hours: int = 24
) -> dict[uuid.UUID, list[float | None]]:
    """Each endpoint's success rate per hour over the last ``hours`` (None: no attempt).

    One query over the hour summaries of all the endpoints (the console's endpoint list).
    """
    ids = [str(i) for i in endpoint_ids]
    now = utcnow()
    first = (
        _ORIGIN
        + ((now - timedelta(hours=hours - 1) - _ORIGIN) // BUCKETS["hour"]) * BUCKETS["hour"]
    )
    starts = [first + timedelta(hours=n) for n in range(hours)]
    trends: dict[uuid.UUID, dict[datetime, float]] = defaultdict(dict)
    if ids:
        rows = run_transaction(
            sessions,
            lambda session: session.execute(
                _TRENDS, {"ids": ids, "width": HOUR, "since": first}
            ).all(),
        )
        for endpoint_id, start, attempts, successes in rows:
            trends[endpoint_id][start] = (successes or 0) / attempts
    return {uuid.UUID(i): [trends[uuid.UUID(i)].get(s) for s in starts] for i in ids}
