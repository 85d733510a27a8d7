"""The endpoint page shows the limits flow control allows now (webhooks_core.endpoints.flow)."""

from __future__ import annotations

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
