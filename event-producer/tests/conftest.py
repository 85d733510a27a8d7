"""Fixtures of the event-producer tests: the producer database, a tap on the events exchange,
and outbox relays run as real subprocesses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Queue
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from outbox.topology import DECLARATIONS, EVENTS_EXCHANGE, INGEST_QUEUE
from producer.config import ProducerSettings
from producer.migrations import upgrade

PRODUCER_DATABASE_URL = os.environ.get(
    "WEBHOOKS_TEST_PRODUCER_DATABASE_URL",
    "postgresql+psycopg2://postgres@127.0.0.1:5432/webhooks_producer_test",
)


@pytest.fixture(scope="session")
def producer_database_url() -> str:
    return PRODUCER_DATABASE_URL


@pytest.fixture(scope="session")
def settings(make_settings: Callable[..., ProducerSettings]) -> ProducerSettings:
    """The producer's settings on the test databases and vhost."""
    return make_settings(ProducerSettings, producer_database_url=PRODUCER_DATABASE_URL)


@pytest.fixture(scope="session")
def producer_engine(producer_database_url: str) -> Iterator[Engine]:
    engine = create_engine(producer_database_url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    upgrade(producer_database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def producer_db(producer_engine: Engine) -> sessionmaker[Session]:
    """Empty producer tables, and a session factory on them."""
    with producer_engine.begin() as conn:
        conn.execute(text("TRUNCATE people, uploads, outbox RESTART IDENTITY"))
    return sessionmaker(producer_engine, expire_on_commit=False)


@dataclass
class Published:
    """One message seen on the events exchange."""

    routing_key: str
    body: dict[str, Any]
    raw: bytes
    properties: dict[str, Any]
    headers: dict[str, Any] = field(default_factory=dict)


class EventTap:
    """A private queue bound to every routing key of the events exchange."""

    def __init__(self, broker_url: str) -> None:
        self.connection = Connection(broker_url)
        channel = self.connection.channel()
        for entity in DECLARATIONS:
            entity(channel).declare()
        # The ingest queue of this vhost collects everything the tests publish; start empty.
        INGEST_QUEUE(channel).purge()
        self.queue = Queue(
            f"test.tap.{uuid.uuid4().hex}",
            exchange=EVENTS_EXCHANGE,
            routing_key="#",
            exclusive=True,
            auto_delete=True,
        )
        self.simple = self.connection.SimpleQueue(self.queue)

    def take(self, count: int, timeout: float = 20.0) -> list[Published]:
        """Exactly ``count`` messages, waiting up to ``timeout`` seconds in total."""
        deadline = time.monotonic() + timeout
        seen: list[Published] = []
        while len(seen) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"expected {count} published events, saw {len(seen)}")
            try:
                message = self.simple.get(block=True, timeout=min(remaining, 1.0))
            except self.simple.Empty:
                continue
            seen.append(
                Published(
                    message.delivery_info["routing_key"],
                    json.loads(message.body),
                    message.body,
                    dict(message.properties),
                    dict(message.headers or {}),
                )
            )
            message.ack()
        return seen

    def drain(self, quiet: float = 0.5) -> list[Published]:
        """Whatever else is queued now (stops after ``quiet`` seconds without a message)."""
        rest: list[Published] = []
        while True:
            try:
                message = self.simple.get(block=True, timeout=quiet)
            except self.simple.Empty:
                return rest
            rest.append(
                Published(
                    message.delivery_info["routing_key"],
                    json.loads(message.body),
                    message.body,
                    dict(message.properties),
                )
            )
            message.ack()

    def close(self) -> None:
        self.simple.close()
        self.connection.release()


@pytest.fixture
def tap(settings: ProducerSettings) -> Iterator[EventTap]:
    tap = EventTap(settings.broker_url)
    yield tap
    tap.close()


@dataclass
class RelayProcess:
    """A ``python -m outbox.relay`` subprocess and its log file."""

    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.output():
            assert self.process.poll() is None, f"relay exited: {self.output()}"
            assert time.monotonic() < deadline, f"no {needle!r} in the relay log: {self.output()}"
            time.sleep(0.05)


StartRelay = Callable[..., RelayProcess]


@pytest.fixture
def start_relay(
    settings: ProducerSettings, producer_database_url: str, tmp_path: Path
) -> Iterator[StartRelay]:
    started: list[RelayProcess] = []

    def start(broker_url: str | None = None, **env: str) -> RelayProcess:
        log = tmp_path / f"relay-{len(started)}.log"
        environment = {
            **os.environ,
            "WEBHOOKS_DATABASE_URL": settings.database_url,
            "WEBHOOKS_OUTBOX_POLL_SECONDS": "0.2",
            **env,
        }
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "outbox.relay",
                    f"--database-url={producer_database_url}",
                    f"--broker-url={broker_url or settings.broker_url}",
                    "--metrics-port=-1",
                ],
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        relay = RelayProcess(process, log)
        started.append(relay)
        return relay

    yield start
    for relay in started:
        if relay.process.poll() is None:
            relay.process.kill()
        relay.process.wait(timeout=10)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections (bound, never listening)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def producer_settings(
    settings: ProducerSettings, producer_database_url: str, tmp_path: Path, db: Any
) -> ProducerSettings:
    """Settings of a producer on the test databases (platform tables emptied by ``db``)."""
    return settings.model_copy(
        update={
            "producer_database_url": producer_database_url,
            "upload_dir": str(tmp_path / "uploads"),
            "upload_max_bytes": 64 * 1024,
        }
    )


@pytest.fixture
def producer_client(producer_settings: ProducerSettings, producer_db: sessionmaker[Session]) -> Any:
    from producer.app import create_app

    return create_app(producer_settings).test_client()


@pytest.fixture
def outbox_events(producer_engine: Engine) -> Callable[[], list[dict[str, Any]]]:
    """The envelopes in the outbox, oldest first."""

    def read() -> list[dict[str, Any]]:
        with producer_engine.connect() as conn:
            rows = conn.execute(text("SELECT body FROM outbox ORDER BY id")).scalars()
            return [json.loads(body) for body in rows]

    return read
