"""The demo receiver verifies what the engine sends and refuses what it cannot verify."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import urllib3

from delivery.receiver import SecretSource, make_handler
from webhooks_core.signing import new_secret


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
