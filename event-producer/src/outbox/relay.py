"""The outbox relay: publishes committed outbox rows to RabbitMQ and marks them sent.

``python -m outbox.relay`` runs it against ``WEBHOOKS_PRODUCER_DATABASE_URL`` (or
``--database-url``) and ``WEBHOOKS_BROKER_URL``, with Prometheus metrics on port 9103.

Each round claims up to a batch of unsent rows with ``FOR UPDATE SKIP LOCKED`` (so several
relays share the work without sending a row twice at the same time), publishes each one to
the ``webhooks.events`` topic exchange (routing key = event type, persistent, the batch
committed as one AMQP transaction) and marks the batch sent in the same database
transaction.  A relay that dies after publishing and before committing leaves its rows unsent
and unlocked: they are published again, and ingestion deduplicates them by event id (at least
once, never lost).

It sleeps on ``LISTEN webhooks_outbox`` (``outbox.publish`` notifies at commit), so an event
leaves within milliseconds, with a poll every ``outbox_poll_seconds`` as a fallback.  When
RabbitMQ or the database is unreachable it backs off and retries (the lost-connection
policy of :mod:`webhooks_core.db`, its transactions run through ``run_transaction``);
producers keep committing rows meanwhile and the backlog drains when the broker returns.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

import amqp.exceptions  # type: ignore[import-untyped,unused-ignore]
import psycopg2  # type: ignore[import-untyped,unused-ignore]
from kombu import Connection
from kombu.exceptions import KombuError
from prometheus_client import Gauge, start_http_server
from sqlalchemy import Engine, func, update
from sqlalchemy import select as sql_select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from outbox.config import RelaySettings
from outbox.schema import NOTIFY_CHANNEL, OUTBOX
from outbox.topology import DECLARATIONS, EVENTS_EXCHANGE
from webhooks_core.db import Backoff, make_engine, make_session_factory, run_transaction
from webhooks_core.listen import Listener, libpq_dsn
from webhooks_core.logging import configure_logging
from webhooks_core.observability import OUTBOX_PUBLISHED
from webhooks_core.settings import SettingsError, redact_url

log = logging.getLogger("outbox.relay")

DEFAULT_METRICS_PORT = 9103

OUTBOX_BACKLOG = Gauge(
    "webhooks_outbox_backlog",
    "Outbox rows committed by producers and not yet confirmed by RabbitMQ.",
    multiprocess_mode="max",
)
OUTBOX_OLDEST_AGE = Gauge(
    "webhooks_outbox_oldest_age_seconds",
    "Age of the oldest unsent outbox row (0 when the backlog is empty).",
    multiprocess_mode="max",
)

# What a lost or refusing broker raises while connecting or publishing.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    KombuError,
    amqp.exceptions.AMQPError,
    amqp.exceptions.MessageNacked,
)


@dataclass(frozen=True)
class OutboxRow:
    """One unsent event as stored."""

    id: int
    event_id: str
    event_type: str
    body: str


class EventPublisher(Protocol):
    """Where the relay sends events; returns only once the broker has taken every message."""

    def publish(self, rows: Sequence[OutboxRow]) -> None:
        """Publish the events, all durably taken by the broker when this returns, or raise."""

    def close(self) -> None:
        """Drop the connection (a later publish reconnects)."""


class RabbitPublisher:
    """Publishes to the events exchange in AMQP transactions over one kombu connection.

    A batch is published and then committed with one ``tx.commit``: RabbitMQ answers
    ``commit-ok`` only once every persistent message of the batch is in its durable queues, so
    the batch costs one round trip instead of one confirm per message, and a relay that dies
    before the commit leaves none of them published.
    """

    def __init__(self, broker_url: str, *, connect_timeout: float = 5.0) -> None:
        self._url = broker_url
        self._connect_timeout = connect_timeout
        self._connection: Any = None
        self._producer: Any = None

    def _connect(self) -> Any:
        if self._producer is None:
            connection = Connection(self._url, connect_timeout=self._connect_timeout)
            connection.connect()
            channel = connection.channel()
            for entity in DECLARATIONS:
                entity(channel).declare()
            channel.tx_select()
            self._connection = connection
            self._producer = connection.Producer(channel)
            log.info("connected to RabbitMQ at %s", redact_url(self._url))
        return self._producer

    def publish(self, rows: Sequence[OutboxRow]) -> None:
        """Publish each row persistently with its event type as routing key, then commit."""
        producer = self._connect()
        for row in rows:
            producer.publish(
                row.body.encode(),
                exchange=EVENTS_EXCHANGE,
                routing_key=row.event_type,
                delivery_mode=2,
                content_type="application/json",
                content_encoding="utf-8",
                message_id=row.event_id,
                retry=False,
                # A broker that stops answering must not hang the relay: time out, reconnect.
                timeout=self._connect_timeout,
            )
        # The commit's answer is awaited with the socket's timeout (a lost broker raises).
        producer.channel.tx_commit()

    def close(self) -> None:
        """Close the connection, ignoring errors of a connection that is already gone."""
        connection, self._connection, self._producer = self._connection, None, None
        if connection is not None:
            try:
                connection.close()
            except BROKER_ERRORS:
                log.debug("error closing a broken connection", exc_info=True)


class Waker:
    """Waits for a NOTIFY on the outbox channel, or at most ``timeout`` seconds.

    Without a DSN, or while the database refuses the LISTEN connection, it just sleeps
    (polling); a connection lost while waiting returns at once and reconnects next time.
    """

    def __init__(self, dsn: str | None) -> None:
        self._listener = (
            Listener(dsn, [NOTIFY_CHANNEL], connect_timeout=5) if dsn is not None else None
        )

    def _listen(self) -> bool:
        if self._listener is None:
            return False
        try:
            self._listener.connect()
        except psycopg2.Error as exc:
            log.warning("cannot LISTEN for outbox commits (%s); polling", exc)
            return False
        return True

    def start(self) -> None:
        """LISTEN before the first round, so no commit after it goes unnoticed."""
        self._listen()

    def wait(self, timeout: float) -> None:
        """Return when a commit was notified (possibly already) or after ``timeout``."""
        listener = self._listener
        if listener is None or not self._listen():
            time.sleep(timeout)
            return
        listener.wait(timeout)

    def close(self) -> None:
        """Close the listening connection."""
        if self._listener is not None:
            self._listener.close()


class Relay:
    """Moves committed outbox rows to RabbitMQ; run one or several against one database."""

    def __init__(
        self,
        engine: Engine,
        publisher: EventPublisher,
        *,
        batch_size: int = 100,
        poll_seconds: float = 1.0,
        listen_dsn: str | None = None,
    ) -> None:
        self._sessions = make_session_factory(engine)
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._waker = Waker(listen_dsn)
        self._gauges_at = 0.0

    def relay_batch(self) -> int:
        """Claim, publish and mark sent one batch; return how many rows were sent.

        Rows stay locked (and unsent) until the commit at the end: an error or a crash in
        between releases them for the next round or another relay.  Tried once: the rows are
        published inside the transaction (past its point of no return), and :meth:`run`
        backs off and relays them again (at least once; ingestion deduplicates by event id).
        """
        sent = run_transaction(self._sessions, self._relay_rows, retry=False)
        OUTBOX_PUBLISHED.inc(sent)
        return sent

    def _relay_rows(self, session: Session) -> int:
        claimed = session.execute(
            sql_select(OUTBOX.c.id, OUTBOX.c.event_id, OUTBOX.c.event_type, OUTBOX.c.body)
            .where(OUTBOX.c.sent_at.is_(None))
            .order_by(OUTBOX.c.id)
            .limit(self._batch_size)
            .with_for_update(skip_locked=True)
        ).all()
        if not claimed:
            return 0
        rows = [OutboxRow(*row) for row in claimed]
        self._publisher.publish(rows)
        session.execute(
            update(OUTBOX)
            .where(OUTBOX.c.id.in_([row.id for row in rows]))
            .values(sent_at=func.now())
        )
        return len(rows)

    def update_gauges(self) -> None:
        """Export the backlog size and the age of its oldest row."""
        backlog = sql_select(
            func.count(), func.extract("epoch", func.now() - func.min(OUTBOX.c.created_at))
        ).where(OUTBOX.c.sent_at.is_(None))
        count, oldest = run_transaction(
            self._sessions, lambda session: session.execute(backlog).one(), what="outbox backlog"
        )
        OUTBOX_BACKLOG.set(count)
        OUTBOX_OLDEST_AGE.set(float(oldest or 0))

    def run(self, stop: threading.Event) -> None:
        """Relay until ``stop`` is set, surviving broker and database outages."""
        self._waker.start()
        backoff = Backoff()
        while not stop.is_set():
            self._maybe_update_gauges()
            try:
                sent = self.relay_batch()
            except BROKER_ERRORS as exc:
                self._publisher.close()
                delay = backoff.next()
                log.warning("RabbitMQ unavailable (%s); retrying in %.1f s", exc, delay)
                stop.wait(delay)
                continue
            except SQLAlchemyError as exc:
                delay = backoff.next()
                log.warning("outbox database unavailable (%s); retrying in %.1f s", exc, delay)
                stop.wait(delay)
                continue
            backoff.reset()
            if sent:
                log.debug("published %d outbox events", sent)
            if sent < self._batch_size:
                self._waker.wait(self._poll_seconds)
        self._publisher.close()
        self._waker.close()

    def _maybe_update_gauges(self) -> None:
        now = time.monotonic()
        if now - self._gauges_at < 1.0:
            return
        self._gauges_at = now
        try:
            self.update_gauges()
        except SQLAlchemyError as exc:
            log.warning("cannot read the outbox backlog (%s)", exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m outbox.relay``."""
    parser = argparse.ArgumentParser(prog="python -m outbox.relay", description=__doc__)
    parser.add_argument(
        "--database-url", help="the producer database (default: WEBHOOKS_PRODUCER_DATABASE_URL)"
    )
    parser.add_argument("--broker-url", help="RabbitMQ (default: WEBHOOKS_BROKER_URL)")
    parser.add_argument("--metrics-port", type=int, help="0 picks a free port; -1 serves none")
    args = parser.parse_args(argv)
    given = {"producer_database_url": args.database_url, "broker_url": args.broker_url}
    try:
        settings = RelaySettings.from_env(**{name: url for name, url in given.items() if url})
    except SettingsError as exc:
        print(f"outbox relay: {exc}", file=sys.stderr)
        return 2
    configure_logging("outbox-relay", log_format=settings.log_format, level=settings.log_level)
    database_url, broker_url = settings.producer_database_url, settings.broker_url
    port = args.metrics_port
    if port is None:
        port = settings.metrics_port if settings.metrics_port is not None else DEFAULT_METRICS_PORT
    if port >= 0:
        server, _ = start_http_server(port, addr=settings.metrics_host)
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, server.server_port)

    # Not checked at start: the relay waits for its database like for an outage.
    engine = make_engine(settings, url=database_url, pool_size=2, check=False)
    relay = Relay(
        engine,
        RabbitPublisher(broker_url),
        batch_size=settings.outbox_batch_size,
        poll_seconds=settings.outbox_poll_seconds,
        listen_dsn=libpq_dsn(database_url),
    )
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("relaying %s to %s", redact_url(database_url), redact_url(broker_url))
    relay.run(stop)
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
