"""The demo receiver verifies what the engine sends and refuses what it cannot verify."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import urllib3
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.serving import make_server

from delivery.receiver import SecretSource, make_handler
from registration.app import create_app
from registration.config import APISettings
from registration.services import endpoint_secrets, endpoints
from webhooks_core.signing import (
    new_secret,
    new_signing_key,
    secret_key,
    signature_header,
    signing_key,
)


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


@pytest.fixture
def management_api(api_settings: APISettings, db: sessionmaker[Session]) -> Iterator[str]:
    """The registration service on an ephemeral port of 127.0.0.1, for the receiver to ask."""
    server = make_server("127.0.0.1", 0, create_app(api_settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def api_receiver(management_api: str, api_settings: APISettings, tmp_path: Path) -> Iterator[str]:
    """The demo receiver as ``--api`` runs it: its keys come from the management API only."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{server.server_address[1]}/webhook"
    source = SecretSource(
        secret=None,
        secret_file=tmp_path / "no-secret-file",
        api=management_api,
        admin_token=api_settings.admin_token,
        url=url,
    )
    server.RequestHandlerClass = make_handler(source, "/webhook")
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield url
    server.shutdown()
    server.server_close()


def _signed(
    body: bytes, msg_id: str, *, v1: Sequence[str] = (), v1a: Sequence[str] = ()
) -> dict[str, str]:
    """The Standard Webhooks headers of ``body`` signed with the given secrets and keys."""
    stamp = int(time.time())
    header = signature_header(
        [secret_key(secret) for secret in v1],
        msg_id,
        stamp,
        body,
        [signing_key(key) for key in v1a],
    )
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": header}


def test_receiver_with_api_verifies_v1a_only_deliveries(
    api_receiver: str, platform: Any, wait_for: Any, api_settings: APISettings, capfd: Any
) -> None:
    """An endpoint that signs only v1a (Ed25519) is verified with its whpk_ key from the API."""
    app_id = platform.application()
    endpoint, _ = endpoints.upsert_endpoint(
        platform.sessions, api_settings, app_id, {"url": api_receiver, "signature_schemes": ["v1a"]}
    )
    event_id = platform.publish({"name": "Hedy"})

    wait_for(lambda: platform.deliveries()[0].state == "delivered", message="verified and 200")
    out = capfd.readouterr().out
    assert f"verified webhook {event_id}: person.created" in out
    assert '"name": "Hedy"' in out
    assert "rejected" not in out

    # A v1a signature by another key, or by the endpoint's v1 secret it does not sign with,
    # is refused.
    secret = endpoint_secrets.get_secret(platform.sessions, app_id, endpoint.id).key
    body = b'{"type": "person.created", "data": {}}'
    forged = _signed(body, "msg_forged_v1a", v1a=[new_signing_key()])
    assert urllib3.request("POST", api_receiver, body=body, headers=forged).status == 401
    unsigned_scheme = _signed(body, "msg_v1_not_signed", v1=[secret])
    assert urllib3.request("POST", api_receiver, body=body, headers=unsigned_scheme).status == 401


def test_receiver_with_api_verifies_each_scheme_through_rotations(
    api_receiver: str, platform: Any, api_settings: APISettings
) -> None:
    """Both schemes of an endpoint verify, with the current keys and those in their grace."""
    app_id = platform.application()
    first_key = new_signing_key()
    endpoint, _ = endpoints.upsert_endpoint(
        platform.sessions,
        api_settings,
        app_id,
        {"url": api_receiver, "signature_schemes": ["v1", "v1a"], "signing_key": first_key},
    )
    first_secret = endpoint_secrets.get_secret(platform.sessions, app_id, endpoint.id).key
    second_secret, second_key = new_secret(), new_signing_key()
    endpoint_secrets.rotate_secret(
        platform.sessions, api_settings, app_id, endpoint.id, second_secret
    )
    endpoint_secrets.rotate_signing_key(
        platform.sessions, api_settings, app_id, endpoint.id, second_key
    )

    body = b'{"type": "person.created", "data": {}}'
    for number, signed in enumerate(
        [
            {"v1": [first_secret]},
            {"v1": [second_secret]},
            {"v1a": [first_key]},
            {"v1a": [second_key]},
        ]
    ):
        headers = _signed(body, f"msg_scheme_{number}", **signed)
        assert urllib3.request("POST", api_receiver, body=body, headers=headers).status == 200, (
            signed.keys()
        )
