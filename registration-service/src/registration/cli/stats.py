"""``webhooks stats``: success rate, latency and volume over a window, in the terminal."""

from __future__ import annotations

from typing import Any

import click

from registration.cli.context import Context, pass_context, print_json, print_table

# Eight levels of a block, for a one-line trend of each series.
_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None]) -> str:
    """``▁▃█``: each value as a block scaled to the largest; a gap for a missing one."""
    present = [v for v in values if v is not None]
    top = max(present, default=0) or 1
    return "".join(
        " " if v is None else _BLOCKS[min(len(_BLOCKS) - 1, int(v / top * (len(_BLOCKS) - 1)))]
        for v in values
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g} ms"


def _print(stats: dict[str, Any]) -> None:
    totals = stats["totals"]
    series = stats["series"]
    latency = totals["latency_ms"]
    click.echo(f"{stats['window']} in {stats['bucket']} buckets, since {stats['since']}")
    if totals["messages_accepted"] is not None:
        click.echo(f"messages accepted  {totals['messages_accepted']}")
    click.echo(
        f"attempts           {totals['attempts']}  {sparkline([p['attempts'] for p in series])}"
    )
    click.echo(
        f"success rate       {_percent(totals['success_rate'])}  "
        f"{sparkline([p['success_rate'] for p in series])}"
    )
    click.echo(
        f"latency            p50 {_ms(latency['p50'])}, p90 {_ms(latency['p90'])}, "
        f"p99 {_ms(latency['p99'])}  {sparkline([p['latency_ms']['p50'] for p in series])}"
    )
    final = totals["deliveries_by_final_state"]
    click.echo(
        f"deliveries         delivered {final['delivered']}, dead {final['dead']}, "
        f"cancelled {final['cancelled']}; retries scheduled {totals['retries_scheduled']}"
    )
    by_class = ", ".join(f"{k} {v}" for k, v in sorted(totals["attempts_by_status_class"].items()))
    click.echo(f"status classes     {by_class or '-'}")
    by_outcome = ", ".join(f"{k} {v}" for k, v in sorted(totals["attempts_by_outcome"].items()))
    click.echo(f"outcomes           {by_outcome or '-'}")
    if stats["event_types"]:
        click.echo("")
        print_table(
            [[t["event_type"], t["messages"], t["attempts"]] for t in stats["event_types"]],
            ["EVENT TYPE", "MESSAGES", "ATTEMPTS"],
        )


@click.command()
@click.option("--endpoint", "endpoint_id", help="One endpoint's statistics.")
@click.option("--service", is_flag=True, help="The whole service's totals (needs the admin token).")
@click.option("--window", type=click.Choice(["1h", "24h", "7d"]), default="24h", show_default=True)
@click.option("--bucket", type=click.Choice(["minute", "hour", "day"]), help="Series step.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@pass_context
def stats(
    context: Context,
    endpoint_id: str | None,
    service: bool,
    window: str,
    bucket: str | None,
    as_json: bool,
) -> None:
    """Messages, attempts, success rate and latency over the last hour, day or 7 days."""
    if service:
        path = "/api/v1/statistics"
    elif endpoint_id:
        path = context.app_path(f"/endpoints/{endpoint_id}/statistics")
    else:
        path = context.app_path("/statistics")
    result = context.client().get(path, window=window, bucket=bucket)
    if as_json:
        print_json(result)
        return
    _print(result)
