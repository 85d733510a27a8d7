"""Pure planning of a claim cycle: which due deliveries go out together, and which wait.

The scheduler reads what is in flight and the due rows (see ``delivery.scheduling``); this
module decides, without a database, how those rows are cut into batches:

* each endpoint gets no more batches than its free in-flight slots (``max_in_flight``;
  one while it is failing; a half-open breaker gets one probe of one delivery), nor than
  its application's free slots (fair share: one tenant's slow endpoints cannot hold every
  worker);
* an endpoint with a rate (its ``rate_limit``, or the adaptive one of
  :mod:`webhooks_core.endpoints.flow`) gets no more deliveries than its token bucket
  allows, and then in batches of at least a tenth of a second's worth;
* a delivery whose lease ran out before goes in a batch of its own;
* with few endpoints due, each one's rows are spread over its free slots (parallel
  requests); with many, fewer and fuller batches, and healthy endpoints with only a few due
  rows share one batch per application (a fan-out to thousands of endpoints is not
  thousands of tasks);
* what does not fit stays due for the next cycle (:attr:`Plan.left`).

The SQL that reads the rows and leases the chosen ones stays with the scheduler.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

# Below this many endpoints with due rows in one cycle, their rows are spread over parallel
# batches.
SPREAD_BELOW_ENDPOINTS = 8
# With that many endpoints or more, an endpoint with at most this many due rows (and no
# failures) shares a batch with others.
MIX_MAX_ROWS = 4


@dataclass(frozen=True)
class Capacity:
    """What is in flight when a cycle starts.

    ``in_flight`` counts batches per endpoint; ``at_limit`` are the endpoints with no free
    slot; ``open_breakers`` the endpoints whose breaker is open; ``application_free`` the
    free slots of each application with batches in flight (the others have
    ``application_limit``).
    """

    application_limit: int
    in_flight: dict[uuid.UUID, int] = field(default_factory=dict)
    at_limit: frozenset[uuid.UUID] = frozenset()
    open_breakers: frozenset[uuid.UUID] = frozenset()
    application_free: dict[uuid.UUID, int] = field(default_factory=dict)
    # Rate-limited endpoints without the tokens of a batch: seconds until they have them.
    rate_waits: dict[uuid.UUID, float] = field(default_factory=dict)

    @property
    def excluded_endpoints(self) -> set[uuid.UUID]:
        """Endpoints whose due rows the scan leaves out (no slot, breaker open, or no
        tokens: a rate-limited backlog must not fill the rows a claim reads either)."""
        return set(self.at_limit | self.open_breakers) | set(self.rate_waits)

    @property
    def wake_in(self) -> float | None:
        """Seconds until the first endpoint left out for its rate has a batch's tokens."""
        return min(self.rate_waits.values(), default=None)

    @property
    def full_applications(self) -> set[uuid.UUID]:
        """Applications at their limit: left out of the scan, so their backlog does not
        fill the candidates that other applications' deliveries need."""
        return {app for app, free in self.application_free.items() if free <= 0}

    @property
    def saturated(self) -> bool:
        """Whether work waits for a slot to free.  Breaker-open endpoints do not count: no
        freed slot would announce them, and healthy endpoints' new deliveries must not wait
        for one."""
        return bool(self.at_limit - self.open_breakers) or bool(self.full_applications)


