"""``python -m webhooks_core.retention run`` (``make retention``): one retention run now."""

from __future__ import annotations

import argparse
import sys

from webhooks_core.db import make_engine, make_session_factory
from webhooks_core.retention.run import run_retention
from webhooks_core.settings import CoreSettings, SettingsError


def main(argv: list[str] | None = None) -> int:
    """``run``: make partitions ahead, drop and delete what retention no longer keeps."""
    parser = argparse.ArgumentParser(prog="python -m webhooks_core.retention")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="one retention run (docs/retention.md)")
    parser.parse_args(argv)
    try:
        settings = CoreSettings.from_env()
    except SettingsError as exc:
        print(f"retention: {exc}", file=sys.stderr)
        return 2
    engine = make_engine(settings)
    try:
        print(run_retention(make_session_factory(engine), settings).line())
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
