"""The console in headless Chromium: sign-in, endpoints, secrets, isolation, CSRF."""

from __future__ import annotations

import re

import requests
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy.orm import Session, sessionmaker

from registration.config import APISettings
from registration.services import endpoint_secrets, endpoints, event_types

ADMIN_TOKEN = "test-admin-token-0123456789"
STALE = (StaleElementReferenceException, NoSuchElementException)


def _catalogue(db: sessionmaker[Session]) -> None:
    examples = {
        "person.created": ("A person was added.", {"id": 7, "name": "Ada Lovelace"}),
        "person.updated": ("A person's fields changed.", {"id": 7, "name": "Ada King"}),
        "person.deleted": ("A person was removed.", {"id": 7}),
    }
    for name, (description, example) in examples.items():
        schema = {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}
        event_types.create_event_type(
            db, name=name, description=description, schema=schema, example=example
        )


def test_sign_in_refuses_a_wrong_token_then_signs_in(
    browser, live_url, make_tenant, ui, screenshot
) -> None:
    tenant = make_tenant("Acme")
    browser.get(f"{live_url}/console/endpoints")
    assert "/console/sign-in" in browser.current_url  # pages need a sign-in
    screenshot("sign-in")
    browser.find_element(By.ID, "token").send_keys("wh_not-a-token")
    ui.submit("main form")
    assert "This token is not valid" in ui.text()

    ui.sign_in(tenant.token)
    assert browser.current_url.endswith("/console/endpoints")
    assert "No endpoints yet" in ui.text()
    assert browser.find_element(By.CSS_SELECTOR, ".current-app").text == "Acme"
    cookie = browser.get_cookie("webhooks_console")
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"

    ui.submit("form[action$='/sign-out']")
    assert "Signed out." in ui.text()
    browser.get(f"{live_url}/console/endpoints")
    assert "/console/sign-in" in browser.current_url


def test_endpoint_create_edit_reveal_rotate_disable(
    browser, live_url, make_tenant, ui, screenshot, db
) -> None:
    _catalogue(db)
    tenant = make_tenant("Acme")
    ui.sign_in(tenant.token)
    ui.follow(By.LINK_TEXT, "Add the first endpoint")

    # A refused target and a reserved header come back as field errors, values kept.
    browser.find_element(By.ID, "url").send_keys("http://127.0.0.1:9/hooks/people")
    browser.find_element(By.ID, "headers").send_keys("Content-Type: text/plain")
    ui.submit("#endpoint-form")
    error = browser.find_element(By.ID, "headers-error").text
    assert "cannot be overridden: Content-Type" in error
    assert browser.find_element(By.ID, "url").get_attribute("value").endswith("/hooks/people")

    # A refused target (cloud metadata address) is a field error of the URL.
    ui.open("/console/endpoints/new")
    browser.find_element(By.ID, "url").send_keys("http://169.254.169.254/latest")
    ui.submit("#endpoint-form")
    assert browser.find_element(By.ID, "url-error").text

    ui.open("/console/endpoints/new")
    browser.find_element(By.ID, "url").send_keys("http://127.0.0.1:9/hooks/people")
    browser.find_element(By.ID, "headers").send_keys("X-Team: people")
    browser.find_element(By.ID, "description").send_keys("CRM sync")
    browser.find_element(By.CSS_SELECTOR, "input[value='person.created']").click()
    browser.find_element(By.CSS_SELECTOR, "input[value='person.updated']").click()
    browser.find_element(By.ID, "channels").send_keys("eu, crm")
    screenshot("endpoint-new")
    ui.submit("#endpoint-form")
    assert "Endpoint created." in ui.text()
    assert "http://127.0.0.1:9/hooks/people" in browser.find_element(By.TAG_NAME, "h1").text
    page = ui.text()
    for expected in ("person.created", "person.updated", "X-Team: people", "crm", "healthy"):
        assert expected in page
    endpoint_id = re.search(r"/endpoints/([0-9a-f-]{36})", browser.current_url).group(1)

    # Edit: the form is filled with the current values; change the limit and the types.
    ui.follow(By.LINK_TEXT, "Edit")
    assert browser.find_element(By.ID, "headers").get_attribute("value") == "X-Team: people"
    browser.find_element(By.ID, "rate_limit").send_keys("25")
    browser.find_element(By.CSS_SELECTOR, "input[value='person.deleted']").click()
    ui.submit("#endpoint-form")
    assert "Endpoint saved." in ui.text()
    saved = endpoints.get_endpoint(db, tenant.id, endpoint_id)
    assert saved.rate_limit == 25
    assert saved.event_types == ["person.created", "person.deleted", "person.updated"]
    assert saved.channels == ["eu", "crm"]

    # The secret is hidden until revealed, and revealed only on that response.
    secret = endpoint_secrets.get_secret(db, tenant.id, endpoint_id).key
    assert secret not in browser.page_source
    ui.submit("form[action$='/secret']")
    assert browser.find_element(By.ID, "secret-value").text == secret
    screenshot("endpoint-secret")
    browser.get(browser.current_url.removesuffix("/secret"))
    assert secret not in browser.page_source

    # Rotate: a new secret, the old one listed as still signing.
    ui.submit("form[action$='/secret/rotate']", confirm=True)
    assert "Secret rotated." in ui.text()
    rotated = endpoint_secrets.get_secret(db, tenant.id, endpoint_id)
    assert rotated.key != secret
    assert browser.find_element(By.ID, "secret-value").text == rotated.key
    assert secret in browser.find_element(By.CSS_SELECTOR, ".secret.previous").text

    # Disable with a reason, then enable.
    browser.find_element(By.ID, "reason").send_keys("receiver maintenance")
    ui.submit("form[action$='/disable']", confirm=True)
    assert "Endpoint disabled." in ui.text()
    assert "receiver maintenance" in ui.text()
    ui.follow(By.LINK_TEXT, "Endpoints")
    assert "disabled" in browser.find_element(By.CSS_SELECTOR, "tbody tr").text
    ui.follow(By.CSS_SELECTOR, "tbody a.url")
    ui.submit("form[action$='/enable']")
    assert "Endpoint enabled." in ui.text()
    assert endpoints.get_endpoint(db, tenant.id, endpoint_id).enabled is True


