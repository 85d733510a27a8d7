"""Migrate the producer database named by the environment to the latest revision."""

from __future__ import annotations

import sys

from producer.config import ProducerSettings
from producer.migrations import upgrade
from webhooks_core.db import make_engine
from webhooks_core.settings import SettingsError


def main() -> int:
    """Entry point of ``python -m producer.migrations``."""
    try:
        settings = ProducerSettings.from_env()
        url = settings.producer_database_url
        make_engine(settings, url=url, variable="PRODUCER_DATABASE_URL", pool_size=1).dispose()
    except SettingsError as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 2
    upgrade(url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
