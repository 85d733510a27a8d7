"""The demo receiver verifies what the engine sends and refuses what it cannot verify."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import urllib3

from delivery.receiver import SecretSource, make_handler
from webhooks_core.signing import new_secret, secret_key, signature_header


@pytest.fixture
def demo_receiver(tmp_path: Path) -> Iterator[tuple[str, SecretSource]]:
    secret_file = tmp_path / "endpoint-secret"
    source = SecretSource(
        secret=None, secret_file=secret_file, api="http://127.0.0.1:9", admin_token=None, url=""
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(source, "/webhook"))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/webhook", source
    server.shutdown()
    server.server_close()


def test_receiver_verifies_engine_deliveries_with_the_secret_file(
    demo_receiver: Any, platform: Any, wait_for: Any, capfd: Any
) -> None:
    url, source = demo_receiver
    secret = new_secret()
    source.secret_file.write_text(secret + "\n")
    platform.endpoint(url, secret=secret)
    event_id = platform.publish({"name": "Grace"})

    wait_for(lambda: platform.deliveries()[0].state == "delivered", message="verified and 200")
    out = capfd.readouterr().out
    assert f"verified webhook {event_id}: person.created" in out
    assert '"name": "Grace"' in out


def test_receiver_refuses_unsigned_requests(demo_receiver: Any) -> None:
    url, _ = demo_receiver
    response = urllib3.request("POST", url, body=b"{}", headers={"webhook-id": "msg_x"})
    assert response.status == 401


def test_a_browser_sees_what_the_receiver_received(demo_receiver: Any) -> None:
    """Issue 13, item 9: a GET shows a page listing the webhooks, not a 501."""
    url, source = demo_receiver
    empty = urllib3.request("GET", url)
    assert empty.status == 200
    assert empty.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "Nothing received yet" in empty.data.decode()

    secret = new_secret()
    source.secret_file.write_text(secret + "\n")
    body = b'{"type": "person.created", "timestamp": "2026-12-01T10:00:00Z",'
    body += b' "data": {"name": "<b>Ada</b>"}}'
    stamp = int(time.time())
    headers = {
        "webhook-id": "msg_page_1",
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature_header([secret_key(secret)], "msg_page_1", stamp, body),
        "Content-Type": "application/json",
    }
    assert urllib3.request("POST", url, body=body, headers=headers).status == 200
    assert urllib3.request("POST", url, body=body, headers=headers).status == 200  # a retry
    forged = {**headers, "webhook-id": "msg_forged"}
    assert urllib3.request("POST", url, body=body, headers=forged).status == 401

    page = urllib3.request("GET", url).data.decode()
    assert page.index("msg_forged") < page.index("msg_page_1")  # newest first
    assert "rejected: signature did not verify" in page
    assert "received 2 times: a retry" in page
    assert "person.created" in page
    assert "&lt;b&gt;Ada&lt;/b&gt;" in page  # the payload is shown as text, never as markup
    assert "<b>Ada</b>" not in page
    root = urllib3.request("GET", url.removesuffix("/webhook") + "/")
    assert root.status == 200
    assert "msg_page_1" in root.data.decode()
    assert urllib3.request("GET", url.removesuffix("/webhook") + "/elsewhere").status == 404
