"""Migrate the producer database named by the environment to the latest revision."""

from __future__ import annotations

import sys

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from producer.config import ProducerSettings
from producer.migrations import upgrade
from webhooks_core.settings import SettingsError, redact_url


def main() -> int:
    """Entry point of ``python -m producer.migrations``."""
    try:
        settings = ProducerSettings.from_env()
    except SettingsError as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 2
    url = settings.producer_database_url
    try:
        with create_engine(url).connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError:
        print(
            f"migrate: cannot reach the producer database at {redact_url(url)}; "
            "set WEBHOOKS_PRODUCER_DATABASE_URL",
            file=sys.stderr,
        )
        return 2
    upgrade(url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
