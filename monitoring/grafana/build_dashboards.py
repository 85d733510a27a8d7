"""Build the Grafana dashboards of monitoring/grafana/dashboards/ from this one description.

Run ``python monitoring/grafana/build_dashboards.py`` after changing a panel and commit both;
a test fails when the JSON files and this script disagree.  Every panel query is evaluated
against a live Prometheus by the monitoring tests, so a panel here is a panel that works.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
RATE = "$__rate_interval"
# The platform's own queues (not Celery's pidbox reply queues).
PLATFORM_QUEUES = '{queue=~"webhooks[.].+"}'

GREEN, YELLOW, ORANGE, RED, BLUE, PURPLE = "green", "yellow", "orange", "red", "blue", "purple"
OUTCOME_COLOURS = {
    "success": GREEN,
    "http_3xx": BLUE,
    "http_4xx": ORANGE,
    "http_5xx": RED,
    "timeout": PURPLE,
    "connect_error": "dark-red",
    "blocked": "dark-purple",
    "too_large": "dark-orange",
    "auth_error": "semi-dark-purple",
    "error": "dark-yellow",
}


def steps(*pairs: tuple[float | None, str]) -> dict[str, Any]:
    """Absolute thresholds: ``(None, "green"), (10, "red")``."""
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in pairs]}


def target(expr: str, legend: str = "", ref: str = "A", **extra: Any) -> dict[str, Any]:
    """One Prometheus query of a panel."""
    return {"refId": ref, "datasource": DATASOURCE, "expr": expr, "legendFormat": legend, **extra}


def targets(*queries: tuple[str, str]) -> list[dict[str, Any]]:
    """Several ``(expr, legend)`` queries, lettered A, B, C..."""
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)]


def colour_overrides(colours: dict[str, str]) -> list[dict[str, Any]]:
    """Fixed colours by series name, so that success is always green and errors red."""
    return [
        {
            "matcher": {"id": "byName", "options": name},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": colour}}],
        }
        for name, colour in colours.items()
    ]


@dataclass
class Panel:
    """A panel before layout: its JSON body and its size on the 24-column grid."""

    body: dict[str, Any]
    width: int
    height: int


def stat(
    title: str,
    description: str,
    expr: str,
    *,
    unit: str = "short",
    thresholds: dict[str, Any] | None = None,
    decimals: int | None = None,
    width: int = 4,
    height: int = 4,
    colour_mode: str = "background",
) -> Panel:
    """A single number with a sparkline, coloured by its thresholds."""
    defaults: dict[str, Any] = {
        "unit": unit,
        "thresholds": thresholds or steps((None, GREEN)),
        "color": {"mode": "thresholds"},
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return Panel(
        {
            "type": "stat",
            "title": title,
            "description": description,
            "targets": [target(expr, title)],
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": colour_mode,
                "graphMode": "area",
                "justifyMode": "center",
                "textMode": "value",
                "orientation": "auto",
            },
        },
        width,
        height,
    )


def timeseries(
    title: str,
    description: str,
    queries: list[tuple[str, str]],
    *,
    unit: str = "short",
    stack: bool = False,
    width: int = 12,
    height: int = 8,
    thresholds: dict[str, Any] | None = None,
    colours: dict[str, str] | None = None,
    minimum: float | None = 0,
    maximum: float | None = None,
    log_scale: bool = False,
    axis_label: str = "",
    legend_calcs: tuple[str, ...] = ("mean", "max", "lastNotNull"),
) -> Panel:
    """A graph over time, legend as a table with mean/max/last."""
    custom: dict[str, Any] = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 25 if stack else 8,
        "gradientMode": "opacity",
        "showPoints": "never",
        "spanNulls": True,
        "axisLabel": axis_label,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "line+area" if thresholds else "off"},
    }
    if log_scale:
        custom["scaleDistribution"] = {"type": "log", "log": 10}
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": custom,
        "color": {"mode": "palette-classic"},
        "thresholds": thresholds or steps((None, GREEN)),
    }
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    return Panel(
        {
            "type": "timeseries",
            "title": title,
            "description": description,
            "targets": targets(*queries),
            "fieldConfig": {
                "defaults": defaults,
                "overrides": colour_overrides(colours or {}),
            },
            "options": {
                "legend": {
                    "displayMode": "table",
                    "placement": "bottom",
                    "calcs": list(legend_calcs),
                },
                "tooltip": {"mode": "multi", "sort": "desc"},
            },
        },
        width,
        height,
    )


def bargauge(
    title: str,
    description: str,
    expr: str,
    legend: str,
    *,
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    thresholds: dict[str, Any] | None = None,
) -> Panel:
    """Horizontal bars, one per series (top-N lists)."""
    return Panel(
        {
            "type": "bargauge",
            "title": title,
            "description": description,
            "targets": [target(expr, legend, instant=True)],
            "fieldConfig": {
                "defaults": {
                    "unit": unit,
                    "min": 0,
                    "thresholds": thresholds or steps((None, BLUE)),
                    "color": {"mode": "thresholds"},
                },
                "overrides": [],
            },
            "options": {
                "orientation": "horizontal",
                "displayMode": "gradient",
                "showUnfilled": True,
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            },
        },
        width,
        height,
    )


def heatmap(title: str, description: str, expr: str, *, width: int = 12) -> Panel:
    """A latency heatmap from histogram buckets."""
    return Panel(
        {
            "type": "heatmap",
            "title": title,
            "description": description,
            "targets": [target(expr, "{{le}}", format="heatmap")],
            "fieldConfig": {"defaults": {"unit": "s"}, "overrides": []},
            "options": {
                "calculate": False,
                "yAxis": {"unit": "s"},
                "cellGap": 1,
                "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
                "rowsFrame": {"layout": "auto"},
                "tooltip": {"show": True, "yHistogram": True},
                "legend": {"show": True},
            },
        },
        width,
        8,
    )


def table(title: str, description: str, expr: str, *, width: int = 12, height: int = 8) -> Panel:
    """An instant query as a table (labels as columns)."""
    return Panel(
        {
            "type": "table",
            "title": title,
            "description": description,
            "targets": [target(expr, "", format="table", instant=True)],
            "fieldConfig": {"defaults": {}, "overrides": []},
            "options": {"showHeader": True, "cellHeight": "sm"},
            "transformations": [
                {
                    "id": "organize",
                    "options": {"excludeByName": {"Time": True, "__name__": True}},
                }
            ],
        },
        width,
        height,
    )


@dataclass
class Row:
    """A titled row of panels."""

    title: str
    panels: list[Panel] = field(default_factory=list)


def layout(rows: list[Row]) -> list[dict[str, Any]]:
    """Flow the panels of each row left to right, wrapping at 24 columns."""
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row in rows:
        panels.append(
            {
                "type": "row",
                "title": row.title,
                "id": next_id,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x = 0
                y += line_height
                line_height = 0
            body = dict(panel.body)
            body["id"] = next_id
            body["datasource"] = DATASOURCE
            body["gridPos"] = {"h": panel.height, "w": panel.width, "x": x, "y": y}
            panels.append(body)
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return panels


def dashboard(uid: str, title: str, description: str, rows: list[Row]) -> dict[str, Any]:
    """The dashboard document Grafana's file provisioning loads."""
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["webhooks"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {"refresh_intervals": ["10s", "30s", "1m", "5m", "15m"]},
        "templating": {"list": []},
        "annotations": {
            "list": [
                {
                    "name": "Annotations & Alerts",
                    "builtIn": 1,
                    "type": "dashboard",
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                },
                {
                    "name": "Firing alerts",
                    "datasource": DATASOURCE,
                    "enable": True,
                    "iconColor": "red",
                    "expr": 'ALERTS{alertstate="firing", alertname=~"Webhooks.*"}',
                    "step": "60s",
                    "titleFormat": "{{alertname}}",
                    "textFormat": "{{summary}}",
                    "useValueForTime": False,
                },
            ]
        },
        "links": [
            {
                "title": "Webhooks dashboards",
                "type": "dashboards",
                "tags": ["webhooks"],
                "asDropdown": False,
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "panels": layout(rows),
    }


ATTEMPTS = "webhooks_delivery_attempts_total"


def success_ratio(window: str) -> str:
    """Share of delivery attempts that succeeded over ``window``."""
    return f'sum(rate({ATTEMPTS}{{outcome="success"}}[{window}])) / sum(rate({ATTEMPTS}[{window}]))'


def quantiles(metric: str, by: str = "", window: str = RATE) -> list[tuple[str, str]]:
    """p50, p90 and p99 of a histogram, optionally per label."""
    group = f"{by}, le" if by else "le"
    prefix = f"{{{{{by}}}}} " if by else ""
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{window}])))",
            f"{prefix}p{round(q * 100)}",
        )
        for q in (0.5, 0.9, 0.99)
    ]


