"""The Celery application, built from the delivery side's :class:`DeliverySettings`.

Worker settings lose nothing: late acks, reject on a lost worker, prefetch one, publisher
confirms, persistent messages.  Tasks declare their own options where they are defined.
"""

from __future__ import annotations

from celery import Celery

from delivery.clock import Clock, SystemClock
from delivery.config import DeliverySettings
from delivery.sender import Sender
from webhooks_core.endpoints import sealing

TASK_MODULES = ["delivery.tasks", "delivery.tasks.deliver"]


def create_celery(
    settings: DeliverySettings | None = None,
    *,
    ingest: bool = False,
    sender: Sender | None = None,
    clock: Clock | None = None,
) -> Celery:
    """Build the Celery app for ``settings`` (read from the environment when omitted).

    With ``ingest`` its workers also consume ``webhooks.ingest`` (broker ingestion).  Its
    tasks send with ``sender`` and time their decisions with ``clock``: by default an
    :class:`~delivery.sender.HttpSender` of the settings and the system clock; only
    :mod:`delivery.testing` passes others.
    """
    settings = settings or DeliverySettings.from_env()
    # Its workers unseal endpoint secrets: without the keys it fails here, saying what to set.
    sealing.install(sealing.KeyRing.from_settings(settings))
    app = Celery("webhooks", broker=settings.broker_url, include=TASK_MODULES)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_default_delivery_mode="persistent",
        broker_transport_options={"confirm_publish": True},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        enable_utc=True,
    )
    app.conf.webhooks_settings = settings
    app.conf.webhooks_sender = sender  # None: an HttpSender, built in each worker process
    app.conf.webhooks_clock = clock or SystemClock()
    if ingest:
        from delivery.ingest_step import IngestStep

        app.steps["consumer"].add(IngestStep)
    return app


def settings_of(app: Celery) -> DeliverySettings:
    """The settings a Celery app was built from."""
    return app.conf.webhooks_settings  # type: ignore[no-any-return]
