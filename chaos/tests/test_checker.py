"""The chaos checker counts loss, duplicates, phantoms, forged signatures and stranded
deliveries of the healthy applications, how the poisoned application's deliveries ended, and
catches a real loss: a worker that acknowledges events before storing them, killed at that
moment."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
from kombu import Connection, Exchange
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from bench import seed
from bench.receiver import Receipt, RunningReceiver, endpoint_path
from bench.stack import PYTHON, ServiceNames, Stack, base_env, celery_bin, reset_services
from chaos.checker import (
    ChaosReport,
    check,
    check_poisoned,
    delivery_states,
    passed,
    receipts_at,
)
from webhooks_core.messages.envelope import Envelope
from webhooks_core.models import Base

SEED = "chaos-test-seed"


def receipt(webhook_id: str, path: str, *, status: int = 200, signature: int = 1) -> Receipt:
    return Receipt(0.0, webhook_id, path, signature, status)


SUBS = {"/a": ["t.one"], "/b": ["t.one", "t.two"]}
EVENTS = [("e1", "t.one"), ("e2", "t.two")]


def test_a_clean_run_passes() -> None:
    states = {("e1", "/a"): "delivered", ("e1", "/b"): "delivered", ("e2", "/b"): "delivered"}
    receipts = [receipt("e1", "/a"), receipt("e1", "/b"), receipt("e2", "/b", status=500)]
    receipts.append(receipt("e2", "/b"))  # the retry after the 500
    report = check(EVENTS, SUBS, states, receipts)
    assert (report.events, report.deliveries, report.delivered) == (2, 3, 3)
    assert (report.lost, report.duplicates, report.phantoms, report.bad_signatures) == (0, 0, 0, 0)
    assert report.passed
    assert report.line() == ("chaos: events=2 deliveries=3 delivered=3 dead=0 lost=0 duplicates=0")


def test_loss_duplicates_phantoms_and_forgeries_are_counted() -> None:
    states = {("e1", "/a"): "delivered", ("e1", "/b"): "dead"}  # e2 never became a message
    receipts = [
        receipt("e1", "/a"),
        receipt("e1", "/a"),  # a duplicate
        receipt("e1", "/b", status=500),
        receipt("e9", "/a"),  # a phantom
        receipt("e1", "/a", signature=0),  # forged
    ]
    report = check(EVENTS, SUBS, states, receipts)
    assert report.dead == 1
    assert report.lost == 1  # e2 -> /b: no receipt, not dead
    assert report.stranded == 1
    assert report.duplicates == 2
    assert report.phantoms == 1
    assert report.bad_signatures == 1
    assert not report.passed


def test_delivered_rows_without_a_receipt_are_lost() -> None:
    states = {("e1", "/a"): "delivered", ("e1", "/b"): "delivered", ("e2", "/b"): "delivered"}
    report = check(EVENTS, SUBS, states, [receipt("e1", "/a"), receipt("e1", "/b")])
    assert report.lost == 1
    assert report.delivered_without_receipt == 1


def test_healthy_deliveries_left_open_are_stranded_even_when_received() -> None:
    # A batch jammed by a poisoned delivery: sent (and answered 2xx) again and again, its
    # rows never leave "sending"; another never got a row past "retrying".
    states = {("e1", "/a"): "sending", ("e1", "/b"): "retrying", ("e2", "/b"): "delivered"}
    receipts = [receipt("e1", "/a"), receipt("e1", "/a"), receipt("e2", "/b")]
    report = check(EVENTS, SUBS, states, receipts)
    assert (report.stranded, report.lost, report.duplicates) == (2, 1, 1)
    assert not report.passed
    assert "stranded=2" in report.detail_line()


def test_a_cancelled_healthy_delivery_is_lost_unless_received() -> None:
    states = {("e1", "/a"): "cancelled", ("e1", "/b"): "cancelled", ("e2", "/b"): "delivered"}
    receipts = [receipt("e1", "/a"), receipt("e2", "/b")]
    report = check(EVENTS, SUBS, states, receipts)
    assert (report.cancelled, report.stranded, report.lost) == (2, 0, 1)


POISONED = {
    ("p1", "/r/nul/x"): "delivered",
    ("p1", "/r/cut/y"): "delivered",  # a response cut in its headers, taken for a success
    ("p2", "/r/gone/z"): "cancelled",
    ("p3", "/r/timeout/w"): "dead",
    ("p4", "/r/ok/headers-null"): "sending",  # jammed: stranded
    ("p5", "/r/ok/headers-null"): "pending",
}
POISONED_RECEIPTS = [
    receipt("p1", "/r/nul/x"),
    receipt("p1", "/r/cut/y", status=-1),
    receipt("p2", "/r/gone/z", status=410),
    receipt("p3", "/r/timeout/w", status=0),
]


def test_the_poisoned_application_is_counted_by_terminal_state() -> None:
    report = check_poisoned(POISONED, POISONED_RECEIPTS)
    assert (report.deliveries, report.delivered, report.dead, report.cancelled) == (6, 2, 1, 1)
    assert report.stranded == 2
    assert report.delivered_without_2xx == 1
    assert report.by_endpoint["/r/ok/headers-null"] == {"pending": 1, "sending": 1}
    assert not report.passed
    assert report.line() == (
        "chaos-poisoned: deliveries=6 delivered=2 dead=1 cancelled=1 stranded=2 "
        "delivered_without_2xx=1"
    )


def test_the_run_fails_on_a_stranded_poisoned_delivery_alone() -> None:
    healthy = check(
        EVENTS,
        SUBS,
        {("e1", "/a"): "delivered", ("e1", "/b"): "delivered", ("e2", "/b"): "dead"},
        [receipt("e1", "/a"), receipt("e1", "/b")],
    )
    assert healthy.passed
    stranded = check_poisoned(POISONED, POISONED_RECEIPTS)
    ended = check_poisoned(
        {pair: "dead" if state in {"sending", "pending"} else state
         for pair, state in POISONED.items()},
        POISONED_RECEIPTS,
    )  # fmt: skip
    assert ended.passed
    assert passed(healthy, ended)
    assert not passed(healthy, stranded)
    # The closing line stays the healthy applications' alone.
    assert healthy.line() == "chaos: events=2 deliveries=3 delivered=2 dead=1 lost=0 duplicates=0"


def test_receipts_are_split_by_application_paths() -> None:
    receipts = [receipt("e1", "/a"), *POISONED_RECEIPTS]
    healthy = receipts_at(receipts, SUBS)
    assert [r.path for r in healthy] == ["/a"]
    # Without the split, the poisoned receivers' requests would be healthy phantoms.
    assert check(EVENTS, SUBS, {}, receipts).phantoms == 4
    assert check(EVENTS, SUBS, {}, healthy).phantoms == 0


# --- a real loss, caught -----------------------------------------------------------------


@pytest.fixture(scope="module")
def chaos_env() -> tuple[ServiceNames, dict[str, str]]:
    """A database and vhost of this test's own, next to the test ones (``<name>_chaos``)."""
    database = make_url(
        os.environ.get(
            "WEBHOOKS_TEST_DATABASE_URL",
            "postgresql+psycopg2://postgres@127.0.0.1:5432/webhooks_test",
        )
    ).database
    vhost = os.environ.get(
        "WEBHOOKS_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/webhooks_test"
    ).rsplit("/", 1)[1]
    names = ServiceNames(
        database=f"{database}_chaos",
        producer_database=f"{database}_chaos_producer",
        vhost=f"{vhost}_chaos",
    )
    # A lease must outlast one request's total deadline, or the engine releases every batch.
    env = base_env(
        names,
        lease_seconds="20",
        total_timeout_seconds="5",
        read_timeout_seconds="3",
        scheduler_poll_seconds="0.5",
        log_level="INFO",
    )
    reset_services(names, env, producer=False)
    return names, env