def overview() -> dict[str, Any]:
    """Delivery health at a glance, then throughput, latency, backlog, endpoints, API."""
    rows = [
        Row(
            "Now",
            [
                stat(
                    "Delivered / s",
                    "Successful delivery attempts per second over the last 5 minutes.",
                    f'sum(rate({ATTEMPTS}{{outcome="success"}}[5m]))',
                    unit="reqps",
                    colour_mode="none",
                ),
                stat(
                    "Success ratio (5m)",
                    "Share of delivery attempts that got a 2xx in the last 5 minutes. Retries "
                    "count as attempts, so a flapping receiver lowers it before anything is "
                    "lost.",
                    success_ratio("5m"),
                    unit="percentunit",
                    decimals=1,
                    thresholds=steps((None, RED), (0.9, ORANGE), (0.99, GREEN)),
                ),
                stat(
                    "Attempt latency p99 (5m)",
                    "99th percentile of the time from sending a delivery request to its "
                    "outcome. The attempt timeout bounds it.",
                    "histogram_quantile(0.99, sum by (le) "
                    "(rate(webhooks_delivery_attempt_duration_seconds_bucket[5m])))",
                    unit="s",
                    thresholds=steps((None, GREEN), (1, ORANGE), (5, RED)),
                ),
                stat(
                    "Deliveries pending",
                    "Deliveries not yet delivered, dead or cancelled (pending, sending, "
                    "retrying), from the database.",
                    "sum(webhooks_deliveries_pending)",
                    thresholds=steps((None, GREEN), (1000, ORANGE), (10000, RED)),
                ),
                stat(
                    "Oldest pending",
                    "Age of the oldest delivery still pending. Retries legitimately keep a "
                    "delivery pending for up to ~28 hours; the alert fires past 30.",
                    "max(webhooks_deliveries_oldest_pending_age_seconds)",
                    unit="s",
                    thresholds=steps((None, GREEN), (3600, ORANGE), (30 * 3600, RED)),
                ),
                stat(
                    "Open dead letters",
                    "Deliveries that exhausted their retries and were not redriven yet.",
                    "sum(webhooks_dead_letters_open)",
                    thresholds=steps((None, GREEN), (1, RED)),
                ),
            ],
        ),
        Row(
            "Throughput",
            [
                timeseries(
                    "Attempts by outcome",
                    "Delivery attempts per second, stacked by outcome: success (2xx), http_3xx "
                    "(redirects are not followed), http_4xx, "
                    "http_5xx, timeout, connect_error, blocked (target address refused), "
                    "too_large, auth_error (no OAuth token), error.",
                    [(f"sum by (outcome) (rate({ATTEMPTS}[{RATE}]))", "{{outcome}}")],
                    unit="reqps",
                    stack=True,
                    colours=OUTCOME_COLOURS,
                ),
                timeseries(
                    "Success ratio",
                    "Share of attempts that succeeded, over time. Below the orange line "
                    "receivers are failing; the error-ratio alert fires above 25% failures.",
                    [(success_ratio(RATE), "success ratio")],
                    unit="percentunit",
                    minimum=None,
                    maximum=1,
                    thresholds=steps((None, RED), (0.75, ORANGE), (0.99, GREEN)),
                ),
                timeseries(
                    "Messages in, deliveries out",
                    "Messages accepted (all paths), deliveries created by fan-out, successful "
                    "deliveries and outbox rows published, per second.",
                    [
                        (
                            "sum(rate(webhooks_messages_accepted_total[$__rate_interval]))",
                            "messages accepted",
                        ),
                        (
                            "sum(rate(webhooks_deliveries_created_total[$__rate_interval]))",
                            "deliveries created",
                        ),
                        (f'sum(rate({ATTEMPTS}{{outcome="success"}}[{RATE}]))', "delivered"),
                        (
                            "sum(rate(webhooks_outbox_published_total[$__rate_interval]))",
                            "outbox published",
                        ),
                    ],
                    unit="ops",
                ),
                timeseries(
                    "Messages accepted by path",
                    "Messages stored per second by ingestion path (broker, http, relay), "
                    "duplicates suppressed by event id or idempotency key, and broker messages "
                    "rejected as unparseable (dead-lettered to webhooks.ingest.dead) by reason.",
                    [
                        (
                            "sum by (path) "
                            "(rate(webhooks_messages_accepted_total[$__rate_interval]))",
                            "{{path}}",
                        ),
                        (
                            "sum by (path) "
                            "(rate(webhooks_messages_duplicate_total[$__rate_interval]))",
                            "{{path}} duplicates",
                        ),
                        (
                            "sum by (reason) "
                            "(rate(webhooks_messages_rejected_total[$__rate_interval]))",
                            "rejected: {{reason}}",
                        ),
                    ],
                    unit="ops",
                ),
            ],
        ),
        Row(
            "Latency and lag",
            [
                timeseries(
                    "Attempt latency",
                    "Time from sending a delivery request to its outcome (p50, p90, p99).",
                    quantiles("webhooks_delivery_attempt_duration_seconds"),
                    unit="s",
                    thresholds=steps((None, GREEN), (5, RED)),
                ),
                timeseries(
                    "Publish-to-delivered lag",
                    "Time from a message being accepted to its successful delivery, retries "
                    "included (p50, p90, p99; log scale: seconds to days).",
                    quantiles("webhooks_delivery_lag_seconds"),
                    unit="s",
                    log_scale=True,
                    minimum=None,
                ),
                heatmap(
                    "Attempt latency distribution",
                    "How many attempts fell in each latency bucket over time.",
                    "sum by (le) (increase("
                    "webhooks_delivery_attempt_duration_seconds_bucket[$__rate_interval]))",
                ),
                timeseries(
                    "Retries, dead letters, replays",
                    "Failed attempts that scheduled a retry, deliveries dead-lettered, and "
                    "deliveries requeued by replays, per second.",
                    [
                        (
                            "sum(rate(webhooks_delivery_retries_scheduled_total[$__rate_interval]))",
                            "retries scheduled",
                        ),
                        (
                            "sum(rate(webhooks_dead_letters_total[$__rate_interval]))",
                            "dead-lettered",
                        ),
                        (
                            "sum by (kind) (rate(webhooks_replays_total[$__rate_interval]))",
                            "replayed ({{kind}})",
                        ),
                    ],
                    unit="ops",
                    colours={"retries scheduled": ORANGE, "dead-lettered": RED},
                ),
            ],
        ),
        Row(
            "Backlog",
            [
                timeseries(
                    "Pending deliveries by state",
                    "Deliveries not yet terminal: pending (due, never tried or replayed), "
                    "sending (leased by a worker), retrying (waiting for the next attempt).",
                    [("sum by (state) (webhooks_deliveries_pending)", "{{state}}")],
                    stack=True,
                    colours={"pending": BLUE, "sending": GREEN, "retrying": ORANGE},
                ),
                timeseries(
                    "Oldest pending and overdue",
                    "Age of the oldest pending delivery, and how long the most overdue due "
                    "delivery has waited past its scheduled time (the scheduler or workers "
                    "falling behind).",
                    [
                        ("max(webhooks_deliveries_oldest_pending_age_seconds)", "oldest pending"),
                        ("max(webhooks_deliveries_overdue_seconds)", "most overdue"),
                    ],
                    unit="s",
                    colours={"most overdue": RED},
                ),
                timeseries(
                    "Outbox backlog",
                    "Producer outbox rows committed but not yet confirmed by RabbitMQ, and the "
                    "age of the oldest one.",
                    [
                        ("max(webhooks_outbox_backlog)", "rows waiting"),
                        ("max(webhooks_outbox_oldest_age_seconds)", "oldest (s)"),
                    ],
                    thresholds=steps((None, GREEN), (1000, RED)),
                ),
                timeseries(
                    "Open dead letters",
                    "Dead letters waiting for a redrive, from the database.",
                    [("sum(webhooks_dead_letters_open)", "open dead letters")],
                    colours={"open dead letters": RED},
                ),
            ],
        ),
        Row(
            "Endpoints",
            [
                timeseries(
                    "Circuit breakers",
                    "Enabled endpoints by circuit-breaker state: closed (healthy), open "
                    "(failing, attempts held back), half_open (probing after the break).",
                    [("sum by (state) (webhooks_endpoints_circuit_state)", "{{state}}")],
                    stack=True,
                    colours={"closed": GREEN, "open": RED, "half_open": ORANGE},
                    width=8,
                ),
                timeseries(
                    "Disabled endpoints",
                    "Endpoints currently disabled (from the database) and endpoints the "
                    "platform disabled in the window, by reason (gone = 410, failing).",
                    [
                        ("sum(webhooks_endpoints_disabled)", "disabled now"),
                        (
                            "sum by (reason) "
                            "(increase(webhooks_endpoints_disabled_total[$__rate_interval]))",
                            "newly disabled ({{reason}})",
                        ),
                    ],
                    width=8,
                ),
                stat(
                    "Open circuits",
                    "Endpoints whose breaker is open right now.",
                    'sum(webhooks_endpoints_circuit_state{state="open"})',
                    thresholds=steps((None, GREEN), (1, ORANGE), (10, RED)),
                    width=8,
                    height=8,
                ),
                timeseries(
                    "Flow control: lowered limits",
                    "Endpoints whose limits adaptive flow control lowered because their "
                    "receiver pushed back (429, 503, timeouts, rising latency): the ten lowest "
                    "rates (deliveries per second) and concurrency limits (batches in flight), "
                    "and how many endpoints a Retry-After holds. Empty while every endpoint "
                    "runs at its configured limits; endpoints with flow control off never "
                    "appear (docs/delivery.md, Flow control).",
                    [
                        ("bottomk(10, webhooks_endpoint_flow_rate_limit)", "{{endpoint_id}} /s"),
                        (
                            "bottomk(10, webhooks_endpoint_flow_max_in_flight)",
                            "{{endpoint_id}} in flight",
                        ),
                        ("sum(webhooks_endpoint_flow_held)", "held by Retry-After"),
                    ],
                    width=24,
                ),
            ],
        ),
        Row(
            "Event types",
            [
                timeseries(
                    "Messages by event type",
                    "Messages accepted per second by event type.",
                    [
                        (
                            "sum by (event_type) "
                            "(rate(webhooks_messages_accepted_total[$__rate_interval]))",
                            "{{event_type}}",
                        )
                    ],
                    unit="ops",
                    stack=True,
                ),
                bargauge(
                    "Top event types (range)",
                    "The ten event types with the most messages over the dashboard's range.",
                    "topk(10, sum by (event_type) "
                    "(increase(webhooks_messages_accepted_total[$__range])))",
                    "{{event_type}}",
                ),
            ],
        ),
        Row(
            "HTTP APIs",
            [
                timeseries(
                    "Requests by service and status",
                    "Requests per second served by the registration API and the producer, by "
                    "status class.",
                    [
                        (
                            "sum by (service, status_class) "
                            "(rate(webhooks_http_requests_total[$__rate_interval]))",
                            "{{service}} {{status_class}}",
                        )
                    ],
                    unit="reqps",
                    stack=True,
                    width=8,
                ),
                timeseries(
                    "Request latency",
                    "p50 and p99 of the time to serve a request, per service.",
                    [
                        (
                            "histogram_quantile(0.5, sum by (service, le) "
                            "(rate(webhooks_http_request_duration_seconds_bucket[$__rate_interval])))",
                            "{{service}} p50",
                        ),
                        (
                            "histogram_quantile(0.99, sum by (service, le) "
                            "(rate(webhooks_http_request_duration_seconds_bucket[$__rate_interval])))",
                            "{{service}} p99",
                        ),
                    ],
                    unit="s",
                    width=8,
                ),
                table(
                    "Slowest routes (p99, 5m)",
                    "Route templates by 99th percentile latency over the last 5 minutes.",
                    "topk(10, histogram_quantile(0.99, sum by (service, route, method, le) "
                    "(rate(webhooks_http_request_duration_seconds_bucket[5m]))))",
                    width=8,
                ),
            ],
        ),
    ]
    return dashboard(
        "webhooks-overview",
        "Webhooks / Overview",
        "Delivery health of the webhook platform: throughput, success, latency, backlog, "
        "dead letters, endpoint health, event types and the HTTP APIs.",
        rows,
    )


