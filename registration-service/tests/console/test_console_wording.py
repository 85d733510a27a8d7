"""The console's wording and forms (issue 13, item 11), as an operator reads the pages."""

from __future__ import annotations

import re

from registration.services import endpoints, event_types

OK = (200, "success", None, "ok")
DOWN = (503, "http_error", "HTTP 503", "upstream down")


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def test_an_endpoint_form_reports_every_problem_at_once(
    live_url, make_tenant, signed_in_requests
) -> None:
    tenant = make_tenant("Forms")
    http = signed_in_requests(tenant.token)
    form = http.get(f"{live_url}/console/endpoints/new", timeout=10).text
    answer = http.post(
        f"{live_url}/console/endpoints/new",
        data={
            "csrf_token": _csrf(form),
            "url": "http://10.1.2.3/hooks",  # a private address: refused
            "headers": "Content-Type: text/plain",  # reserved
            "retry_schedule": "0, soon, 999999",
            "rate_limit": "0",  # below 1
        },
        timeout=10,
    )
    assert answer.status_code == 422
    page = answer.text
    errors = dict(re.findall(r'<p class="error" id="([a-z_]+)-error">([^<]*)</p>', page))
    assert set(errors) == {"url", "headers", "retry_schedule", "rate_limit"}, errors
    assert "10.1.2.3" in errors["url"] or "private" in errors["url"], errors["url"]
    schedule = errors["retry_schedule"]
    assert "&#39;soon&#39; is not a whole number of seconds" in schedule, schedule
    assert "Input should be" not in page
    assert "delay 3 (999999 s) is longer than 7 days" in page


def test_console_words(
    db, settings, live_url, make_tenant, record_delivery, signed_in_requests
) -> None:
    event_types.ensure_event_types(db, {"person.created": ""})
    tenant = make_tenant("Words")
    endpoint, _ = endpoints.upsert_endpoint(
        db, settings, tenant.id,
        {"url": "http://127.0.0.1:9/words", "event_types": ["person.created"]},
    )  # fmt: skip
    record_delivery(tenant.id, endpoint.id, attempts=[OK], state="delivered")
    dead = record_delivery(tenant.id, endpoint.id, attempts=[DOWN], state="dead")
    http = signed_in_requests(tenant.token)
    get = lambda path: http.get(f"{live_url}{path}", timeout=10)  # noqa: E731

    listing = get("/console/endpoints").text
    assert "2 attempts" in listing
    # An empty filter says so, and offers the way back rather than a first endpoint.
    empty = get("/console/endpoints?state=disabled").text
    assert "No disabled endpoints." in empty
    assert "Add the first endpoint" not in empty
    assert "Show every endpoint" in empty

    # The Undelivered tab is the one marked current on its page.
    undelivered = get("/console/deliveries?state=undelivered").text
    current = re.findall(r'<a href="[^"]*" data-shortcut="\w" aria-current="page">([^<]+)</a>',
                         undelivered)  # fmt: skip
    assert current == ["Undelivered"]

    # The dead letters' endpoint column links to the endpoint.
    letters = get("/console/dead-letters").text
    assert f'href="/console/endpoints/{endpoint.id}">http://127.0.0.1:9/words</a>' in letters

    # Replay history reads as words, not as criteria keys.
    redrive = http.post(
        f"{live_url}/api/v1/applications/{tenant.id}/dead-letters/{dead.dead_letter_id}/redrive",
        headers={"Authorization": f"Bearer {tenant.token}"},
        timeout=10,
    )
    assert redrive.status_code in (200, 201, 202), redrive.text
    history = get("/console/replays").text
    assert f"dead letter {dead.dead_letter_id}" in history
    assert "dead_letter_id=" not in history

    # A time just now reads "just now", without spaces inside parentheses.
    endpoints.set_enabled(db, tenant.id, endpoint.id, enabled=False, reason="maintenance")
    page = get(f"/console/endpoints/{endpoint.id}").text
    assert "just now" in page or "1 s ago" in page
    assert "( " not in page
    assert " )" not in page

    # Addresses the console does not have answer with its own page, not JSON.
    missing = get("/console/endpoints/abc")
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith("text/html")
    assert "There is no such page in the console" in missing.text
