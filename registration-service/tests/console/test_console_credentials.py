"""The console's credentials page: OAuth client credentials and mutual TLS, in Chromium.

Secrets go in through the forms and never come back in a page; the client certificate's
expiry is shown, and errors land on the field that caused them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import trustme
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from sqlalchemy.orm import Session, sessionmaker

from registration.config import APISettings
from registration.services import endpoints

SECRET = "console-oauth-secret-0123456789"


def test_oauth_and_tls_through_the_console(
    browser, live_url, make_tenant, ui, db: sessionmaker[Session], settings: APISettings
) -> None:
    tenant = make_tenant("Acme")
    endpoint, _ = endpoints.upsert_endpoint(
        db, settings, tenant.id, {"url": "https://127.0.0.1:9/hook"}
    )
    ui.sign_in(tenant.token)
    ui.open(f"/console/endpoints/{endpoint.id}")
    assert "signature only" in browser.find_element(By.ID, "credentials").text
    ui.follow(By.LINK_TEXT, "Credentials")

    # OAuth: a token URL the SSRF rules refuse is reported on its field.
    browser.find_element(By.ID, "oauth-token_url").send_keys("http://169.254.169.254/token")
    browser.find_element(By.ID, "oauth-client_id").send_keys("platform")
    browser.find_element(By.ID, "oauth-client_secret").send_keys(SECRET)
    browser.find_element(By.ID, "oauth-scopes").send_keys("webhooks:receive  audit")
    Select(browser.find_element(By.ID, "oauth-auth_method")).select_by_value("client_secret_post")
    ui.submit("#oauth-form")
    error = browser.find_element(By.ID, "oauth-token_url-error").text
    assert "cloud metadata address" in error
    url = browser.find_element(By.ID, "oauth-token_url")
    url.clear()
    url.send_keys("https://auth.example.com/oauth/token")
    browser.find_element(By.ID, "oauth-client_secret").send_keys(SECRET)
    ui.submit("#oauth-form")
    assert "OAuth client credentials saved." in ui.text()
    assert "client platform at https://auth.example.com/oauth/token" in ui.text()
    assert SECRET not in browser.page_source
    assert browser.find_element(By.ID, "oauth-scopes").get_attribute("value") == (
        "webhooks:receive audit"
    )
    stored = endpoints.get_endpoint(db, tenant.id, endpoint.id)
    assert stored.oauth_auth_method == "client_secret_post"
    assert stored.oauth_client_secret
    assert SECRET not in stored.oauth_client_secret

    # TLS: a key that is not the certificate's is refused on the key's field.
    ca = trustme.CA()
    not_after = datetime.now(UTC) + timedelta(days=5)
    leaf = ca.issue_cert("client.example", common_name="client.example", not_after=not_after)
    other = ca.issue_cert("other.example")
    certificate = leaf.cert_chain_pems[0].bytes().decode()
    browser.find_element(By.ID, "tls-client_certificate").send_keys(certificate)
    browser.find_element(By.ID, "tls-client_key").send_keys(other.private_key_pem.bytes().decode())
    ui.submit("#tls-form")
    assert (
        "is not the private key of the client certificate"
        in browser.find_element(By.ID, "tls-client_key-error").text
    )
    browser.find_element(By.ID, "tls-client_key").send_keys(leaf.private_key_pem.bytes().decode())
    ui.submit("#tls-form")
    assert "TLS settings saved." in ui.text()
    facts = browser.find_element(By.ID, "certificate")
    assert "CN=client.example" in facts.text
    # Five days left: shown as expiring soon.
    expiry = facts.find_element(By.CSS_SELECTOR, "[data-expiry]")
    assert expiry.get_attribute("data-expiry") == "soon"
    assert leaf.private_key_pem.bytes().decode().splitlines()[1] not in browser.page_source

    ui.open(f"/console/endpoints/{endpoint.id}")
    summary = browser.find_element(By.ID, "credentials").text
    assert "OAuth: platform" in summary
    assert "client certificate, expires" in summary

    ui.open(f"/console/endpoints/{endpoint.id}/credentials")
    ui.submit("form[action$='/credentials/tls/remove']", confirm=True)
    assert "TLS settings removed." in ui.text()
    ui.submit("form[action$='/credentials/oauth/remove']", confirm=True)
    assert "OAuth client credentials removed." in ui.text()
    stored = endpoints.get_endpoint(db, tenant.id, endpoint.id)
    assert stored.oauth_token_url is None
    assert stored.tls_client_key is None
