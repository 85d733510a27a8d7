"""Celery entry points.  Each task takes ids and JSON, calls a plain function, and is safe twice."""
