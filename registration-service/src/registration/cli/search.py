"""``webhooks search``: deliveries and attempts by status code, type, channel, payload field."""

from __future__ import annotations

from typing import Any

import click

from registration.cli.context import (
    Context,
    fail_usage,
    human_time,
    parse_since,
    pass_context,
    print_json,
    print_table,
)


@click.group()
def search() -> None:
    """Find deliveries and attempts (newest first, a page at a time)."""


def _window(params: dict[str, Any], since: str | None, until: str | None) -> None:
    if since is not None:
        params["since"] = parse_since(since).isoformat()
    if until is not None:
        params["until"] = parse_since(until).isoformat()


def _more(result: dict[str, Any]) -> None:
    if not result.get("done", True):
        click.echo(f"more: --after {result['iterator']}", err=True)


@search.command("deliveries")
@click.option("--status-code", type=click.IntRange(100, 599), help="The last attempt's status.")
@click.option("--state", help="pending, sending, retrying, delivered, dead or cancelled.")
@click.option("--event-type", help="Of this event type.")
@click.option("--endpoint", "endpoint_id", help="To this endpoint.")
@click.option("--channel", help="Messages with this channel.")
@click.option("--field", "field", help="A payload field, e.g. 'data.person.id=42'.")
@click.option("--since", help="Created since (2h, 30m, or an ISO time).")
@click.option("--until", help="...and before.")
@click.option("--limit", type=click.IntRange(1, 250), default=50, show_default=True)
@click.option("--after", help="The cursor printed after the previous page.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@pass_context
def search_deliveries(
    context: Context,
    /,
    field: str | None,
    since: str | None,
    until: str | None,
    after: str | None,
    as_json: bool,
    **filters: Any,
) -> None:
    """Deliveries matching every filter given."""
    params: dict[str, Any] = {**filters, "iterator": after}
    if field is not None:
        path, sep, value = field.partition("=")
        if not sep or not path.strip():
            fail_usage("--field needs PATH=VALUE, e.g. data.person.id=42")
        params["payload_field"], params["payload_value"] = path.strip(), value.strip()
    _window(params, since, until)
    result = context.client().get(context.app_path("/deliveries"), **params)
    if as_json:
        print_json(result)
        return
    print_table(
        [
            [
                d["id"],
                d["state"],
                d.get("last_status_code") or "-",
                d["event_type"],
                d["event_id"],
                human_time(d["created_at"]),
                d.get("endpoint_url") or "-",
            ]
            for d in result["data"]
        ],
        ["ID", "STATE", "STATUS", "TYPE", "WEBHOOK-ID", "CREATED", "URL"],
    )
    _more(result)


@search.command("attempts")
@click.option("--status-code", type=click.IntRange(100, 599), help="HTTP status code.")
@click.option("--outcome", help="success, http_5xx, timeout, connect_error, ...")
@click.option("--event-type", help="Of deliveries of this event type.")
@click.option("--endpoint", "endpoint_id", help="To this endpoint.")
@click.option("--since", help="Started since (2h, 30m, or an ISO time).")
@click.option("--until", help="...and before.")
@click.option("--limit", type=click.IntRange(1, 250), default=50, show_default=True)
@click.option("--after", help="The cursor printed after the previous page.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@pass_context
def search_attempts(
    context: Context,
    /,
    since: str | None,
    until: str | None,
    after: str | None,
    as_json: bool,
    **filters: Any,
) -> None:
    """Attempts matching every filter given."""
    params: dict[str, Any] = {**filters, "iterator": after}
    _window(params, since, until)
    result = context.client().get(context.app_path("/attempts"), **params)
    if as_json:
        print_json(result)
        return
    print_table(
        [
            [
                a["id"],
                a["delivery_id"],
                a.get("status_code") or "-",
                a["outcome"],
                f"{a['latency_ms']:.0f} ms",
                human_time(a["started_at"]),
            ]
            for a in result["data"]
        ],
        ["ID", "DELIVERY", "STATUS", "OUTCOME", "LATENCY", "STARTED"],
    )
    _more(result)
