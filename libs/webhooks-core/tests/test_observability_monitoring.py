"""Metrics across processes and the database-derived gauges."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client import multiprocess as prometheus_multiprocess
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.db import transaction
from webhooks_core.messages.envelope import Envelope
from webhooks_core.messages.fanout import accept_message
from webhooks_core.models import Application, DeadLetter, Delivery, Endpoint, Message
from webhooks_core.monitoring import DatabaseGauges, ProcessGroupCollector


def samples(collector: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)  # type: ignore[arg-type]
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


def make_endpoint(session: Session, app_id: uuid.UUID, **fields: object) -> Endpoint:
    endpoint = Endpoint(application_id=app_id, url=f"https://example.com/{uuid.uuid4()}", **fields)
    session.add(endpoint)
    session.flush()
    return endpoint


def test_database_gauges_count_what_the_database_holds(
    db: sessionmaker[Session], engine: Engine
) -> None:
    # Taken when the test runs (not at import): the gauges compare with the database's now().
    now = datetime.now(UTC)
    with transaction(db) as session:
        app = Application(name="gauges")
        session.add(app)
        session.flush()
        healthy = make_endpoint(session, app.id)
        make_endpoint(
            session, app.id, circuit_open_until=now + timedelta(minutes=5), consecutive_failures=5
        )
        make_endpoint(
            session, app.id, circuit_open_until=now - timedelta(minutes=1), consecutive_failures=5
        )
        make_endpoint(session, app.id, enabled=False, disabled_reason="gone")
        make_endpoint(session, app.id, enabled=False, deleted_at=now)  # deleted: not counted
        make_endpoint(session, app.id, kind="relay")  # one-off relay target: not counted
        message = Message(
            event_id="evt_gauges",
            application_id=app.id,
            event_type="person.created",
            payload={},
            occurred_at=now,
            source="http",
        )
        session.add(message)
        session.flush()
        states = [
            ("pending", now - timedelta(hours=2), now - timedelta(seconds=90)),
            ("pending", now - timedelta(minutes=1), now + timedelta(minutes=1)),
            ("retrying", now - timedelta(minutes=30), now + timedelta(minutes=5)),
            ("sending", now - timedelta(minutes=3), None),
            ("delivered", now - timedelta(days=3), None),
            ("dead", now - timedelta(days=2), None),
        ]
        deliveries = []
        for state, created, due in states:
            endpoint = make_endpoint(session, app.id)
            delivery = Delivery(
                message_id=message.id,
                endpoint_id=endpoint.id,
                application_id=app.id,
                event_type="person.created",
                state=state,
                created_at=created,
                next_attempt_at=due,
            )
            session.add(delivery)
            deliveries.append(delivery)
        session.flush()
        dead = deliveries[-1]
        session.add(
            DeadLetter(
                delivery_id=dead.id,
                endpoint_id=dead.endpoint_id,
                application_id=app.id,
                reason="retries exhausted",
            )
        )
        session.add(
            DeadLetter(
                delivery_id=dead.id,
                endpoint_id=dead.endpoint_id,
                application_id=app.id,
                reason="earlier",
                redriven_at=now,
            )
        )
        assert healthy.id

    values = samples(DatabaseGauges(engine))

    assert values[("webhooks_database_up", ())] == 1
    pending = {
        labels[0][1]: v
        for (name, labels), v in values.items()
        if name == "webhooks_deliveries_pending"
    }
    assert pending == {"pending": 2, "sending": 1, "retrying": 1}
    assert (
        2 * 3600 - 5
        < values[("webhooks_deliveries_oldest_pending_age_seconds", ())]
        < 2 * 3600 + 60
    )
    assert 85 < values[("webhooks_deliveries_overdue_seconds", ())] < 150
    assert values[("webhooks_dead_letters_open", ())] == 1
    circuits = {
        labels[0][1]: v
        for (name, labels), v in values.items()
        if name == "webhooks_endpoints_circuit_state"
    }
    # 6 delivery endpoints + the healthy one are closed; one open; one probing (half open).
    assert circuits == {"closed": 7, "open": 1, "half_open": 1}
    assert values[("webhooks_endpoints_disabled", ())] == 1


def test_database_gauges_are_zero_on_an_empty_database(
    db: sessionmaker[Session], engine: Engine
) -> None:
    values = samples(DatabaseGauges(engine))
    assert values[("webhooks_deliveries_oldest_pending_age_seconds", ())] == 0
    assert values[("webhooks_deliveries_overdue_seconds", ())] == 0
    assert values[("webhooks_dead_letters_open", ())] == 0
    assert values[("webhooks_deliveries_parked", ())] == 0


def test_the_parked_gauge_counts_deliveries_behind_their_key(
    db: sessionmaker[Session], engine: Engine
) -> None:
    with transaction(db) as session:
        app = Application(name="parked")
        session.add(app)
        session.flush()
        session.add(Endpoint(application_id=app.id, url="http://127.0.0.1:9/parked"))
        session.flush()
        for key in ("k", "k", "k", "j"):
            envelope = Envelope(type="person.updated", data={}, ordering_key=key)
            accept_message(session, envelope, source="http", application_id=app.id)
    values = samples(DatabaseGauges(engine))
    assert values[("webhooks_deliveries_parked", ())] == 2


def test_an_unreachable_database_reports_down_instead_of_failing_the_scrape() -> None:
    unreachable = create_engine(
        "postgresql+psycopg2://postgres@127.0.0.1:1/nothing", connect_args={"connect_timeout": 2}
    )
    values = samples(DatabaseGauges(unreachable))
    assert values[("webhooks_database_up", ())] == 0
    assert not any(name.startswith("webhooks_deliveries") for name, _ in values)


WRITER = """
import sys, time
from webhooks_core.observability import ATTEMPTS, IN_FLIGHT
count, stay = int(sys.argv[1]), sys.argv[2] == "stay"
for _ in range(count):
    ATTEMPTS.labels("success").inc()
