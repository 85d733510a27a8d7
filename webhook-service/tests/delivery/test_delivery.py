"""Signed delivery end to end: scheduler, worker and a real receiver."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

from standardwebhooks import Webhook


def test_message_arrives_signed_and_verifies_with_the_official_library(
    platform: Any, receiver: Any, wait_for: Any
) -> None:
    server = receiver()
    endpoint_id, secret = platform.endpoint(server.url, headers={"X-Team": "blue"})

    event_id = platform.publish({"name": "Ada", "id": 7})

    wait_for(lambda: platform.deliveries()[0].state == "delivered", message="delivered")
    assert len(server.received) == 1
    got = server.received[0]
    assert got.headers["webhook-id"] == event_id
    assert got.headers["X-Team"] == "blue"
    assert got.headers["Content-Type"] == "application/json"
    payload = Webhook(secret).verify(got.body, got.headers)
    assert payload["type"] == "person.created"
    assert payload["data"] == {"name": "Ada", "id": 7}
    assert json.loads(got.body).keys() == {"type", "timestamp", "data"}
    delivery = platform.deliveries()[0]
    assert delivery.attempt_count == 1
    assert delivery.last_status_code == 200
    assert delivery.delivered_at is not None
    assert delivery.lease_token is None
    assert platform.endpoint_row(endpoint_id).last_success_at is not None


def test_two_schedulers_never_send_a_delivery_twice(
    platform: Any, receiver: Any, wait_for: Any, processes: Any
) -> None:
    server = receiver()
    endpoint_ids = [platform.endpoint(f"{server.url}?e={n}")[0] for n in range(3)]
    second = processes._spawn("scheduler-2", [sys.executable, "-m", "delivery.scheduler"])
    try:
        event_ids = [platform.publish({"n": n}) for n in range(40)]
        wait_for(
            lambda: all(d.state == "delivered" for d in platform.deliveries()),
            timeout=30,
            message="all delivered",
        )
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(timeout=10)
    received = [(got.path, got.headers["webhook-id"]) for got in server.received]
    assert len(received) == 40 * len(endpoint_ids)
    assert len(set(received)) == len(received)  # each (endpoint, message) exactly once
    assert {webhook_id for _, webhook_id in received} == set(event_ids)


def test_fan_out_batch_sends_endpoints_side_by_side(
    platform: Any, receiver: Any, wait_for: Any
) -> None:
    done: dict[str, float] = {}

    def respond(got: Any, _n: int) -> dict[str, Any]:
        if got.path.endswith("slow"):

            def slow(handler: Any) -> None:
                time.sleep(0.6)  # under the 1 s read timeout: slow, not failing
                handler.send_response(200)
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                done["slow"] = time.time()

            return {"handler": slow}
        return {}

    server = receiver(respond)
    platform.endpoint(f"{server.url}?slow")
    for n in range(11):
        platform.endpoint(f"{server.url}?fast={n}")
    platform.publish()  # one message, twelve endpoints: gathered into shared batches

    wait_for(
        lambda: all(d.state == "delivered" for d in platform.deliveries()),
        message="all delivered",
    )
    fast = [got.at for got in server.received if "fast" in got.path]
    assert len(fast) == 11
    assert max(fast) < done["slow"]  # no fast endpoint waited behind the slow one
