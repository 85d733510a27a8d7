"""The Celery consumer step that feeds ``webhooks.ingest`` to :func:`delivery.ingest.ingest_batch`.

It runs in the worker's main process next to Celery's own task consumer.  Messages are
gathered for at most ``FLUSH_SECONDS`` (or until a prefetch window is full; one arriving after
an idle spell goes at once), stored in one transaction, and acknowledged only after that
transaction committed (late ack: a worker that dies first leaves them on the queue for
redelivery, and the event id, unique per application, makes that harmless).  A message that
cannot be parsed is rejected without requeue, so RabbitMQ dead-letters it to
``webhooks.ingest.dead``; a database failure requeues the batch after a pause (the
lost-connection policy's backoff, :mod:`webhooks_core.db`; a connection lost under the
transaction was already run again once on a new one).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import bootsteps
from kombu import Consumer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from delivery.broker import INGEST_DEAD_QUEUE, INGEST_QUEUE
from delivery.celery_app import settings_of
from delivery.ingest import Unparseable, ingest_batch
from webhooks_core.db import Backoff, make_engine, make_session_factory

log = logging.getLogger(__name__)

# Messages RabbitMQ may hand over before they are acknowledged; also the largest batch.
INGEST_PREFETCH = 64
# How long a message may wait for others to share its transaction.
FLUSH_SECONDS = 0.005


class IngestStep(bootsteps.ConsumerStep):  # type: ignore[misc]
    """Consumes the events exchange's ingest queue and stores each message once."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._app = parent.app
        self._sessions: sessionmaker[Session] | None = None
        self._pending: list[Any] = []
        self._flush_entry: Any = None
        self._last_flush = 0.0
        self._backoff = Backoff()

    def _session_factory(self) -> sessionmaker[Session]:
        if self._sessions is None:
            settings = settings_of(self._app)
            self._sessions = make_session_factory(make_engine(settings, check=False))
        return self._sessions

    def get_consumers(self, channel: Any) -> list[Any]:
        """One kombu consumer on ``webhooks.ingest``; declares the dead-letter queue first."""
        INGEST_DEAD_QUEUE(channel).declare()
        return [
            Consumer(
                channel,
                queues=[INGEST_QUEUE],
                on_message=self.on_message,
                prefetch_count=INGEST_PREFETCH,
            )
        ]

    def start(self, c: Any) -> None:
        """Start consuming; with Celery's event loop, flush partial batches on a timer."""
        self._pending = []
        super().start(c)
        hub = getattr(c, "hub", None)
        if hub is not None:
            self._flush_entry = hub.call_repeatedly(FLUSH_SECONDS, self.flush)

    def stop(self, c: Any) -> None:
        """Store what was received before the consumer goes away."""
        self._drain()
        super().stop(c)

    def shutdown(self, c: Any) -> None:
        """Same as stop, at worker shutdown."""
        self._drain()
        super().shutdown(c)

    def _drain(self) -> None:
        self._cancel_timer()
        try:
            self.flush()
        except Exception:  # a lost channel: unacked messages come back anyway
            log.warning("could not acknowledge ingested events at stop", exc_info=True)

    def _cancel_timer(self) -> None:
        entry, self._flush_entry = self._flush_entry, None
        if entry is not None:
            entry.cancel()

    def on_message(self, message: Any) -> None:
        """Queue the message for the next flush.

        Flushed now without an event loop, when the batch is full, or when the consumer was
        idle (nothing stored for ``FLUSH_SECONDS``): a lone event does not wait for company
        that is not coming, while a steady stream still shares transactions.
        """
        self._pending.append(message)
        if (
            self._flush_entry is None
            or len(self._pending) >= INGEST_PREFETCH
            or time.monotonic() - self._last_flush >= FLUSH_SECONDS
        ):
            self.flush()

    def flush(self) -> None:
        """Store the pending messages in one transaction, then acknowledge or reject each."""
        batch, self._pending = self._pending, []
        if not batch:
            return
        self._last_flush = time.monotonic()
        try:
            outcomes = ingest_batch(self._session_factory(), [message.body for message in batch])
        except SQLAlchemyError as exc:
            pause = self._backoff.next()
            log.error(
                "cannot store %d events (%s); requeueing them in %.1f s",
                len(batch),
                type(exc).__name__,
                pause,
            )
            time.sleep(pause)
            for message in batch:
                message.requeue()
            return
        self._backoff.reset()
        for message, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Unparseable):
                log.warning("dead-lettering an unparseable event (%s): %s", outcome.reason, outcome)
                message.reject(requeue=False)
            else:
                message.ack()
