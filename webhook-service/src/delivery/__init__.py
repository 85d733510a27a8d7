"""The webhook service: Celery workers that ingest events and deliver them, signed."""
