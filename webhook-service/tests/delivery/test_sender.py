"""The HTTP sender against real misbehaving receivers, and its SSRF guard."""

from __future__ import annotations

import contextlib
import gzip
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from delivery.config import DeliverySettings
from delivery.runtime import http_sender
from delivery.sender import HttpSender, OutboundRequest
from webhooks_core.deliveries.outcomes import Verdict, judge


@pytest.fixture(params=["urllib3", "aiohttp"])
def settings(settings: DeliverySettings, request: pytest.FixtureRequest) -> DeliverySettings:
    """Each test here runs with both HTTP clients of the sender (WEBHOOKS_HTTP_CLIENT)."""
    return settings.model_copy(update={"http_client": request.param})


def make_sender(settings: DeliverySettings, **resolver: Any) -> HttpSender:
    values = settings.model_dump()
    values.update(
        allowed_target_networks=["127.0.0.1/32"],
        connect_timeout_seconds=0.5,
        read_timeout_seconds=0.6,
        total_timeout_seconds=1.0,
        response_body_max_bytes=1024,
    )
    return http_sender(DeliverySettings.from_env(**values), **resolver)


@pytest.fixture
def sender(settings: DeliverySettings) -> HttpSender:
    return make_sender(settings)


def post(sender: HttpSender, url: str) -> Any:
    return sender.send(OutboundRequest(url, {"webhook-id": "msg_1"}, b'{"type":"t"}'))


def test_success_reuses_one_keep_alive_connection(sender: HttpSender, receiver: Any) -> None:
    server = receiver(lambda _got, n: {"status": 200 + n, "body": b"thanks"})
    results = [post(sender, server.url) for _ in range(3)]
    assert [r.outcome for r in results] == ["success"] * 3
    assert [r.status_code for r in results] == [201, 202, 203]
    assert results[0].body_excerpt == "thanks"
    assert len({got.client_port for got in server.received}) == 1
    assert server.received[0].headers["User-Agent"].startswith("webhooks-platform")


def test_server_error_and_retry_after_are_reported(sender: HttpSender, receiver: Any) -> None:
    server = receiver(lambda _got, _n: {"status": 429, "headers": {"Retry-After": "120"}})
    result = post(sender, server.url)
    assert (result.outcome, result.status_code, result.retry_after) == ("http_4xx", 429, "120")


def test_hanging_receiver_times_out(sender: HttpSender, receiver: Any) -> None:
    server = receiver(lambda _got, _n: {"handler": lambda _h: server.release.wait(5)})
    result = post(sender, server.url)
    assert result.outcome == "timeout"
    assert result.latency_ms < 5000
    port = server.server.server_address[1]
    assert result.error == f"no answer from 127.0.0.1:{port} within the 0.6 s read timeout"


def test_slow_drip_of_headers_hits_the_total_deadline(sender: HttpSender, receiver: Any) -> None:
    def drip(handler: BaseHTTPRequestHandler) -> None:
        # Each byte arrives well within the read timeout; only the total deadline stops it.
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100:
            if server.release.is_set():
                return
            try:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
            except OSError:
                return
            time.sleep(0.2)

    server = receiver(lambda _got, _n: {"handler": drip})
    started = time.monotonic()
    result = post(sender, server.url)
    assert result.outcome == "timeout"
    assert "deadline" in (result.error or "")
    assert time.monotonic() - started < 5


