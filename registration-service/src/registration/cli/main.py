"""The ``webhooks`` command: endpoints, sending, tailing, replaying, verifying.

Exit codes: 0 success; 1 the API refused the request (its problem+json is printed) or a
signature did not verify; 2 bad usage; 3 the API could not be reached.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import click

from registration.cli import endpoints as endpoint_commands
from registration.cli import events
from registration.cli import search as searching
from registration.cli import stats as statistics
from registration.cli import verify as verification
from registration.cli.client import ApiError, Unreachable
from registration.cli.context import (
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    Context,
    fail_usage,
    human_time,
    pass_context,
    plain_message,
    print_json,
    print_table,
)
from webhooks_core import signing

# Options of the root group that may also be given after the subcommand (``webhooks
# endpoints list -a APP``): each takes one value.
_GLOBAL_OPTIONS = ("--application", "-a", "--token", "--api-url")


def hoist_global_options(args: list[str]) -> list[str]:
    """Move the root group's options given after the subcommand to before it.

    ``-a APP``, ``-aAPP``, ``--application APP`` and ``--application=APP`` (and ``--token``,
    ``--api-url``) are found anywhere before a ``--``; everything else keeps its order.
    """
    hoisted: list[str] = []
    rest: list[str] = []
    seen_command = False
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest += args[index:]
            break
        if not seen_command:
            if arg.startswith("-"):
                rest.append(arg)
                if arg in _GLOBAL_OPTIONS and index + 1 < len(args):
                    rest.append(args[index + 1])
                    index += 1
            else:
                seen_command = True
                rest.append(arg)
            index += 1
            continue
        name = arg.split("=", 1)[0]
        if arg in _GLOBAL_OPTIONS and index + 1 < len(args):
            hoisted += [arg, args[index + 1]]
            index += 2
            continue
        if name in _GLOBAL_OPTIONS and name.startswith("--"):
            hoisted.append(arg)
        elif arg.startswith("-a") and len(arg) > 2 and not arg.startswith("--"):
            hoisted += ["-a", arg[2:]]
        else:
            rest.append(arg)
        index += 1
    return hoisted + rest


class WebhooksGroup(click.Group):
    """The root group: turns API errors into readable messages and exit codes."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Accept the global options after the subcommand too (``... list -a APP``)."""
        return super().parse_args(ctx, hoist_global_options(args))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            messages = [message for _, message in exc.errors]
            # A detail that only repeats the one field error is said once, under the field.
            headline = f"{exc.status} {exc.title}"
            if exc.detail and exc.detail not in messages:
                headline += f": {exc.detail}"
            click.secho(f"Error: {headline}", fg="red", err=True)
            for field, message in exc.errors:
                click.echo(f"  {field}: {plain_message(message)}", err=True)
            ctx.exit(EXIT_REFUSED)
        except Unreachable as exc:
            click.secho(f"Error: {exc}", fg="red", err=True)
            click.echo("  Is the registration service running? Set --api-url.", err=True)
            ctx.exit(EXIT_UNREACHABLE)


@click.group(cls=WebhooksGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--api-url",
    envvar="WEBHOOKS_API_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="The registration service. Env: WEBHOOKS_API_URL.",
)
@click.option(
    "--token",
    envvar="WEBHOOKS_API_TOKEN",
    help="An application token, or the admin token. Env: WEBHOOKS_API_TOKEN.",
)
@click.option(
    "--application",
    "-a",
    envvar="WEBHOOKS_APPLICATION",
    help="The application id the commands act on. Env: WEBHOOKS_APPLICATION.",
)
@click.version_option("1.0.0", prog_name="webhooks")
@click.pass_context
def cli(ctx: click.Context, api_url: str, token: str | None, application: str | None) -> None:
    """Operate the webhook platform: endpoints, events, deliveries, replays, signatures."""
    ctx.obj = Context(api_url, token, application)


# Applications ---------------------------------------------------------------------------


@cli.group()
def applications() -> None:
    """The applications (admin token): find the id that --application takes."""


@applications.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def applications_list(context: Context, as_json: bool) -> None:
    """Every application, newest first."""
    items = list(context.client().pages("/api/v1/applications", limit=250))
    if as_json:
        print_json(items)
        return
    rows = [[item["id"], item["name"], item.get("uid") or ""] for item in items]
    print_table(rows, ["ID", "NAME", "UID"])


_DAYS = click.IntRange(1, 3650)


