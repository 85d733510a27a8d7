"""Charts, trends and pause in the console, from the statistics summaries."""

from __future__ import annotations

import re

from selenium.webdriver.common.by import By

from registration.services import endpoints, event_types

DOWN = (503, "http_5xx", "HTTP 503", "upstream down")
OK = (200, "success", None, "thanks")


def test_endpoint_charts_trend_volume_and_pause(
    db, settings, live_url, make_tenant, record_delivery, ui, signed_in_requests
) -> None:
    event_types.ensure_event_types(db, {"person.created": "", "person.updated": ""})
    tenant = make_tenant("Charts")
    endpoint, _ = endpoints.upsert_endpoint(
        db, settings, tenant.id, {"url": "http://127.0.0.1:9/charted"}
    )
    record_delivery(tenant.id, endpoint.id, attempts=[OK], state="delivered")
    record_delivery(tenant.id, endpoint.id, attempts=[DOWN, OK], state="delivered")
    record_delivery(
        tenant.id, endpoint.id, event_type="person.updated", attempts=[DOWN], state="retrying"
    )

    http = signed_in_requests(tenant.token)
    listing = http.get(f"{live_url}/console/endpoints", timeout=10).text
    trend = re.search(r"<td data-trend>(.*?)</td>", listing, re.S)
    assert trend, listing
    assert 'role="img"' in trend.group(1)
    assert "<circle" in trend.group(1)  # one hour with attempts: a point
    volume = http.get(f"{live_url}/console/event-types", timeout=10).text
    assert "<title>person.created: 2</title>" in volume
    assert "<title>person.updated: 1</title>" in volume

    ui.sign_in(tenant.token)
    ui.open(f"/console/endpoints/{endpoint.id}?window=1h")
    totals = ui.browser.find_element(By.CSS_SELECTOR, "[data-stats-totals]").text
    assert totals.startswith("4 attempts in the last 1h: success 50.0%")
    assert "p50 25 ms" in totals  # 12.5 and 13.5 ms fall in the 10-25 ms bucket
    assert totals.endswith("2 delivered, 2 retries, 0 dead.")
    charts = ui.browser.find_elements(By.CSS_SELECTOR, "section[aria-labelledby=stats-h] svg.chart")
    assert len(charts) == 3
    assert "Success rate per minute" in charts[0].get_attribute("aria-label")

    ui.press(f"form[action$='/endpoints/{endpoint.id}/pause'] button")
    assert "Endpoint paused" in ui.text()
    assert ui.browser.find_elements(By.CSS_SELECTOR, "[data-paused]")
    ui.press(f"form[action$='/endpoints/{endpoint.id}/resume'] button")
    assert "Endpoint resumed" in ui.text()
    assert endpoints.get_endpoint(db, tenant.id, endpoint.id).paused_at is None