def test_slow_drip_of_the_body_hits_the_total_deadline(sender: HttpSender, receiver: Any) -> None:
    def drip(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        for _ in range(1000):
            if server.release.is_set():
                return
            try:
                handler.wfile.write(b"x")
                handler.wfile.flush()
            except OSError:
                return
            time.sleep(0.2)

    server = receiver(lambda _got, _n: {"handler": drip})
    result = post(sender, server.url)
    assert result.outcome == "timeout"
    assert result.status_code == 200


def test_huge_body_is_cut_at_the_first_kib(sender: HttpSender, receiver: Any) -> None:
    size = 50 * 1024 * 1024

    def huge(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(size))
        handler.end_headers()
        chunk = b"y" * 65536
        try:
            for _ in range(size // len(chunk)):
                handler.wfile.write(chunk)
        except OSError:
            pass  # the sender hung up after its excerpt, as it should

    server = receiver(lambda _got, _n: {"handler": huge})
    result = post(sender, server.url)
    assert result.outcome == "success"
    assert result.body_excerpt == "y" * 1024
    # The connection was not reused: the next request opens a fresh one and still works.
    assert post(sender, server.url).outcome == "success"


def test_gzip_bomb_is_not_decompressed(sender: HttpSender, receiver: Any) -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)

    def respond(_got: Any, _n: int) -> dict[str, Any]:
        return {"headers": {"Content-Encoding": "gzip"}, "body": bomb}

    server = receiver(respond)
    result = post(sender, server.url)
    assert result.outcome == "success"
    assert result.body_excerpt == "[gzip-encoded body, not decoded]"


def test_redirects_are_not_followed(sender: HttpSender, receiver: Any) -> None:
    target = receiver()
    server = receiver(lambda _got, _n: {"status": 302, "headers": {"Location": target.url}})
    result = post(sender, server.url)
    assert (result.outcome, result.status_code) == ("http_3xx", 302)
    assert target.received == []


def test_connection_refused_is_a_connect_error(sender: HttpSender) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = post(sender, f"http://127.0.0.1:{port}/hook")
    assert result.outcome == "connect_error"
    assert result.error == f"connection refused by 127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.2", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.2", "loopback"),
    ],
)
def test_loopback_outside_the_allowed_range_is_refused_before_connecting(
    sender: HttpSender, receiver: Any, host: str, reason: str
) -> None:
    listening = "::1" if host == "::1" else "127.0.0.2"
    server = receiver(host=listening)
    port = server.server.server_address[1]
    url = f"http://[{host}]:{port}/hook" if ":" in host else f"http://{host}:{port}/hook"
    result = post(sender, url)
    assert result.outcome == "blocked"
    assert reason in (result.error or "")
    assert server.received == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.1.2.3/hook", "private"),
        ("http://192.168.0.10/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://169.254.10.10/hook", "link-local"),
        ("http://100.64.0.1/hook", "CGNAT"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://0.0.0.0:80/hook", "reserved"),
        ("http://[fd00:ec2::254]/hook", "metadata"),
        ("http://[fe80::1]/hook", "link-local"),
    ],
)
def test_every_blocked_range_is_refused(sender: HttpSender, url: str, reason: str) -> None:
    result = post(sender, url)
    assert result.outcome == "blocked"
    assert reason in (result.error or "")


def test_a_name_resolving_to_a_blocked_address_is_refused(
    settings: DeliverySettings, receiver: Any
) -> None:
    server = receiver(host="127.0.0.2")
    port = server.server.server_address[1]
    rebinding = make_sender(settings, resolver=lambda _host, _port: ["127.0.0.1", "127.0.0.2"])
    result = post(rebinding, f"http://hooks.example.test:{port}/hook")
    assert result.outcome == "blocked"
    assert "127.0.0.2" in (result.error or "")
    assert server.received == []


