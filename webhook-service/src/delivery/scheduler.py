"""The scheduler process: ``python -m delivery.scheduler`` (metrics on 9102 by default).

It LISTENs on ``webhooks_deliveries``; a trigger on ``deliveries`` notifies when a statement
makes deliveries due or ends a lease (an endpoint's slot frees), so new messages are claimed
within milliseconds.  Without notifications it still claims every
``WEBHOOKS_SCHEDULER_POLL_SECONDS`` (retries becoming due by time, lost notifications), and
expires leases on the same beat: a poison delivery (its lease ran out
``WEBHOOKS_MAX_LEASE_EXPIRIES`` times in a row) is dead-lettered here, published to
``webhooks.dead-letters`` and counted in ``webhooks_poison_deliveries_total``.  Any number
of schedulers may run; see :mod:`delivery.scheduling`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

from celery import Celery
from prometheus_client import REGISTRY
from sqlalchemy.orm import Session, sessionmaker

from delivery.broker import DELIVER_QUEUE_NAME
from delivery.celery_app import create_celery
from delivery.claim_keys import ParkedSweep
from delivery.clock import Clock, SystemClock
from delivery.config import DeliverySettings
from delivery.engine import DeadLetterPublisher
from delivery.flow_recording import forget_learnt_limits
from delivery.runtime import BrokerDeadLetterPublisher
from delivery.scheduling import (
    DELIVER_TASK,
    NOTIFY_CHANNEL,
    Claim,
    ClaimPublisher,
    PublishFailed,
    claim_cycle,
    expire_leases,
    release_claims,
)
from webhooks_core.db import Backoff, make_engine, make_session_factory, run_transaction
from webhooks_core.endpoints import sealing
from webhooks_core.listen import Listener, libpq_dsn
from webhooks_core.logging import configure_logging
from webhooks_core.monitoring import serve_process_metrics
from webhooks_core.observability import DEAD_LETTERED, ENDPOINTS_DISABLED, POISON_DELIVERIES
from webhooks_core.retention.run import start_retention

logger = logging.getLogger("delivery.scheduler")

DEFAULT_METRICS_PORT = 9102
# While endpoints at their limit hold a backlog back, new due deliveries wait at most this
# long for a claim cycle (each cycle scans past the backlog).
SATURATED_RESCAN_SECONDS = 0.05
# After a publish failed (the broker is down), claim again no sooner than this.
PUBLISH_RETRY_SECONDS = 1.0


class CeleryClaimPublisher:
    """Publishes each batch as one ``delivery.deliver`` task on ``webhooks.deliver``."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def publish(self, claims: list[Claim]) -> None:
        """Publish on one pooled connection; each publish waits for the broker's confirm.

        Raises :class:`PublishFailed` with the claims from the first unconfirmed one on.
        """
        done = 0
        try:
            with self.app.producer_or_acquire() as producer:
                for claim in claims:
                    self.app.send_task(
                        DELIVER_TASK,
                        args=[str(claim.lease_token), claim.delivery_ids],
                        queue=DELIVER_QUEUE_NAME,
                        producer=producer,
                    )
                    done += 1
        except Exception as exc:
            raise PublishFailed(claims[done:]) from exc


