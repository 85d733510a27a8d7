"""Fixtures of the broker-ingestion tests: a real Celery worker (subprocess) consuming
``webhooks.ingest`` in the test vhost, a publisher to the events exchange, and the producer
database for the end-to-end test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from delivery.broker import EVENTS_EXCHANGE, INGEST_DEAD_QUEUE, INGEST_QUEUE
from delivery.config import DeliverySettings
from producer.config import ProducerSettings
from webhooks_core.models import Message

PRODUCER_DATABASE_URL = os.environ.get(
    "WEBHOOKS_TEST_PRODUCER_DATABASE_URL",
    "postgresql+psycopg2://postgres@127.0.0.1:5432/webhooks_producer_test",
)


@pytest.fixture(scope="session")
def broker_connection(settings: DeliverySettings) -> Iterator[Connection]:
    connection = Connection(settings.broker_url, transport_options={"confirm_publish": True})
    channel = connection.default_channel
    for entity in (EVENTS_EXCHANGE, INGEST_QUEUE, INGEST_DEAD_QUEUE):
        entity(channel).declare()
    yield connection
    connection.release()


class IngestWorker:
    """``celery -A delivery.worker worker`` on the test database and vhost, restartable.

    It listens to no task queue of the platform (``-Q`` names a private one), so it only
    ingests: nothing in these tests is ever sent anywhere.
    """

    def __init__(self, settings: DeliverySettings, log: Path) -> None:
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.env = {
            **os.environ,
            "WEBHOOKS_DATABASE_URL": settings.database_url,
            "WEBHOOKS_BROKER_URL": settings.broker_url,
            "WEBHOOKS_ALLOWED_TARGET_NETWORKS": "127.0.0.0/8",
        }
        self.env.pop("WEBHOOKS_METRICS_PORT", None)

    def start(self) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "delivery.worker",
                    "worker",
                    "--pool=solo",
                    "--queues=webhooks.test.ingest-only",
                    "--hostname=ingest-test@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "--loglevel=INFO",
                ],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while b"ready" not in self.log.read_bytes()[offset:]:
            assert self.process.poll() is None, self.log.read_text(errors="replace")
            assert time.monotonic() < deadline, self.log.read_text(errors="replace")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no flush, no acks, as if the machine died."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=20)
            self.process = None


# Module scope: the worker must stop when these tests end, or it would keep ingesting the
# events that later suites (monitoring's live stack) publish to the same vhost.
@pytest.fixture(scope="module")
def ingest_worker(
    settings: DeliverySettings, engine: Engine, broker_connection: Connection, tmp_path_factory: Any
) -> Iterator[IngestWorker]:
    """One ingesting worker for the module's tests (they may kill and restart it)."""
    channel = broker_connection.default_channel
    INGEST_QUEUE(channel).purge()
    INGEST_DEAD_QUEUE(channel).purge()
    worker = IngestWorker(settings, Path(tmp_path_factory.mktemp("worker")) / "worker.log")
    worker.start()
    yield worker
    # Every message was acknowledged once the tests are done, and Celery's own shutdown takes
    # seconds: kill it.
    worker.kill()


@pytest.fixture
def publish_raw(broker_connection: Connection, ingest_worker: Any) -> Callable[..., None]:
    """Publish a body to the events exchange as a producer would."""
    producer = broker_connection.Producer()

    def publish(body: bytes, routing_key: str = "person.created") -> None:
        producer.publish(
            body,
            exchange=EVENTS_EXCHANGE,
            routing_key=routing_key,
            delivery_mode=2,
            content_type="application/json",
            content_encoding="utf-8",
        )

    return publish


@pytest.fixture
def wait_for_messages(db: sessionmaker[Session]) -> Callable[..., list[Message]]:
    """Poll until ``count`` messages are stored (or fail after ``timeout`` seconds)."""

    def wait(count: int, timeout: float = 20.0) -> list[Message]:
        deadline = time.monotonic() + timeout
        while True:
            with db() as session:
                stored = session.scalar(select(func.count()).select_from(Message)) or 0
                if stored >= count:
                    return list(session.scalars(select(Message).order_by(Message.id)))
            assert time.monotonic() < deadline, f"{stored} of {count} messages stored"
            time.sleep(0.05)

    return wait


@pytest.fixture
def dead_letters(broker_connection: Connection) -> Callable[..., list[bytes]]:
    """Take ``count`` bodies from ``webhooks.ingest.dead`` (waiting up to ``timeout``)."""

    def take(count: int, timeout: float = 20.0) -> list[bytes]:
        # basic.get, not a consumer: kombu consumers decode bodies, and these do not decode.
        queue = INGEST_DEAD_QUEUE(broker_connection.default_channel)
        bodies: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(bodies) < count:
            assert time.monotonic() < deadline, f"{len(bodies)} of {count} dead-lettered"
            message = queue.get(no_ack=True)
            if message is None:
                time.sleep(0.05)
                continue
            body = message.body
            bodies.append(body.encode() if isinstance(body, str) else body)
        return bodies

    return take


@pytest.fixture(scope="session")
def producer_engine() -> Iterator[Engine]:
    """The producer test database, migrated from empty."""
    from producer.migrations import upgrade

    engine = create_engine(PRODUCER_DATABASE_URL)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    upgrade(PRODUCER_DATABASE_URL)
    yield engine
    engine.dispose()


@pytest.fixture
def producer_settings(
    make_settings: Callable[..., ProducerSettings],
    producer_engine: Engine,
    tmp_path: Path,
    db: Any,
) -> ProducerSettings:
    with producer_engine.begin() as conn:
        conn.execute(text("TRUNCATE people, uploads, outbox RESTART IDENTITY"))
    return make_settings(
        ProducerSettings,
        producer_database_url=PRODUCER_DATABASE_URL,
        upload_dir=str(tmp_path / "uploads"),
    )
