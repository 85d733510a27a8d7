"""Fixtures of the console tests: the real app served on 127.0.0.1, and headless Chromium.

Chromium and its driver come from Debian's packages (``scripts/install-browser.sh``, which
``make test`` runs); nothing here downloads a browser.  Set ``WEBHOOKS_SCREENSHOTS=docs/img``
to save the screenshots that docs/console.md shows.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.serving import make_server

from registration.app import create_app
from registration.config import APISettings
from registration.services import applications

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ADMIN_TOKEN = "test-admin-token-0123456789"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)


@dataclass(frozen=True)
class Tenant:
    """An application and a token of its own."""

    id: uuid.UUID
    name: str
    token: str


@pytest.fixture
def make_tenant(db: sessionmaker[Session]) -> Callable[[str], Tenant]:
    def make(name: str) -> Tenant:
        app = applications.create_application(db, name=name, uid=None, metadata={})
        issued = applications.issue_token(db, app.id, name="console test")
        return Tenant(app.id, name, issued.token)

    return make


@pytest.fixture
def live_url(settings: APISettings, db: sessionmaker[Session]) -> Iterator[str]:
    """The registration service (API and console) on an ephemeral port, for this test."""
    console_settings = settings.model_copy(
        update={"console_secret_key": "console-test-secret-key-0123456789"}
    )
    server = make_server("127.0.0.1", 0, create_app(console_settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def chromium() -> Iterator[WebDriver]:
    """One headless Chromium for the whole run, with a profile of its own."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.fail(
            f"{CHROMIUM} and {CHROMEDRIVER} are needed: run scripts/install-browser.sh "
            "(Debian packages chromium and chromium-driver)"
        )
    profile = tempfile.mkdtemp(prefix="webhooks-console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    # Keep the page's console messages, so tests can check for script and CSP errors.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(chromium: WebDriver) -> Iterator[WebDriver]:
    """The browser, with no cookie left from another test (each test has its own port too)."""
    chromium.delete_all_cookies()
    chromium.set_window_size(1280, 900)
    chromium.get_log("browser")  # drop what earlier tests left in the page console log
    yield chromium
    chromium.delete_all_cookies()


@pytest.fixture
def screenshot(chromium: WebDriver) -> Callable[[str], None]:
    """Save the whole page as ``$WEBHOOKS_SCREENSHOTS/<name>.png`` when that is set."""
    directory = os.environ.get("WEBHOOKS_SCREENSHOTS")

    def take(name: str) -> None:
        if not directory:
            return
        Path(directory).mkdir(parents=True, exist_ok=True)
        # At the window's width (a test may narrow it), as tall as the page.
        size = chromium.get_window_size()
        height = chromium.execute_script("return document.documentElement.scrollHeight")
        chromium.set_window_size(size["width"], min(max(int(height) + 100, 700), 2400))
        chromium.save_screenshot(str(Path(directory) / f"{name}.png"))
        chromium.set_window_size(size["width"], size["height"])

    return take


def wait_for_next_page(browser: WebDriver, page: WebElement) -> None:
    """Wait until ``page`` (the old document's root) is gone and the new one has loaded.

    While the old document is torn down, Chromium may answer a check on its element with a
    generic WebDriverException rather than a stale-element one: both mean it is gone.
    """

    def gone(_: WebDriver) -> bool:
        try:
            page.is_enabled()
        except WebDriverException:
            return True
        return False

    WebDriverWait(browser, 10).until(gone)
    WebDriverWait(browser, 10).until(
        lambda driver: driver.execute_script("return document.readyState") == "complete"
    )


@dataclass
class Ui:
    """What a person does in the browser, each step waiting for the page it leads to."""

    browser: WebDriver
    base: str

    def open(self, path: str) -> None:
        self.browser.get(f"{self.base}{path}")

    def text(self) -> str:
        return self.browser.find_element(By.TAG_NAME, "main").text

    def submit(self, form_selector: str, *, confirm: bool = False) -> None:
        """Press a form's button (accepting its confirmation) and wait for the next page."""
        page = self.browser.find_element(By.TAG_NAME, "html")
        self.browser.find_element(By.CSS_SELECTOR, f"{form_selector} button[type=submit]").click()
        if confirm:
            WebDriverWait(self.browser, 5).until(expected_conditions.alert_is_present())
            self.browser.switch_to.alert.accept()
        wait_for_next_page(self.browser, page)

    def press(self, button_selector: str) -> None:
        """Press one particular submit button and wait for the next page."""
        page = self.browser.find_element(By.TAG_NAME, "html")
        self.browser.find_element(By.CSS_SELECTOR, button_selector).click()
        wait_for_next_page(self.browser, page)

    def follow(self, by: str, value: str) -> None:
        """Click a link and wait for the page it leads to."""
        page = self.browser.find_element(By.TAG_NAME, "html")
        self.browser.find_element(by, value).click()
        wait_for_next_page(self.browser, page)

    def sign_in(self, token: str) -> None:
        """Sign in through the sign-in form."""
        self.open("/console/sign-in")
        field = self.browser.find_element(By.ID, "token")
        field.clear()
        field.send_keys(token)
        self.submit("main form")
        WebDriverWait(self.browser, 10).until(lambda d: "/sign-in" not in d.current_url)


@pytest.fixture
def ui(browser: WebDriver, live_url: str) -> Ui:
    return Ui(browser, live_url)


@pytest.fixture
def signed_in_requests(live_url: str) -> Callable[[str], requests.Session]:
    """A plain HTTP client signed in to the console (for what a browser cannot send)."""

    def make(token: str) -> requests.Session:
        client = requests.Session()
        page = client.get(f"{live_url}/console/sign-in", timeout=10)
        csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text)
        assert csrf, page.text
        signed = client.post(
            f"{live_url}/console/sign-in",
            data={"token": token, "csrf_token": csrf.group(1)},
            timeout=10,
            allow_redirects=False,
        )
        assert signed.status_code == 302, signed.text
        return client

    return make


