"""Adaptive flow control on the real stack: a receiver that refuses above a hidden rate,
one that asks for a pause with Retry-After, and a healthy endpoint of another application
beside them (webhooks_core.endpoints.flow; docs/delivery.md, *Flow control*)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from sqlalchemy import text

from webhooks_core.db import transaction
from webhooks_core.messages.envelope import Envelope
from webhooks_core.messages.fanout import accept_message
from webhooks_core.models import Delivery

# Retries one second apart, so refused deliveries come back soon; a rate imposed on an
# endpoint without a configured one is forgotten after 20 s without a 429.
ENGINE_ENV_EXTRA = {
    "WEBHOOKS_RETRY_SCHEDULE": ",".join(["0"] + ["1"] * 20),
    "WEBHOOKS_RETRY_JITTER": "0",
    "WEBHOOKS_DELIVERY_BATCH_SIZE": "10",
    "WEBHOOKS_ENDPOINT_MAX_IN_FLIGHT": "4",
    "WEBHOOKS_FLOW_FORGET_SECONDS": "20",
}
FLOW = text(
    "SELECT max_in_flight, rate_limit, throttled_until, reason FROM endpoint_flow"
    " WHERE endpoint_id = :id"
)


class HiddenRate:
    """Answers 429 above ``rate`` requests per second (a token bucket of one second), 200
    below; ``open()`` lifts the limit."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp = time.monotonic()
        self.lock = threading.Lock()
        self.refused = 0
        self.accepted = 0
        self.limited = True

    def __call__(self, _got: Any, _n: int) -> dict[str, Any]:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.limited and self.tokens < 1:
                self.refused += 1
                return {"status": 429}
            self.tokens -= 1
            self.accepted += 1
            return {"status": 200}


def _flow(platform: Any, endpoint_id: uuid.UUID) -> Any:
    with platform.sessions() as session:
        return session.execute(FLOW, {"id": endpoint_id}).first()


def _publish(platform: Any, count: int) -> None:
    """``count`` messages accepted in one transaction: due together, sent as fast as the
    engine goes (far above the hidden rate)."""
    with transaction(platform.sessions) as session:
        for n in range(count):
            envelope = Envelope(type="person.created", data={"n": n})
            accept_message(session, envelope, source="http", application_id=platform.application())


def _all_delivered(platform: Any, endpoint_id: uuid.UUID, count: int) -> list[Delivery] | None:
    rows = platform.deliveries(endpoint_id)
    done = [d for d in rows if d.state == "delivered"]
    return done if len(done) == count else None


def test_a_rate_limiting_receiver_lowers_the_rate_then_it_rises_again(
    platform: Any, receiver: Any, wait_for: Any
) -> None:
    hidden = HiddenRate(20)
    limited = receiver(hidden)
    limited_id, _ = platform.endpoint(limited.url)
    other = type(platform)(platform.sessions)
    healthy = receiver()
    healthy_id, _ = other.endpoint(healthy.url)

    _publish(platform, 150)
    _publish(other, 20)
    lowered = wait_for(
        lambda: (row := _flow(platform, limited_id)) is not None and row.rate_limit and row,
        timeout=60,
        message="a rate imposed on the endpoint",
    )
    assert lowered.reason == "429"
    delivered = wait_for(
        lambda: _all_delivered(platform, limited_id, 150), timeout=120, message="all delivered"
    )
    assert hidden.refused > 0
    assert len(delivered) == 150
    # Each refused request is an attempt of its own, then retried: nothing lost.
    with platform.sessions() as session:
        attempts = session.execute(
            text("SELECT count(*) FROM attempts WHERE endpoint_id = :id"), {"id": limited_id}
        ).scalar_one()
    assert attempts == hidden.accepted + hidden.refused
    lowest = _flow(platform, limited_id).rate_limit
    assert lowest is not None

    # The other application's endpoint was never held back: every delivery at the first
    # attempt, nothing learnt about it.
    others = wait_for(lambda: _all_delivered(other, healthy_id, 20), timeout=60)
    assert all(d.attempt_count == 1 for d in others)
    assert _flow(other, healthy_id) is None or _flow(other, healthy_id).rate_limit is None

    # The receiver takes more now: clean batches raise the rate again, back to none.
    hidden.limited = False

    def risen() -> bool:
        _publish(platform, 10)
        row = _flow(platform, limited_id)
        return row.rate_limit is None or row.rate_limit > lowest * 1.5

    wait_for(risen, timeout=90, message="the rate rising again")


