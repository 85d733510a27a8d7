"""A relay delivery shows its target URL in the console (issue 13, item 5)."""

from __future__ import annotations

import re


def test_relay_delivery_shows_its_url(live_url, make_tenant, signed_in_requests) -> None:
    tenant = make_tenant("Relay")
    http = signed_in_requests(tenant.token)
    relayed = http.post(
        f"{live_url}/api/v1/applications/{tenant.id}/relay",
        json={"url": "http://127.0.0.1:9/once", "payload": {"hello": "world"}},
        headers={"Authorization": f"Bearer {tenant.token}"},
        timeout=10,
    )
    assert relayed.status_code == 202, relayed.text
    delivery_id = relayed.json()["delivery_id"]
    endpoint_id = relayed.json()["endpoint_id"]

    listing = http.get(f"{live_url}/console/deliveries", timeout=10).text
    row = re.search(rf'data-delivery="{delivery_id}".*?</tr>', listing, re.S)
    assert row, listing
    assert "http://127.0.0.1:9/once" in row.group(0)
    assert "(relay)" in row.group(0)
    assert endpoint_id not in row.group(0)

    page = http.get(f"{live_url}/console/deliveries/{delivery_id}", timeout=10).text
    assert "http://127.0.0.1:9/once" in page
    assert "(relay)" in page

    api = http.get(
        f"{live_url}/api/v1/applications/{tenant.id}/deliveries/{delivery_id}",
        headers={"Authorization": f"Bearer {tenant.token}"},
        timeout=10,
    ).json()
    assert api["endpoint_url"] == "http://127.0.0.1:9/once"
