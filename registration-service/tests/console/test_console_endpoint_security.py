"""The console's endpoint form: auth settings (masked) and v1a signing (public key, rotation)."""

from __future__ import annotations

import re

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from registration.services import endpoints
from webhooks_core.endpoints.credentials import unseal_json

PASSWORD = "correct-horse-battery-staple"


def test_basic_auth_and_v1a_from_the_form(
    browser, live_url, make_tenant, ui, screenshot, db: sessionmaker[Session]
) -> None:
    tenant = make_tenant("Acme")
    ui.sign_in(tenant.token)
    ui.open("/console/endpoints/new")
    browser.find_element(By.ID, "url").send_keys("http://127.0.0.1:9/hooks/bank")
    # A username with a colon comes back as that field's error (the API's own rule).
    Select(browser.find_element(By.ID, "auth_type")).select_by_value("basic")
    browser.find_element(By.ID, "auth_username").send_keys("ada:x")
    browser.find_element(By.ID, "auth_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[value='v1a']").click()
    ui.submit("#endpoint-form")
    assert "colon" in browser.find_element(By.ID, "auth_username-error").text

    username = browser.find_element(By.ID, "auth_username")
    username.clear()
    username.send_keys("ada")
    password = browser.find_element(By.ID, "auth_password")
    password.clear()
    password.send_keys(PASSWORD)
    screenshot("endpoint-auth")
    ui.submit("#endpoint-form")
    assert "Endpoint created." in ui.text()
    endpoint_id = re.search(r"/endpoints/([0-9a-f-]{36})", browser.current_url).group(1)
    page = ui.text()
    assert "Basic: ada, password ********aple" in page
    assert PASSWORD not in browser.page_source
    public = endpoints.get_signing_key(db, tenant.id, endpoint_id).key
    assert browser.find_element(By.ID, "public-key-value").text == public

    # Edit: the password field holds the mask; saved as it is, the password stays.
    ui.follow(By.LINK_TEXT, "Edit")
    assert browser.find_element(By.ID, "auth_password").get_attribute("value") == "********aple"
    assert PASSWORD not in browser.page_source
    browser.find_element(By.ID, "rate_limit").send_keys("5")
    ui.submit("#endpoint-form")
    assert "Endpoint saved." in ui.text()
    with db() as session:
        stored = session.scalar(
            text("SELECT auth FROM endpoints WHERE id = :id"), {"id": endpoint_id}
        )
    assert unseal_json(stored) == {"type": "basic", "username": "ada", "password": PASSWORD}

    # Rotate the signing key: the new public key, the old one listed as still signing.
    ui.submit("form[action$='/signing-key/rotate']", confirm=True)
    assert "Signing key rotated." in ui.text()
    rotated = endpoints.get_signing_key(db, tenant.id, endpoint_id)
    assert browser.find_element(By.ID, "public-key-value").text == rotated.key != public
    assert public in browser.find_element(By.CSS_SELECTOR, ".secret.previous").text