def read_capacity(
    rows: Iterable[tuple[str, uuid.UUID, int, int]], application_limit: int
) -> Capacity:
    """The :class:`Capacity` from rows of ``(kind, id, batches, limit)``.

    ``kind`` is ``'endpoint'`` (batches in flight and its limit), ``'application'`` (batches
    in flight and its limit), ``'open'`` (a breaker-open, paused or held endpoint: its due
    rows are left alone) or ``'rate'`` (an endpoint short of a batch's tokens: ``batches``
    holds the milliseconds until it has them, see :data:`RATE_WAIT_SQL`).
    """
    in_flight: dict[uuid.UUID, int] = {}
    at_limit: set[uuid.UUID] = set()
    open_breakers: set[uuid.UUID] = set()
    application_free: dict[uuid.UUID, int] = {}
    rate_waits: dict[uuid.UUID, float] = {}
    for kind, key, batches, limit in rows:
        if kind == "open":
            open_breakers.add(key)
        elif kind == "rate":
            rate_waits[key] = max(batches, 1) / 1000
        elif kind == "application":
            application_free[key] = max(limit - batches, 0)
        else:
            in_flight[key] = batches
            if batches >= limit:
                at_limit.add(key)
    return Capacity(
        application_limit,
        in_flight,
        frozenset(at_limit),
        frozenset(open_breakers),
        application_free,
        rate_waits,
    )


@dataclass(frozen=True)
class DueRow:
    """One due delivery with what the plan needs of its endpoint.

    ``failing``: the endpoint's last attempts failed; ``half_open``: its breaker lets one
    probe through; ``lease_expiries``: how often this delivery's lease ran out in a row.
    """

    delivery_id: int
    endpoint_id: uuid.UUID
    application_id: uuid.UUID
    max_in_flight: int
    lease_expiries: int = 0
    failing: bool = False
    half_open: bool = False
    rate_limit: float | None = None  # the effective rate (endpoints.flow)


@dataclass(frozen=True)
class Batch:
    """Deliveries sent by one task; ``endpoint_id`` is None for a shared batch of a few
    deliveries of many healthy endpoints of one application."""

    endpoint_id: uuid.UUID | None
    delivery_ids: list[int]


@dataclass(frozen=True)
class Plan:
    """The batches of one cycle, in order, and what stays due.

    ``saturated``: due work waits for a free slot; ``wake_in``: seconds until
    rate-limited deliveries may go; ``left``: the due rows no batch took; ``capped``: the
    endpoints that had rows left by their own limits (slots, rate, a failing or half-open
    endpoint's one batch) while their application still had free slots.
    """

    batches: list[Batch]
    saturated: bool
    wake_in: float | None
    left: list[int]
    capped: frozenset[uuid.UUID] = frozenset()


class Allowance(Protocol):
    """The endpoints' rate limits (see :class:`RateLimiter`)."""

    def allowance(self, endpoint_id: uuid.UUID, rate: float) -> int:
        """How many deliveries the endpoint may be sent now."""
        ...

    def spend(self, endpoint_id: uuid.UUID, count: int) -> None:
        """Take ``count`` of them."""
        ...