def test_connects_to_the_checked_address_without_a_second_lookup(
    settings: DeliverySettings, receiver: Any
) -> None:
    lookups: list[str] = []

    def resolver(host: str, _port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    server = receiver()
    port = server.server.server_address[1]
    pinned = make_sender(settings, resolver=resolver)
    # The name exists nowhere but in this resolver: any other lookup would fail the request.
    for _ in range(2):
        assert post(pinned, f"http://hooks.example.test:{port}/hook").outcome == "success"
    assert lookups == ["hooks.example.test"]  # once, then cached with a short TTL
    assert server.received[0].headers["Host"] == f"hooks.example.test:{port}"


def raw_receiver(head: bytes) -> tuple[socket.socket, str]:
    """A socket on 127.0.0.1 that reads one whole request, writes ``head`` and hangs up."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    request = b""
                    while b"\r\n\r\n" not in request:
                        request += conn.recv(65536)
                    head_part, _, body = request.partition(b"\r\n\r\n")
                    length = int(
                        next(
                            line.split(b":", 1)[1]
                            for line in head_part.split(b"\r\n")
                            if line.lower().startswith(b"content-length:")
                        )
                    )
                    while len(body) < length:
                        body += conn.recv(65536)
                    conn.sendall(head)

    threading.Thread(target=serve, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}/hook"


@pytest.mark.parametrize(
    ("head", "error"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Le", "cut off"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0", "cut off"),
        (b"HTTP/1.1 200 OK\r\nX-Request-Id: 7\r\n", "cut off"),
        (b"HTTP/1.1 200 OK\r\n", "cut off"),
        (b"HTTP/1.1 200 O", "cut off"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed"),
        (b"HTTP/1.1 204 No Content\r\n  folded: first\r\n\r\n", "malformed"),
    ],
)
def test_a_response_cut_off_or_malformed_in_its_head_is_a_failed_attempt(
    sender: HttpSender, settings: DeliverySettings, head: bytes, error: str
) -> None:
    listener, url = raw_receiver(head)
    try:
        result = post(sender, url)
    finally:
        listener.close()
    assert result.outcome == "connect_error"
    assert error in (result.error or "")
    assert judge(result, settings) is Verdict.RETRY


def test_a_complete_head_with_an_empty_body_still_succeeds(sender: HttpSender) -> None:
    listener, url = raw_receiver(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    try:
        result = post(sender, url)
    finally:
        listener.close()
    assert (result.outcome, result.status_code) == ("success", 200)


def test_a_2xx_whose_body_is_cut_off_is_retried_whatever_the_status_policy(
    sender: HttpSender, settings: DeliverySettings
) -> None:
    listener, url = raw_receiver(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    try:
        result = post(sender, url)
    finally:
        listener.close()
    assert (result.outcome, result.status_code) == ("connect_error", 200)
    strict = settings.model_copy(update={"other_status_policy": "dead"})
    assert judge(result, strict) is Verdict.RETRY


def test_a_reset_connection_is_said_plainly(sender: HttpSender) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def reset() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            # Linger 0: close() sends RST, as a crashing receiver or a middlebox does.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    threading.Thread(target=reset, daemon=True).start()
    try:
        result = post(sender, f"http://127.0.0.1:{port}/hook")
    finally:
        listener.close()
    assert (result.outcome, result.error) == (
        "connect_error",
        f"connection reset by 127.0.0.1:{port}",
    )


def test_an_answer_that_is_not_http_is_said_plainly(sender: HttpSender) -> None:
    listener, url = raw_receiver(b"SSH-2.0-OpenSSH_9.6\r\n")
    port = listener.getsockname()[1]
    try:
        result = post(sender, url)
    finally:
        listener.close()
    assert result.outcome == "connect_error"
    assert (
        result.error
        == f"127.0.0.1:{port} answered something that is not HTTP ('SSH-2.0-OpenSSH_9.6')"
    )


def test_a_tls_handshake_failure_is_said_plainly(sender: HttpSender, receiver: Any) -> None:
    server = receiver()  # plain HTTP: the TLS client hello gets no TLS answer
    port = server.server.server_address[1]
    result = post(sender, f"https://127.0.0.1:{port}/hook")
    assert result.outcome == "connect_error"
    assert (result.error or "").startswith(f"TLS handshake with 127.0.0.1:{port} failed (")
    assert server.received == []


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (socket.EAI_NONAME, "DNS: hooks.example.test does not exist"),
        (socket.EAI_AGAIN, "DNS: temporary failure resolving hooks.example.test"),
    ],
)
def test_a_failed_lookup_is_said_plainly(settings: DeliverySettings, code: int, error: str) -> None:
    def resolver(_host: str, _port: int) -> list[str]:
        raise socket.gaierror(code, "from the resolver")

    result = post(make_sender(settings, resolver=resolver), "http://hooks.example.test/hook")
    assert (result.outcome, result.error) == ("connect_error", error)
