"""A real Prometheus scrapes the running stack through an end-to-end run; then every metric is
checked against the database, and every dashboard panel and alert expression is evaluated.

The run: an application and three endpoints created over the management API (one receiver
answers 200, one 500, one 410), three people created through the demo producer.  The events
travel producer -> outbox -> relay -> RabbitMQ -> worker ingestion -> fan-out -> scheduler ->
worker delivery.  The 200 endpoint gets three deliveries; the 500 endpoint's three deliveries
retry once and die; the 410 endpoint is disabled and its deliveries cancelled.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from sqlalchemy import Engine, text

from registration.config import APISettings
from webhooks_core.endpoints.sealing import unseal

REPO = Path(__file__).resolve().parents[2]
PEOPLE = ("Ada Lovelace", "Grace Hopper", "Katherine Johnson")
# Grafana's interval variables, as Grafana would expand them for a recent, short range.
GRAFANA_VARIABLES = {"$__rate_interval": "2m", "$__range": "1h", "$__interval": "15s"}

pytestmark = pytest.mark.slow


def rows(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql)).all())


def count(engine: Engine, sql: str) -> int:
    return int(rows(engine, sql)[0][0])


def single(stack: Any, query: str) -> float | None:
    """The one value of an instant query, or None when it has no series."""
    result = stack.prometheus(query)
    if not result:
        return None
    assert len(result) == 1, f"{query}: {result}"
    return float(result[0]["value"][1])


def by_label(stack: Any, query: str, label: str) -> dict[str, float]:
    return {s["metric"].get(label, ""): float(s["value"][1]) for s in stack.prometheus(query)}


def eventually_equal(stack: Any, query: str, expected: float) -> None:
    """Prometheus scrapes every second: wait until ``query`` shows ``expected``."""
    seen: list[float | None] = []

    def equal() -> bool:
        seen.append(single(stack, query))
        return seen[-1] == expected

    try:
        stack.wait(equal, 20, query)
    except AssertionError:
        raise AssertionError(f"{query}: expected {expected}, Prometheus says {seen[-1]}") from None


@pytest.fixture(scope="module")
def run(stack: Any, receivers: Any, settings: APISettings, engine: Engine) -> dict[str, Any]:
    """Drive the end-to-end run once; wait until every delivery is terminal."""
    admin = {"Authorization": f"Bearer {settings.admin_token}"}
    api = stack.url("api", "/api/v1/applications")
    created = requests.post(api, json={"name": "monitoring"}, headers=admin, timeout=10)
    assert created.status_code == 201, created.text
    app_id = created.json()["id"]
    endpoints = {}
    for name, receiver in receivers.items():
        response = requests.post(
            f"{api}/{app_id}/endpoints", json={"url": receiver.url}, headers=admin, timeout=10
        )
        assert response.status_code == 201, response.text
        endpoints[name] = response.json()["id"]
    for person in PEOPLE:
        response = requests.post(
            stack.url("producer", "/people"), json={"name": person}, timeout=10
        )
        assert response.status_code == 201, response.text

    # Disabling the 410 endpoint emits an endpoint.disabled event to the application's
    # other endpoints: the run is over when that message exists and nothing is open.
    quiet = {"attempts": -1, "since": 0.0}

    def all_terminal() -> bool:
        types = dict(rows(engine, "SELECT event_type, count(*) FROM messages GROUP BY 1"))
        if types.get("person.created") != len(PEOPLE) or "endpoint.disabled" not in types:
            return False
        states = dict(rows(engine, "SELECT state, count(*) FROM deliveries GROUP BY state"))
        if not set(states) <= {"delivered", "dead", "cancelled"}:
            return False
        # A delivery cancelled while a worker was sending it is terminal before that worker
        # records its attempt: wait until no task runs and the attempts stop changing.
        metrics = requests.get(stack.url("worker", "/metrics"), timeout=5).text
        running = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("webhooks_tasks_in_flight{")
        )
        attempts = count(engine, "SELECT count(*) FROM attempts")
        now = time.monotonic()
        if running or attempts != quiet["attempts"]:
            quiet.update(attempts=attempts, since=now)
        return now - quiet["since"] >= 1.5

    try:
        stack.wait(all_terminal, 60, "every delivery to end delivered, dead or cancelled")
    except AssertionError:
        states = rows(engine, "SELECT state, count(*) FROM deliveries GROUP BY state")
        raise AssertionError(
            f"deliveries {states}\nworker:\n{stack.log('worker')}\n"
            f"scheduler:\n{stack.log('scheduler')}\nrelay:\n{stack.log('relay')}"
        ) from None
    return {"app_id": app_id, "endpoints": endpoints}


def test_attempt_counters_equal_the_attempt_rows(
    stack: Any, run: dict[str, Any], engine: Engine
) -> None:
    in_database = dict(rows(engine, "SELECT outcome, count(*) FROM attempts GROUP BY outcome"))
    states = dict(rows(engine, "SELECT state, count(*) FROM deliveries GROUP BY state"))
    assert in_database["success"] == states["delivered"] >= len(PEOPLE)
    assert in_database["http_5xx"] == 2 * states["dead"]  # first try and one retry each
    assert in_database["http_4xx"] >= 1  # 410 Gone
    total = sum(in_database.values())

    eventually_equal(stack, "sum(webhooks_delivery_attempts_total)", total)
    in_prometheus = by_label(
        stack, "sum by (outcome) (webhooks_delivery_attempts_total) > 0", "outcome"
    )
    assert in_prometheus == in_database
    # Every attempt was timed; every success had its publish-to-delivered lag observed.
    assert single(stack, "sum(webhooks_delivery_attempt_duration_seconds_count)") == total
    delivered = count(engine, "SELECT count(*) FROM deliveries WHERE state = 'delivered'")
    assert single(stack, "sum(webhooks_delivery_lag_seconds_count)") == delivered


def test_one_structured_log_line_per_attempt_and_no_secret_anywhere(
    stack: Any, run: dict[str, Any], engine: Engine
) -> None:
    attempts = rows(engine, "SELECT delivery_id, outcome FROM attempts ORDER BY id")
    logged = []
    for line in stack.log("worker", tail=10_000_000).splitlines():
        if line.startswith("{") and '"delivery_id"' in line:
            entry = json.loads(line)
            assert {"endpoint_id", "outcome", "latency_ms"} <= set(entry), entry
            logged.append((entry["delivery_id"], entry["outcome"]))
    expected = Counter((d, o) for d, o in attempts)
    assert Counter(logged) == expected, (
        f"attempt rows without a log line: {expected - Counter(logged)}; "
        f"log lines without an attempt row: {Counter(logged) - expected}"
    )
    secrets = [unseal(s) for (s,) in rows(engine, "SELECT secret FROM endpoint_secrets")]
    assert secrets
    for name in stack.processes:
        text = stack.log(name, tail=10_000_000)
        assert not any(secret in text for secret in secrets), f"{name} logged a secret"


def test_delivery_metrics_match_the_database(
    stack: Any, run: dict[str, Any], engine: Engine
) -> None:
    dead = count(engine, "SELECT count(*) FROM dead_letters")
    assert dead == count(engine, "SELECT count(*) FROM deliveries WHERE state = 'dead'")
    assert dead >= len(PEOPLE)
    eventually_equal(stack, "sum(webhooks_dead_letters_total)", dead)
    retried = count(
        engine,
        "SELECT count(*) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
        " WHERE a.outcome <> 'success' AND a.started_at < ("
        "   SELECT max(started_at) FROM attempts WHERE delivery_id = d.id)",
    )
    eventually_equal(stack, "sum(webhooks_delivery_retries_scheduled_total)", retried)
    eventually_equal(stack, 'sum(webhooks_endpoints_disabled_total{reason="gone"})', 1)


def test_ingestion_metrics_match_the_database(
    stack: Any, run: dict[str, Any], engine: Engine
) -> None:
    messages = count(engine, "SELECT count(*) FROM messages WHERE source = 'broker'")
    assert messages == len(PEOPLE)
    eventually_equal(
        stack,
        'sum(webhooks_messages_accepted_total{event_type="person.created", path="broker"})',
        messages,
    )
    # Fan-out of ingested messages (the platform's own endpoint.disabled event is not ingested).
    fanned_out = count(
        engine,
        "SELECT count(*) FROM deliveries d JOIN messages m ON m.id = d.message_id"
        " WHERE m.source = 'broker'",
    )
    eventually_equal(stack, "sum(webhooks_deliveries_created_total)", fanned_out)
    eventually_equal(stack, "sum(webhooks_outbox_published_total)", len(PEOPLE))
    eventually_equal(stack, "max(webhooks_outbox_backlog)", 0)


def test_database_gauges_come_from_the_scheduler_only(
    stack: Any, run: dict[str, Any], engine: Engine
) -> None:
    open_dead = count(engine, "SELECT count(*) FROM dead_letters WHERE redriven_at IS NULL")
    eventually_equal(stack, "sum(webhooks_dead_letters_open)", open_dead)
    eventually_equal(stack, "sum(webhooks_endpoints_disabled)", 1)
    eventually_equal(stack, "sum(webhooks_deliveries_pending)", 0)
    eventually_equal(stack, 'sum(webhooks_endpoints_circuit_state{state="closed"})', 2)
    jobs = {s["metric"]["job"] for s in stack.prometheus("webhooks_dead_letters_open")}
    assert jobs == {"scheduler"}


def test_http_counters_add_up_across_gunicorn_workers(stack: Any, run: dict[str, Any]) -> None:
    eventually_equal(
        stack,
        'sum(webhooks_http_requests_total{service="registration", method="POST",'
        ' route="/api/v1/applications/<app_id>/endpoints", status_class="2xx"})',
        3,
    )
    eventually_equal(
        stack,
        'sum(webhooks_http_requests_total{service="producer", method="POST", route="/people"})',
        len(PEOPLE),
    )
    # Two gunicorn workers plus the master: the process-group view of the service.
    assert (single(stack, 'webhooks_processes{job="api"}') or 0) >= 3
    # The prefork worker: main process and two pool processes.
    assert (single(stack, 'webhooks_processes{job="worker"}') or 0) >= 3


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def test_counts_of_a_killed_gunicorn_worker_are_kept(stack: Any, run: dict[str, Any]) -> None:
    health = stack.url("api", "/health")
    query = 'sum(webhooks_http_requests_total{service="registration", route="/health"})'
    stack.wait(lambda: single(stack, query) is not None, 10, "health requests counted")
    before_kill = single(stack, query)
    for _ in range(5):
        assert requests.get(health, timeout=5).status_code == 200
    master = stack.processes["api"].pid
    workers = stack.wait(
        lambda: children_of(master) if len(children_of(master)) == 2 else None,
        10,
        "two gunicorn workers",
    )
    os.kill(sorted(workers)[0], signal.SIGKILL)
    stack.wait(
        lambda: len(children_of(master)) == 2 and children_of(master) != workers,
        20,
        "gunicorn to replace the killed worker",
    )
    for _ in range(5):
        assert requests.get(health, timeout=5).status_code == 200
    # Both workers served some of the ten requests or not: the total is what counts.
    eventually_equal(stack, query, (before_kill or 0) + 10)


def panel_queries() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted((REPO / "monitoring/grafana/dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, replacement in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, replacement)
                found.append((dashboard["uid"], panel["title"], expr))
    return found


# The state the worker records for an endpoint whose receiver pushed back (429, then a
# Retry-After): the run has no such receiver, and the flow control panel draws only those.
_THROTTLED = text(
    "INSERT INTO endpoint_flow (endpoint_id, max_in_flight, rate_limit, throttled_until, reason)"
    " VALUES (:id, 2, 5, now() + interval '5 minutes', 'retry-after')"
    " ON CONFLICT (endpoint_id) DO UPDATE SET max_in_flight = 2, rate_limit = 5,"
    " throttled_until = excluded.throttled_until, reason = excluded.reason"
)
# Back at its configured limits (the latency baseline the run taught stays).
_RECOVERED = text(
    "UPDATE endpoint_flow SET max_in_flight = NULL, rate_limit = NULL, throttled_until = NULL,"
    " reason = NULL WHERE endpoint_id = :id"
)


@pytest.fixture
def throttled_endpoint(engine: Engine, run: dict[str, Any]) -> Iterator[str]:
    """The run's healthy endpoint, with limits lowered by flow control for one test."""
    endpoint_id = run["endpoints"]["ok"]
    with engine.begin() as conn:
        conn.execute(_THROTTLED, {"id": endpoint_id})
    yield endpoint_id
    with engine.begin() as conn:
        conn.execute(_RECOVERED, {"id": endpoint_id})


