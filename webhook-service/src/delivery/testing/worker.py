"""The module ``celery -A delivery.testing.worker`` loads in tests: :mod:`delivery.worker`'s
app, built from :class:`~delivery.testing.EngineTestSettings`."""

from __future__ import annotations

from delivery import monitoring  # noqa: F401  (connects the worker's metrics signals)
from delivery.testing import EngineTestSettings, create_test_celery

app = create_test_celery(EngineTestSettings.from_env(), ingest=True)
