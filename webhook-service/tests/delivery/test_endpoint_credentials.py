"""Endpoints with credentials, end to end: OAuth 2.0 client credentials and mutual TLS.

A real token server on 127.0.0.1 issues expiring tokens and counts them; real TLS receivers
with a test CA (trustme), one of them requiring a client certificate.  The scheduler and the
worker are the real processes (conftest), the worker a pool of 8 threads.
"""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

import pytest
import trustme
from sqlalchemy import select

from delivery.credentials import _explained
from delivery.sender import SendResult
from delivery.tls import TLSCredentials
from webhooks_core.endpoints.authentication import certificate_info, seal_secret
from webhooks_core.models import Attempt

CLIENT_SECRET = "s3cret: with/odd+chars"


# --- a token server ----------------------------------------------------------------------


@dataclass
class TokenServer:
    """An OAuth 2.0 token endpoint (client credentials) that counts the tokens it issues."""

    expires_in: int = 3600
    issued: list[tuple[str, float]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def valid(self, token: str) -> bool:
        with self.lock:
            return any(
                value == token and time.monotonic() < at + self.expires_in
                for value, at in self.issued
            )

    def start(self, port: int = 0) -> TokenServer:
        tokens = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                basic = self.headers.get("Authorization", "")
                if basic.startswith("Basic "):
                    user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
                    form["basic_id"], form["basic_secret"] = unquote(user), unquote(password)
                tokens.requests.append(form)
                ok = form.get("grant_type") == "client_credentials" and CLIENT_SECRET in (
                    form.get("basic_secret"),
                    form.get("client_secret"),
                )
                if ok:
                    with tokens.lock:
                        token = f"tok-{len(tokens.issued) + 1}"
                        tokens.issued.append((token, time.monotonic()))
                    body = (
                        f'{{"access_token": "{token}", "token_type": "Bearer",'
                        f' "expires_in": {tokens.expires_in}}}'
                    ).encode()
                    self.send_response(200)
                else:
                    body = b'{"error": "invalid_client", "error_description": "who are you"}'
                    self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server_class = type(
            "Server", (ThreadingHTTPServer,), {"daemon_threads": True, "allow_reuse_address": True}
        )
        self.server = server_class(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def token_server() -> Iterator[Callable[..., TokenServer]]:
    started: list[TokenServer] = []

    def start(**kwargs: Any) -> TokenServer:
        port = kwargs.pop("port", 0)
        server = TokenServer(**kwargs).start(port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def oauth_columns(tokens: TokenServer | str, **fields: Any) -> dict[str, Any]:
    url = tokens if isinstance(tokens, str) else tokens.url
    return {
        "oauth_token_url": url,
        "oauth_client_id": "platform",
        "oauth_client_secret": seal_secret(CLIENT_SECRET),
        "oauth_scopes": ["webhooks"],
        "oauth_auth_method": "client_secret_basic",
        **fields,
    }


def bearer_checked(tokens: TokenServer, refused: set[str] | None = None) -> Any:
    """A receiver's answer: 200 for a valid bearer token, 401 otherwise."""

    def respond(got: Any, _n: int) -> dict[str, Any]:
        auth = got.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        if not auth.startswith("Bearer ") or not tokens.valid(token) or token in (refused or ()):
            return {"status": 401}
        return {}

    return respond


def attempts(platform: Any) -> list[Attempt]:
    with platform.sessions() as session:
        return list(session.scalars(select(Attempt).order_by(Attempt.id)))


# --- OAuth ---------------------------------------------------------------------------------


def test_one_token_per_endpoint_and_process_under_load(
    platform: Any, receiver: Any, token_server: Any, wait_for: Any
) -> None:
    tokens = token_server()
    server = receiver(bearer_checked(tokens))
    first, _ = platform.endpoint(f"{server.url}?e=1", **oauth_columns(tokens))
    second, _ = platform.endpoint(
        f"{server.url}?e=2", **oauth_columns(tokens, oauth_auth_method="client_secret_post")
    )
    for n in range(40):
        platform.publish({"n": n})
    wait_for(
        lambda: (
            all(d.state == "delivered" for d in platform.deliveries())
            and len(platform.deliveries()) == 80
        ),
        timeout=60,
        message="80 deliveries delivered",
    )
    assert len(server.received) == 80  # no 401 on the way: every token was valid
    assert len(tokens.issued) == 2, tokens.issued  # one per endpoint, not one per delivery
    assert {got.headers["Authorization"] for got in server.received} == {
        "Bearer tok-1",
        "Bearer tok-2",
    }
    # Both client authentication methods, scopes and the grant as RFC 6749 says.
    by_method = {("basic_id" in form): form for form in tokens.requests}
    assert by_method[True]["basic_id"] == "platform"
    assert by_method[True]["scope"] == "webhooks"
    assert "client_secret" not in by_method[True]
    assert by_method[False]["client_id"] == "platform"
    assert by_method[False]["client_secret"] == CLIENT_SECRET
    assert {first, second}


def test_a_token_is_replaced_shortly_before_it_expires(
    platform: Any, receiver: Any, token_server: Any, wait_for: Any
) -> None:
    tokens = token_server(expires_in=3)
    server = receiver(bearer_checked(tokens))
    platform.endpoint(server.url, **oauth_columns(tokens))
    started = time.monotonic()
    for n in range(40):
        platform.publish({"n": n})
        time.sleep(0.15)
    wait_for(
        lambda: all(d.state == "delivered" for d in platform.deliveries()),
        timeout=30,
        message="all delivered",
    )
    elapsed = time.monotonic() - started
    # Refreshed at 90 % of each 3 s life: about one token per 2.7 s, whatever the load.
    assert 2 <= len(tokens.issued) <= elapsed / 2.7 + 2, (len(tokens.issued), elapsed)
    assert all(got.headers["Authorization"].startswith("Bearer ") for got in server.received)
    assert all(a.status_code == 200 for a in attempts(platform))  # never an expired token


def test_a_401_refreshes_the_token_once_and_the_delivery_succeeds(
    platform: Any, receiver: Any, token_server: Any, wait_for: Any
) -> None:
    tokens = token_server()
    server = receiver(bearer_checked(tokens, refused={"tok-1"}))  # tok-1 revoked
    platform.endpoint(server.url, **oauth_columns(tokens))
    platform.publish({"n": 1})
    wait_for(lambda: platform.deliveries()[0].state == "delivered", message="delivered")
    assert [got.headers["Authorization"] for got in server.received] == [
        "Bearer tok-1",
        "Bearer tok-2",
    ]
    [attempt] = attempts(platform)
    assert attempt.status_code == 200
    assert platform.deliveries()[0].attempt_count == 1

    platform.publish({"n": 2})  # the refreshed token is the cached one now
    wait_for(lambda: len(server.received) == 3, message="second delivery")
    assert server.received[-1].headers["Authorization"] == "Bearer tok-2"
    assert len(tokens.issued) == 2


def test_a_refused_token_is_refreshed_once_per_batch_only(
    platform: Any, receiver: Any, token_server: Any, wait_for: Any
) -> None:
    tokens = token_server()
    server = receiver(lambda _got, _n: {"status": 401})  # refuses every token
    platform.endpoint(server.url, **oauth_columns(tokens))
    platform.publish({"n": 1})
    wait_for(lambda: platform.deliveries()[0].state == "retrying", message="retrying")
    [attempt] = attempts(platform)
    assert attempt.status_code == 401
    assert len(server.received) == 2  # the first token and one refreshed token, no more
    assert len(tokens.issued) == 2


def test_token_endpoint_down_is_a_retried_attempt_with_the_error(
    platform: Any, receiver: Any, token_server: Any, wait_for: Any, clock: Any
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token_url = f"http://127.0.0.1:{port}/token"
    server = receiver()
    platform.endpoint(server.url, **oauth_columns(token_url))
    platform.publish({"n": 1})
    wait_for(lambda: platform.deliveries()[0].state == "retrying", message="retrying")
    [attempt] = attempts(platform)
    assert attempt.outcome == "auth_error"
    assert attempt.status_code is None
    assert attempt.error == (
        f"no OAuth token: the token request to {token_url} failed: "
        f"connection refused by 127.0.0.1:{port}"
    )
    assert server.received == []
    assert CLIENT_SECRET not in (attempt.error or "")

    tokens = token_server(port=port)  # the token endpoint is back
    clock.advance(10)  # past the first retry (5 s +- 20 %)
    wait_for(lambda: platform.deliveries()[0].state == "delivered", message="delivered")
    assert server.received[0].headers["Authorization"] == "Bearer tok-1"
    assert len(tokens.issued) == 1


def test_a_token_url_refused_by_the_ssrf_rules_is_a_failed_attempt(
    platform: Any, receiver: Any, wait_for: Any
) -> None:
    server = receiver()
    # Only 127.0.0.1/32 is allowed to the engine: 127.0.0.2 is a refused loopback address.
    platform.endpoint(server.url, **oauth_columns("http://127.0.0.2:9/token"))
    platform.publish({"n": 1})
    wait_for(lambda: platform.deliveries()[0].state == "retrying", message="retrying")
    [attempt] = attempts(platform)
    assert attempt.outcome == "auth_error"
    assert "refused: 127.0.0.2 resolves to 127.0.0.2, a loopback address" in (attempt.error or "")
    assert server.received == []


def test_wrong_client_credentials_say_what_the_token_server_said(
    platform: Any, receiver: Any, token_server: Any, wait_for: Any
) -> None:
    tokens = token_server()
    server = receiver()
    platform.endpoint(server.url, **oauth_columns(tokens, oauth_client_secret=seal_secret("wrong")))
    platform.publish({"n": 1})
    wait_for(lambda: platform.deliveries()[0].state == "retrying", message="retrying")
    [attempt] = attempts(platform)
    assert attempt.outcome == "auth_error"
    assert attempt.error == (
        f"no OAuth token: the token URL {tokens.url} answered HTTP 401: "
        "invalid_client (who are you)"
    )


# --- mutual TLS ------------------------------------------------------------------------------


@dataclass
class TLSReceiver:
    """An HTTPS receiver on 127.0.0.1 with a certificate of the test CA."""

    ca: trustme.CA
    require_client_certificate: bool
    received: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"https://127.0.0.1:{self.server.server_address[1]}/webhook"

    def start(self) -> TLSReceiver:
        receiver = self
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(context)
        if self.require_client_certificate:
            context.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(context)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                peer = self.connection.getpeercert()  # type: ignore[attr-defined]
                subject = dict(pair[0] for pair in peer["subject"]) if peer else None
                receiver.received.append({"client": subject, "path": self.path})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[Any, Any]:
                # The handshake in the request's thread, so a refused one stops nothing else.
                sock, address = self.socket.accept()
                return context.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                ), address

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_receiver(ca: trustme.CA) -> Iterator[Callable[..., TLSReceiver]]:
    started: list[TLSReceiver] = []

    def start(require_client_certificate: bool = True) -> TLSReceiver:
        server = TLSReceiver(ca, require_client_certificate).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def tls_columns(ca: trustme.CA, leaf: trustme.LeafCert | None = None) -> dict[str, Any]:
    columns: dict[str, Any] = {"tls_ca_bundle": ca.cert_pem.bytes().decode()}
    if leaf is not None:
        certificate = leaf.cert_chain_pems[0].bytes().decode()
        columns.update(
            tls_client_certificate=certificate,
            tls_client_key=seal_secret(leaf.private_key_pem.bytes().decode()),
            tls_certificate_expires_at=certificate_info(certificate).not_after,
        )
    return columns


def test_the_endpoints_ca_bundle_is_trusted_for_its_server(
    platform: Any, tls_receiver: Any, ca: trustme.CA, wait_for: Any
) -> None:
    server = tls_receiver(require_client_certificate=False)
    platform.endpoint(server.url, **tls_columns(ca))
    untrusted = tls_receiver(require_client_certificate=False)
    platform.endpoint(untrusted.url)  # no CA bundle: the system's CAs do not know the test CA
    platform.publish({"n": 1})
    wait_for(
        lambda: {d.state for d in platform.deliveries()} == {"delivered", "retrying"},
        message="one delivered, one retrying",
    )
    assert len(server.received) == 1
    failed = [a for a in attempts(platform) if a.outcome != "success"]
    assert failed[0].outcome == "connect_error"
    assert "TLS certificate of 127.0.0.1:" in (failed[0].error or "")
    assert "not trusted" in (failed[0].error or "")


def test_mutual_tls_without_right_or_with_expired_certificate(
    platform: Any, tls_receiver: Any, ca: trustme.CA, wait_for: Any
) -> None:
    server = tls_receiver(require_client_certificate=True)
    good = ca.issue_cert("good-client.example", common_name="good-client.example")
    expired = ca.issue_cert(
        "old-client.example",
        not_before=datetime.now(UTC) - timedelta(days=30),
        not_after=datetime.now(UTC) - timedelta(days=1),
    )
    with_none, _ = platform.endpoint(f"{server.url}?c=none", **tls_columns(ca))
    with_good, _ = platform.endpoint(f"{server.url}?c=good", **tls_columns(ca, good))
    with_expired, _ = platform.endpoint(f"{server.url}?c=expired", **tls_columns(ca, expired))
    platform.publish({"n": 1})
    wait_for(
        lambda: len([d for d in platform.deliveries() if d.attempt_count]) == 3,
        message="three attempts",
    )
    states = {d.endpoint_id: d.state for d in platform.deliveries()}
    assert states == {with_none: "retrying", with_good: "delivered", with_expired: "retrying"}
    assert [(got["path"], got["client"]["commonName"]) for got in server.received] == [
        ("/webhook?c=good", "good-client.example")
    ]
    errors = {a.endpoint_id: a.error or "" for a in attempts(platform)}
    assert errors[with_none].endswith(
        "; the server may require a client certificate: this endpoint has none"
    ), errors[with_none]
    not_after = certificate_info(expired.cert_chain_pems[0].bytes().decode()).not_after
    assert errors[with_expired].endswith(
        f"the endpoint's client certificate expired at {not_after.isoformat()}: "
        "give it a current one"
    ), errors[with_expired]


@pytest.mark.parametrize(
    "error",
    [
        "TLS handshake with 127.0.0.1:1 failed (tlsv13 alert certificate required)",
        "connection reset by 127.0.0.1:1",
        "127.0.0.1:1 closed the connection without answering",
    ],
)
def test_a_refusal_after_the_tls_handshake_is_explained_however_it_shows(error: str) -> None:
    # Which of these a client reads when the server refuses its certificate after a TLS 1.3
    # handshake is a race (the alert, a reset, a close): each gets the same explanation.
    expired_at = datetime.now(UTC) - timedelta(days=1)
    expired = TLSCredentials("cert", "sealed key", None, expired_at)
    none = TLSCredentials(None, None, "ca", None)
    failed = SendResult("connect_error", 3.0, error=error)
    assert _explained(failed, expired).error == (
        f"{error}; the endpoint's client certificate expired at {expired_at.isoformat()}: "
        "give it a current one"
    )
    assert _explained(failed, none).error == (
        f"{error}; the server may require a client certificate: this endpoint has none"
    )
    # Not a refusal: an answer, or a failure that has nothing to do with TLS.
    answered = SendResult("http_5xx", 3.0, status_code=502, error=error)
    assert _explained(answered, expired) == answered
    refused = SendResult("connect_error", 3.0, error="connection refused by 127.0.0.1:1")
    assert _explained(refused, expired) == refused