def test_retry_after_holds_the_whole_endpoint_until_then(
    platform: Any, receiver: Any, wait_for: Any, clock: Any
) -> None:
    def pause_first(_got: Any, n: int) -> dict[str, Any]:
        if n == 1:
            return {"status": 503, "headers": {"Retry-After": "120"}}
        return {"status": 200}

    server = receiver(pause_first)
    endpoint_id, _ = platform.endpoint(server.url, max_in_flight=1)
    _publish(platform, 5)
    held = wait_for(
        lambda: (row := _flow(platform, endpoint_id)) is not None and row.throttled_until and row,
        timeout=30,
        message="the endpoint held",
    )
    assert held.reason == "retry-after"
    # The batch stopped at the 503: its other deliveries went back, unattempted, and stay
    # due but unsent while the endpoint is held (the claim leaves it out).
    wait_for(
        lambda: all(d.state in ("pending", "retrying") for d in platform.deliveries(endpoint_id)),
        timeout=30,
    )
    time.sleep(2)
    assert len(server.received) == 1
    rows = platform.deliveries(endpoint_id)
    assert sorted(d.attempt_count for d in rows) == [0, 0, 0, 0, 1]

    clock.advance(121)
    wait_for(lambda: _all_delivered(platform, endpoint_id, 5), timeout=30)
    assert len(server.received) == 6


def test_an_endpoint_with_flow_control_off_is_not_throttled_and_its_429s_are_failures(
    platform: Any, receiver: Any, wait_for: Any, clock: Any
) -> None:
    # Both receivers refuse every request (a rate below one a second) until opened.
    adaptive, fixed = HiddenRate(0.5), HiddenRate(0.5)
    adaptive_id, _ = platform.endpoint(receiver(adaptive).url)
    fixed_id, _ = platform.endpoint(receiver(fixed).url, adaptive_flow=False)
    _publish(platform, 30)

    # Flow control on: the 429s lower the rate and leave the breaker alone.
    lowered = wait_for(
        lambda: (row := _flow(platform, adaptive_id)) is not None and row.rate_limit and row,
        timeout=60,
        message="a rate imposed on the endpoint with flow control",
    )
    assert lowered.reason == "429"
    assert platform.endpoint_row(adaptive_id).consecutive_failures == 0
    # Flow control off, beside it: the 429s are failures like any other, its breaker opens
    # (threshold 5), and nothing is learnt.
    opened = wait_for(
        lambda: (row := platform.endpoint_row(fixed_id)).circuit_open_until is not None and row,
        timeout=60,
        message="the breaker of the endpoint without flow control",
    )
    assert opened.consecutive_failures >= 5
    assert fixed.refused >= 5
    assert _flow(platform, fixed_id) is None

    # The receivers take everything now; the breaker's rest is skipped on the engine's clock.
    adaptive.limited = fixed.limited = False

    def delivered() -> list[Delivery] | None:
        done = _all_delivered(platform, fixed_id, 30)
        open_until = platform.endpoint_row(fixed_id).circuit_open_until
        if done is None and open_until is not None and open_until > clock.now():
            clock.advance((open_until - clock.now()).total_seconds() + 1)
        return done

    wait_for(delivered, timeout=90, message="every delivery of the endpoint without it")
    wait_for(lambda: _all_delivered(platform, adaptive_id, 30), timeout=90, message="and with it")
    assert _flow(platform, fixed_id) is None
    with platform.sessions() as session:
        attempts = session.execute(
            text("SELECT count(*) FROM attempts WHERE endpoint_id = :id"), {"id": fixed_id}
        ).scalar_one()
    assert attempts == fixed.accepted + fixed.refused
