"""One health reading in the console, the API and the metrics (issue 13, item 1).

The engine's breaker leaves its columns on the endpoint; each endpoint here is in one of the
states it can leave, written as the engine writes them.  The console's list and detail page,
the API's ``health`` and the scheduler's database gauges must all say the same thing.
"""

from __future__ import annotations

import re
from datetime import timedelta

from prometheus_client import CollectorRegistry
from sqlalchemy import update

from registration.services import endpoints, event_types
from webhooks_core.db import transaction
from webhooks_core.messages.envelope import utcnow
from webhooks_core.models import Endpoint
from webhooks_core.monitoring import DatabaseGauges

DOWN = (503, "http_error", "HTTP 503", "upstream down")
OK = (200, "success", None, "thanks")


def _badge(html: str) -> str:
    found = re.search(r'data-health="([a-z_]+)"', html)
    assert found, html
    return found.group(1)


def test_health_is_the_same_in_console_api_and_metrics(
    db, settings, engine, live_url, make_tenant, record_delivery, signed_in_requests
) -> None:
    event_types.ensure_event_types(db, {"person.created": ""})
    tenant = make_tenant("Health")
    now = utcnow()
    made = {}
    for name in ("healthy", "failing", "open", "half_open", "disabled"):
        made[name], _ = endpoints.upsert_endpoint(
            db, settings, tenant.id,
            {"url": f"http://127.0.0.1:9/{name}", "event_types": ["person.created"]},
        )  # fmt: skip
    record_delivery(tenant.id, made["healthy"].id, attempts=[OK], state="delivered")
    # The endpoint: 0 % success, three failures in a row and a dead letter.
    record_delivery(tenant.id, made["failing"].id, attempts=[DOWN, DOWN, DOWN], state="dead")
    threshold = settings.circuit_breaker_threshold
    columns = {
        "failing": {"consecutive_failures": 3, "failing_since": now - timedelta(hours=1)},
        "open": {
            "consecutive_failures": threshold,
            "failing_since": now - timedelta(days=1),
            "circuit_open_until": now + timedelta(minutes=5),
        },
        # The rest is over (circuit_open_until passed) but the failures stand: a probe next.
        "half_open": {
            "consecutive_failures": threshold + 2,
            "failing_since": now - timedelta(days=2),
            "circuit_open_until": now - timedelta(seconds=30),
        },
    }
    with transaction(db) as session:
        for name, values in columns.items():
            session.execute(update(Endpoint).where(Endpoint.id == made[name].id).values(**values))
    endpoints.set_enabled(db, tenant.id, made["disabled"].id, enabled=False, reason="by hand")

    # The API.
    http = signed_in_requests(tenant.token)
    api = {
        item["url"].rsplit("/", 1)[1]: item["health"]
        for item in http.get(
            f"{live_url}/api/v1/applications/{tenant.id}/endpoints",
            headers={"Authorization": f"Bearer {tenant.token}"},
            timeout=10,
        ).json()["data"]
    }
    assert {name: health["state"] for name, health in api.items()} == {
        "healthy": "healthy",
        "failing": "failing",
        "open": "open",
        "half_open": "half_open",
        "disabled": "disabled",
    }
    assert api["open"]["circuit_open_until"] is not None
    assert api["half_open"]["circuit_open_until"] is None
    # The auto-disable countdown: 5 days (the default) after the first failure.
    assert api["failing"]["auto_disable_at"].startswith(
        (now - timedelta(hours=1) + timedelta(days=5)).strftime("%Y-%m-%dT%H")
    )
    assert api["healthy"]["auto_disable_at"] is None
    assert api["disabled"]["auto_disable_at"] is None

    # The console: the list and each detail page.
    listing = http.get(f"{live_url}/console/endpoints", timeout=10).text
    rows = {
        name: re.search(rf"/{name}</a>.*?</tr>", listing, re.S).group(0)  # type: ignore[union-attr]
        for name in made
    }
    for name in made:
        assert _badge(rows[name]) == name, rows[name]
    assert "auto-disables in 4 d" in rows["failing"]
    assert "auto-disables in 2 d" in rows["half_open"]  # 3 days less a moment
    assert "auto-disables" not in rows["healthy"]
    for name, endpoint in made.items():
        page = http.get(f"{live_url}/console/endpoints/{endpoint.id}", timeout=10).text
        health = page[page.index('id="health-h"') :]
        assert _badge(health) == name
    failing_page = http.get(f"{live_url}/console/endpoints/{made['failing'].id}", timeout=10).text
    assert "Auto-disable" in failing_page

    # The metrics (the scheduler's database gauges).
    registry = CollectorRegistry()
    registry.register(
        DatabaseGauges(
            engine,
            circuit_breaker_threshold=threshold,
            auto_disable_after_seconds=settings.auto_disable_after_seconds,
        )
    )
    health = {
        state: registry.get_sample_value("webhooks_endpoints_health", {"state": state})
        for state in made
    }
    assert health == dict.fromkeys(made, 1.0)
    circuits = {
        state: registry.get_sample_value("webhooks_endpoints_circuit_state", {"state": state})
        for state in ("closed", "open", "half_open")
    }
    assert circuits == {"closed": 2.0, "open": 1.0, "half_open": 1.0}
    # The first to go is the half-open one, failing for 2 days of the 5.
    countdown = registry.get_sample_value("webhooks_endpoints_auto_disable_in_seconds")
    assert countdown is not None
    assert 3 * 86_400 - 120 < countdown < 3 * 86_400 + 120
