"""The ``webhooks`` command: endpoints, sending, tailing, replaying, verifying.

Exit codes: 0 success; 1 the API refused the request (its problem+json is printed) or a
signature did not verify; 2 bad usage; 3 the API could not be reached.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import click

from registration.cli import credentials, events
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


# Endpoints ------------------------------------------------------------------------------


@cli.group()
def endpoints() -> None:
    """List, create, disable and enable endpoints; rotate their secrets; set credentials."""


def _endpoint_row(item: dict[str, Any]) -> list[Any]:
    state = "enabled" if item["enabled"] else f"disabled ({item.get('disabled_reason') or '-'})"
    # The API's health reading, the same states as the console and the metrics.
    health = (item.get("health") or {}).get("state", "-").replace("_", "-")
    return [
        item["id"],
        item["url"],
        ",".join(item["event_types"]) or "*",
        state,
        health,
        item.get("consecutive_failures", 0),
    ]


@endpoints.command("list")
@click.option("--state", type=click.Choice(["enabled", "disabled"]), help="Only these.")
@click.option("--event-type", help="Only endpoints that receive this type.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def endpoints_list(
    context: Context, state: str | None, event_type: str | None, as_json: bool
) -> None:
    """The application's endpoints, newest first."""
    items = list(
        context.client().pages(
            context.app_path("/endpoints"), state=state, event_type=event_type, limit=250
        )
    )
    if as_json:
        print_json(items)
        return
    print_table(
        [_endpoint_row(item) for item in items],
        ["ID", "URL", "TYPES", "STATE", "HEALTH", "FAILURES"],
    )


