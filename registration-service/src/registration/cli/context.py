"""What every ``webhooks`` command shares: where the API is, parsing, printing, exit codes."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import click

from registration.cli.client import ApiClient

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

_RELATIVE = re.compile(r"^(\d+)\s*(s|m|min|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400, "w": 604_800}


@dataclass
class Context:
    """What every command is given: where the API is and who calls it."""

    api_url: str
    token: str | None
    application: str | None

    def client(self) -> ApiClient:
        """The API client; a missing token is a usage error."""
        if not self.token:
            fail_usage("no API token: pass --token or set WEBHOOKS_API_TOKEN")
        return ApiClient(self.api_url, self.token)

    def app_path(self, rest: str = "") -> str:
        """``/api/v1/applications/<id><rest>``; a missing application is a usage error."""
        if not self.application:
            fail_usage("no application: pass --application or set WEBHOOKS_APPLICATION")
        return f"/api/v1/applications/{self.application}{rest}"


def fail_usage(message: str) -> NoReturn:
    """Stop with a usage error (exit code 2)."""
    raise click.UsageError(message)


pass_context = click.make_pass_decorator(Context)


def parse_json(value: str, name: str = "--data") -> Any:
    """JSON from an option; ``@file`` reads a file and ``-`` standard input."""
    if value == "-":
        value = sys.stdin.read()
    elif value.startswith("@"):
        with click.open_file(value[1:], encoding="utf-8") as stream:
            value = stream.read()
    try:
        return json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=name) from None


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (UTC when no zone is given) or a duration ago such as ``2h``."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(value.strip())
    if match:
        return now - timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            "use an ISO 8601 time (2026-01-31T08:00:00Z) or a duration ago (30m, 2h, 1d)",
            param_hint="--since",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """Aligned columns, or a note when there is nothing to show."""
    if not rows:
        click.echo("(none)")
        return
    cells = [[str(cell) for cell in headers]] + [
        ["" if cell is None else str(cell) for cell in row] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for number, row in enumerate(cells):
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo(click.style(line.rstrip(), bold=True) if number == 0 else line.rstrip())


def print_json(value: Any) -> None:
    """Indented JSON, for ``--json`` and for scripts."""
    click.echo(json.dumps(value, indent=2))
