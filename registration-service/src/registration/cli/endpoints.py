"""``webhooks endpoints``: list, create, update, disable, enable, pause and resume endpoints;
show and rotate their secrets and signing keys; list the ordering keys that wait (their OAuth
and TLS settings are :mod:`.credentials`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import click

from registration.cli import credentials
from registration.cli.context import (
    Context,
    fail_usage,
    human_time,
    pass_context,
    print_json,
    print_table,
)

# Three states: not given (create: the default, on; update: unchanged), on, off.
_ADAPTIVE_FLOW = click.option(
    "--adaptive-flow/--no-adaptive-flow",
    default=None,
    help="Adaptive flow control: lower the limits while the receiver pushes back (429, 503,"
    " timeouts, latency); off: the configured limits only, a 429 counts as a failure."
    "  [default: on]",
)


@click.group()
def endpoints() -> None:
    """List, create, disable, enable, pause and resume endpoints; rotate their secrets; set
    credentials."""


def _endpoint_row(item: dict[str, Any]) -> list[Any]:
    state = "enabled" if item["enabled"] else f"disabled ({item.get('disabled_reason') or '-'})"
    if item.get("paused_at"):
        state = "paused" if item["enabled"] else f"{state},paused"
    # The API's health reading, the same states as the console and the metrics.
    health = (item.get("health") or {}).get("state", "-").replace("_", "-")
    return [
        item["id"],
        item["url"],
        ",".join(item["event_types"]) or "*",
        state,
        health,
        item.get("consecutive_failures", 0),
        _limits(item),
    ]


def _limits(item: dict[str, Any]) -> str:
    """Flow control's current limits in one word: ``fixed`` (flow control is off for the
    endpoint: its configured limits only), ``configured``, or batches in flight, rate and
    reason (``2x,140/s,429``; ``-`` for the configured value)."""
    flow = item.get("flow") or {}
    if not item.get("adaptive_flow", True):
        return "fixed"
    if not flow.get("adapted"):
        return "configured"
    in_flight = flow.get("max_in_flight")
    rate = flow.get("rate_limit")
    parts = [f"{in_flight}x" if in_flight else "-", f"{rate:g}/s" if rate else "-"]
    return ",".join([*parts, flow.get("reason") or "-"])


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
        ["ID", "URL", "TYPES", "STATE", "HEALTH", "FAILURES", "LIMITS"],
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
@_ADAPTIVE_FLOW
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
@click.option(
    "--key-failure-policy",
    type=click.Choice(["skip", "block"]),
    default=None,
    help="A dead-lettered message with an ordering key: skip (its key goes on) or block (its"
    " key waits until it is redriven).  [default: skip]",
)
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
    adaptive_flow: bool | None,
    secret: str | None,
    basic_auth: str | None,
    bearer_token: str | None,
    schemes: tuple[str, ...],
    signing_key: str | None,
    key_failure_policy: str | None,
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
    if adaptive_flow is not None:
        body["adaptive_flow"] = adaptive_flow
    if secret is not None:
        body["secret"] = secret
    if key_failure_policy is not None:
        body["key_failure_policy"] = key_failure_policy
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
    if not endpoint.get("adaptive_flow", True):
        click.echo("flow control: off (the configured limits only)")
    click.echo(f"reveal its secret with: webhooks endpoints secret {endpoint['id']}")


@endpoints.command("update")
@click.argument("endpoint_id")
@click.option("--description", default=None)
@click.option("--rate-limit", type=click.IntRange(min=1), help="Deliveries per second at most.")
@click.option("--max-in-flight", type=click.IntRange(min=1, max=256), help="Batches at once.")
@_ADAPTIVE_FLOW
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def endpoints_update(
    context: Context,
    endpoint_id: str,
    description: str | None,
    rate_limit: int | None,
    max_in_flight: int | None,
    adaptive_flow: bool | None,
    as_json: bool,
) -> None:
    """Change an endpoint's description and limits (what is not given is unchanged)."""
    given = {
        "description": description,
        "rate_limit": rate_limit,
        "max_in_flight": max_in_flight,
        "adaptive_flow": adaptive_flow,
    }
    body = {name: value for name, value in given.items() if value is not None}
    if not body:
        fail_usage("nothing to change: give at least one option (see --help)")
    endpoint = context.client().request(
        "PATCH", context.app_path(f"/endpoints/{endpoint_id}"), json=body
    )
    if as_json:
        print_json(endpoint)
        return
    flow = "adaptive" if endpoint.get("adaptive_flow", True) else "off (the configured limits only)"
    rate = endpoint.get("rate_limit")
    click.echo(f"endpoint {endpoint['id']} updated -> {endpoint['url']}")
    click.echo(
        f"limits: {endpoint.get('max_in_flight') or 'default'} concurrent,"
        f" {f'{rate}/s' if rate else 'no rate limit'}; flow control: {flow}"
    )


