"""The console in headless Chromium: messages, deliveries and attempts, resend, dead letters."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import select

from registration.services import endpoints, event_types
from webhooks_core.models import DeadLetter, Delivery, Replay

FAILED_TWICE = [
    (503, "http_error", "HTTP 503", '{"error": "upstream down"}'),
    (None, "timeout", "read timed out after 15 s", None),
]


def _setup(db, settings, make_tenant, name="Acme", path="/hooks"):
    event_types.ensure_event_types(db, {"person.created": "", "person.deleted": ""})
    tenant = make_tenant(name)
    endpoint, _ = endpoints.upsert_endpoint(
        db, settings, tenant.id, {"url": f"http://127.0.0.1:9{path}"}
    )
    return tenant, endpoint


def _delivery(db, delivery_id):
    with db() as session:
        return session.get(Delivery, delivery_id)


def test_a_delivery_shows_every_attempt_and_can_be_resent(
    browser, ui, db, settings, make_tenant, record_delivery, screenshot
) -> None:
    tenant, endpoint = _setup(db, settings, make_tenant)
    record_delivery(tenant.id, endpoint.id, attempts=[(200, "success", None, "ok")],
                    state="delivered", event_type="person.deleted")  # fmt: skip
    failing = record_delivery(tenant.id, endpoint.id, attempts=FAILED_TWICE, state="retrying")
    ui.sign_in(tenant.token)
    ui.follow(By.LINK_TEXT, "Deliveries")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.deliveries tbody tr")
    assert [row.get_attribute("data-delivery") for row in rows] == [
        str(failing.id), str(failing.id - 1)
    ]  # fmt: skip
    assert "retrying" in rows[0].text
    assert "read timed out" in rows[0].text
    # Filter by state, then open the delivery.
    Select(browser.find_element(By.ID, "f-state")).select_by_visible_text("delivered")
    ui.submit("form.filters")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.deliveries tbody tr")
    assert [row.get_attribute("data-delivery") for row in rows] == [str(failing.id - 1)]
    # "/" focuses the webhook-id search; Enter filters by it.
    ui.open("/console/deliveries")
    browser.find_element(By.TAG_NAME, "body").send_keys("/")
    assert browser.switch_to.active_element.get_attribute("id") == "f-event-id"
    page = browser.find_element(By.TAG_NAME, "html")
    browser.switch_to.active_element.send_keys(failing.event_id + Keys.ENTER)
    WebDriverWait(browser, 10).until(expected_conditions.staleness_of(page))
    rows = browser.find_elements(By.CSS_SELECTOR, "table.deliveries tbody tr")
    assert [row.get_attribute("data-delivery") for row in rows] == [str(failing.id)]
    ui.open("/console/deliveries?state=retrying&event_type=person.created")
    ui.follow(By.LINK_TEXT, f"#{failing.id}")

    attempts = browser.find_elements(By.CSS_SELECTOR, "table.attempts tbody tr")
    assert len(attempts) == 2
    first, second = (row.find_elements(By.TAG_NAME, "td") for row in attempts)
    assert first[3].text == "http_error"
    assert first[4].text == "503"
    assert first[5].text == "12 ms"  # 12.5 ms, rounded
    assert first[6].text == "HTTP 503"
    assert first[7].text == '{"error": "upstream down"}'
    assert second[3].text == "timeout"
    assert second[6].text == "read timed out after 15 s"
    page = ui.text()
    assert failing.event_id in page  # the webhook-id receivers log
    assert '"name": "Ada Lovelace"' in page  # the payload
    screenshot("delivery")

    ui.submit("form[action$='/resend']")
    assert "Resend queued" in ui.text()
    resent = _delivery(db, failing.id)
    assert resent.state == "pending"
    assert resent.attempt_count == 0
    with db() as session:
        replay = session.scalar(select(Replay))
    assert (replay.kind, replay.requested_by) == ("delivery", f"app:{tenant.id}")


def test_redrive_a_selected_dead_letter(
    browser, ui, db, settings, make_tenant, record_delivery, screenshot
) -> None:
    tenant, endpoint = _setup(db, settings, make_tenant)
    dead = [
        record_delivery(tenant.id, endpoint.id, attempts=FAILED_TWICE, state="dead")
        for _ in range(3)
    ]
    ui.sign_in(tenant.token)
    ui.follow(By.LINK_TEXT, "Dead letters")
    boxes = browser.find_elements(By.CSS_SELECTOR, "input[name=dead_letter]")
    assert sorted(int(box.get_attribute("value")) for box in boxes) == sorted(
        d.dead_letter_id for d in dead
    )
    assert "retries exhausted after 2 attempts" in ui.text()
    browser.find_element(By.ID, f"dl-{dead[0].dead_letter_id}").click()
    screenshot("dead-letters")
    ui.press("button[value=selected]")
    assert "Redrive queued 1 delivery" in ui.text()
    assert _delivery(db, dead[0].id).state == "pending"
    assert _delivery(db, dead[1].id).state == "dead"
    remaining = browser.find_elements(By.CSS_SELECTOR, "input[name=dead_letter]")
    assert len(remaining) == 2

    # Nothing selected: told so, nothing redriven.
    ui.press("button[value=selected]")
    assert "Select the dead letters" in ui.text()
    assert _delivery(db, dead[1].id).state == "dead"

    # Redrive all the rest.
    ui.press("button[value=all]")
    assert "Redrive queued 2 deliveries" in ui.text()
    assert "No dead letters" in ui.text()
    with db() as session:
        letters = list(session.scalars(select(DeadLetter)))
    assert all(letter.redriven_at is not None for letter in letters)

    # The audit: one redrive of the selected letter, one of "all", by this application.
    ui.follow(By.LINK_TEXT, "Replay history")
    rows = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "table.replays tbody tr")]
    assert len(rows) == 2
    assert all("redrive" in row and f"app:{tenant.id}" in row for row in rows)
    assert rows[0].endswith(" 2")  # newest first: "all" requeued the other two
    assert f"dead letter {dead[0].dead_letter_id}" in rows[1]


def test_recover_an_endpoint_since_a_time(
    browser, ui, db, settings, make_tenant, record_delivery
) -> None:
    tenant, endpoint = _setup(db, settings, make_tenant)
    dead = record_delivery(tenant.id, endpoint.id, attempts=FAILED_TWICE, state="dead")
    retrying = record_delivery(tenant.id, endpoint.id, attempts=FAILED_TWICE, state="retrying")
    delivered = record_delivery(tenant.id, endpoint.id, attempts=[(200, "success", None, "")],
                                state="delivered")  # fmt: skip
    ui.sign_in(tenant.token)
    ui.open(f"/console/endpoints/{endpoint.id}")
    recent = browser.find_elements(By.CSS_SELECTOR, "table.deliveries tbody tr")
    assert len(recent) == 3
    since = browser.find_element(By.ID, "since")
    # A datetime-local input takes the digits in the browser's locale order (en-US here).
    browser.execute_script("arguments[0].value = '2020-01-01T00:00'", since)
    ui.submit("form[action$='/recover']")
    assert "Recover requeued 2 failed deliveries since 2020-01-01 00:00 UTC." in ui.text()
    assert _delivery(db, dead.id).state == "pending"
    assert _delivery(db, retrying.id).state == "pending"
    assert _delivery(db, delivered.id).state == "delivered"


def test_undelivered_and_messages(
    browser, ui, db, settings, make_tenant, record_delivery, screenshot
) -> None:
    tenant, endpoint = _setup(db, settings, make_tenant)
    open_one = record_delivery(tenant.id, endpoint.id, attempts=FAILED_TWICE, state="retrying")
    record_delivery(tenant.id, endpoint.id, attempts=[(204, "success", None, "")],
                    state="delivered", event_type="person.deleted")  # fmt: skip
    ui.sign_in(tenant.token)
    ui.follow(By.LINK_TEXT, "Undelivered")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.deliveries tbody tr")
    assert [row.get_attribute("data-delivery") for row in rows] == [str(open_one.id)]

    ui.follow(By.LINK_TEXT, "Messages")
    assert open_one.event_id in ui.text()
    search = browser.find_element(By.ID, "f-type")
    search.send_keys("person.deleted")
    ui.submit("form.filters")
    assert open_one.event_id not in ui.text()
    assert "person.deleted" in ui.text()
    ui.open("/console/messages")
    screenshot("messages")
    browser.find_element(By.ID, "f-event-id").send_keys(open_one.event_id)
    ui.submit("form.filters")
    assert browser.current_url.endswith(f"/console/messages/{open_one.event_id}")
    ui.open("/console/messages")
    ui.follow(By.LINK_TEXT, open_one.event_id)
    assert '"name": "Ada Lovelace"' in ui.text()
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.deliveries tbody tr")) == 1


def test_another_applications_deliveries_are_invisible(
    browser, ui, db, settings, make_tenant, record_delivery
) -> None:
    acme, acme_endpoint = _setup(db, settings, make_tenant, "Acme", "/acme")
    globex, globex_endpoint = _setup(db, settings, make_tenant, "Globex", "/globex")
    theirs = record_delivery(globex.id, globex_endpoint.id, attempts=FAILED_TWICE, state="dead")
    record_delivery(acme.id, acme_endpoint.id, attempts=FAILED_TWICE, state="dead")
    ui.sign_in(acme.token)
    for path in ("/console/deliveries", "/console/dead-letters", "/console/messages"):
        ui.open(path)
        assert theirs.event_id not in browser.page_source
        assert "/globex" not in browser.page_source
    for path in (
        f"/console/deliveries/{theirs.id}",
        f"/console/messages/{theirs.event_id}",
    ):
        ui.open(path)
        assert "not found" in ui.text()
        assert theirs.event_id not in ui.text() or "not found" in ui.text()
    # Acting on it is refused the same way, and changes nothing.
    client = ui.browser
    ui.open("/console/deliveries")
    client.execute_script(
        "const f = document.createElement('form'); f.method = 'post';"
        "f.action = arguments[0]; const t = document.createElement('input');"
        "t.name = 'csrf_token'; t.value = arguments[1]; f.appendChild(t);"
        "document.body.appendChild(f); f.submit();",
        f"/console/deliveries/{theirs.id}/resend",
        client.find_element(By.CSS_SELECTOR, "input[name=csrf_token]").get_attribute("value"),
    )
    ui.browser.find_element(By.CSS_SELECTOR, "main h1")
    assert "not found" in ui.text()
    assert _delivery(db, theirs.id).state == "dead"
