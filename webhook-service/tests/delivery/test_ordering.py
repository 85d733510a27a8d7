"""Ordered delivery per key on the real stack: scheduler, worker, receivers on 127.0.0.1.

What a receiver observes is checked with one rule (as the chaos checker's): for each key,
an arrival is either the key's next message or an exact repeat of one that already arrived.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from webhooks_core.db import transaction
from webhooks_core.messages.envelope import Envelope
from webhooks_core.messages.fanout import accept_message
from webhooks_core.models import DeadLetter, Delivery


def _publish(platform: Any, key: str | None, seq: int, **data: Any) -> str:
    envelope = Envelope(
        type="person.updated", data={"key": key, "seq": seq, **data}, ordering_key=key
    )
    with transaction(platform.sessions) as session:
        accept_message(session, envelope, source="http", application_id=platform.application())
    return envelope.id


def _arrivals(server: Any) -> list[tuple[str | None, int]]:
    return [
        (data["key"], data["seq"])
        for data in (json.loads(got.body)["data"] for got in list(server.received))
    ]


def _violations(arrivals: Iterable[tuple[str | None, int]]) -> list[tuple[str, int]]:
    """Arrivals of a key that are neither its next message nor a repeat of an earlier one."""
    seen: dict[str, set[int]] = {}
    last: dict[str, int] = {}
    bad = []
    for key, seq in arrivals:
        if key is None:
            continue
        if seq in seen.setdefault(key, set()):
            continue
        if seq < last.get(key, -1):
            bad.append((key, seq))
        seen[key].add(seq)
        last[key] = max(seq, last.get(key, -1))
    return bad


def _states(platform: Any, endpoint_id: uuid.UUID) -> list[str]:
    return [d.state for d in platform.deliveries(endpoint_id)]


def test_a_failing_head_holds_only_its_key_and_its_retry_keeps_the_order(
    platform: Any, receiver: Any, wait_for: Any, clock: Any
) -> None:
    failed = threading.Event()

    def respond(got: Any, _n: int) -> dict[str, Any]:
        data = json.loads(got.body)["data"]
        if (data["key"], data["seq"]) == ("a", 0) and not failed.is_set():
            failed.set()
            return {"status": 503}
        return {}

    server = receiver(respond)
    endpoint_id, _ = platform.endpoint(server.url)
    for seq in range(4):
        _publish(platform, "a", seq)
        _publish(platform, "b", seq)
    _publish(platform, None, 0)

    # Key b and the unkeyed message go on; key a waits behind its failed head.
    wait_for(
        lambda: {("b", s) for s in range(4)} | {(None, 0)} <= set(_arrivals(server)),
        message="key b and the unkeyed message delivered",
    )
    wait_for(lambda: failed.is_set(), message="the head of key a failed")
    assert [k for k in _arrivals(server) if k[0] == "a"] == [("a", 0)]
    with platform.sessions() as session:
        waiting = session.scalars(
            select(Delivery.state)
            .where(Delivery.endpoint_id == endpoint_id, Delivery.ordering_key == "a")
            .order_by(Delivery.id)
        ).all()
    assert waiting[0] == "retrying"
    assert set(waiting[1:]) == {"pending"}

    clock.advance(10)  # past the first retry (5 s +- 20 %)
    wait_for(
        lambda: set(_states(platform, endpoint_id)) == {"delivered"},
        timeout=30,
        message="everything delivered",
    )
    keyed_a = [k for k in _arrivals(server) if k[0] == "a"]
    assert keyed_a == [("a", 0), ("a", 0), ("a", 1), ("a", 2), ("a", 3)]
    assert [k for k in _arrivals(server) if k[0] == "b"] == [("b", s) for s in range(4)]
    assert _violations(_arrivals(server)) == []


def _dead_key_scenario(
    platform: Any, receiver: Any, wait_for: Any, policy: str
) -> tuple[Any, uuid.UUID, threading.Event]:
    """An endpoint with one attempt per delivery whose receiver refuses key k's first
    message until ``fixed`` is set; k0 ends dead."""
    fixed = threading.Event()

    def respond(got: Any, _n: int) -> dict[str, Any]:
        data = json.loads(got.body)["data"]
        if data["seq"] == 0 and not fixed.is_set():
            return {"status": 500}
        return {}

    server = receiver(respond)
    endpoint_id, _ = platform.endpoint(server.url, retry_schedule=[0], key_failure_policy=policy)
    for seq in range(3):
        _publish(platform, "k", seq)
    wait_for(lambda: _states(platform, endpoint_id)[0] == "dead", timeout=20, message="head dead")
    return server, endpoint_id, fixed


def test_skip_lets_the_key_move_on_after_a_dead_letter(
    platform: Any, receiver: Any, wait_for: Any, clock: Any
) -> None:
    server, endpoint_id, _fixed = _dead_key_scenario(platform, receiver, wait_for, "skip")
    wait_for(
        lambda: _states(platform, endpoint_id) == ["dead", "delivered", "delivered"],
        timeout=20,
        message="the rest of the key delivered",
    )
    assert _arrivals(server) == [("k", 0), ("k", 1), ("k", 2)]


def test_block_holds_the_key_until_the_dead_letter_is_redriven(
    platform: Any, receiver: Any, wait_for: Any, clock: Any
) -> None:
    from registration.services import replays

    server, endpoint_id, fixed = _dead_key_scenario(platform, receiver, wait_for, "block")
    # The scheduler polls twice a second: a few cycles pass while the key stays held.
    for _ in range(6):
        threading.Event().wait(0.25)
        assert _states(platform, endpoint_id) == ["dead", "pending", "pending"]
    assert _arrivals(server) == [("k", 0)]

    fixed.set()
    replays.redrive_dead_letters(
        platform.sessions,
        application_id=platform.application(),
        requested_by="test",
        endpoint_id=endpoint_id,
    )
    wait_for(
        lambda: set(_states(platform, endpoint_id)) == {"delivered"},
        timeout=20,
        message="delivered after the redrive",
    )
    assert _arrivals(server) == [("k", 0), ("k", 0), ("k", 1), ("k", 2)]


def test_a_bulk_redrive_resends_a_key_in_order(
    platform: Any, receiver: Any, wait_for: Any, clock: Any
) -> None:
    from registration.services import replays

    fixed = threading.Event()

    def respond(_got: Any, _n: int) -> dict[str, Any]:
        return {} if fixed.is_set() else {"status": 500}

    server = receiver(respond)
    endpoint_id, _ = platform.endpoint(server.url, retry_schedule=[0])
    for seq in range(5):
        _publish(platform, "r", seq)

    def all_dead() -> bool:
        clock.advance(31)  # past the breaker's cool-down, which three failures open
        return set(_states(platform, endpoint_id)) == {"dead"}

    # Skip (the default): the key moves on after each dead letter.
    wait_for(all_dead, timeout=30, message="every delivery of the key dead")
    with platform.sessions() as session:
        assert len(session.scalars(select(DeadLetter)).all()) == 5
    first_round = len(server.received)

    fixed.set()
    replays.redrive_dead_letters(
        platform.sessions, application_id=platform.application(), requested_by="test"
    )
    wait_for(
        lambda: set(_states(platform, endpoint_id)) == {"delivered"},
        timeout=20,
        message="redriven",
    )
    assert _arrivals(server)[first_round:] == [("r", s) for s in range(5)]


def test_a_worker_killed_mid_batch_repeats_but_never_reorders_a_key(
    platform: Any, receiver: Any, wait_for: Any, clock: Any, processes: Any
) -> None:
    hang = threading.Event()

    def respond(got: Any, _n: int) -> dict[str, Any]:
        data = json.loads(got.body)["data"]
        if data["seq"] == 2 and not hang.is_set():
            hang.set()
            return {"handler": lambda _h: server.release.wait(10)}
        return {}

    server = receiver(respond)
    endpoint_id, _ = platform.endpoint(server.url)
    with transaction(platform.sessions) as session:  # one claim takes the whole run
        for seq in range(6):
            envelope = Envelope(
                type="person.updated", data={"key": "w", "seq": seq}, ordering_key="w"
            )
            accept_message(session, envelope, source="http", application_id=platform.application())

    wait_for(lambda: hang.is_set(), message="the third request in flight")
    processes.kill_worker()
    processes.start_worker()
    wait_for(
        lambda: set(_states(platform, endpoint_id)) == {"delivered"},
        timeout=40,
        message="delivered after the worker died",
    )
    arrivals = _arrivals(server)
    assert _violations(arrivals) == []
    assert sorted(set(arrivals)) == [("w", s) for s in range(6)]
    assert arrivals[:3] == [("w", 0), ("w", 1), ("w", 2)]


def test_violations_rule() -> None:
    assert _violations([("a", 0), ("a", 1), ("a", 0), ("a", 2)]) == []
    assert _violations([("a", 1), ("a", 0)]) == [("a", 0)]
    assert _violations([(None, 3), (None, 1)]) == []