class Scheduler:
    """Claims due deliveries and publishes them; :meth:`run` until ``stop`` is set."""

    def __init__(
        self,
        settings: DeliverySettings,
        sessions: sessionmaker[Session],
        publisher: ClaimPublisher,
        clock: Clock,
        dead_letters: DeadLetterPublisher | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.publisher = publisher
        self.clock = clock
        self.dead_letters = dead_letters
        self._listener = Listener(libpq_dsn(settings.database_url), [NOTIFY_CHANNEL])
        self._last_expiry = 0.0
        self._wake_in: float | None = None
        self._publish_failed = False
        self._parked = ParkedSweep()

    def cycle(self) -> tuple[int, bool]:
        """One cycle: claim, publish, expire leases when due.  Returns the deliveries claimed
        and whether endpoints at their limit held work back."""
        claimed, saturated = self._claim_and_publish()
        # After the publish, so a new delivery never waits for it; what expires is due at once
        # and its UPDATE notifies, which wakes the next cycle.
        if time.monotonic() - self._last_expiry >= self.settings.scheduler_poll_seconds:
            self._last_expiry = time.monotonic()
            self._expire()
            self._sweep()
        return claimed, saturated

    def _sweep(self) -> None:
        """Wake parked deliveries whose key's head ended by a path that does not wake them
        (:class:`delivery.claim_keys.ParkedSweep`); what it wakes notifies the next claim."""
        woken = run_transaction(
            self.sessions,
            lambda session: self._parked.sweep(
                session, self.settings.ordering_sweep_keys, self.clock.now()
            ),
            what="parked sweep",
        )
        if woken:
            logger.info("parked deliveries woken by the sweep: %d", woken)

    def _expire(self) -> None:
        expiry = run_transaction(
            self.sessions,
            lambda session: expire_leases(session, self.settings, self.clock.now()),
            what="lease expiry",
        )
        if expiry.released:
            logger.warning("leases expired, deliveries due again: %d", len(expiry.released))
        if not expiry.dead_letters:
            return
        POISON_DELIVERIES.inc(len(expiry.dead_letters))
        DEAD_LETTERED.inc(len(expiry.dead_letters))
        for record in expiry.dead_letters:
            logger.error(
                "poison delivery dead-lettered delivery_id=%s endpoint_id=%s reason=%s",
                record["delivery_id"],
                record["endpoint_id"],
                record["reason"],
            )
        if self.dead_letters is not None:
            try:
                self.dead_letters.publish(expiry.dead_letters)
            except Exception:
                # Stored and listed by the API; only the queue copy is missing.
                logger.exception("publishing %d dead letters failed", len(expiry.dead_letters))

    def _claim_and_publish(self) -> tuple[int, bool]:
        # Run again at once when the pooled connection was dead (a database restart): the
        # claim had not committed.  Published only after the commit.
        result = run_transaction(
            self.sessions,
            lambda session: claim_cycle(session, self.settings, self.clock.now()),
            what="claim",
        )
        claims = result.claims
        self._wake_in = result.wake_in
        if claims:
            # After the commit, so a worker never sees a lease that is not there yet.
            try:
                self.publisher.publish(claims)
            except Exception as exc:
                unpublished = exc.unpublished if isinstance(exc, PublishFailed) else claims
                logger.exception(
                    "publishing %d of %d batches failed; they are due again",
                    len(unpublished),
                    len(claims),
                )
                self._publish_failed = True
                try:
                    run_transaction(
                        self.sessions,
                        lambda session: release_claims(session, unpublished, self.clock.now()),
                    )
                except Exception:
                    logger.exception("releasing them failed; they return when their leases expire")
        return sum(len(claim.delivery_ids) for claim in claims), result.saturated

    def wait(self, timeout: float) -> set[str]:
        """Sleep until a notification arrives or ``timeout`` passes; return their payloads.

        An empty set means the timeout passed (or the connection had to be rebuilt).
        """
        return self._listener.wait_or_sleep(timeout)

    def _sleep(self, stop: threading.Event, saturated: bool) -> None:
        """Wait for a reason to claim again.

        While endpoints at their in-flight limit hold work back, a new due delivery is most
        likely more of the same backlog, and each cycle scans past that backlog: a freed slot
        ('free') still claims at once, but new due deliveries ('due') are picked up at most
        every ``SATURATED_RESCAN_SECONDS``, not on every insert.
        """
        started = time.monotonic()
        deadline = started + min(self.settings.scheduler_poll_seconds, self._wake_in or 3600.0)
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            kinds = self.wait(left)
            if not kinds or "free" in kinds:
                return
            if "due" in kinds:
                if not saturated:
                    return
                deadline = min(deadline, started + SATURATED_RESCAN_SECONDS)

    def run(self, stop: threading.Event) -> None:
        """Claim until ``stop`` is set; a full claim loops at once, otherwise wait."""
        self._listener.connect()
        logger.info("scheduler running")
        backoff = Backoff()
        try:
            while not stop.is_set():
                try:
                    claimed, saturated = self.cycle()
                except Exception:
                    pause = backoff.next()
                    logger.exception("claim cycle failed; retrying in %.1f s", pause)
                    stop.wait(pause)
                    continue
                backoff.reset()
                if self._publish_failed:
                    self._publish_failed = False
                    stop.wait(PUBLISH_RETRY_SECONDS)
                    continue
                if claimed >= self.settings.scheduler_claim_limit:
                    continue  # more is due right now
                self._sleep(stop, saturated)
        finally:
            self._listener.close()


def main(settings: DeliverySettings | None = None, clock: Clock | None = None) -> None:
    """Run a scheduler until SIGTERM or SIGINT (settings from the environment, the system
    clock, unless :mod:`delivery.testing` passes others)."""
    settings = settings or DeliverySettings.from_env()
    configure_logging("scheduler", log_format=settings.log_format, level=settings.log_level)
    engine = make_engine(settings)  # the database gauges' (apart: a slow scrape waits alone)
    claims_engine = make_engine(settings, check=False)
    port = settings.metrics_port if settings.metrics_port is not None else DEFAULT_METRICS_PORT
    # The scheduler is the one process that also exports the database gauges.  Their
    # ``webhooks_endpoints_disabled`` gauge is the family name of the workers' counter of
    # disablings, which one exposition cannot hold twice; the scheduler never disables one.
    REGISTRY.unregister(ENDPOINTS_DISABLED)
    serve_process_metrics(
        port, host=settings.metrics_host, database_gauges_engine=engine, settings=settings
    )
    celery_app = create_celery(settings)
    scheduler = Scheduler(
        settings,
        make_session_factory(claims_engine),
        CeleryClaimPublisher(celery_app),
        clock or SystemClock(),
        BrokerDeadLetterPublisher(celery_app),
    )
    if not settings.flow_control:
        forgotten = run_transaction(make_session_factory(engine), forget_learnt_limits)
        logger.info("flow control is off: learnt limits of %d endpoints forgotten", forgotten)
    stop = threading.Event()
    # Secrets sealed under an older key are re-encrypted under the newest in the background.
    stop_resealing = sealing.start_resealing(engine, settings, settings.reseal_interval_seconds)
    # Partitions made ahead and expired data dropped in the background (docs/retention.md).
    stop_retention = start_retention(engine, settings, settings.retention_interval_seconds)

    def _stop(signum: int, frame: FrameType | None) -> Any:
        stop.set()
        for background in (stop_resealing, stop_retention):
            if background is not None:
                background.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    scheduler.run(stop)
    claims_engine.dispose()
    engine.dispose()


if __name__ == "__main__":
    main()
