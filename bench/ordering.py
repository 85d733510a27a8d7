"""The ordering scenario: keyed deliveries with random failures, checked at the receiver.

1,000 ordering keys over 50 endpoints (20 keys each; each message goes to its key's
endpoint), ``BENCH_ORDERING_PER_KEY`` messages per key (20 at scale 1), every endpoint's
receiver answering 500 to 5 % of requests at random (``fail5``; retries 1 s apart, so a
failed head holds its key about a second).  The same load runs twice on the same endpoints,
without keys (unordered) and with them, each preloaded held, released at once and drained;
the rate of each is delivered rows over the time from the release to the last delivered
row's write (as the throughput scenario's drain).  The receiver's log gives the arrival of
every request; a violation is a key's message arriving, not as a repeat of one that already
arrived, after a later message of that key (:func:`violations`).  Prints::

    bench-ordering: keys=1000 endpoints=50 deliveries=N per_s=N unordered_per_s=N ratio=R
    violations=0 failures_injected=N
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, insert, text

from bench import seed
from webhooks_core.ids import new_message_id
from webhooks_core.models import Message

if TYPE_CHECKING:
    from bench.scenarios import Bench

KEYS = 1000
ENDPOINTS = 50
SPEC = "fail5"
RETRY_SCHEDULE = (0, 1, 1, 1, 1, 1, 1, 1)  # eight attempts a second apart


def violations(arrivals: Iterable[tuple[float, str, int]]) -> int:
    """Out-of-order arrivals among ``(arrived, key, seq)`` (any order given).

    Per key, in arrival order: a message already seen is a repeat (allowed); a new one whose
    ``seq`` is below the highest seen so far arrived after a later message: a violation.
    """
    seen: dict[str, set[int]] = {}
    highest: dict[str, int] = {}
    count = 0
    for _arrived, key, seq in sorted(arrivals):
        got = seen.setdefault(key, set())
        if seq in got:
            continue
        if seq < highest.get(key, -1):
            count += 1
        got.add(seq)
        highest[key] = max(seq, highest.get(key, -1))
    return count


def preload_keyed(
    engine: Engine,
    application_id: uuid.UUID,
    event_type: str,
    endpoints: Sequence[seed.EndpointRow],
    per_key: int,
    keyed: bool,
) -> dict[str, tuple[str, int]]:
    """Store ``KEYS x per_key`` messages, each with one held delivery to its key's endpoint,
    in acceptance order (seq by seq), keyed ones after a key's first parked as fan-out
    parks them (webhooks_core.deliveries.ordering); the ``(key, seq)`` of each event id."""
    order: dict[str, tuple[str, int]] = {}
    occurred = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for seq in range(per_key):
            rows = []
            for k in range(KEYS):
                event_id = new_message_id()
                key = f"key-{k:04d}"
                order[event_id] = (key, seq)
                rows.append(
                    {
                        "event_id": event_id,
                        "application_id": application_id,
                        "event_type": event_type,
                        "payload": {**seed.sample_payload(k), "seq": seq},
                        "occurred_at": occurred,
                        "source": "http",
                        "ordering_key": key if keyed else None,
                    }
                )
            ids = list(conn.execute(insert(Message).returning(Message.id), rows).scalars())
            conn.execute(
                text(
                    f"""
                    INSERT INTO deliveries (message_id, endpoint_id, application_id, event_type,
                                            state, next_attempt_at, ordering_key)
                    SELECT m.id, e.id, e.application_id, m.event_type, 'pending',
                           CASE WHEN m.ordering_key IS NOT NULL AND :seq > 0 THEN NULL
                                ELSE {seed.HOLD} END,
                           m.ordering_key
                    FROM unnest(CAST(:ids AS bigint[]), CAST(:targets AS uuid[]))
                         AS t(message_id, endpoint_id)
                    JOIN messages m ON m.id = t.message_id
                    JOIN endpoints e ON e.id = t.endpoint_id
                    ORDER BY m.id
                    """  # noqa: S608 - HOLD is a constant expression, values are bound
                ),
                {
                    "ids": ids,
                    "targets": [str(endpoints[k % len(endpoints)].id) for k in range(KEYS)],
                    "seq": seq,
                },
            )
    return order


def _run(
    bench: Bench, rows: Sequence[seed.EndpointRow], event_type: str, per_key: int, keyed: bool
) -> dict[str, Any]:
    from bench.scenarios import _open, _wait

    engine = bench.engine
    order = preload_keyed(engine, bench.application_id, event_type, rows, per_key, keyed)
    seed.vacuum_analyze(engine)
    expected = len(order)
    started = seed.release(engine, event_type)
    finished = _wait(
        lambda: _open(seed.states(engine, event_type)) == 0,
        min(bench.config.max_wait_seconds, 60 + expected / 50),
        what=f"{expected} {event_type} deliveries",
    )
    states = seed.states(engine, event_type)
    delivered = states.get("delivered", 0)
    seconds = max(seed.last_write(engine, event_type) - started, 1e-6)
    if not finished:
        seed.cancel_open(engine, event_type)
    receipts = [r for r in bench.receiver.receipts() if r.webhook_id in order]
    return {
        "deliveries": expected,
        "delivered": delivered,
        "finished": finished,
        "states": states,
        "seconds": round(seconds, 3),
        "deliveries_per_s": round(delivered / seconds, 1),
        "requests": len(receipts),
        "failures_injected": sum(1 for r in receipts if r.status == 500),
        "violations": violations(
            (r.arrived, order[r.webhook_id][0], order[r.webhook_id][1]) for r in receipts
        ),
    }


def scenario_ordering(bench: Bench) -> dict[str, Any]:
    """Unordered, then keyed, the same load on the same failing endpoints (module doc)."""
    per_key = int(
        os.environ.get("BENCH_ORDERING_PER_KEY", max(math.ceil(20 * bench.config.scale), 3))
    )
    tag = uuid.uuid4().hex[:6]
    paths = [(f"/r/{SPEC}/ord-{tag}-{i:02d}", ["bench.ordering"]) for i in range(ENDPOINTS)]
    seed.ensure_event_types(bench.engine, ["bench.ordering", "bench.ordering.keyed"])
    rows = seed.create_endpoints(
        bench.engine,
        bench.application_id,
        bench.receiver.url(""),
        bench.receiver.seed,
        paths,
        retry_schedule=RETRY_SCHEDULE,
    )
    print("bench: ordering: unordered ...", flush=True)
    unordered = _run(bench, rows, "bench.ordering", per_key, keyed=False)
    time.sleep(1.0)
    print("bench: ordering: keyed ...", flush=True)
    keyed = _run(bench, rows, "bench.ordering.keyed", per_key, keyed=True)
    seed.retire(bench.engine, [row.id for row in rows])
    ratio = keyed["deliveries_per_s"] / max(unordered["deliveries_per_s"], 1e-6)
    return {
        "keys": KEYS,
        "endpoints": ENDPOINTS,
        "per_key": per_key,
        "unordered": unordered,
        "keyed": keyed,
        "deliveries": keyed["deliveries"],
        "per_s": keyed["deliveries_per_s"],
        "unordered_per_s": unordered["deliveries_per_s"],
        "ratio": round(ratio, 2),
        "violations": keyed["violations"],
        "failures_injected": keyed["failures_injected"],
    }


def ordering_line(results: dict[str, Any]) -> str:
    """The one ``bench-ordering:`` line of the scenario's result."""
    r = results.get("ordering") or {}
    return (
        f"bench-ordering: keys={r.get('keys', KEYS)} endpoints={r.get('endpoints', ENDPOINTS)}"
        f" deliveries={r.get('deliveries', 0)} per_s={round(float(r.get('per_s') or 0))}"
        f" unordered_per_s={round(float(r.get('unordered_per_s') or 0))}"
        f" ratio={float(r.get('ratio') or 0):.2f} violations={r.get('violations', 'n/a')}"
        f" failures_injected={r.get('failures_injected', 0)}"
    )