def test_every_dashboard_panel_query_returns_data(
    stack: Any, run: dict[str, Any], throttled_endpoint: str
) -> None:
    queries = panel_queries()
    assert len(queries) > 40
    assert any("webhooks_endpoint_flow_held" in expr for _, _, expr in queries)
    # Rates need two scrapes after the run; the run ended when the last delivery did.
    stack.wait(
        lambda: stack.prometheus(
            'sum(rate(webhooks_delivery_attempts_total{outcome="success"}[2m])) > 0'
        ),
        20,
        "a rate of delivered attempts",
    )
    empty = []
    for uid, title, expr in queries:
        assert "$" not in expr, f"{uid}/{title}: unexpanded variable in {expr}"
        result = stack.wait(lambda expr=expr: stack.prometheus(expr), 10, f"{title}: {expr}")
        values = [float(sample["value"][1]) for sample in result]
        if all(math.isnan(v) for v in values):
            empty.append(f"{uid}/{title}: {expr}")
    assert not empty, "panels with only NaN:\n" + "\n".join(empty)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((REPO / "monitoring/prometheus/alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_alert_expression_evaluates_and_the_run_fires_the_right_ones(
    stack: Any, run: dict[str, Any]
) -> None:
    for rule in alert_rules():
        stack.prometheus(rule["expr"])  # valid PromQL on the live data

    def loaded_and_healthy() -> list[dict[str, Any]]:
        response = requests.get(stack.url("prometheus", "/api/v1/rules"), timeout=10).json()
        rules = [r for g in response["data"]["groups"] for r in g["rules"]]
        evaluated = all(r.get("lastEvaluation", "").startswith("20") for r in rules)
        return rules if len(rules) == len(alert_rules()) and evaluated else []

    rules = stack.wait(loaded_and_healthy, 20, "every rule loaded and evaluated")
    assert {r["name"]: r["health"] for r in rules} == {r["alert"]: "ok" for r in alert_rules()}

    def firing() -> set[str]:
        alerts = stack.prometheus('ALERTS{alertstate="firing"}')
        names = {a["metric"]["alertname"] for a in alerts}
        wanted = {"WebhooksDeadLettersGrowing", "WebhooksEndpointDisabled"}
        return names if wanted <= names else set()

    names = stack.wait(firing, 20, "dead-letter and endpoint-disabled alerts to fire")
    # A healthy stack: workers and the scheduler are up, nothing else is wrong.
    assert "WebhooksNoWorkerUp" not in names
    assert "WebhooksSchedulerDown" not in names
    assert "WebhooksTargetDown" not in names


def test_flower_lists_the_running_worker(stack: Any, run: dict[str, Any]) -> None:
    url = stack.url("flower", "/api/workers")
    assert requests.get(url, timeout=10).status_code == 401  # basic auth required

    def listed() -> dict[str, Any]:
        response = requests.get(url, params={"refresh": "1"}, auth=stack.flower_auth, timeout=10)
        workers: dict[str, Any] = response.json()
        return workers if stack.worker_name in workers else {}

    workers = stack.wait(listed, 30, f"Flower to list {stack.worker_name}")
    assert "webhooks.deliver" in json.dumps(workers[stack.worker_name])
    # Flower's own metrics saw the worker and its tasks.
    online = stack.prometheus(f'flower_worker_online{{worker="{stack.worker_name}"}}')
    assert online
    assert float(online[0]["value"][1]) == 1


def load_renderer() -> Any:
    path = REPO / "monitoring/grafana/render_dashboards.py"
    spec = importlib.util.spec_from_file_location("render_dashboards", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(900)
@pytest.mark.skipif(
    not os.environ.get("WEBHOOKS_RENDER_DASHBOARDS"),
    reason="renders the docs' dashboard images when WEBHOOKS_RENDER_DASHBOARDS names a directory",
)
def test_render_dashboards_for_the_docs(
    stack: Any, run: dict[str, Any], settings: APISettings, receiver_factory: Any
) -> None:
    """Not a check: a few minutes of mixed traffic, then every dashboard drawn as SVG."""
    seconds = float(os.environ.get("WEBHOOKS_RENDER_SECONDS", "150"))
    admin = {"Authorization": f"Bearer {settings.admin_token}"}
    endpoints = stack.url("api", f"/api/v1/applications/{run['app_id']}/endpoints")
    flaky = [
        receiver_factory(200, failure_ratio=0.25, delay=(0.005, 0.08)),
        receiver_factory(200, delay=(0.05, 0.4)),
    ]
    for receiver in flaky:
        response = requests.post(endpoints, json={"url": receiver.url}, headers=admin, timeout=10)
        assert response.status_code == 201, response.text
    # The always-failing receiver has made its point (dead letters): unsubscribe it.
    disabled = requests.post(
        f"{endpoints}/{run['endpoints']['failing']}/disable", json={}, headers=admin, timeout=10
    )
    assert disabled.status_code == 200, disabled.text
    people = stack.url("producer", "/people")
    started = time.monotonic()
    created: list[str] = []
    while time.monotonic() - started < seconds:
        choice = random.random()
        if choice < 0.6 or not created:
            response = requests.post(people, json={"name": "Someone"}, timeout=10)
            created.append(response.json()["id"])
        elif choice < 0.85:
            person = random.choice(created)
            requests.put(f"{people}/{person}", json={"name": "Someone Else"}, timeout=10)
        else:
            requests.delete(f"{people}/{created.pop()}", timeout=10)
        requests.get(endpoints, headers=admin, timeout=10)
        time.sleep(random.uniform(0.05, 0.4))
    time.sleep(5)
    renderer = load_renderer()
    out = Path(os.environ["WEBHOOKS_RENDER_DASHBOARDS"])
    minutes = (time.monotonic() - started) / 60 + 0.5
    written = renderer.render_all(
        stack.url("prometheus"), out, minutes=minutes, rate_interval="30s"
    )
    assert written
