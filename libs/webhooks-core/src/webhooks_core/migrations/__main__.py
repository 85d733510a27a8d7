"""Migrate the database named by the environment to the latest revision."""

from __future__ import annotations

import sys

from webhooks_core.db import make_engine
from webhooks_core.migrations import upgrade
from webhooks_core.settings import CoreSettings, SettingsError


def main() -> int:
    """Entry point of ``python -m webhooks_core.migrations``."""
    try:
        settings = CoreSettings.from_env()
        make_engine(settings, pool_size=1).dispose()
    except SettingsError as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 2
    upgrade(settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