def _headers_option(values: Iterable[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, separator, header_value = value.partition(":")
        if not separator or not name.strip():
            raise click.BadParameter(f"{value!r} is not Name: value", param_hint="--header")
        headers[name.strip()] = header_value.strip()
    return headers


def _security_options(
    basic_auth: str | None,
    bearer_token: str | None,
    schemes: tuple[str, ...],
    signing_key: str | None,
) -> dict[str, Any]:
    """The auth and signing fields of ``endpoints create``."""
    fields: dict[str, Any] = {}
    if basic_auth is not None and bearer_token is not None:
        fail_usage("give --basic-auth or --bearer-token, not both")
    if basic_auth is not None:
        username, separator, password = basic_auth.partition(":")
        if not separator:
            raise click.BadParameter("is not USER:PASSWORD", param_hint="--basic-auth")
        fields["auth"] = {"type": "basic", "username": username, "password": password}
    if bearer_token is not None:
        fields["auth"] = {"type": "bearer", "token": bearer_token}
    if schemes:
        fields["signature_schemes"] = list(dict.fromkeys(schemes))
    if signing_key is not None:
        fields["signing_key"] = signing_key
    return fields


@endpoints.command("create")
@click.argument("url")
@click.option("--type", "-t", "types", multiple=True, help="An event type (repeat); none: all.")
@click.option("--channel", "channels", multiple=True, help="A channel (repeat).")
@click.option("--header", "headers", multiple=True, help="'Name: value' sent with each request.")
@click.option("--description", default=None)
@click.option("--rate-limit", type=click.IntRange(min=1), help="Deliveries per second at most.")
@click.option("--secret", default=None, help="A whsec_ secret to use; generated when omitted.")
@click.option(
    "--basic-auth",
    metavar="USER:PASSWORD",
    default=None,
    help="Authenticate with HTTP basic auth (stored sealed, shown masked).",
)
@click.option(
    "--bearer-token", default=None, help="Authenticate with a bearer token (stored sealed)."
)
@click.option(
    "--sign",
    "schemes",
    multiple=True,
    type=click.Choice(["v1", "v1a"]),
    help="Signature scheme (repeat for both): v1 HMAC, v1a Ed25519.  [default: v1]",
)
@click.option("--signing-key", default=None, help="A whsk_ Ed25519 key for v1a; else generated.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def endpoints_create(
    context: Context,
    url: str,
    types: tuple[str, ...],
    channels: tuple[str, ...],
    headers: tuple[str, ...],
    description: str | None,
    rate_limit: int | None,
    secret: str | None,
    basic_auth: str | None,
    bearer_token: str | None,
    schemes: tuple[str, ...],
    signing_key: str | None,
    as_json: bool,
) -> None:
    """Create an endpoint (the same URL and types again updates it)."""
    body: dict[str, Any] = {"url": url, "event_types": list(types)}
    body.update(_security_options(basic_auth, bearer_token, schemes, signing_key))
    if channels:
        body["channels"] = list(channels)
    if headers:
        body["headers"] = _headers_option(headers)
    if description is not None:
        body["description"] = description
    if rate_limit is not None:
        body["rate_limit"] = rate_limit
    if secret is not None:
        body["secret"] = secret
    client = context.client()
    status, endpoint = client.exchange("POST", context.app_path("/endpoints"), json=body)
    if as_json:
        print_json(endpoint)
        return
    if status == 201:
        click.echo(f"endpoint {endpoint['id']} created -> {endpoint['url']}")
    else:
        click.echo(
            f"endpoint {endpoint['id']} updated -> {endpoint['url']} "
            "(one with this URL and these event types existed: its settings were replaced)"
        )
    click.echo(f"event types: {', '.join(endpoint['event_types']) or 'all'}")
    click.echo(f"reveal its secret with: webhooks endpoints secret {endpoint['id']}")


@endpoints.command("secret")
@click.argument("endpoint_id")
@pass_context
def endpoints_secret(context: Context, endpoint_id: str) -> None:
    """Print an endpoint's signing secret (and any previous one still signing)."""
    secret = context.client().get(context.app_path(f"/endpoints/{endpoint_id}/secret"))
    _print_secret(secret)


def _print_secret(secret: dict[str, Any]) -> None:
    click.echo(secret["key"])
    for previous in secret.get("previous") or []:
        click.echo(
            f"previous, signing until {human_time(previous['expires_at'])}: {previous['key']}",
            err=True,
        )


@endpoints.command("rotate-secret")
@click.argument("endpoint_id")
@click.option("--key", default=None, help="The new whsec_ secret; generated when omitted.")
@pass_context
def endpoints_rotate(context: Context, endpoint_id: str, key: str | None) -> None:
    """Sign with a new secret; the old one keeps signing for the grace period."""
    body = {"key": key} if key else {}
    secret = context.client().post(
        context.app_path(f"/endpoints/{endpoint_id}/secret/rotate"), body
    )
    _print_secret(secret)


@endpoints.command("public-key")
@click.argument("endpoint_id")
@pass_context
def endpoints_public_key(context: Context, endpoint_id: str) -> None:
    """Print the whpk_ public key receivers verify v1a signatures with."""
    key = context.client().get(context.app_path(f"/endpoints/{endpoint_id}/signing-key"))
    _print_public_key(key)


def _print_public_key(key: dict[str, Any]) -> None:
    click.echo(key["public_key"])
    for previous in key.get("previous") or []:
        click.echo(
            f"previous, signing until {human_time(previous['expires_at'])}: "
            f"{previous['public_key']}",
            err=True,
        )


@endpoints.command("rotate-signing-key")
@click.argument("endpoint_id")
@click.option("--key", default=None, help="The new whsk_ key; generated when omitted.")
@pass_context
def endpoints_rotate_signing_key(context: Context, endpoint_id: str, key: str | None) -> None:
    """Sign v1a with a new Ed25519 key; the old one keeps signing for the grace period."""
    body = {"key": key} if key else {}
    public = context.client().post(
        context.app_path(f"/endpoints/{endpoint_id}/signing-key/rotate"), body
    )
    _print_public_key(public)


@endpoints.command("disable")
@click.argument("endpoint_id")
@click.option("--reason", default=None, help="Why (shown in the console).")
@pass_context
def endpoints_disable(context: Context, endpoint_id: str, reason: str | None) -> None:
    """Stop delivering to an endpoint; its undelivered messages end cancelled."""
    body = {"reason": reason} if reason else {}
    endpoint = context.client().post(context.app_path(f"/endpoints/{endpoint_id}/disable"), body)
    click.echo(f"endpoint {endpoint['id']} disabled ({endpoint.get('disabled_reason')})")


@endpoints.command("enable")
@click.argument("endpoint_id")
@pass_context
def endpoints_enable(context: Context, endpoint_id: str) -> None:
    """Resume delivering to an endpoint."""
    endpoint = context.client().post(context.app_path(f"/endpoints/{endpoint_id}/enable"))
    click.echo(f"endpoint {endpoint['id']} enabled")


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


for endpoint_command in (
    credentials.endpoints_oauth,
    credentials.endpoints_tls,
    credentials.endpoints_credentials,
):
    endpoints.add_command(endpoint_command)
for command in (events.send, events.relay, events.tail, events.replay, events.dead_letters):
    cli.add_command(command)


def main() -> None:
    """The console_scripts entry point."""
    cli(prog_name="webhooks")