def _wait(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _queue_depth(vhost: str, queue: str) -> int:
    import subprocess

    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "messages", "consumers"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in listing.splitlines():
        parts = line.split()
        if parts and parts[0] == queue:
            return int(parts[1])
    return 0


def _consumers(vhost: str, queue: str) -> int:
    import subprocess

    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "consumers"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in listing.splitlines():
        parts = line.split()
        if parts and parts[0] == queue:
            return int(parts[1])
    return 0


def _worker_argv(module: str) -> list[str]:
    return [
        celery_bin(), "-A", module, "worker", "--pool", "threads", "--concurrency", "4",
        "-Q", "webhooks.deliver", "--without-mingle", "--without-gossip", "-l", "INFO",
    ]  # fmt: skip


def _waiting_on_lock(engine: Engine, database: str) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = :db "
                    "AND wait_event_type = 'Lock' AND query ILIKE 'INSERT INTO messages%'"
                ),
                {"db": database},
            ).scalar_one()
        )


def kill_during_ingest(
    names: ServiceNames, env: dict[str, str], tmp_path: Path, worker_module: str
) -> ChaosReport:
    """Publish three events while ``messages`` is locked, SIGKILL the ingesting worker while
    it waits on the lock, heal with a real worker, and run the checker."""
    engine = seed.make_engine(names.database_url)
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    stack = Stack(tmp_path / "logs")
    receiver = RunningReceiver(tmp_path / "receipts", seed=SEED)
    locker = engine.connect()
    try:
        receiver.start()
        event_type = f"chaos.t{uuid.uuid4().hex[:8]}"
        seed.ensure_event_types(engine, [event_type])
        app_id = seed.create_application(engine, "chaos-test")
        paths = [endpoint_path("ok", f"{event_type}-{i}") for i in range(2)]
        seed.create_endpoints(
            engine, app_id, receiver.url(""), SEED, [(path, [event_type]) for path in paths]
        )
        stack.start(
            "scheduler", [PYTHON, "-m", "delivery.scheduler"], {**env, "WEBHOOKS_METRICS_PORT": "0"}
        )
        stack.start("worker", _worker_argv(worker_module), env)
        _wait(lambda: _consumers(names.vhost, "webhooks.ingest") >= 1, 60, "the ingest consumer")

        locker.begin()
        locker.execute(text("LOCK TABLE messages IN EXCLUSIVE MODE"))
        envelopes = [Envelope(type=event_type, data={"n": n}) for n in range(3)]
        with Connection(names.broker_url, transport_options={"confirm_publish": True}) as amqp:
            producer = amqp.Producer(exchange=Exchange("webhooks.events", type="topic"))
            for envelope in envelopes:
                producer.publish(
                    envelope.to_json(),
                    routing_key=envelope.type,
                    content_type="application/json",
                    content_encoding="utf-8",
                    delivery_mode=2,
                )
        _wait(lambda: _waiting_on_lock(engine, names.database), 30, "ingestion to block")
        stack.kill("worker")  # SIGKILL mid-ingest: after the early ack, before the commit
        locker.rollback()

        stack.start("healer", _worker_argv("delivery.worker"), env)
        _wait(lambda: _queue_depth(names.vhost, "webhooks.ingest") == 0, 60, "ingestion")
        _wait(
            lambda: seed.states(engine, event_type).keys() <= {"delivered", "dead"},
            60,
            "deliveries to finish",
        )
        states = delivery_states(engine, paths)
        receipts = receiver.receipts()
    finally:
        locker.close()
        stack.stop()
        receiver.stop()
        engine.dispose()
    return check(
        [(envelope.id, event_type) for envelope in envelopes],
        {path: [event_type] for path in paths},
        states,
        receipts,
    )


@pytest.mark.slow
def test_the_checker_catches_loss_when_acks_are_early(
    chaos_env: tuple[ServiceNames, dict[str, str]], tmp_path: Path
) -> None:
    report = kill_during_ingest(*chaos_env, tmp_path, "chaos.early_ack_worker")
    assert report.lost > 0, report
    assert report.phantoms == report.bad_signatures == 0


@pytest.mark.slow
def test_late_acks_lose_nothing_under_the_same_kill(
    chaos_env: tuple[ServiceNames, dict[str, str]], tmp_path: Path
) -> None:
    report = kill_during_ingest(*chaos_env, tmp_path, "delivery.worker")
    assert report.passed, report
    assert (report.events, report.deliveries, report.delivered) == (3, 6, 6)
