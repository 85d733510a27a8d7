"""Egress through a forward proxy (``WEBHOOKS_EGRESS_PROXY``): every request goes through it.

A small forward proxy on 127.0.0.1 records what it is asked: HTTPS targets through an HTTP
CONNECT tunnel, plain HTTP forwarded.  The sender still resolves and checks the target (the
SSRF rules), and gives the proxy the checked address, never the name.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
import trustme

from delivery.config import DeliverySettings
from delivery.oauth import OAuthCredentials, TokenCache
from delivery.runtime import http_sender
from delivery.sender import HttpSender, OutboundRequest
from delivery.tls import TLSCredentials, endpoint_tls
from webhooks_core.endpoints.authentication import seal_secret


@dataclass
class ForwardProxy:
    """CONNECT tunnels and forwarded plain HTTP; ``seen`` holds (method, target, headers)."""

    refuse_connect: bool = False
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://proxyuser:proxy%20pass@127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> ForwardProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_CONNECT(self) -> None:
                proxy.seen.append(("CONNECT", self.path, dict(self.headers)))
                if proxy.refuse_connect:
                    self.send_response(403)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                host, _, port = self.path.rpartition(":")
                upstream = socket.create_connection((host.strip("[]"), int(port)))
                self.send_response(200, "Connection established")
                self.end_headers()
                self._pipe(upstream)

            def _pipe(self, upstream: socket.socket) -> None:
                sockets = [self.connection, upstream]
                try:
                    while True:
                        readable, _, _ = select.select(sockets, [], [], 5)
                        if not readable:
                            return
                        for sock in readable:
                            data = sock.recv(65536)
                            if not data:
                                return
                            (upstream if sock is self.connection else self.connection).sendall(data)
                finally:
                    upstream.close()
                    self.close_connection = True

            def do_POST(self) -> None:
                proxy.seen.append(("POST", self.path, dict(self.headers)))
                target = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                upstream = socket.create_connection((target.hostname, target.port or 80))
                headers = "".join(
                    f"{name}: {value}\r\n"
                    for name, value in self.headers.items()
                    if name.lower() not in ("proxy-authorization", "connection")
                )
                path = target.path + (f"?{target.query}" if target.query else "")
                upstream.sendall(
                    f"POST {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n".encode() + body
                )
                chunks = []
                while chunk := upstream.recv(65536):
                    chunks.append(chunk)
                upstream.close()
                self.wfile.write(b"".join(chunks))
                self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server_class = type("Server", (ThreadingHTTPServer,), {"daemon_threads": True})
        self.server = server_class(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    server = ForwardProxy().start()
    yield server
    server.stop()


@pytest.fixture(params=["urllib3", "aiohttp"])
def settings(settings: DeliverySettings, request: pytest.FixtureRequest) -> DeliverySettings:
    """Each test here runs with both HTTP clients of the sender (WEBHOOKS_HTTP_CLIENT)."""
    return settings.model_copy(update={"http_client": request.param})


def proxied_sender(settings: DeliverySettings, proxy_url: str, **resolver: Any) -> HttpSender:
    values = settings.model_dump()
    values.update(
        allowed_target_networks=["127.0.0.1/32"],
        connect_timeout_seconds=1.0,
        read_timeout_seconds=2.0,
        total_timeout_seconds=3.0,
        egress_proxy=proxy_url,
    )
    return http_sender(DeliverySettings.from_env(**values), **resolver)


def post(sender: HttpSender, url: str, **kwargs: Any) -> Any:
    return sender.send(OutboundRequest(url, {"webhook-id": "msg_1"}, b'{"type":"t"}', **kwargs))


def test_plain_http_is_forwarded_with_the_checked_address(
    settings: DeliverySettings, proxy: ForwardProxy, receiver: Any
) -> None:
    server = receiver()
    # A name: the sender resolves it and checks the address; the proxy gets the address.
    sender = proxied_sender(settings, proxy.url, resolver=lambda _host, _port: ["127.0.0.1"])
    port = server.server.server_address[1]
    result = post(sender, f"http://receiver.example:{port}/webhook?x=1")
    assert result.outcome == "success", result
    [(method, target, headers)] = proxy.seen
    assert (method, target) == ("POST", f"http://127.0.0.1:{port}/webhook?x=1")
    assert headers["Proxy-Authorization"] == "Basic cHJveHl1c2VyOnByb3h5IHBhc3M="
    assert server.received[0].headers["Host"] == f"receiver.example:{port}"
    assert "Proxy-Authorization" not in server.received[0].headers


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def test_https_goes_through_a_connect_tunnel_to_the_checked_address(
    settings: DeliverySettings, proxy: ForwardProxy, ca: trustme.CA
) -> None:
    import ssl
    from http.server import HTTPServer

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    got: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            got.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        tls = endpoint_tls("e1", TLSCredentials(None, None, ca.cert_pem.bytes().decode(), None))
        sender = proxied_sender(settings, proxy.url)
        result = post(sender, f"https://127.0.0.1:{port}/hook", tls=tls)
        assert result.outcome == "success", result
        assert got == ["/hook"]
        assert [(m, t) for m, t, _ in proxy.seen] == [("CONNECT", f"127.0.0.1:{port}")]
        assert proxy.seen[0][2]["Proxy-Authorization"].startswith("Basic ")

        proxy.refuse_connect = True
        other = proxied_sender(settings, proxy.url)
        refused = post(other, f"https://127.0.0.1:{port}/hook", tls=tls)
        assert refused.outcome == "connect_error"
        proxy_port = proxy.server.server_address[1]  # type: ignore[union-attr]
        assert refused.error == (
            f"the egress proxy 127.0.0.1:{proxy_port} refused the tunnel "
            "(Tunnel connection failed: 403 Forbidden)"
        ), refused.error
    finally:
        server.shutdown()
        server.server_close()


def test_the_ssrf_rules_still_apply_to_the_target(
    settings: DeliverySettings, proxy: ForwardProxy, receiver: Any
) -> None:
    server = receiver(host="127.0.0.2")  # a loopback address the settings do not allow
    sender = proxied_sender(settings, proxy.url)
    result = post(sender, server.url)
    assert result.outcome == "blocked"
    assert result.error == "refused: 127.0.0.2 resolves to 127.0.0.2, a loopback address"
    assert proxy.seen == []
    assert server.received == []


def test_a_proxy_that_is_down_is_named_in_the_error(
    settings: DeliverySettings, receiver: Any
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = receiver()
    result = post(proxied_sender(settings, f"http://127.0.0.1:{port}"), server.url)
    assert result.outcome == "connect_error"
    assert result.error == f"egress proxy: connection refused by 127.0.0.1:{port}"
    assert server.received == []


def test_token_requests_go_through_the_proxy_too(
    settings: DeliverySettings, proxy: ForwardProxy, receiver: Any
) -> None:
    def token(_got: Any, _n: int) -> dict[str, Any]:
        return {"body": b'{"access_token": "t1", "token_type": "bearer", "expires_in": 60}'}

    token_server = receiver(token)
    credentials = OAuthCredentials(
        token_url=token_server.url,
        client_id="platform",
        sealed_client_secret=seal_secret("secret"),
        scopes=(),
        audience="https://receiver.example",
        auth_method="client_secret_basic",
    )
    cache = TokenCache()
    assert cache.token("e1", credentials, proxied_sender(settings, proxy.url)) == "t1"
    assert [(m, t) for m, t, _ in proxy.seen] == [
        ("POST", f"http://127.0.0.1:{token_server.server.server_address[1]}/webhook")
    ]
    assert token_server.received[0].body == (
        b"grant_type=client_credentials&audience=https%3A%2F%2Freceiver.example"
    )


def test_tokens_are_shared_by_threads_and_refreshed_before_expiry(
    settings: DeliverySettings, receiver: Any
) -> None:
    """The cache on its own: one fetch for many threads, a new one near expiry only."""
    now = [1000.0]

    def token(_got: Any, n: int) -> dict[str, Any]:
        body = f'{{"access_token": "t{n}", "token_type": "Bearer", "expires_in": 100}}'
        return {"body": body.encode()}

    server = receiver(token)
    credentials = OAuthCredentials(
        server.url, "id", seal_secret("s"), ("a",), None, "client_secret_post"
    )
    cache = TokenCache(clock=lambda: now[0])
    values = settings.model_dump()
    values.update(allowed_target_networks=["127.0.0.1/32"])
    sender = http_sender(DeliverySettings.from_env(**values))
    got: list[str] = []
    threads = [
        threading.Thread(target=lambda: got.append(cache.token("e", credentials, sender)))
        for _ in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got == ["t1"] * 16
    assert cache.issued == 1
    now[0] += 89  # 100 s life, refreshed 10 s before its end
    assert cache.token("e", credentials, sender) == "t1"
    now[0] += 2
    assert cache.token("e", credentials, sender) == "t2"
    cache.invalidate("e", credentials, "t1")  # an old token refused: the new one stays
    assert cache.token("e", credentials, sender) == "t2"
    cache.invalidate("e", credentials, "t2")
    assert cache.token("e", credentials, sender) == "t3"
    assert len(server.received) == 3