@applications.command("retention")
@click.argument("app_id")
@click.option("--attempts-days", type=_DAYS, help="Days attempts are kept.")
@click.option("--messages-days", type=_DAYS, help="Days messages and deliveries are kept.")
@click.option("--payload-days", type=_DAYS, help="Days payloads are kept (then emptied).")
@click.option(
    "--default",
    "defaults",
    multiple=True,
    type=click.Choice(["attempts", "messages", "payload"]),
    help="Back to the platform's default for this one (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def applications_retention(
    context: Context,
    app_id: str,
    attempts_days: int | None,
    messages_days: int | None,
    payload_days: int | None,
    defaults: tuple[str, ...],
    as_json: bool,
) -> None:
    """Show an application's retention, or change it with the options (docs/retention.md)."""
    given = {"attempts": attempts_days, "messages": messages_days, "payload": payload_days}
    changes: dict[str, int | None] = {f"{k}_days": v for k, v in given.items() if v is not None}
    changes.update({f"{name}_days": None for name in defaults})
    path = f"/api/v1/applications/{app_id}"
    client = context.client()
    if changes:
        app = client.request("PATCH", path, json={"retention": changes})
    else:
        app = client.get(path)
    if as_json:
        print_json(app["retention"])
        return
    rows = [
        [kind, "default" if days is None else f"{days} days"]
        for kind, days in (
            ("attempts", app["retention"]["attempts_days"]),
            ("messages", app["retention"]["messages_days"]),
            ("payload", app["retention"]["payload_days"]),
        )
    ]
    print_table(rows, ["KEPT", "FOR"])


# Verify ---------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--secret",
    "-s",
    envvar="WEBHOOKS_SECRET",
    required=True,
    help="The whsec_ secret (checks v1) or the whpk_ public key (checks v1a).",
)
@click.option(
    "--request",
    "request_file",
    type=click.File("rb"),
    default="-",
    help="The request as received: headers, a blank line, the body.  [default: stdin]",
)
@click.option("--headers", "headers_file", type=click.File("rb"), help="Headers, one per line.")
@click.option("--body", "body_file", type=click.File("rb"), help="The body, byte for byte.")
@click.option(
    "--tolerance",
    type=click.IntRange(min=0),
    default=300,
    show_default=True,
    help="Seconds the webhook-timestamp may be away from now.",
)
@click.option("--no-timestamp-check", is_flag=True, help="Check the signature only.")
def verify(
    secret: str,
    request_file: Any,
    headers_file: Any,
    body_file: Any,
    tolerance: int,
    no_timestamp_check: bool,
) -> None:
    """Say whether a received webhook's signature is valid for a secret or public key.

    A whsec_ secret checks the v1 (HMAC) signatures, a whpk_ public key the v1a (Ed25519)
    ones.  Give the whole request (--request FILE, or on standard input), or --headers FILE with
    --body FILE.  Exit code 0 when valid, 1 when not, 2 for bad usage (a malformed secret).
    """
    if not (signing.is_valid_secret(secret) or signing.is_valid_public_key(secret)):
        raise click.BadParameter(
            "must be whsec_ followed by base64 (the endpoint's signing secret) or whpk_"
            " followed by base64 (its Ed25519 public key)",
            param_hint="--secret",
        )
    if headers_file is not None or body_file is not None:
        if headers_file is None or body_file is None:
            fail_usage("give --headers and --body together, or the whole --request")
        headers = verification.parse_headers(headers_file.read())
        body = body_file.read()
    else:
        raw = request_file.read()
        headers, body = verification.parse_request(raw)
    verdict = verification.check(
        secret,
        headers,
        body,
        now=datetime.now(UTC),
        tolerance_seconds=None if no_timestamp_check else tolerance,
    )
    if verdict.msg_id:
        click.echo(f"webhook-id:        {verdict.msg_id}")
    if verdict.timestamp:
        click.echo(f"webhook-timestamp: {human_time(verdict.timestamp)}")
    if verdict.valid:
        click.secho(f"valid: {verdict.reason}", fg="green")
        return
    click.secho(f"invalid: {verdict.reason}", fg="red", err=True)
    sys.exit(EXIT_REFUSED)


for command in (
    endpoint_commands.endpoints,
    events.send,
    events.relay,
    events.tail,
    events.replay,
    events.dead_letters,
    statistics.stats,
    searching.search,
):
    cli.add_command(command)


def main() -> None:
    """The console_scripts entry point."""
    cli(prog_name="webhooks")