@dataclass(frozen=True)
class RecordedDelivery:
    """A delivery made the way the engine leaves it (message, attempts, dead letter)."""

    id: int
    event_id: str
    dead_letter_id: int | None


@pytest.fixture
def record_delivery(db: sessionmaker[Session]) -> Callable[..., RecordedDelivery]:
    """Publish a message to an application and write what the engine would have recorded.

    The delivery engine's own tests drive real workers; here the console only has to show
    and act on what they record, so the rows are written directly, in the engine's shapes.
    """
    from datetime import timedelta

    from sqlalchemy import select

    from webhooks_core.db import transaction
    from webhooks_core.messages.envelope import Envelope, utcnow
    from webhooks_core.messages.fanout import accept_message
    from webhooks_core.models import Attempt, DeadLetter, Delivery
    from webhooks_core.statistics import summarise_attempts

    def record(
        application_id: uuid.UUID,
        endpoint_id: uuid.UUID,
        *,
        event_type: str = "person.created",
        data: dict[str, object] | None = None,
        attempts: list[tuple[int | None, str, str | None, str | None]] = (),  # type: ignore[assignment]
        state: str = "pending",
    ) -> RecordedDelivery:
        envelope = Envelope(type=event_type, data=data or {"id": 7, "name": "Ada Lovelace"})
        now = utcnow()
        with transaction(db) as session:
            accept_message(session, envelope, source="http", application_id=application_id)
            delivery = session.scalar(
                select(Delivery)
                .where(Delivery.endpoint_id == endpoint_id)
                .order_by(Delivery.id.desc())
            )
            assert delivery is not None, "the endpoint does not receive this event type"
            start = now - timedelta(seconds=10 * len(attempts))
            for number, (status, outcome, error, body) in enumerate(attempts):
                session.add(
                    Attempt(
                        delivery_id=delivery.id,
                        endpoint_id=endpoint_id,
                        started_at=start + timedelta(seconds=10 * number),
                        latency_ms=12.5 + number,
                        status_code=status,
                        outcome=outcome,
                        error=error,
                        response_body=body,
                        trigger="scheduled",
                    )
                )
            # Counted in the statistics summaries as the engine's records count them: each
            # attempt with the state it left the delivery in (retrying, then the last one's).
            shapes = [
                {"delivery_id": delivery.id, "started_at": start + timedelta(seconds=10 * n),
                 "latency_ms": 12.5 + n, "status_code": status, "outcome": outcome}
                for n, (status, outcome, _error, _body) in enumerate(attempts)
            ]  # fmt: skip
            if len(shapes) > 1:
                delivery.state = "retrying"
                session.flush()
                summarise_attempts(session, shapes[:-1])
            delivery.state = state
            session.flush()
            summarise_attempts(session, shapes[-1:])
            delivery.attempt_count = len(attempts)
            if attempts:
                last = attempts[-1]
                delivery.last_status_code = last[0]
                delivery.last_error = last[2]
                delivery.last_attempt_at = start + timedelta(seconds=10 * (len(attempts) - 1))
            if state == "retrying":
                delivery.next_attempt_at = now + timedelta(minutes=5)
            if state in ("delivered", "dead", "cancelled"):
                delivery.next_attempt_at = None
            if state == "delivered":
                delivery.delivered_at = now
            dead_letter_id = None
            if state == "dead":
                letter = DeadLetter(
                    delivery_id=delivery.id,
                    endpoint_id=endpoint_id,
                    application_id=application_id,
                    reason=f"retries exhausted after {len(attempts)} attempts",
                )
                session.add(letter)
                session.flush()
                dead_letter_id = letter.id
            return RecordedDelivery(delivery.id, envelope.id, dead_letter_id)

    return record