def test_an_application_sees_only_its_own_endpoints(
    browser, live_url, make_tenant, ui, db, settings: APISettings
) -> None:
    acme, globex = make_tenant("Acme"), make_tenant("Globex")
    theirs, _ = endpoints.upsert_endpoint(
        db, settings, globex.id, {"url": "http://127.0.0.1:9/globex-only"}
    )
    endpoints.upsert_endpoint(db, settings, acme.id, {"url": "http://127.0.0.1:9/acme"})
    ui.sign_in(acme.token)
    assert "http://127.0.0.1:9/acme" in ui.text()
    assert "globex-only" not in browser.page_source
    assert "Globex" not in browser.page_source  # no application switcher for a token
    for path in ("", "/edit"):
        browser.get(f"{live_url}/console/endpoints/{theirs.id}{path}")
        assert "not found" in ui.text()
        assert "globex-only" not in browser.page_source


def test_admin_switches_application(browser, live_url, make_tenant, ui, db, settings) -> None:
    acme, globex = make_tenant("Acme"), make_tenant("Globex")
    endpoints.upsert_endpoint(db, settings, acme.id, {"url": "http://127.0.0.1:9/acme"})
    endpoints.upsert_endpoint(db, settings, globex.id, {"url": "http://127.0.0.1:9/globex"})
    ui.sign_in(ADMIN_TOKEN)
    switch = Select(browser.find_element(By.ID, "application-switch"))
    assert sorted(option.text for option in switch.options) == ["Acme", "Globex"]
    switch.select_by_visible_text("Globex")
    WebDriverWait(browser, 10, ignored_exceptions=STALE).until(
        lambda d: "127.0.0.1:9/globex" in ui.text()
    )
    assert "127.0.0.1:9/acme" not in ui.text()
    Select(browser.find_element(By.ID, "application-switch")).select_by_visible_text("Acme")
    WebDriverWait(browser, 10, ignored_exceptions=STALE).until(
        lambda d: "127.0.0.1:9/acme" in ui.text()
    )


