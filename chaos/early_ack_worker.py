"""A deliberately unsafe worker, for the test that shows the chaos checker catches loss.

``celery -A chaos.early_ack_worker worker`` runs the platform's worker with late acks turned
off: the delivery task acknowledges on receipt (``acks_late=False``) and broker ingestion
acknowledges each event *before* storing it.  A worker killed between the ack and the
commit loses the event for good; :mod:`chaos.checker` must report it as lost.  Never run it
outside that test.
"""

from __future__ import annotations

from typing import Any

from delivery import monitoring  # noqa: F401  (the same signals as the real worker)
from delivery.celery_app import create_celery
from delivery.ingest_step import IngestStep


class EarlyAckIngestStep(IngestStep):
    """Ingestion that acknowledges first and stores second: the bug under test."""

    def on_message(self, message: Any) -> None:
        """Ack, then let the real step store the event (its own ack becomes a no-op)."""
        message.ack()

        def _already_acked(*_: Any, **__: Any) -> None:
            return None

        message.ack = _already_acked
        message.reject = _already_acked
        message.requeue = _already_acked
        super().on_message(message)


app = create_celery(ingest=False)
app.steps["consumer"].add(EarlyAckIngestStep)
app.conf.task_acks_late = False
app.conf.task_reject_on_worker_lost = False
app.loader.import_default_modules()
for task in app.tasks.values():
    if task.name.startswith("delivery."):
        task.acks_late = False
        task.reject_on_worker_lost = False