@endpoints.command("secret")
@click.argument("endpoint_id")
@pass_context
def endpoints_secret(context: Context, endpoint_id: str) -> None:
    """Print an endpoint's signing secret (and any previous one still signing)."""
    secret = context.client().get(context.app_path(f"/endpoints/{endpoint_id}/secret"))
    _print_keys(secret)


def _print_keys(view: dict[str, Any], field: str = "key") -> None:
    """The current key (``field`` of the view) on stdout, those still signing on stderr."""
    click.echo(view[field])
    for previous in view.get("previous") or []:
        click.echo(
            f"previous, signing until {human_time(previous['expires_at'])}: {previous[field]}",
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
    _print_keys(secret)


@endpoints.command("public-key")
@click.argument("endpoint_id")
@pass_context
def endpoints_public_key(context: Context, endpoint_id: str) -> None:
    """Print the whpk_ public key receivers verify v1a signatures with."""
    key = context.client().get(context.app_path(f"/endpoints/{endpoint_id}/signing-key"))
    _print_keys(key, "public_key")


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
    _print_keys(public, "public_key")


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


@endpoints.command("pause")
@click.argument("endpoint_id")
@pass_context
def endpoints_pause(context: Context, endpoint_id: str) -> None:
    """Hold deliveries: messages keep arriving, none is sent until resumed."""
    endpoint = context.client().post(context.app_path(f"/endpoints/{endpoint_id}/pause"))
    click.echo(f"endpoint {endpoint['id']} paused (new messages are held)")


@endpoints.command("resume")
@click.argument("endpoint_id")
@pass_context
def endpoints_resume(context: Context, endpoint_id: str) -> None:
    """Send the held deliveries, oldest first, and whatever arrives from now on."""
    endpoint = context.client().post(context.app_path(f"/endpoints/{endpoint_id}/resume"))
    click.echo(f"endpoint {endpoint['id']} resumed")


@endpoints.command("waiting-keys")
@click.argument("endpoint_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def endpoints_waiting_keys(context: Context, endpoint_id: str, as_json: bool) -> None:
    """The ordering keys that wait: their oldest message is retrying, or (policy block) a
    dead-lettered one holds them until redriven."""
    view = context.client().get(context.app_path(f"/endpoints/{endpoint_id}/waiting-keys"))
    if as_json:
        print_json(view)
        return
    click.echo(f"{view['keys_waiting']} keys waiting")
    rows = [
        [
            key["ordering_key"],
            key["head_delivery_id"],
            f"blocked by dead delivery {key['blocked_by']}"
            if key["blocked_by"]
            else f"retrying ({key['attempt_count']} attempts)",
            human_time(key["next_attempt_at"]) if not key["blocked_by"] else "-",
            key["open_deliveries"],
        ]
        for key in view["keys"]
    ]
    if rows:
        print_table(rows, ["KEY", "HEAD", "WHY", "NEXT ATTEMPT", "OPEN"])


for endpoint_command in (
    credentials.endpoints_oauth,
    credentials.endpoints_tls,
    credentials.endpoints_credentials,
):
    endpoints.add_command(endpoint_command)
