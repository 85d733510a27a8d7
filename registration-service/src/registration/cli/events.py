"""``webhooks send|relay|tail|replay|dead-letters``: events in, deliveries watched and replayed."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click

from registration.cli.client import ApiClient, ApiError
from registration.cli.context import (
    EXIT_REFUSED,
    Context,
    fail_usage,
    human_time,
    parse_json,
    parse_since,
    pass_context,
    print_json,
    print_table,
)
from webhooks_core.deliveries.states import DeliveryState

# How many deliveries ``tail`` follows at most (the newest of its window).
TAIL_MAX = 2000


def _payload(data: str) -> dict[str, Any]:
    payload = parse_json(data)
    if not isinstance(payload, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--data")
    return payload


def _idempotency(key: str | None) -> dict[str, str] | None:
    return {"Idempotency-Key": key} if key else None


@click.command()
@click.argument("event_type")
@click.option("--data", "-d", required=True, help="The payload: JSON, @file or - for stdin.")
@click.option("--event-id", help="The webhook-id to use (an id already sent is not sent again).")
@click.option("--channel", "channels", multiple=True, help="A channel (repeat).")
@click.option(
    "--ordering-key",
    help="Each endpoint gets the messages with this key one at a time, in publish order.",
)
@click.option("--idempotency-key", "-k", help="Retry safely: a repeat returns the first result.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON.")
@pass_context
def send(
    context: Context,
    event_type: str,
    data: str,
    event_id: str | None,
    channels: tuple[str, ...],
    ordering_key: str | None,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Publish a message of EVENT_TYPE to every subscribed endpoint (HTTP ingestion)."""
    body: dict[str, Any] = {"event_type": event_type, "payload": _payload(data)}
    if event_id:
        body["event_id"] = event_id
    if channels:
        body["channels"] = list(channels)
    if ordering_key is not None:
        body["ordering_key"] = ordering_key
    accepted = context.client().post(
        context.app_path("/messages"), body, headers=_idempotency(idempotency_key)
    )
    if as_json:
        print_json(accepted)
        return
    note = " (a repeat: the first result)" if accepted.get("duplicate") else ""
    click.echo(
        f"message {accepted['id']} accepted{note}: "
        f"{accepted['deliveries']} deliver{'y' if accepted['deliveries'] == 1 else 'ies'}"
    )


