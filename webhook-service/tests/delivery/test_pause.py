"""Pause holds an endpoint's deliveries; resume sends them, in acceptance order.

The real scheduler and worker, a real receiver: while the endpoint is paused nothing
arrives (a second, unpaused endpoint receiving the same messages shows the engine ran), no
attempt is made and none is counted; resumed, every held delivery arrives in order.
"""

from __future__ import annotations

import time
from typing import Any

from webhooks_core.db import transaction
from webhooks_core.endpoints.pause import pause_endpoint, resume_endpoint
from webhooks_core.messages.envelope import utcnow


def _pause(platform: Any, endpoint_id: Any, paused: bool) -> None:
    with transaction(platform.sessions) as session:
        change = pause_endpoint if paused else resume_endpoint
        assert change(session, endpoint_id, utcnow())


def test_paused_endpoint_receives_nothing_and_resume_sends_all_in_order(
    platform: Any, receiver: Any, wait_for: Any
) -> None:
    held, control = receiver(), receiver()
    # One batch in flight at a time: the receiver sees the batches' order too.
    held_id, _ = platform.endpoint(held.url, max_in_flight=1)
    platform.endpoint(control.url)
    _pause(platform, held_id, paused=True)

    event_ids = [platform.publish({"n": n}) for n in range(25)]

    wait_for(lambda: len(control.received) == 25, timeout=30, message="control received all")
    time.sleep(1.5)  # a few more claim cycles (the poll is 0.5 s)
    assert held.received == []
    deliveries = platform.deliveries(held_id)
    assert len(deliveries) == 25
    assert {(d.state, d.attempt_count) for d in deliveries} == {("pending", 0)}
    row = platform.endpoint_row(held_id)
    assert row.consecutive_failures == 0
    assert row.enabled
    assert row.paused_at is not None

    _pause(platform, held_id, paused=False)

    wait_for(lambda: len(held.received) == 25, timeout=30, message="held deliveries arrived")
    assert [got.headers["webhook-id"] for got in held.received] == event_ids
    wait_for(
        lambda: {d.state for d in platform.deliveries(held_id)} == {"delivered"},
        message="held deliveries recorded delivered",
    )
    assert platform.endpoint_row(held_id).paused_at is None


def test_a_retrying_delivery_spends_no_retry_while_paused(
    platform: Any, receiver: Any, wait_for: Any, clock: Any
) -> None:
    answers = iter([503])
    server = receiver(lambda _req, _n: {"status": next(answers, 200)})
    endpoint_id, _ = platform.endpoint(server.url, retry_schedule=[0, 5])
    platform.publish({"n": 1})
    wait_for(
        lambda: platform.deliveries(endpoint_id)[0].state == "retrying", message="first failure"
    )
    _pause(platform, endpoint_id, paused=True)

    clock.advance(3600)  # far past every retry time of the schedule
    time.sleep(1.5)
    delivery = platform.deliveries(endpoint_id)[0]
    assert (delivery.state, delivery.attempt_count) == ("retrying", 1)
    assert len(server.received) == 1

    _pause(platform, endpoint_id, paused=False)

    wait_for(
        lambda: platform.deliveries(endpoint_id)[0].state == "delivered",
        timeout=20,
        message="delivered after resume",
    )
    assert platform.deliveries(endpoint_id)[0].attempt_count == 2
    assert len(server.received) == 2
