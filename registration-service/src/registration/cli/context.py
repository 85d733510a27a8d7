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
from webhooks_core.messages.envelope import CHANNEL_PATTERN, EVENT_TYPE_PATTERN

EXIT_REFUSED = 1  # 2 is click's own, for a usage error
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


def human_time(value: str | datetime | None) -> str:
    """``2026-11-24 19:43:08 UTC``: to the second, for people (the API sends microseconds)."""
    if value is None:
        return "-"
    moment = (
        value
        if isinstance(value, datetime)
        else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    )
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


# pydantic's wording of a few common problems, as the CLI says them.
_PYDANTIC = (
    (re.compile(r"^String should match pattern '(.*)'$"), "does not have the expected form ({0})"),
    (re.compile(r"^Input should be a valid integer.*$"), "must be a whole number"),
    (re.compile(r"^Input should be a valid (\w+).*$"), "must be a valid {0}"),
    (re.compile(r"^Field required$"), "is required"),
    (re.compile(r"^Extra inputs are not permitted$"), "is not a field of this request"),
    (
        re.compile(r"^Input should be (greater|less) than or equal to (\S+)$"),
        "must be {0}-equal {1}",
    ),
    (
        re.compile(r"^String should have at most (\d+) characters?$"),
        "is longer than {0} characters",
    ),
    (
        re.compile(r"^String should have at least (\d+) characters?$"),
        "is shorter than {0} characters",
    ),
    (re.compile(r"^List should have at most (\d+) items?.*$"), "has more than {0} items"),
)


# What a pattern of the schema asks for, in words.
_PATTERNS = {
    EVENT_TYPE_PATTERN: "must be lower-case words joined by dots, like person.created",
    CHANNEL_PATTERN: "must be letters, digits and _ - . : only (at most 128)",
}


def plain_message(message: str) -> str:
    """An API field message without pydantic's phrasing."""
    message = message.removeprefix("Value error, ")
    expected = re.match(r"^String should match pattern '(.*)'$", message)
    if expected and expected.group(1) in _PATTERNS:
        return _PATTERNS[expected.group(1)]
    for pattern, wording in _PYDANTIC:
        match = pattern.match(message)
        if match:
            if "-equal" in wording:
                direction = "at least" if match.group(1) == "greater" else "at most"
                return f"must be {direction} {match.group(2)}"
            return wording.format(*match.groups())
    return message


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
