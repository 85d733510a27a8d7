"""Unit costs of this machine that bound the platform, measured in the same run.

* a persistent message published with a publisher confirm (what the scheduler does once per
  batch), and the same without waiting for the confirm;
* a small committed PostgreSQL transaction (what every batch, ingestion and API write pays
  at least once).

Each probe runs for a fixed short time, one client, on the run's own vhost and database.
"""

from __future__ import annotations

import time
from typing import Any

from kombu import Connection, Exchange, Queue
from sqlalchemy import Engine, text

_PROBE_QUEUE = "bench.probe"


def _publish_rate(broker_url: str, *, confirm: bool, seconds: float) -> float:
    exchange = Exchange(_PROBE_QUEUE, type="direct", durable=True)
    queue = Queue(_PROBE_QUEUE, exchange=exchange, routing_key="probe", durable=True)
    with Connection(broker_url, transport_options={"confirm_publish": confirm}) as conn:
        channel = conn.channel()
        queue(channel).declare()
        producer = conn.Producer(channel)
        sent = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            producer.publish({"n": sent}, exchange=exchange, routing_key="probe", delivery_mode=2)
            sent += 1
        elapsed = time.perf_counter() - started
        queue(channel).delete()
    return sent / elapsed


def _commit_rate(engine: Engine, seconds: float) -> float:
    """One single-row INSERT and its COMMIT (WAL flush) per loop."""
    with engine.connect() as conn:
        commits = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            conn.execute(
                text("INSERT INTO event_types (id, name) VALUES (gen_random_uuid(), :name)"),
                {"name": f"probe.c{commits}"},
            )
            conn.commit()
            commits += 1
        elapsed = time.perf_counter() - started
        conn.execute(text("DELETE FROM event_types WHERE name LIKE 'probe.c%'"))
        conn.commit()
    return commits / elapsed


def measure(broker_url: str, engine: Engine, seconds: float = 2.0) -> dict[str, Any]:
    """Run every probe for ``seconds``; rates per second."""
    return {
        "amqp_confirmed_publishes_per_s": round(
            _publish_rate(broker_url, confirm=True, seconds=seconds), 1
        ),
        "amqp_unconfirmed_publishes_per_s": round(
            _publish_rate(broker_url, confirm=False, seconds=seconds), 1
        ),
        "pg_small_commits_per_s": round(_commit_rate(engine, seconds), 1),
    }
