"""The operator's story in the console, with the real delivery engine.

A scheduler and a Celery worker run as subprocesses on the test database and vhost; a real
receiver on 127.0.0.1 answers 503 until it is "fixed".  In the browser: create an endpoint with
a short retry schedule, send a test event, watch it retry and dead-letter, fix the receiver,
redrive, and see it delivered, with every attempt listed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from registration.config import APISettings

BIN = Path(sys.executable).parent


class Receiver(ThreadingHTTPServer):
    """Answers ``status`` to every POST and counts them."""

    status = 503
    received = 0


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received += 1
        self.send_response(self.server.status)
        self.end_headers()
        self.wfile.write(b"upstream down" if self.server.status >= 500 else b"thanks")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def delivery_engine(settings: APISettings, db: object) -> Iterator[None]:
    """The scheduler and a thread-pool worker, on this test's database and vhost."""
    env = {
        **os.environ,
        "WEBHOOKS_DATABASE_URL": settings.database_url,
        "WEBHOOKS_BROKER_URL": settings.broker_url,
        "WEBHOOKS_ALLOWED_TARGET_NETWORKS": "127.0.0.1/32",
        "WEBHOOKS_RETRY_JITTER": "0",
        "WEBHOOKS_CONNECT_TIMEOUT_SECONDS": "1",
        "WEBHOOKS_READ_TIMEOUT_SECONDS": "2",
        "WEBHOOKS_TOTAL_TIMEOUT_SECONDS": "3",
        "WEBHOOKS_METRICS_PORT": "0",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    logs = Path(tempfile.mkdtemp(prefix="webhooks-console-engine-"))
    worker_log = logs / "worker.log"
    commands = {
        "scheduler": [sys.executable, "-m", "delivery.scheduler"],
        "worker": [
            str(BIN / "celery"),
            "-A",
            "delivery.worker",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            "4",
            "-Q",
            "webhooks.deliver",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            "-l",
            "INFO",
        ],
    }
    processes = [
        subprocess.Popen(
            command,
            env=env,
            stdout=(logs / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for name, command in commands.items()
    ]
    try:
        deadline = time.monotonic() + 60
        while b"ready." not in (worker_log.read_bytes() if worker_log.exists() else b""):
            assert all(p.poll() is None for p in processes), worker_log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.1)
        yield
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _wait_for_text(browser, selector: str, text: str, timeout: float = 40) -> None:
    """Poll the page (the deliveries list refreshes itself) until ``text`` shows."""
    WebDriverWait(browser, timeout, poll_frequency=0.3).until(
        lambda d: text in d.find_element(By.CSS_SELECTOR, selector).text
    )


def test_break_retry_dead_letter_fix_redrive(
    browser, ui, db, make_tenant, receiver, delivery_engine, screenshot
) -> None:
    tenant = make_tenant("Acme")
    ui.sign_in(tenant.token)
    ui.open("/console/endpoints/new")
    browser.find_element(By.ID, "url").send_keys(f"http://127.0.0.1:{receiver.server_port}/webhook")
    browser.find_element(By.ID, "retry_schedule").send_keys("0, 1, 1")
    ui.submit("#endpoint-form")
    assert "Endpoint created." in ui.text()
    endpoint_page = browser.current_url

    ui.submit("form[action$='/test']")
    assert "Test event" in ui.text()
    # Three attempts (the first, then after 1 s and 1 s), all 503: dead.
    ui.follow(By.LINK_TEXT, "Deliveries")
    _wait_for_text(browser, "#deliveries-region", "dead")
    assert receiver.received == 3

    # Three failures in a row and a dead letter: the endpoint shows failing, not healthy,
    # with the auto-disable countdown (issue 13, item 1).
    browser.get(endpoint_page)
    badge = browser.find_element(By.CSS_SELECTOR, "#health-h + .facts .health")
    assert badge.get_attribute("data-health") == "failing"
    assert "Auto-disable" in ui.text()
    assert "in 4 d" in ui.text()  # the default window is 5 days from the first failure

    ui.follow(By.LINK_TEXT, "Dead letters")
    assert "webhook.test" in ui.text()
    receiver.status = 200  # the receiver is fixed
    browser.find_element(By.CSS_SELECTOR, "input[name=dead_letter]").click()
    ui.press("button[value=selected]")
    assert "Redrive queued 1 delivery" in ui.text()

    ui.follow(By.LINK_TEXT, "Deliveries")
    _wait_for_text(browser, "#deliveries-region", "delivered")
    ui.follow(By.CSS_SELECTOR, "table.deliveries tbody a")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.attempts tbody tr")
    outcomes = [row.find_elements(By.TAG_NAME, "td")[4].text for row in rows]
    assert outcomes == ["503", "503", "503", "200"]
    triggers = [row.find_elements(By.TAG_NAME, "td")[2].text for row in rows]
    assert triggers[-1] == "replay"
    assert "upstream down" in rows[0].text
    screenshot("delivery-redriven")

    browser.get(endpoint_page)
    assert "25 %" in ui.text()  # 1 success in 4 attempts
    badge = browser.find_element(By.CSS_SELECTOR, "#health-h + .facts .health")
    assert badge.get_attribute("data-health") == "healthy"
    assert "Auto-disable" not in ui.text()
