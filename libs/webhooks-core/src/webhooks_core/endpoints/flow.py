"""Adaptive flow control: how many batches an endpoint gets at once, and how fast.

Pure functions, no database and no clock of their own (docs/delivery.md, *Flow control*,
says the same for users).  An endpoint has a configured maximum (``max_in_flight``, else
the default; ``rate_limit``, else none) and, in ``endpoint_flow``, what the engine learned:
an adaptive concurrency limit (batches in flight, a float), an adaptive rate (deliveries
per second), the end of a ``Retry-After`` and a latency baseline.  Each recorded batch
adjusts them (:func:`adapt`), AIMD as TCP does, one decrease per window:

* **429 or 503**: the rate is multiplied by ``flow_backoff_factor`` (an endpoint without
  a rate gets one: the rate its batch was accepted at, times the factor, so that it then
  grows from below the receiver's limit); a 503 also lowers the concurrency limit;
* **a timeout**: the concurrency limit is multiplied by ``flow_backoff_factor``;
* **rising latency** (the batch's median above ``flow_latency_tolerance`` times the
  baseline, and at least ``flow_latency_min_rise_ms`` above it, Vegas-style): the
  concurrency limit is multiplied by the gradient ``tolerance x baseline / median``,
  between 0.5 and ``flow_latency_backoff_factor`` (the further above, the steeper);
* **Retry-After** on a 429 or 503: the whole endpoint is held until then (at most
  ``retry_after_max_seconds``), as an open breaker is;
* **a clean batch** (no such signal): the concurrency limit grows by one per window (``1 /
  limit`` per batch), the rate by its step per second (``flow_rate_increase`` of the rate
  it backed off from; a tenth of that above the rate it was refused at), each back to the
  configured maximum, where the row's value goes back to null.  ``flow_forget_seconds``
  after the last decrease, a rate an endpoint without a configured one was given is
  dropped.

A decrease happens only for a batch that started after the last decrease: the batches in
flight when the receiver pushed back all carry the same news, and halving once per batch
would collapse the limit (TCP's one reduction per round trip).  Floors: one batch, and
``flow_min_rate`` deliveries per second.

The scheduler reads the effective limits (:mod:`webhooks_core.endpoints.flow_limits`);
the worker writes :func:`adapt`'s result in the batch's recording
transaction, after locking the row, so batches of one endpoint recording at once apply
their changes one after another.

Whether it is on for an endpoint is decided in :mod:`webhooks_core.endpoints.flow_limits`
only (``flow_control_on``, ``FLOW_ON_SQL``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from webhooks_core.deliveries.outcomes import AttemptResult, parse_retry_after

THROTTLE_STATUSES = frozenset({429, 503})
# The rate's growth is counted over at most this long between two batches: an endpoint
# idle for minutes does not come back at many times its last rate.
_MAX_GROWTH_SECONDS = 2.0
# The latency rule needs a batch's median over at least this many answers.
_LATENCY_MIN_ANSWERS = 5
# Above the rate it was last refused at, the rate grows this much slower.
_PROBE_SHARE = 0.1
# A baseline change alone is written only from this relative change, and this many ms: the
# noise of a fast receiver (1 ms, then 2) must not rewrite its row batch after batch, and a
# rise is only overload from ``flow_latency_min_rise_ms`` (50 ms by default) on anyway.
_BASELINE_WRITE_SHARE = 0.05
_BASELINE_WRITE_MS = 5.0
# How fast the baseline follows the batches' median latency upwards: quickly while the
# latency is within the tolerance, slowly when it is above (so overload is seen as such,
# yet a receiver that became slower for good is learnt within a few tens of batches: at
# twice the baseline, 5 % of it per batch, which is also enough to be written).
_BASELINE_DRIFT = 0.2
_BASELINE_DRIFT_OVERLOADED = 0.05


class FlowPolicy(Protocol):
    """The settings the controller reads (the delivery side's ``DeliverySettings`` is one)."""

    @property
    def flow_control(self) -> bool: ...

    @property
    def flow_backoff_factor(self) -> float: ...

    @property
    def flow_latency_backoff_factor(self) -> float: ...

    @property
    def flow_latency_tolerance(self) -> float: ...

    @property
    def flow_latency_min_rise_ms(self) -> float: ...

    @property
    def flow_rate_increase(self) -> float: ...

    @property
    def flow_min_rate(self) -> float: ...

    @property
    def flow_forget_seconds(self) -> float: ...

    @property
    def retry_after_max_seconds(self) -> int: ...


@dataclass(frozen=True)
class FlowState:
    """An endpoint's ``endpoint_flow`` row (all None: none, the configured limits)."""

    max_in_flight: float | None = None
    rate_limit: float | None = None
    rate_step: float | None = None
    throttled_until: datetime | None = None
    reason: str | None = None
    latency_ms: float | None = None
    decreased_at: datetime | None = None
    changed_at: datetime | None = None

    def same_limits(self, other: FlowState) -> bool:
        """Whether writing ``other`` over this would change anything but the time stamps
        and a small move of the baseline."""
        return (
            self.max_in_flight == other.max_in_flight
            and self.rate_limit == other.rate_limit
            and self.throttled_until == other.throttled_until
            and self.reason == other.reason
            and not _baseline_moved(self.latency_ms, other.latency_ms)
        )


@dataclass(frozen=True)
class Limits:
    """An endpoint's configured maximum: batches in flight, and deliveries per second."""

    max_in_flight: int
    rate_limit: int | None


@dataclass(frozen=True)
class BatchSignal:
    """What one endpoint's part of a batch says about its receiver."""

    started_at: datetime
    attempts: int
    successes: int
    throttled: int  # 429 or 503
    overloaded: int  # 503 or timeout: too many requests at once
    retry_after: float | None  # the longest Retry-After of a 429 or 503, seconds
    median_ms: float | None  # of the attempts that got an answer
    duration_s: float
    rate_unused: bool = False  # the endpoint's bucket held plenty: its rate was not binding
    answered: int = 0  # attempts that got an answer (the median's sample)


def batch_signal(
    results: Sequence[tuple[datetime, AttemptResult]], real_now: Callable[[], datetime]
) -> BatchSignal | None:
    """The signal of an endpoint's attempts in a batch (each with its start), or None."""
    if not results:
        return None
    throttled = overloaded = successes = 0
    retry_after: float | None = None
    latencies: list[float] = []
    for _, result in results:
        status = result.status_code if result.outcome.startswith(("http_", "success")) else None
        successes += result.succeeded
        if status is not None:
            latencies.append(_latency(result))
        if status in THROTTLE_STATUSES:
            throttled += 1
            asked = parse_retry_after(result.retry_after, real_now())
            if asked is not None:
                retry_after = max(retry_after or 0.0, asked)
        if status == 503 or result.outcome == "timeout":
            overloaded += 1
    first, last = results[0], results[-1]
    duration = (last[0] - first[0]).total_seconds() + _latency(last[1]) / 1000
    return BatchSignal(
        first[0],
        len(results),
        successes,
        throttled,
        overloaded,
        retry_after,
        statistics.median(latencies) if latencies else None,
        max(duration, 0.001),
        answered=len(latencies),
    )


def _latency(result: AttemptResult) -> float:
    return float(getattr(result, "latency_ms", 0.0) or 0.0)


def rate_unused(rate: float | None, bucket_tokens: float | None) -> bool:
    """Whether the last claim left half a second's worth or more in the endpoint's bucket:
    its backlog, not its rate, bounded what it was sent, so the rate must not grow (a rate
    grown unused bursts far above the receiver's limit once the backlog is back; RFC 7661)."""
    return rate is not None and bucket_tokens is not None and bucket_tokens >= rate / 2


def is_throttled(result: AttemptResult) -> bool:
    """A 429: the receiver is alive and asks for less.  With flow control on, the breaker
    does not count it (neither a failure nor a success): the rate goes down instead."""
    return result.status_code == 429 and result.outcome.startswith("http_")


def holds_endpoint(result: AttemptResult) -> bool:
    """A 429 or 503 with a ``Retry-After``: the endpoint asks for a pause, so its batch
    stops sending (the rest goes back, due, and waits while the endpoint is held)."""
    return result.status_code in THROTTLE_STATUSES and bool(result.retry_after)


def adapt(
    state: FlowState,
    signal: BatchSignal,
    limits: Limits,
    policy: FlowPolicy,
    now: datetime,
) -> FlowState:
    """The endpoint's flow state after a batch (see the module doc).

    The concurrency limit follows 503s, timeouts and latency; the rate follows 429s and
    503s: a receiver that is slow but never refuses keeps gaining rate, one that refuses
    but answers fast keeps its concurrency.
    """
    if state.throttled_until is not None and state.throttled_until <= now:
        state = replace(state, throttled_until=None)
    # A median of a few requests is noise (a shared batch carries 1 to 4 per endpoint).
    slow = signal.answered >= _LATENCY_MIN_ANSWERS and _slow(
        state.latency_ms, signal.median_ms, policy
    )
    # At the floor of one batch nothing is left to protect: learn the new latency quickly.
    floored = state.max_in_flight is not None and state.max_in_flight <= 1.0
    baseline = _baseline(state.latency_ms, signal.median_ms, policy, floored)
    new = replace(state, latency_ms=baseline)
    if signal.retry_after is not None and signal.throttled:
        held = now + timedelta(seconds=min(signal.retry_after, policy.retry_after_max_seconds))
        if state.throttled_until is None or held > state.throttled_until:
            new = replace(new, throttled_until=held, reason="retry-after")
    if not signal.successes and not (signal.throttled or signal.overloaded):
        return new  # connection errors and the like: the breaker's business, not ours
    window_open = state.decreased_at is None or signal.started_at > state.decreased_at
    in_flight, in_flight_reason = _concurrency(state, signal, limits, policy, slow, window_open)
    rate, step, rate_reason = _rate(state, signal, limits, policy, now, window_open)
    decreased = in_flight_reason or rate_reason
    if decreased:
        reason = "retry-after" if _held(new, now) else (rate_reason or in_flight_reason)
        new = replace(new, reason=reason, decreased_at=now)
    elif in_flight is None and rate is None and not _held(new, now):
        new = replace(new, reason=None)
    changed = (in_flight, rate) != (state.max_in_flight, state.rate_limit)
    return replace(
        new,
        max_in_flight=in_flight,
        rate_limit=rate,
        rate_step=step,
        changed_at=now if changed else state.changed_at,
    )


def _concurrency(
    state: FlowState,
    signal: BatchSignal,
    limits: Limits,
    policy: FlowPolicy,
    slow: bool,
    window_open: bool,
) -> tuple[float | None, str | None]:
    """The concurrency limit after the batch, and why it went down (None: it did not)."""
    current = state.max_in_flight
    if signal.overloaded or slow:
        if not window_open:
            return current, None
        limit = current if current is not None else float(limits.max_in_flight)
        if signal.overloaded:
            factor, reason = policy.flow_backoff_factor, "503" if signal.throttled else "timeout"
        else:
            # The gradient (Netflix's concurrency-limits): how far the latency is above what
            # the tolerance allows, between halving and the gentle factor.
            assert state.latency_ms is not None
            assert signal.median_ms is not None
            gradient = policy.flow_latency_tolerance * state.latency_ms / signal.median_ms
            factor, reason = min(max(gradient, 0.5), policy.flow_latency_backoff_factor), "latency"
        return max(limit * factor, 1.0), reason
    if current is None or not signal.successes:
        return current, None
    grown = current + 1.0 / max(current, 1.0)
    return (None if grown >= limits.max_in_flight else grown), None


def _rate(
    state: FlowState,
    signal: BatchSignal,
    limits: Limits,
    policy: FlowPolicy,
    now: datetime,
    window_open: bool,
) -> tuple[float | None, float | None, str | None]:
    """The rate and its step after the batch, and why it went down (None: it did not)."""
    rate, step = state.rate_limit, state.rate_step
    if signal.throttled:
        if not window_open:
            return rate, step, None
        current = rate if rate is not None else limits.rate_limit
        if current is None:
            # No rate yet: the rate this batch was accepted at, with every batch in flight.
            in_flight = state.max_in_flight or float(limits.max_in_flight)
            current = signal.successes / signal.duration_s * max(in_flight, 1.0)
        step = max(current * policy.flow_rate_increase, policy.flow_min_rate / 10)
        rate = max(current * policy.flow_backoff_factor, policy.flow_min_rate)
        return rate, step, "503" if signal.overloaded else "429"
    if rate is None or not signal.successes:
        return rate, step, None
    forget = (
        state.decreased_at is None
        or (now - state.decreased_at).total_seconds() >= policy.flow_forget_seconds
    )
    if limits.rate_limit is None and forget:
        return None, None, None
    if signal.rate_unused:
        return rate, step, None  # not binding: no news about the receiver's limit
    since = state.changed_at or now
    grown = max(min((now - since).total_seconds(), _MAX_GROWTH_SECONDS), 0.0)
    step = step or policy.flow_min_rate
    # Above the rate it was refused at (the step is a share of it), only probe: a rate that
    # grew while the endpoint did not use it (its backlog was small) would send a burst far
    # above what the receiver takes once the backlog is back (CUBIC's plateau).
    ceiling = step / policy.flow_rate_increase
    rate += step * grown * (_PROBE_SHARE if rate >= ceiling else 1.0)
    if limits.rate_limit is not None and rate >= limits.rate_limit:
        return None, None, None
    return rate, step, None


def _held(state: FlowState, now: datetime) -> bool:
    return state.throttled_until is not None and state.throttled_until > now


def _baseline(
    baseline: float | None, median: float | None, policy: FlowPolicy, floored: bool = False
) -> float | None:
    """The latency baseline after a batch: down at once, up slowly (see the constants)."""
    if median is None:
        return baseline
    if baseline is None or median <= baseline:
        return median
    slow = _slow(baseline, median, policy) and not floored
    drift = _BASELINE_DRIFT_OVERLOADED if slow else _BASELINE_DRIFT
    return baseline + (median - baseline) * drift


def _slow(baseline: float | None, median: float | None, policy: FlowPolicy) -> bool:
    """The batch's latency is well above the baseline: the receiver is queueing."""
    if baseline is None or median is None:
        return False
    return (
        median > baseline * policy.flow_latency_tolerance
        and median - baseline >= policy.flow_latency_min_rise_ms
    )


def _baseline_moved(old: float | None, new: float | None) -> bool:
    if old is None or new is None:
        return old is not new
    return abs(new - old) > max(old * _BASELINE_WRITE_SHARE, _BASELINE_WRITE_MS)