def workers() -> dict[str, Any]:
    """Workers, Celery (through Flower), RabbitMQ queues and the processes' resources."""
    queues = f"rabbitmq_detailed_queue_messages_ready{PLATFORM_QUEUES}"
    rows = [
        Row(
            "Now",
            [
                stat(
                    "Workers online",
                    "Celery workers Flower sees as online (heartbeats).",
                    "sum(flower_worker_online)",
                    thresholds=steps((None, RED), (1, GREEN)),
                ),
                stat(
                    "Worker targets up",
                    "Delivery worker metrics endpoints Prometheus can scrape.",
                    'sum(up{job="worker"})',
                    thresholds=steps((None, RED), (1, GREEN)),
                ),
                stat(
                    "Tasks in flight",
                    "Celery tasks executing right now in all pool processes.",
                    "sum(webhooks_tasks_in_flight)",
                    colour_mode="none",
                ),
                stat(
                    "Messages ready",
                    "Messages waiting in the platform's queues for a consumer.",
                    f"sum({queues})",
                    thresholds=steps((None, GREEN), (1000, ORANGE), (10000, RED)),
                ),
                stat(
                    "Messages unacked",
                    "Messages delivered to consumers and not yet acknowledged (running or "
                    "prefetched tasks).",
                    "sum(rabbitmq_detailed_queue_messages_unacked" + PLATFORM_QUEUES + ")",
                    colour_mode="none",
                ),
                stat(
                    "Consumers",
                    "Consumers attached to the platform's queues.",
                    "sum(rabbitmq_detailed_queue_consumers" + PLATFORM_QUEUES + ")",
                    thresholds=steps((None, RED), (1, GREEN)),
                ),
            ],
        ),
        Row(
            "RabbitMQ queues",
            [
                timeseries(
                    "Queue depth (ready)",
                    "Messages ready for delivery in each queue of the platform's vhost. A "
                    "growing webhooks.deliver or webhooks.ingest means workers fall behind; "
                    "anything in a dead queue needs a look.",
                    [(f"sum by (queue) ({queues})", "{{queue}}")],
                    thresholds=steps((None, GREEN), (1000, RED)),
                ),
                timeseries(
                    "Unacknowledged by queue",
                    "Messages handed to consumers and not acknowledged yet.",
                    [
                        (
                            "sum by (queue) (rabbitmq_detailed_queue_messages_unacked"
                            + PLATFORM_QUEUES
                            + ")",
                            "{{queue}}",
                        )
                    ],
                ),
                timeseries(
                    "Broker message rates",
                    "Node-wide messages per second: published into RabbitMQ, routed, delivered "
                    "to consumers, acknowledged, redelivered and dead-lettered.",
                    [
                        (
                            "sum(rate(rabbitmq_global_messages_received_total[$__rate_interval]))",
                            "published",
                        ),
                        (
                            "sum(rate(rabbitmq_global_messages_routed_total[$__rate_interval]))",
                            "routed",
                        ),
                        (
                            "sum(rate(rabbitmq_global_messages_delivered_total[$__rate_interval]))",
                            "delivered",
                        ),
                        (
                            "sum(rate(rabbitmq_global_messages_acknowledged_total"
                            "[$__rate_interval]))",
                            "acknowledged",
                        ),
                        (
                            "sum(rate(rabbitmq_global_messages_redelivered_total"
                            "[$__rate_interval]))",
                            "redelivered",
                        ),
                        (
                            "sum(rate(rabbitmq_global_messages_dead_lettered_rejected_total"
                            "[$__rate_interval]))",
                            "dead-lettered (rejected)",
                        ),
                    ],
                    unit="ops",
                    colours={"redelivered": ORANGE, "dead-lettered (rejected)": RED},
                ),
                timeseries(
                    "Consumers and utilisation",
                    "Consumers per queue, and the share of time each queue could deliver to "
                    "its consumers immediately (1 = consumers keep up).",
                    [
                        (
                            "sum by (queue) (rabbitmq_detailed_queue_consumers"
                            + PLATFORM_QUEUES
                            + ")",
                            "{{queue}} consumers",
                        ),
                        (
                            "max by (queue) (rabbitmq_detailed_queue_consumer_utilisation"
                            + PLATFORM_QUEUES
                            + ")",
                            "{{queue}} utilisation",
                        ),
                    ],
                ),
            ],
        ),
        Row(
            "Celery (Flower)",
            [
                timeseries(
                    "Task events by type",
                    "Celery events per second seen by Flower: task-received, task-started, "
                    "task-succeeded, task-failed, task-retried...",
                    [("sum by (type) (rate(flower_events_total[$__rate_interval]))", "{{type}}")],
                    unit="ops",
                    colours={"task-failed": RED, "task-succeeded": GREEN},
                ),
                timeseries(
                    "Task runtime by task",
                    "p50 and p99 of task runtimes, per task name.",
                    [
                        (
                            "histogram_quantile(0.5, sum by (task, le) "
                            "(rate(flower_task_runtime_seconds_bucket[$__rate_interval])))",
                            "{{task}} p50",
                        ),
                        (
                            "histogram_quantile(0.99, sum by (task, le) "
                            "(rate(flower_task_runtime_seconds_bucket[$__rate_interval])))",
                            "{{task}} p99",
                        ),
                    ],
                    unit="s",
                ),
                timeseries(
                    "Tasks in flight by queue",
                    "Tasks executing in the pool processes, by the queue they came from "
                    "(from the workers' own metrics, summed over live processes).",
                    [("sum by (queue) (webhooks_tasks_in_flight)", "{{queue}}")],
                    stack=True,
                    width=8,
                ),
                timeseries(
                    "Executing per worker",
                    "Tasks each worker is executing, as Flower sees them.",
                    [
                        (
                            "sum by (worker) (flower_worker_number_of_currently_executing_tasks)",
                            "{{worker}}",
                        )
                    ],
                    width=8,
                ),
                timeseries(
                    "Prefetch wait",
                    "How long tasks waited in a worker's prefetch buffer before running.",
                    [("max by (task) (flower_task_prefetch_time_seconds)", "{{task}}")],
                    unit="s",
                    width=8,
                ),
            ],
        ),
        Row(
            "Processes",
            [
                timeseries(
                    "CPU by service",
                    "CPU cores used by each service (all its processes: gunicorn and Celery "
                    "children included).",
                    [
                        (
                            "sum by (job) (rate(process_cpu_seconds_total[$__rate_interval]))",
                            "{{job}}",
                        )
                    ],
                    unit="short",
                    axis_label="cores",
                    width=8,
                ),
                timeseries(
                    "Resident memory by service",
                    "Resident memory of each service's processes (forked children share "
                    "pages, so this overstates a prefork pool somewhat).",
                    [
                        ("sum by (job) (process_resident_memory_bytes)", "{{job}}"),
                        ("sum(rabbitmq_process_resident_memory_bytes)", "rabbitmq"),
                    ],
                    unit="bytes",
                    width=8,
                ),
                table(
                    "Scrape targets",
                    "Every target Prometheus scrapes and whether it answered (1) or not (0).",
                    "up",
                    width=8,
                ),
            ],
        ),
    ]
    return dashboard(
        "webhooks-workers",
        "Webhooks / Workers and queues",
        "Delivery workers, Celery through Flower, RabbitMQ queues and the processes' CPU and "
        "memory.",
        rows,
    )


DASHBOARDS = {"overview.json": overview, "workers.json": workers}


def render(build: Any) -> str:
    """The JSON text of one dashboard, as committed."""
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


def main() -> None:
    """Write every dashboard file."""
    DASHBOARDS_DIR.mkdir(parents=True, exist_ok=True)
    for name, build in DASHBOARDS.items():
        (DASHBOARDS_DIR / name).write_text(render(build))
        print(f"wrote {DASHBOARDS_DIR / name}")


if __name__ == "__main__":
    main()
