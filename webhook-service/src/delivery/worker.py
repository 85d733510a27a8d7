"""The module ``celery -A delivery.worker`` loads: one Celery app from the environment."""

from __future__ import annotations

from delivery import monitoring  # noqa: F401  (connects the worker's metrics signals)
from delivery.celery_app import create_celery

app = create_celery(ingest=True)
