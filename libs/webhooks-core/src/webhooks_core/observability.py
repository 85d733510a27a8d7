"""Prometheus metrics shared by every process.

When ``PROMETHEUS_MULTIPROC_DIR`` is set (gunicorn workers, Celery pool processes) the
exposition merges every process's files, so counters from all processes add up.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

if TYPE_CHECKING:
    from flask import Flask, Response

HTTP_REQUESTS = Counter(
    "webhooks_http_requests_total",
    "HTTP requests served, by route template, method and status class.",
    ["service", "route", "method", "status_class"],
)
HTTP_LATENCY = Histogram(
    "webhooks_http_request_duration_seconds",
    "Time to serve an HTTP request.",
    ["service", "route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def registry() -> CollectorRegistry:
    """The registry to expose: merged across processes in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        # The merged view has no process_* metrics of its own: add the whole process group's.
        from webhooks_core.monitoring import ProcessGroupCollector

        merged.register(ProcessGroupCollector())
        return merged
    from prometheus_client import REGISTRY

    return REGISTRY


def metrics_payload() -> bytes:
    """The text exposition of every metric of this process (or of all processes)."""
    return generate_latest(registry())


def metrics_response() -> Response:
    """A Flask response with the exposition."""
    from flask import Response

    # content_type, not mimetype: Flask would add a second "; charset=utf-8" to a mimetype.
    return Response(metrics_payload(), content_type=CONTENT_TYPE_LATEST)


def instrument_flask(app: Flask, service: str) -> None:
    """Count and time every request by its route template, not its concrete path."""
    from flask import g, request

    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.pop("metrics_started", None)
        route = request.url_rule.rule if request.url_rule else "unmatched"
        if started is not None:
            HTTP_LATENCY.labels(service, route, request.method).observe(
                time.perf_counter() - started
            )
        HTTP_REQUESTS.labels(
            service, route, request.method, f"{response.status_code // 100}xx"
        ).inc()
        return response


# The platform's metric catalogue.  Dashboards and alert rules in monitoring/ use these
# names; labels are bounded (no endpoint ids or URLs).

LAG_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600,
    7200, 18000, 36000, 86400, 172800, 259200,
)  # fmt: skip

MESSAGES_ACCEPTED = Counter(
    "webhooks_messages_accepted_total",
    "Messages stored by the platform, by event type and ingestion path (broker, http, relay).",
    ["event_type", "path"],
)
MESSAGES_DUPLICATE = Counter(
    "webhooks_messages_duplicate_total",
    "Messages not stored again because their event id or idempotency key was known.",
    ["path"],
)
MESSAGES_REJECTED = Counter(
    "webhooks_messages_rejected_total",
    "Broker messages that could not be parsed and were dead-lettered.",
    ["reason"],
)
DELIVERIES_CREATED = Counter(
    "webhooks_deliveries_created_total",
    "Delivery rows created by fan-out (one per message and matching endpoint).",
)
OUTBOX_PUBLISHED = Counter(
    "webhooks_outbox_published_total",
    "Outbox rows published to RabbitMQ and confirmed by it.",
)
ATTEMPTS = Counter(
    "webhooks_delivery_attempts_total",
    "HTTP delivery attempts by outcome: success, http_4xx, http_5xx, timeout, "
    "connect_error, blocked, too_large, auth_error (no OAuth token), error.",
    ["outcome"],
)
OAUTH_TOKEN_REQUESTS = Counter(
    "webhooks_oauth_token_requests_total",
    "OAuth 2.0 token requests of the delivery workers (one per endpoint and expiry window"
    " per process when all is well), by outcome: issued, failed.",
    ["outcome"],
)
ATTEMPT_DURATION = Histogram(
    "webhooks_delivery_attempt_duration_seconds",
    "Time from sending a delivery request to its outcome.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)
DELIVERY_LAG = Histogram(
    "webhooks_delivery_lag_seconds",
    "Time from a message being accepted to its successful delivery (seconds to days).",
    buckets=LAG_BUCKETS,
)
RETRIES_SCHEDULED = Counter(
    "webhooks_delivery_retries_scheduled_total", "Failed attempts that scheduled a retry."
)
DEAD_LETTERED = Counter(
    "webhooks_dead_letters_total", "Deliveries that exhausted their retries and died."
)
POISON_DELIVERIES = Counter(
    "webhooks_poison_deliveries_total",
    "Deliveries dead-lettered by the scheduler because their lease ran out "
    "WEBHOOKS_MAX_LEASE_EXPIRIES times in a row with no attempt recorded (poison deliveries).",
)
REPLAYS = Counter(
    "webhooks_replays_total",
    "Deliveries requeued by a replay, by kind (delivery, message, recover, redrive).",
    ["kind"],
)
ENDPOINTS_DISABLED = Counter(
    "webhooks_endpoints_disabled_total",
    "Endpoints disabled by the platform, by reason (gone, failing).",
    ["reason"],
)
IN_FLIGHT = Gauge(
    "webhooks_tasks_in_flight",
    "Celery tasks executing right now, by queue (summed over the live pool processes).",
    ["queue"],
    multiprocess_mode="livesum",
)

# Known label values start at zero, so that rates and alerts see a series before the first
# event (Prometheus cannot tell "never happened" from "not exported").
ATTEMPT_OUTCOMES = (
    "success", "http_3xx", "http_4xx", "http_5xx", "timeout", "connect_error", "blocked",
    "too_large", "auth_error", "error",
)  # fmt: skip
for _outcome in ATTEMPT_OUTCOMES:
    ATTEMPTS.labels(_outcome)
for _outcome in ("issued", "failed"):
    OAUTH_TOKEN_REQUESTS.labels(_outcome)
for _kind in ("delivery", "message", "recover", "redrive"):
    REPLAYS.labels(_kind)
for _reason in ("gone", "failing"):
    ENDPOINTS_DISABLED.labels(_reason)
for _path in ("broker", "http", "relay"):
    MESSAGES_DUPLICATE.labels(_path)
for _reason in ("invalid_json", "invalid_envelope", "unknown_application"):
    MESSAGES_REJECTED.labels(_reason)