class RateLimiter:
    """Token buckets of the endpoints' rates (deliveries per second, burst of one second).

    The claim seeds it with the buckets stored in PostgreSQL (``stored``: tokens and their
    time stamp per endpoint, on ``clock``'s scale) and writes back :meth:`touched`, in its
    transaction, under the claim lock: with any number of schedulers, one bucket per
    endpoint, so the rate holds globally.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        stored: dict[uuid.UUID, tuple[float, float]] | None = None,
    ) -> None:
        self._clock = clock
        self._buckets: dict[uuid.UUID, tuple[float, float]] = dict(stored or {})
        self._touched: set[uuid.UUID] = set()

    def allowance(self, endpoint_id: uuid.UUID, rate: float) -> int:
        """How many deliveries the endpoint may be sent now."""
        now = self._clock()
        tokens, stamp = self._buckets.get(endpoint_id, (float(rate), now))
        tokens = min(float(rate), tokens + max(now - stamp, 0.0) * rate)
        self._buckets[endpoint_id] = (tokens, now)
        self._touched.add(endpoint_id)
        return int(tokens)

    def spend(self, endpoint_id: uuid.UUID, count: int) -> None:
        """Take ``count`` tokens (after :meth:`allowance` said they were there)."""
        tokens, stamp = self._buckets[endpoint_id]
        self._buckets[endpoint_id] = (tokens - count, stamp)

    def touched(self) -> dict[uuid.UUID, tuple[float, float]]:
        """The buckets read (and maybe spent) since this limiter was made."""
        return {key: self._buckets[key] for key in sorted(self._touched)}


# A rate-limited endpoint is claimed in batches of at least this share of a second's worth
# (at most a batch): at 200 per second, 20 at a time, not 200 batches of one.
RATE_BATCH_SECONDS = 0.1


def rate_wait_sql(rate: str) -> str:
    """The claim's rows of kind ``'rate'`` (see :func:`read_capacity`): the endpoints whose
    stored bucket (``endpoint_rate_buckets b``) holds fewer tokens than a batch's worth (the
    rule of :meth:`_Planner._rate_limited`), with the milliseconds until it does.  ``rate``
    is the SQL of the endpoint's effective rate (NULL: none); bind ``:now`` and
    ``:batch_size``."""
    tokens = f"least({rate}, b.tokens + extract(epoch FROM :now - b.stamp) * {rate})"
    enough = f"greatest(1, least(:batch_size, floor({rate} * {RATE_BATCH_SECONDS})))"
    wait = f"CAST(ceil(1000 * ({enough} - {tokens}) / {rate}) AS int)"
    where = f"{rate} IS NOT NULL AND {tokens} < {enough}"
    return f"SELECT 'rate', b.endpoint_id, {wait}, 0 FROM rated b WHERE {where}"  # noqa: S608


@dataclass
class _EndpointDue:
    """One endpoint's due rows of the cycle, oldest first."""

    first: DueRow
    ids: list[int] = field(default_factory=list)
    suspects: set[int] = field(default_factory=set)

    def add(self, row: DueRow) -> None:
        self.ids.append(row.delivery_id)
        if row.lease_expiries:
            self.suspects.add(row.delivery_id)


def endpoint_slots(row: DueRow, in_flight: int) -> int:
    """Free batch slots of the row's endpoint with ``in_flight`` batches out.

    A failing endpoint (often a slow one timing out) or a half-open one holds one worker
    thread at most, however many endpoints fail at once.
    """
    if row.half_open or row.failing:
        return 1 if in_flight == 0 else 0
    return max(row.max_in_flight - in_flight, 0)


