"""The endpoint page shows the limits flow control allows now (webhooks_core.endpoints.flow)."""

from __future__ import annotations

import re
from datetime import timedelta

from registration.services import endpoints
from webhooks_core.db import transaction
from webhooks_core.messages.envelope import utcnow
from webhooks_core.models import EndpointFlow


def test_the_endpoint_page_shows_the_current_limits(
    db, settings, live_url, make_tenant, signed_in_requests
) -> None:
    tenant = make_tenant("Flow")
    endpoint, _ = endpoints.upsert_endpoint(
        db, settings, tenant.id, {"url": "http://127.0.0.1:9/flow", "rate_limit": 100}
    )
    http = signed_in_requests(tenant.token)
    page = http.get(f"{live_url}/console/endpoints/{endpoint.id}", timeout=10).text
    assert "the configured ones" in page
    assert "data-held" not in page

    with transaction(db) as session:
        session.add(
            EndpointFlow(
                endpoint_id=endpoint.id,
                max_in_flight=1.5,
                rate_limit=35.5,
                reason="429",
                throttled_until=utcnow() + timedelta(minutes=2),
            )
        )
    page = http.get(f"{live_url}/console/endpoints/{endpoint.id}", timeout=10).text
    assert "1 concurrent, 35.5 / s" in page
    assert "lowered by flow control (429)" in page
    assert "data-held" in page
    assert "Retry-After" in page


def _csrf(page: str) -> str:
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert token, page
    return token.group(1)


def _ticked(page: str) -> bool:
    box = re.search(r'<input [^>]*id="adaptive_flow"[^>]*>', page)
    assert box, page
    return " checked" in box.group(0)


def test_flow_control_is_turned_off_and_on_in_the_endpoint_form(
    db, live_url, make_tenant, signed_in_requests
) -> None:
    tenant = make_tenant("Fixed")
    http = signed_in_requests(tenant.token)
    new_page = http.get(f"{live_url}/console/endpoints/new", timeout=10).text
    assert _ticked(new_page)
    # An unticked box is not sent: flow control off.
    created = http.post(
        f"{live_url}/console/endpoints/new",
        data={"url": "http://127.0.0.1:9/fixed", "csrf_token": _csrf(new_page)},
        timeout=10,
    )
    assert created.status_code == 200, created.text
    page = endpoints.list_endpoints(
        db, tenant.id, event_type=None, enabled=None, limit=10, cursor=None
    )
    endpoint = page.items[0]
    assert endpoint.adaptive_flow is False
    assert "off <span" in created.text
    assert "the configured limits only; a 429 counts as a failure" in created.text

    edit_url = f"{live_url}/console/endpoints/{endpoint.id}/edit"
    edit_page = http.get(edit_url, timeout=10).text
    assert _ticked(edit_page) is False
    saved = http.post(
        edit_url,
        data={
            "url": "http://127.0.0.1:9/fixed",
            "adaptive_flow": "y",
            "csrf_token": _csrf(edit_page),
        },
        timeout=10,
    )
    assert saved.status_code == 200, saved.text
    assert "adaptive <span" in saved.text
    assert endpoints.get_endpoint(db, tenant.id, endpoint.id).adaptive_flow is True
