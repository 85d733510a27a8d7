"""``python -m delivery.testing.scheduler``: :mod:`delivery.scheduler` run by tests, with
:class:`~delivery.testing.EngineTestSettings` (its offset clock)."""

from __future__ import annotations

from delivery import scheduler
from delivery.testing import EngineTestSettings

if __name__ == "__main__":
    settings = EngineTestSettings.from_env()
    scheduler.main(settings, settings.clock())
