"""What a delivery worker process holds: engine, sender pools, clock, dead-letter publisher.

Built once per process (lazily, on the first task) from the Celery app's settings, and shared
by the pool's threads: the session factory, the urllib3 pools and the kombu producer pool are
thread-safe.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery

from delivery.broker import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE
from delivery.celery_app import settings_of
from delivery.config import DeliverySettings
from delivery.engine import DeliveryRuntime
from delivery.sender import HttpSender, Resolver, system_resolver
from webhooks_core.db import make_engine

_lock = threading.Lock()
_runtimes: dict[int, DeliveryRuntime] = {}


class BrokerDeadLetterPublisher:
    """Publishes dead letters, persistent and confirmed, to the ``webhooks.dead-letters`` queue."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def publish(self, records: list[dict[str, Any]]) -> None:
        """One message per dead letter; the queue is declared on first use."""
        with self.app.producer_or_acquire() as producer:
            for record in records:
                producer.publish(
                    record,
                    exchange=DEAD_LETTER_EXCHANGE,
                    routing_key="dead-letter",
                    declare=[DEAD_LETTER_QUEUE],
                    serializer="json",
                    delivery_mode=2,
                    retry=True,
                    retry_policy={"max_retries": 3, "interval_start": 0.2},
                )


def http_sender(settings: DeliverySettings, resolver: Resolver = system_resolver) -> HttpSender:
    """The real sender with the HTTP client the settings choose (WEBHOOKS_HTTP_CLIENT)."""
    if settings.http_client == "aiohttp":
        from delivery.aiohttp_sender import AioHttpSender

        return AioHttpSender(settings, resolver)
    return HttpSender(settings, resolver)


def runtime_for(app: Celery) -> DeliveryRuntime:
    """The runtime of this process for ``app``, built on first use."""
    runtime = _runtimes.get(id(app))
    if runtime is not None:
        return runtime
    with _lock:
        runtime = _runtimes.get(id(app))
        if runtime is None:
            settings = settings_of(app)
            runtime = DeliveryRuntime(
                settings=settings,
                # No pre-ping round trip per batch: deliver_batch replaces a dead connection.
                engine=make_engine(settings),
                sender=app.conf.webhooks_sender or http_sender(settings),
                clock=app.conf.webhooks_clock,
                dead_letters=BrokerDeadLetterPublisher(app),
            )
            _runtimes[id(app)] = runtime
    return runtime