class _Planner:
    """The state of one plan while endpoints are taken in turn."""

    def __init__(self, capacity: Capacity, batch_size: int, endpoints: int) -> None:
        self.capacity = capacity
        self.batch_size = batch_size
        self.many = endpoints >= SPREAD_BELOW_ENDPOINTS
        limit = capacity.application_limit
        self.app_free: defaultdict[uuid.UUID, int] = defaultdict(
            lambda: limit, capacity.application_free
        )
        self.batches: list[Batch] = []
        # The open shared batch of each application, which holds one of its slots.
        self.mixing: dict[uuid.UUID, list[int]] = {}
        self.saturated = capacity.saturated
        self.wake_in: float | None = None

    def _full(self, slots: int, app: uuid.UUID) -> bool:
        return slots <= 0 or self.app_free[app] <= 0

    def take(self, due: _EndpointDue, limiter: Allowance) -> None:
        """Cut one endpoint's due rows into batches, as far as its slots go."""
        row = due.first
        app = row.application_id
        slots = endpoint_slots(row, self.capacity.in_flight.get(row.endpoint_id, 0))
        if self._full(slots, app):
            self.saturated = True
            return
        ids = due.ids[:1] if row.half_open else due.ids
        ids = self._rate_limited(row, ids, limiter)
        if due.suspects.intersection(ids):
            ids, slots = self._alone(row, ids, due.suspects, slots)
            if ids and self._full(slots, app):
                self.saturated = True
                return
        if not ids:
            return
        if self.many and len(ids) <= MIX_MAX_ROWS and not row.half_open and not row.failing:
            self._mix(app, ids)
        else:
            self._spread(row, ids, slots)

    def _rate_limited(self, row: DueRow, ids: list[int], limiter: Allowance) -> list[int]:
        rate = row.rate_limit
        if not rate:
            return ids
        allowed = limiter.allowance(row.endpoint_id, rate)
        enough = max(1, min(self.batch_size, len(ids), int(rate * RATE_BATCH_SECONDS)))
        if allowed < enough:
            allowed = 0  # too few tokens for a batch worth its task: wait for more
        if allowed < len(ids):
            # The rest waits for tokens: wake when a batch's worth is there.
            self.wake_in = min(self.wake_in or 1.0, enough / rate)
            ids = ids[:allowed]
        if ids:
            limiter.spend(row.endpoint_id, len(ids))
        return ids

    def _alone(
        self, row: DueRow, ids: list[int], suspects: set[int], slots: int
    ) -> tuple[list[int], int]:
        """A delivery whose lease ran out before goes in a batch of its own: if it is what
        kills or wedges the worker that takes it, its batch mates are not taken down with it
        again, and its own expiries lead it to the dead letters.  Returns the other rows
        and the slots left."""
        app = row.application_id
        for delivery_id in [i for i in ids if i in suspects]:
            if self._full(slots, app):
                break
            self.batches.append(Batch(row.endpoint_id, [delivery_id]))
            slots -= 1
            self.app_free[app] -= 1
        return [i for i in ids if i not in suspects], slots

    def _mix(self, app: uuid.UUID, ids: list[int]) -> None:
        """Healthy endpoints with only a few due rows share batches (one task, one
        transaction for many endpoints).  Never across applications: a batch is recorded
        when its slowest endpoint is done, and one tenant's must not hold back another's."""
        mixed = self.mixing.get(app)
        if mixed is None:
            mixed = self.mixing[app] = []
            self.app_free[app] -= 1
        mixed += ids
        if len(mixed) >= self.batch_size:
            self.batches.append(Batch(None, mixed))
            del self.mixing[app]

    def _spread(self, row: DueRow, ids: list[int], slots: int) -> None:
        """With few endpoints due, spread the rows over the free slots (parallel requests);
        with many, the other endpoints keep the workers busy, so fewer, fuller batches cost
        fewer round trips.  What does not fit stays due for the next cycle."""
        app = row.application_id
        slots = min(slots, self.app_free[app])
        spread = 1 if self.many else slots
        size = min(self.batch_size, max(math.ceil(len(ids) / spread), 1))
        for start in range(0, min(len(ids), size * slots), size):
            self.batches.append(Batch(row.endpoint_id, ids[start : start + size]))
            self.app_free[app] -= 1
        if len(ids) > size * slots:
            self.saturated = True

    def finish(self, rows: Sequence[DueRow]) -> Plan:
        batches = self.batches + [Batch(None, mixed) for mixed in self.mixing.values()]
        taken = {i for batch in batches for i in batch.delivery_ids}
        left = [row for row in rows if row.delivery_id not in taken]
        capped = {row.endpoint_id for row in left if self.app_free[row.application_id] > 0}
        wake_in = min(
            (w for w in (self.wake_in, self.capacity.wake_in) if w is not None), default=None
        )
        left_ids = [row.delivery_id for row in left]
        return Plan(batches, self.saturated, wake_in, left_ids, frozenset(capped))


def plan_batches(
    rows: Sequence[DueRow], capacity: Capacity, batch_size: int, limiter: Allowance
) -> Plan:
    """Cut ``rows`` (due deliveries, oldest first) into batches; see the module doc.

    Endpoints are taken in the order of their oldest due row.  ``limiter`` is asked (and
    spent) only for endpoints with a ``rate_limit`` that get that far.
    """
    by_endpoint: dict[uuid.UUID, _EndpointDue] = {}
    for row in rows:
        due = by_endpoint.get(row.endpoint_id)
        if due is None:
            due = by_endpoint[row.endpoint_id] = _EndpointDue(row)
        due.add(row)
    planner = _Planner(capacity, batch_size, len(by_endpoint))
    for due in by_endpoint.values():
        planner.take(due, limiter)
    return planner.finish(rows)
