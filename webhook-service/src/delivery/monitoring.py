"""Metrics of a Celery worker: the metrics server, multiprocess bookkeeping, tasks in flight.

Importing this module connects Celery signals (once, whatever the number of apps):

* ``setup_logging``: the platform's structured logs instead of Celery's;
* ``worker_init`` (main process, before the pool forks): empty the multiprocess directory
  and, when ``WEBHOOKS_METRICS_PORT`` is set, serve the merged metrics of the main process
  and all pool processes there (9101 in ``make run`` and docker-compose);
* ``worker_process_shutdown`` (a pool process exiting): drop its live gauges;
* ``task_prerun`` / ``task_postrun``: :data:`~webhooks_core.observability.IN_FLIGHT` by queue.

Pool processes count in files under ``PROMETHEUS_MULTIPROC_DIR``, which must be set in the
environment before the worker starts (the Procfile and the worker's Dockerfile do).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import signals

from delivery.config import DeliverySettings
from webhooks_core.logging import configure_logging
from webhooks_core.monitoring import (
    mark_process_dead,
    multiprocess_dir,
    prepare_multiprocess_dir,
    serve_process_metrics,
)
from webhooks_core.observability import IN_FLIGHT

logger = logging.getLogger(__name__)


def _queue_of(task: Any) -> str:
    """The queue a task came from; only declared queues, so the label stays bounded."""
    info = getattr(task.request, "delivery_info", None) or {}
    queue = info.get("routing_key") or ""
    known = task.app.amqp.queues if task.app is not None else {}
    return str(queue) if queue in known else "other"


def _on_setup_logging(**_: Any) -> None:
    # Connecting this signal stops Celery from configuring logging: ours takes its place.
    configure_logging("worker")


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    if not logging.getLogger().handlers:  # Celery sets logging up after this signal
        configure_logging("worker")
    app = getattr(sender, "app", None)
    settings: DeliverySettings | None = getattr(
        getattr(app, "conf", None), "webhooks_settings", None
    )
    if multiprocess_dir():
        prepare_multiprocess_dir()
    elif "prefork" in str(getattr(getattr(sender, "pool_cls", None), "__module__", "")):
        # A thread pool shares one process's metrics; a prefork pool needs the directory.
        logger.warning(
            "PROMETHEUS_MULTIPROC_DIR is not set: pool processes' metrics will not be exported"
        )
    if settings is not None and settings.metrics_port is not None:
        serve_process_metrics(settings.metrics_port, host=settings.metrics_host)


def _on_process_shutdown(**_: Any) -> None:
    mark_process_dead(os.getpid())


def _on_task_prerun(task: Any = None, **_: Any) -> None:
    if task is not None:
        task.request.webhooks_in_flight_queue = queue = _queue_of(task)
        IN_FLIGHT.labels(queue).inc()


def _on_task_postrun(task: Any = None, **_: Any) -> None:
    queue = getattr(getattr(task, "request", None), "webhooks_in_flight_queue", None)
    if queue is not None:
        IN_FLIGHT.labels(queue).dec()


signals.setup_logging.connect(_on_setup_logging, dispatch_uid="webhooks.logging.setup")
signals.worker_init.connect(_on_worker_init, dispatch_uid="webhooks.metrics.worker_init")
signals.worker_process_shutdown.connect(
    _on_process_shutdown, dispatch_uid="webhooks.metrics.process_shutdown"
)
signals.task_prerun.connect(_on_task_prerun, dispatch_uid="webhooks.metrics.task_prerun")
signals.task_postrun.connect(_on_task_postrun, dispatch_uid="webhooks.metrics.task_postrun")