@click.command()
@click.argument("url")
@click.option("--data", "-d", required=True, help="The payload: JSON, @file or - for stdin.")
@click.option("--type", "event_type", help="The event type it is sent as (relay.message).")
@click.option("--header", "headers", multiple=True, help="'Name: value' to send (repeat).")
@click.option("--secret", help="The whsec_ secret to sign with; generated when omitted.")
@click.option("--idempotency-key", "-k", help="Retry safely: a repeat returns the first result.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON.")
@pass_context
def relay(
    context: Context,
    url: str,
    data: str,
    event_type: str | None,
    headers: tuple[str, ...],
    secret: str | None,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Send one signed webhook to URL, without a subscription (with the usual retries)."""
    body: dict[str, Any] = {"url": url, "payload": _payload(data)}
    if event_type:
        body["event_type"] = event_type
    if headers:
        body["headers"] = dict(_split_header(value) for value in headers)
    if secret:
        body["secret"] = secret
    accepted = context.client().post(
        context.app_path("/relay"), body, headers=_idempotency(idempotency_key)
    )
    if as_json:
        print_json(accepted)
        return
    click.echo(f"message {accepted['id']} relayed to {url}: delivery {accepted['delivery_id']}")
    if accepted.get("secret"):
        click.echo(f"signed with {accepted['secret']} (shown once)")
    click.echo(f"follow it with: webhooks tail --since 5m   (delivery {accepted['delivery_id']})")


def _split_header(value: str) -> tuple[str, str]:
    name, separator, header_value = value.partition(":")
    if not separator or not name.strip():
        raise click.BadParameter(f"{value!r} is not Name: value", param_hint="--header")
    return name.strip(), header_value.strip()


# Tail ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """What ``tail`` printed last about one delivery."""

    state: str
    attempts: int


def _window(client: ApiClient, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The newest deliveries of the window (at most TAIL_MAX), oldest first."""
    items: list[dict[str, Any]] = []
    for item in client.pages(path, **params):
        items.append(item)
        if len(items) >= TAIL_MAX:
            break
    return sorted(items, key=lambda item: int(item["id"]))


def _moment(value: object) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


def _stamp(item: dict[str, Any], today: datetime) -> str:
    """When the delivery reached the state shown (not when tail saw it), in UTC, to the second.

    The row's ``updated_at`` moves with each attempt and state change; the date is added
    when it is not today's.
    """
    changed = _moment(item.get("updated_at") or item["created_at"])
    return (
        f"{changed:%H:%M:%S}" if changed.date() == today.date() else f"{changed:%Y-%m-%d %H:%M:%S}"
    )


def _describe(item: dict[str, Any]) -> str:
    detail = []
    if item.get("attempt_count"):
        detail.append(f"attempt {item['attempt_count']}")
    if item.get("last_status_code"):
        detail.append(f"HTTP {item['last_status_code']}")
    error = item.get("last_error")
    if (
        error
        and item["state"] != DeliveryState.DELIVERED
        and error != f"HTTP {item.get('last_status_code')}"
    ):
        detail.append(str(error))
    if item["state"] == DeliveryState.RETRYING and item.get("next_attempt_at"):
        detail.append(f"next at {_moment(item['next_attempt_at']):%H:%M:%S}")
    # The delivery carries its URL: a relay delivery's endpoint is in no list.
    target = item.get("endpoint_url") or item["endpoint_id"]
    line = (
        f"#{item['id']:<6} {item['state']:<10} {item['event_type']:<20} {item['event_id']}"
        f"  -> {target}"
    )
    return line + (f"  ({', '.join(detail)})" if detail else "")


_COLOURS = {
    DeliveryState.DELIVERED: "green",
    DeliveryState.DEAD: "red",
    DeliveryState.RETRYING: "yellow",
    DeliveryState.CANCELLED: "white",
}


@click.command()
@click.option("--endpoint", "endpoint_id", help="Only deliveries to this endpoint.")
@click.option("--event-type", help="Only deliveries of this event type.")
@click.option(
    "--since",
    default="0s",
    show_default=True,
    help="Also follow deliveries created since (2h, 30m, or an ISO time).",
)
@click.option(
    "--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True, help="Seconds."
)
@click.option("--timeout", type=click.FloatRange(min=0), help="Stop after this many seconds.")
@pass_context
def tail(
    context: Context,
    endpoint_id: str | None,
    event_type: str | None,
    since: str,
    interval: float,
    timeout: float | None,
) -> None:
    """Follow deliveries live: one line per new delivery and per change of state.

    Polls the deliveries API every --interval seconds; Ctrl-C stops.
    """
    client = context.client()
    started = parse_since(since)
    params = {
        "since": started.isoformat(),
        "endpoint_id": endpoint_id,
        "event_type": event_type,
        "limit": 250,
    }
    path = context.app_path("/deliveries")
    seen: dict[int, Seen] = {}
    deadline = None if timeout is None else time.monotonic() + timeout
    click.echo(
        f"following deliveries since {started:%Y-%m-%d %H:%M:%S} UTC (Ctrl-C stops)", err=True
    )
    try:
        while True:
            for item in _window(client, path, params):
                now = Seen(item["state"], int(item.get("attempt_count") or 0))
                if seen.get(item["id"]) == now:
                    continue
                seen[item["id"]] = now
                line = f"{_stamp(item, datetime.now(UTC))}  {_describe(item)}"
                click.secho(line, fg=_COLOURS.get(item["state"]))
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(interval if deadline is None else min(interval, deadline - time.monotonic()))
    except KeyboardInterrupt:
        return


# Replay and dead letters ------------------------------------------------------------------


def _print_replay(replay: dict[str, Any], what: str, nothing: str) -> None:
    count = replay["deliveries_requeued"]
    click.echo(
        f"{what}: {count} deliver{'y' if count == 1 else 'ies'} requeued (replay {replay['id']})"
    )
    if count == 0:
        click.echo(f"  nothing to do: {nothing}", err=True)


_ALREADY_PENDING = "already pending, or its endpoint is disabled (enable it first)"


@click.command()
@click.option("--endpoint", "endpoint_id", help="Recover this endpoint's failed deliveries...")
@click.option("--since", help="...created since this time (2h, 30m, or an ISO time).")
@click.option("--until", help="...and before this time (optional).")
@click.option("--delivery", "delivery_id", type=int, help="Or: resend this one delivery.")
@click.option("--message", "event_id", help="Or: resend every delivery of this message.")
@click.option(
    "--include-cancelled",
    is_flag=True,
    help="With --endpoint: also the deliveries cancelled when it was disabled.",
)
@pass_context
def replay(
    context: Context,
    endpoint_id: str | None,
    since: str | None,
    until: str | None,
    delivery_id: int | None,
    event_id: str | None,
    include_cancelled: bool,
) -> None:
    """Send again: an endpoint's failures since a time, one delivery, or one message.

    Replays are idempotent (a delivery already pending is left alone) and audited.
    """
    chosen = [option for option in (endpoint_id, delivery_id, event_id) if option is not None]
    if len(chosen) != 1:
        fail_usage("give exactly one of --endpoint (with --since), --delivery or --message")
    client = context.client()
    if delivery_id is not None:
        result = client.post(context.app_path(f"/deliveries/{delivery_id}/resend"))
        _print_replay(result, f"delivery {delivery_id}", _ALREADY_PENDING)
    elif event_id is not None:
        result = client.post(context.app_path(f"/messages/{event_id}/resend"))
        _print_replay(result, f"message {event_id}", _ALREADY_PENDING)
    else:
        if since is None:
            fail_usage("--endpoint needs --since (e.g. --since 2h)")
        start = parse_since(since)
        body: dict[str, Any] = {"since": start.isoformat()}
        if include_cancelled:
            body["include_cancelled"] = True
        if until is not None:
            body["until"] = parse_since(until).isoformat()
        result = client.post(context.app_path(f"/endpoints/{endpoint_id}/recover"), body)
        _print_replay(
            result,
            f"endpoint {endpoint_id} since {human_time(start)}",
            "no delivery of this endpoint failed (dead or retrying) in that time, or its"
            " endpoint is disabled (enable it first)",
        )


@click.group("dead-letters")
def dead_letters() -> None:
    """List dead letters (deliveries whose retries ran out) and redrive them."""


def _open_letters(
    client: ApiClient, context: Context, endpoint_id: str | None, event_type: str | None
) -> Iterator[dict[str, Any]]:
    return client.pages(
        context.app_path("/dead-letters"),
        endpoint_id=endpoint_id,
        event_type=event_type,
        limit=250,
    )


@dead_letters.command("list")
@click.option("--endpoint", "endpoint_id", help="Only this endpoint's.")
@click.option("--event-type", help="Only this event type's.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def dead_letters_list(
    context: Context, endpoint_id: str | None, event_type: str | None, as_json: bool
) -> None:
    """Open dead letters, newest first."""
    items = list(_open_letters(context.client(), context, endpoint_id, event_type))
    if as_json:
        print_json(items)
        return
    columns = ("id", "delivery_id", "event_type", "event_id", "endpoint_id", "reason")
    print_table(
        [[item[column] for column in columns] + [item.get("endpoint_url", "")] for item in items],
        ["ID", "DELIVERY", "TYPE", "WEBHOOK-ID", "ENDPOINT", "REASON", "URL"],
    )


@dead_letters.command("redrive")
@click.argument("dead_letter_ids", nargs=-1, type=int)
@click.option("--all", "redrive_all", is_flag=True, help="Every open dead letter (of the filter).")
@click.option("--endpoint", "endpoint_id", help="With --all: only this endpoint's.")
@click.option("--event-type", help="With --all: only this event type's.")
@pass_context
def dead_letters_redrive(
    context: Context,
    dead_letter_ids: tuple[int, ...],
    redrive_all: bool,
    endpoint_id: str | None,
    event_type: str | None,
) -> None:
    """Send dead letters again: the ids given, or --all (optionally filtered).

    Shows a progress bar; each redrive is its own audited, idempotent replay.
    """
    if bool(dead_letter_ids) == redrive_all:
        fail_usage("give dead letter ids, or --all (with --endpoint/--event-type to narrow it)")
    if dead_letter_ids and (endpoint_id or event_type):
        fail_usage("--endpoint and --event-type narrow --all; they do not apply to ids")
    client = context.client()
    ids = list(dead_letter_ids) or [
        int(item["id"]) for item in _open_letters(client, context, endpoint_id, event_type)
    ]
    if not ids:
        click.echo("no open dead letters")
        return
    requeued, failures = 0, []
    with click.progressbar(
        ids, label="redriving", file=sys.stderr, show_pos=True, show_eta=False
    ) as bar:
        for dead_letter_id in bar:
            try:
                result = client.post(context.app_path(f"/dead-letters/{dead_letter_id}/redrive"))
            except ApiError as exc:
                failures.append((dead_letter_id, exc))
                continue
            requeued += int(result["deliveries_requeued"])
    click.echo(
        f"redrove {len(ids) - len(failures)} of {len(ids)} dead letters: "
        f"{requeued} deliver{'y' if requeued == 1 else 'ies'} requeued"
    )
    for dead_letter_id, error in failures:
        click.secho(f"  dead letter {dead_letter_id}: {error}", fg="red", err=True)
    if failures:
        sys.exit(EXIT_REFUSED)