def test_event_type_catalogue(browser, live_url, make_tenant, ui, db, screenshot) -> None:
    _catalogue(db)
    ui.sign_in(make_tenant("Acme").token)
    browser.get(f"{live_url}/console/event-types")
    cards = browser.find_elements(By.CSS_SELECTOR, "article.event-type")
    assert [card.find_element(By.TAG_NAME, "h2").text for card in cards] == [
        "person.created",
        "person.deleted",
        "person.updated",
    ]
    assert "Ada Lovelace" in cards[0].text
    screenshot("event-types")


def test_keyboard_reaches_every_section(browser, live_url, make_tenant, ui) -> None:
    ui.sign_in(make_tenant("Acme").token)
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("g")
    body.send_keys("t")
    WebDriverWait(browser, 5).until(lambda d: d.current_url.endswith("/console/event-types"))
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("g")
    body.send_keys("e")
    WebDriverWait(browser, 5).until(lambda d: d.current_url.endswith("/console/endpoints"))


def test_a_form_post_without_csrf_token_is_refused(
    live_url, make_tenant, signed_in_requests, db, settings
) -> None:
    tenant = make_tenant("Acme")
    client = signed_in_requests(tenant.token)
    form = {"url": "http://127.0.0.1:9/forged"}
    refused = client.post(f"{live_url}/console/endpoints/new", data=form, timeout=10)
    assert refused.status_code == 400
    assert "security token" in refused.text
    page = endpoints.list_endpoints(
        db, tenant.id, event_type=None, enabled=None, limit=10, cursor=None
    )
    assert page.items == []
    # The same post with the page's token goes through (so the refusal was the token).
    new_page = client.get(f"{live_url}/console/endpoints/new", timeout=10)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', new_page.text)
    accepted = client.post(
        f"{live_url}/console/endpoints/new",
        data={**form, "csrf_token": token.group(1)},
        timeout=10,
        allow_redirects=False,
    )
    assert accepted.status_code == 302
    # And the JSON API, which uses bearer tokens, needs no CSRF token.
    api = requests.post(
        f"{live_url}/api/v1/applications/{tenant.id}/endpoints",
        json={"url": "http://127.0.0.1:9/api"},
        headers={"Authorization": f"Bearer {tenant.token}"},
        timeout=10,
    )
    assert api.status_code == 201, api.text


def test_send_test_event_creates_one_delivery_to_that_endpoint(
    browser, live_url, make_tenant, ui, db, settings
) -> None:
    from sqlalchemy import select

    from webhooks_core.models import Delivery, Message

    tenant = make_tenant("Acme")
    target, _ = endpoints.upsert_endpoint(db, settings, tenant.id, {"url": "http://127.0.0.1:9/a"})
    endpoints.upsert_endpoint(db, settings, tenant.id, {"url": "http://127.0.0.1:9/b"})
    ui.sign_in(tenant.token)
    ui.open(f"/console/endpoints/{target.id}")
    ui.submit("form[action$='/test']")
    page = ui.text()
    with db() as session:
        deliveries = list(session.scalars(select(Delivery)))
        message = session.scalar(select(Message))
    assert [(d.endpoint_id, d.state, d.event_type) for d in deliveries] == [
        (target.id, "pending", "webhook.test")
    ]
    assert message.application_id == tenant.id
    assert message.payload["test"] is True
    assert f"Test event {message.event_id} sent" in page


def test_admin_creates_an_application_whose_token_signs_in(browser, ui, db) -> None:
    ui.sign_in(ADMIN_TOKEN)
    assert "No application yet" in ui.text()
    ui.follow(By.LINK_TEXT, "New application")
    browser.find_element(By.ID, "name").send_keys("Initech")
    ui.submit("main form")
    token = browser.find_element(By.ID, "issued-token").text
    assert token.startswith("wh_")
    assert Select(browser.find_element(By.ID, "application-switch")).first_selected_option.text == (
        "Initech"
    )
    ui.submit("form[action$='/sign-out']")
    ui.sign_in(token)
    assert browser.find_element(By.CSS_SELECTOR, ".current-app").text == "Initech"
    # An application token cannot reach the admin's pages.
    ui.open("/console/applications/new")
    assert "only the admin" in ui.text()
