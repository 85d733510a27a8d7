"""The adaptive flow controller (webhooks_core.endpoints.flow), pure: no database."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from webhooks_core.endpoints.flow import (
    BatchSignal,
    FlowState,
    Limits,
    adapt,
    batch_signal,
    holds_endpoint,
    is_throttled,
    rate_unused,
)
from webhooks_core.endpoints.flow_limits import effective_in_flight, effective_rate, flow_control_on

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Result:
    outcome: str
    latency_ms: float = 5.0
    status_code: int | None = None
    retry_after: str | None = None
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.outcome == "success"


OK = Result("success", status_code=200)
TOO_MANY = Result("http_4xx", status_code=429)
UNAVAILABLE = Result("http_5xx", status_code=503)
TIMEOUT = Result("timeout", latency_ms=1000.0)


@dataclass(frozen=True)
class Policy:
    flow_control: bool = True
    flow_backoff_factor: float = 0.5
    flow_latency_backoff_factor: float = 0.9
    flow_latency_tolerance: float = 2.0
    flow_latency_min_rise_ms: float = 20.0
    flow_rate_increase: float = 0.1
    flow_min_rate: float = 1.0
    flow_forget_seconds: float = 300.0
    retry_after_max_seconds: int = 600


POLICY = Policy()
LIMITS = Limits(max_in_flight=8, rate_limit=None)


def signal(results: list[Result], at: datetime = T0, gap: float = 0.01) -> BatchSignal:
    timed = [(at + timedelta(seconds=gap * n), r) for n, r in enumerate(results)]
    made = batch_signal(timed, lambda: at)
    assert made is not None
    return made


def test_a_429_imposes_a_rate_below_what_the_receiver_accepted() -> None:
    # 10 accepted in the batch's 0.2 s, on one of 8 batches in flight: about 400 per second
    # accepted, halved.
    sig = signal([OK] * 10 + [TOO_MANY] * 10, gap=0.01)
    new = adapt(FlowState(), sig, LIMITS, POLICY, T0)
    assert new.rate_limit is not None
    assert 150 < new.rate_limit < 250
    assert new.max_in_flight is None  # a 429 asks for a lower rate, not fewer connections
    assert new.reason == "429"
    assert new.decreased_at == T0


def test_one_decrease_per_window_then_additive_increase_back_to_the_maximum() -> None:
    limits = Limits(max_in_flight=8, rate_limit=100)
    first = adapt(FlowState(), signal([TOO_MANY]), limits, POLICY, T0)
    assert first.rate_limit == 50
    # A batch that started before the decrease brings the same news: no second halving.
    same_window = adapt(first, signal([TOO_MANY], at=T0 - timedelta(seconds=1)), limits, POLICY, T0)
    assert same_window.rate_limit == 50
    later = T0 + timedelta(seconds=1)
    second = adapt(first, signal([TOO_MANY], at=later), limits, POLICY, later)
    assert second.rate_limit == 25
    # Clean batches: the rate grows by its step (10 % of the rate it backed off from) per s.
    state, now = second, later
    rates = []
    for _ in range(130):
        now += timedelta(seconds=1)
        state = adapt(state, signal([OK] * 5, at=now), limits, POLICY, now)
        rates.append(state.rate_limit)
    assert rates[0] == pytest.approx(25 + 5.0)
    assert rates[1] == pytest.approx(25 + 10.0)
    # Past the rate it was refused at (50), it only probes: a tenth of the step.
    assert rates[4] == pytest.approx(50.0)
    assert rates[5] == pytest.approx(50.5)
    # Back at the configured maximum, the adaptive value goes (null: the configured one).
    assert rates[-1] is None
    assert state.reason is None


def test_timeouts_and_503_lower_the_concurrency_to_a_floor_of_one() -> None:
    state = FlowState()
    now = T0
    for _ in range(6):
        now += timedelta(seconds=1)
        state = adapt(state, signal([OK, TIMEOUT], at=now), LIMITS, POLICY, now)
    assert state.max_in_flight == 1.0
    assert state.reason == "timeout"
    assert effective_in_flight(8, state.max_in_flight) == 1
    now += timedelta(seconds=1)
    unavailable = adapt(FlowState(), signal([UNAVAILABLE], at=now), LIMITS, POLICY, now)
    assert unavailable.max_in_flight == 4.0
    assert unavailable.rate_limit is not None  # 503 is a throttle too
    # One more per window: 1/limit per clean batch.
    grown = adapt(state, signal([OK], at=now), LIMITS, POLICY, now)
    assert grown.max_in_flight == 2.0
    grown = adapt(grown, signal([OK], at=now), LIMITS, POLICY, now)
    assert grown.max_in_flight == 2.5


def test_rising_latency_lowers_the_concurrency_gently() -> None:
    fast = [Result("success", latency_ms=10.0, status_code=200)] * 5
    slow = [Result("success", latency_ms=80.0, status_code=200)] * 5
    learnt = adapt(FlowState(), signal(fast), LIMITS, POLICY, T0)
    assert learnt.latency_ms == 10.0
    assert learnt.max_in_flight is None
    now = T0 + timedelta(seconds=1)
    slower = adapt(learnt, signal(slow, at=now), LIMITS, POLICY, now)
    # 80 ms against 2 x 10 ms allowed: the gradient (0.25) is floored at one half.
    assert slower.max_in_flight == pytest.approx(8 * 0.5)
    assert slower.reason == "latency"
    assert slower.latency_ms is not None
    assert 10 < slower.latency_ms < 15
    # A small rise (under the tolerance or the minimum rise) is not overload.
    mild = [Result("success", latency_ms=25.0, status_code=200)] * 5
    assert adapt(learnt, signal(mild, at=now), LIMITS, POLICY, now).max_in_flight is None
    # Just above: the gentle factor.
    learnt = adapt(FlowState(), signal([Result("success", latency_ms=30.0, status_code=200)]),
                   LIMITS, POLICY, T0)  # fmt: skip
    above = [Result("success", latency_ms=61.0, status_code=200)] * 5
    gentle = adapt(learnt, signal(above, at=now), LIMITS, POLICY, now)
    assert gentle.max_in_flight == pytest.approx(8 * 0.9)


def test_retry_after_holds_the_endpoint_capped_by_the_maximum() -> None:
    asked = Result("http_4xx", status_code=429, retry_after="30")
    held = adapt(FlowState(), signal([asked]), LIMITS, POLICY, T0)
    assert held.throttled_until == T0 + timedelta(seconds=30)
    assert held.reason == "retry-after"
    greedy = Result("http_5xx", status_code=503, retry_after="86400")
    capped = adapt(FlowState(), signal([greedy]), LIMITS, POLICY, T0)
    assert capped.throttled_until == T0 + timedelta(seconds=600)
    # Once past, the hold is cleared by the next batch.
    later = T0 + timedelta(seconds=31)
    cleared = adapt(held, signal([OK], at=later), LIMITS, POLICY, later)
    assert cleared.throttled_until is None
    assert holds_endpoint(asked)
    assert holds_endpoint(greedy)
    assert not holds_endpoint(TOO_MANY)
    assert is_throttled(TOO_MANY)
    assert not is_throttled(UNAVAILABLE)


def test_a_rate_imposed_without_a_configured_one_is_forgotten() -> None:
    imposed = adapt(FlowState(), signal([OK, TOO_MANY]), LIMITS, POLICY, T0)
    assert imposed.rate_limit is not None
    soon = T0 + timedelta(seconds=10)
    assert adapt(imposed, signal([OK], at=soon), LIMITS, POLICY, soon).rate_limit is not None
    late = T0 + timedelta(seconds=301)
    assert adapt(imposed, signal([OK], at=late), LIMITS, POLICY, late).rate_limit is None


def test_connection_errors_are_left_to_the_breaker() -> None:
    refused = Result("connect_error")
    assert adapt(FlowState(), signal([refused]), LIMITS, POLICY, T0) == FlowState()


def test_nothing_changes_for_a_healthy_endpoint_at_its_maximum() -> None:
    state = adapt(FlowState(), signal([OK] * 3), LIMITS, POLICY, T0)
    again = adapt(state, signal([OK] * 3), LIMITS, POLICY, T0 + timedelta(seconds=1))
    assert again.same_limits(state)


def test_effective_limits_are_the_adaptive_ones_within_the_configured() -> None:
    assert effective_in_flight(4, None) == 4
    assert effective_in_flight(4, 2.7) == 2
    assert effective_in_flight(4, 9.0) == 4
    assert effective_in_flight(4, 0.2) == 1
    assert effective_rate(None, None) is None
    assert effective_rate(10, None) == 10.0
    assert effective_rate(10, 4.5) == 4.5
    assert effective_rate(None, 4.5) == 4.5
    assert effective_rate(10, 40.0) == 10.0


def test_a_slow_receiver_that_never_refuses_keeps_gaining_rate() -> None:
    limits = Limits(max_in_flight=4, rate_limit=None)
    fast = [Result("success", latency_ms=5.0, status_code=200)] * 5
    slow = [Result("success", latency_ms=90.0, status_code=200)] * 5
    state = adapt(FlowState(), signal([*fast, TOO_MANY]), limits, POLICY, T0)
    rate = state.rate_limit
    assert rate is not None
    now = T0 + timedelta(seconds=1)
    later = adapt(state, signal(slow, at=now), limits, POLICY, now)
    assert later.max_in_flight is not None  # latency: fewer batches at once...
    assert later.rate_limit is not None
    assert later.rate_limit > rate  # ...but the rate was not refused: it grows


def test_a_rate_the_endpoint_does_not_use_does_not_grow() -> None:
    limits = Limits(max_in_flight=4, rate_limit=100)
    state = adapt(FlowState(), signal([TOO_MANY]), limits, POLICY, T0)
    now = T0 + timedelta(seconds=1)
    unused = replace(signal([OK] * 3, at=now), rate_unused=True)
    assert adapt(state, unused, limits, POLICY, now).rate_limit == state.rate_limit
    used = adapt(state, signal([OK] * 3, at=now), limits, POLICY, now)
    assert used.rate_limit == 60.0  # its step: 10 % of 100 per second
    assert rate_unused(50.0, 30.0)
    assert not rate_unused(50.0, 10.0)
    assert not rate_unused(None, 30.0)


@pytest.mark.parametrize(
    ("adaptive_flow", "platform", "on"),
    [(True, True, True), (False, True, False), (True, False, False), (False, False, False)],
)
def test_flow_control_is_on_only_where_both_switches_are(
    adaptive_flow: bool, platform: bool, on: bool
) -> None:
    assert flow_control_on(adaptive_flow, platform) is on
