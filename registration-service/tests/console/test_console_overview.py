"""The console's overview pages on a realistic application: endpoint health, live deliveries."""

from __future__ import annotations

from datetime import timedelta

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import update

from registration.services import endpoints, event_types
from webhooks_core.db import transaction
from webhooks_core.messages.envelope import utcnow
from webhooks_core.models import Delivery, Endpoint

OK = (200, "success", None, '{"received": true}')
DOWN = (503, "http_error", "HTTP 503", "<html>Service Unavailable</html>")
REFUSED = (None, "connect_error", "connection refused", None)


def test_endpoint_health_and_live_deliveries(
    browser, ui, db, settings, make_tenant, record_delivery, screenshot
) -> None:
    event_types.ensure_event_types(
        db, {"person.created": "", "person.updated": "", "person.deleted": "", "person.merged": ""}
    )
    tenant = make_tenant("People CRM")
    healthy, _ = endpoints.upsert_endpoint(
        db, settings, tenant.id,
        {"url": "http://127.0.0.1:8002/hooks/crm", "description": "CRM sync",
         "event_types": ["person.updated"]},
    )  # fmt: skip
    flaky, _ = endpoints.upsert_endpoint(
        db, settings, tenant.id,
        {"url": "http://127.0.0.1:8002/hooks/billing", "description": "Billing",
         "event_types": ["person.created", "person.deleted"]},
    )  # fmt: skip
    gone, _ = endpoints.upsert_endpoint(
        db, settings, tenant.id,
        {"url": "http://127.0.0.1:8002/hooks/legacy", "event_types": ["person.merged"]},
    )  # fmt: skip
    for _ in range(3):
        record_delivery(
            tenant.id, healthy.id, attempts=[OK], state="delivered", event_type="person.updated"
        )
    record_delivery(tenant.id, flaky.id, attempts=[DOWN, OK], state="delivered")
    record_delivery(tenant.id, flaky.id, attempts=[DOWN, REFUSED], state="retrying")
    record_delivery(
        tenant.id, flaky.id, attempts=[DOWN, DOWN, REFUSED], state="dead",
        event_type="person.deleted",
    )  # fmt: skip
    with transaction(db) as session:
        # What the engine's breaker leaves on a failing endpoint.
        session.execute(
            update(Endpoint)
            .where(Endpoint.id == flaky.id)
            .values(consecutive_failures=3, circuit_open_until=utcnow() + timedelta(minutes=1),
                    last_attempt_at=utcnow(), failing_since=utcnow() - timedelta(minutes=3))
        )  # fmt: skip
        session.execute(
            update(Endpoint).where(Endpoint.id == healthy.id).values(last_attempt_at=utcnow())
        )
    endpoints.set_enabled(db, tenant.id, gone.id, enabled=False, reason="410 Gone")

    ui.sign_in(tenant.token)
    rows = {
        row.find_element(By.CSS_SELECTOR, "a.url").text: row.text
        for row in browser.find_elements(By.CSS_SELECTOR, "tbody tr")
    }
    assert "healthy" in rows["http://127.0.0.1:8002/hooks/crm"]
    assert "100 %" in rows["http://127.0.0.1:8002/hooks/crm"]
    # 7 attempts, 1 success.
    assert "breaker open" in rows["http://127.0.0.1:8002/hooks/billing"]
    assert "14.3 %" in rows["http://127.0.0.1:8002/hooks/billing"]
    assert "disabled" in rows["http://127.0.0.1:8002/hooks/legacy"]
    assert "410 Gone" in rows["http://127.0.0.1:8002/hooks/legacy"]
    screenshot("endpoints")
    ui.follow(By.LINK_TEXT, "http://127.0.0.1:8002/hooks/billing")
    assert "breaker open" in ui.text()
    assert "Failing since" in ui.text()
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.deliveries tbody tr")) == 3
    screenshot("endpoint")

    # The deliveries page refreshes itself: a state change shows without reloading.
    ui.follow(By.LINK_TEXT, "Deliveries")
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.deliveries tbody tr")) == 6
    screenshot("deliveries")
    marker = browser.find_element(By.TAG_NAME, "html")
    with transaction(db) as session:
        session.execute(
            update(Delivery).where(Delivery.state == "retrying").values(state="delivered")
        )
    WebDriverWait(browser, 15).until(
        lambda d: "retrying" not in d.find_element(By.ID, "deliveries-region").text
    )
    assert marker.is_displayed()  # the same page: refreshed in place, not reloaded
    # No script error and no Content-Security-Policy violation on the way.
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
