"""Searching deliveries in the console by status code and payload field."""

from __future__ import annotations

import re

from registration.services import endpoints, event_types

DOWN = (503, "http_5xx", "HTTP 503", "upstream down")
OK = (200, "success", None, "thanks")


def _ids(html: str) -> list[str]:
    return re.findall(r'href="/console/deliveries/(\d+)"', html)


def test_deliveries_by_status_code_and_payload_field(
    db, settings, live_url, make_tenant, record_delivery, signed_in_requests
) -> None:
    event_types.ensure_event_types(db, {"person.created": ""})
    tenant = make_tenant("Search")
    endpoint, _ = endpoints.upsert_endpoint(
        db, settings, tenant.id, {"url": "http://127.0.0.1:9/search"}
    )
    ada = record_delivery(tenant.id, endpoint.id, data={"person": {"id": 1}}, attempts=[OK])
    bob = record_delivery(tenant.id, endpoint.id, data={"person": {"id": 2}}, attempts=[DOWN])
    http = signed_in_requests(tenant.token)

    def found(**params: str) -> list[str]:
        page = http.get(f"{live_url}/console/deliveries", params=params, timeout=10)
        assert page.status_code == 200
        return sorted(set(_ids(page.text)))

    assert found() == sorted([str(ada.id), str(bob.id)])
    assert found(field="data.person.id=2") == [str(bob.id)]
    assert found(status_code="200") == [str(ada.id)]
    assert found(status_code="503", field="data.person.id=1") == []
    ignored = http.get(f"{live_url}/console/deliveries", params={"field": "person"}, timeout=10)
    assert "Search a payload field as path=value" in ignored.text
    assert sorted(set(_ids(ignored.text))) == sorted([str(ada.id), str(bob.id)])