IN_FLIGHT.labels("webhooks.deliver").inc()
print("ready", flush=True)
if stay:
    sys.stdin.read()
"""


def test_counters_of_all_processes_add_up_and_dead_processes_leave_live_gauges(
    tmp_path: Path,
) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    finished = [
        subprocess.run(
            [sys.executable, "-c", WRITER, str(n), "exit"], env=env, check=True, capture_output=True
        )
        for n in (3, 4)
    ]
    alive = subprocess.Popen(
        [sys.executable, "-c", WRITER, "5", "stay"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert alive.stdout is not None
        assert alive.stdout.readline().strip() == b"ready"
        # The two finished writers are gone: what the gunicorn/Celery hooks do for them.
        for pid_file in tmp_path.glob("gauge_livesum_*.db"):
            pid = int(pid_file.stem.rsplit("_", 1)[1])
            if pid != alive.pid:
                prometheus_multiprocess.mark_process_dead(pid, str(tmp_path))

        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
        attempts = registry.get_sample_value(
            "webhooks_delivery_attempts_total", {"outcome": "success"}
        )
        in_flight = registry.get_sample_value(
            "webhooks_tasks_in_flight", {"queue": "webhooks.deliver"}
        )
    finally:
        alive.communicate(b"")
    assert all(result.returncode == 0 for result in finished)
    assert attempts == 3 + 4 + 5  # counters survive their process
    assert in_flight == 1  # only the live process is still busy


def test_process_group_metrics_cover_this_process_and_its_children() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        values = samples(ProcessGroupCollector())
    finally:
        child.communicate(b"")
    assert values[("webhooks_processes", ())] >= 2
    assert values[("process_resident_memory_bytes", ())] > 10 * 1024 * 1024
    assert values[("process_cpu_seconds_total", ())] > 0
