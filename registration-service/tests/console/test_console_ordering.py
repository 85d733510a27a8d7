"""The console and ordering keys: the endpoint form's key failure policy, the keys waiting on
the endpoint page, the key on a message's and a delivery's page."""

from __future__ import annotations

import re

from sqlalchemy import select, text

from registration.services import event_types
from webhooks_core.db import transaction
from webhooks_core.messages.envelope import Envelope
from webhooks_core.messages.fanout import accept_message
from webhooks_core.models import Delivery, Endpoint


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def test_policy_in_the_form_and_keys_waiting_on_the_endpoint_page(
    db, settings, live_url, make_tenant, signed_in_requests
) -> None:
    event_types.ensure_event_types(db, {"person.updated": ""})
    tenant = make_tenant("Ordered")
    http = signed_in_requests(tenant.token)
    form = http.get(f"{live_url}/console/endpoints/new", timeout=10).text
    assert 'name="key_failure_policy"' in form
    created = http.post(
        f"{live_url}/console/endpoints/new",
        data={
            "csrf_token": _csrf(form),
            "url": "http://127.0.0.1:9/ordered",
            "key_failure_policy": "block",
            "signature_schemes": "v1",
        },
        timeout=10,
    )
    assert created.status_code == 200, created.text
    with db() as session:
        endpoint = session.scalars(select(Endpoint).where(Endpoint.url.like("%/ordered"))).one()
    assert endpoint.key_failure_policy == "block"

    with transaction(db) as session:
        for n, key in enumerate(["person-7", "person-7", "person-8"]):
            envelope = Envelope(type="person.updated", data={"n": n}, ordering_key=key)
            accept_message(session, envelope, source="http", application_id=tenant.id)
    with transaction(db) as session:
        head = session.scalars(
            select(Delivery).where(Delivery.ordering_key == "person-7").order_by(Delivery.id)
        ).first()
        assert head is not None
        session.execute(
            text(
                "UPDATE deliveries SET state = 'retrying', attempt_count = 2,"
                " last_error = 'HTTP 503' WHERE id = :id"
            ),
            {"id": head.id},
        )
        head_id, event_id = head.id, None
    page = http.get(f"{live_url}/console/endpoints/{endpoint.id}", timeout=10).text
    assert re.search(r"data-keys-waiting><a [^>]*>1</a>", page), page
    assert 'data-waiting-key="person-7"' in page
    assert "retrying after 2 attempts: HTTP 503" in page
    assert 'data-waiting-key="person-8"' not in page
    assert "block" in page

    delivery_page = http.get(f"{live_url}/console/deliveries/{head_id}", timeout=10).text
    assert "<code>person-7</code>" in delivery_page
    with db() as session:
        event_id = session.scalar(
            text("SELECT m.event_id FROM messages m JOIN deliveries d ON d.message_id = m.id"
                 " WHERE d.id = :id"),
            {"id": head_id},
        )  # fmt: skip
    message_page = http.get(f"{live_url}/console/messages/{event_id}", timeout=10).text
    assert "<code>person-7</code>" in message_page
