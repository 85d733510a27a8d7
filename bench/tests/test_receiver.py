"""The benchmark receiver records, verifies and misbehaves as its paths say; the raw sender
posts signed bodies it accepts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from bench.raw import RAW_ID_PREFIX, send_raw
from bench.raw import signature as raw_signature
from bench.receiver import (
    POISON_BODY,
    Behaviour,
    RunningReceiver,
    derive_secret,
    signature_valid,
)

SEED = "test-seed"


@pytest.fixture(params=[1, 2], ids=["one-process", "two-processes"])
def receiver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningReceiver]:
    running = RunningReceiver(tmp_path / "recv", processes=request.param, hang_seconds=2, seed=SEED)
    with running:
        yield running


def signed_headers(path: str, msg_id: str, body: bytes) -> dict[str, str]:
    """Headers as the official Standard Webhooks library signs them."""
    webhook = Webhook(derive_secret(SEED, path))
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": webhook.sign(msg_id, now, body.decode()),
    }


def test_signature_check_agrees_with_the_official_library() -> None:
    body = b'{"type":"a.b","timestamp":"2026-01-01T00:00:00Z","data":{}}'
    headers = signed_headers("/r/ok/x", "msg_1", body)
    secret = derive_secret(SEED, "/r/ok/x")
    args = ("msg_1", headers["webhook-timestamp"], body)
    assert signature_valid(secret, *args, headers["webhook-signature"])
    assert not signature_valid(derive_secret(SEED, "/r/ok/y"), *args, headers["webhook-signature"])
    # A rotation header carries two signatures; one match is enough.
    rotated = "v1,AAAA " + headers["webhook-signature"]
    assert signature_valid(secret, *args, rotated)


def test_behaviour_is_read_from_the_path() -> None:
    assert Behaviour.parse("/r/ok/a") == Behaviour()
    assert Behaviour.parse("/r/fail20-hang5/a") == Behaviour(fail_ratio=0.2, hang_ratio=0.05)
    assert Behaviour.parse("/r/timeout/a").hang_ratio == 1.0
    assert Behaviour.parse("/r/delay250/a").delay_seconds == 0.25
    assert Behaviour.parse("/elsewhere") == Behaviour()
    assert Behaviour.parse("/r/nul-fail50/a") == Behaviour(fail_ratio=0.5, poisoned_body=True)
    assert Behaviour.parse("/r/cut/a").cut
    assert Behaviour.parse("/r/gone/a").gone
    assert Behaviour.parse("/r/bearer/a") == Behaviour(bearer=True)


def test_hostile_paths_answer_poisoned_bytes_cut_headers_and_410(
    receiver: RunningReceiver,
) -> None:
    body = b"{}"
    answers = {}
    with requests.Session() as http:
        for path in ("/r/nul/a", "/r/nul-fail100/b", "/r/gone/c"):
            answers[path] = http.post(
                receiver.url(path), data=body, headers=signed_headers(path, path, body)
            )
    assert answers["/r/nul/a"].status_code == 200
    assert answers["/r/nul/a"].content == POISON_BODY
    assert b"\x00" in POISON_BODY
    with pytest.raises(UnicodeDecodeError):
        POISON_BODY.decode()
    assert "\x00" in answers["/r/nul/a"].headers["X-Poison"]
    assert answers["/r/nul-fail100/b"].status_code == 500
    assert answers["/r/nul-fail100/b"].content == POISON_BODY
    assert answers["/r/gone/c"].status_code == 410

    # A cut answer: the status line and half a header, then the connection closes.
    import socket

    with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as raw:
        raw.sendall(b"POST /r/cut/d HTTP/1.1\r\nHost: x\r\nwebhook-id: cut\r\n"
                    b"Content-Length: 2\r\n\r\n{}")  # fmt: skip
        received = b""
        while chunk := raw.recv(4096):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\n\r\n" not in received

    statuses = {r.webhook_id: r.status for r in receiver.receipts()}
    assert statuses == {"/r/nul/a": 200, "/r/nul-fail100/b": 500, "/r/gone/c": 410, "cut": -1}


def test_receipts_record_id_path_signature_and_answer(receiver: RunningReceiver) -> None:
    body = json.dumps({"type": "a.b", "data": {"n": 1}}).encode()
    with requests.Session() as http:
        good = http.post(
            receiver.url("/r/ok/a"), data=body, headers=signed_headers("/r/ok/a", "msg_a", body)
        )
        forged = signed_headers("/r/ok/b", "msg_b", body)
        bad = http.post(receiver.url("/r/ok/a"), data=body, headers=forged)
        failing = http.post(
            receiver.url("/r/fail100/c"),
            data=body,
            headers=signed_headers("/r/fail100/c", "msg_c", body),
        )
        unsigned = http.post(receiver.url("/r/ok/d"), data=body)
    assert [good.status_code, bad.status_code, failing.status_code] == [200, 200, 500]
    assert unsigned.status_code == 200

    receipts = {r.webhook_id: r for r in receiver.receipts()}
    assert receipts["msg_a"].path == "/r/ok/a"
    assert (receipts["msg_a"].signature, receipts["msg_a"].status) == (1, 200)
    assert receipts["msg_a"].accepted
    assert (receipts["msg_b"].signature, receipts["msg_b"].status) == (0, 200)
    assert (receipts["msg_c"].signature, receipts["msg_c"].status) == (1, 500)
    assert not receipts["msg_c"].accepted
    assert receipts[""].signature == -1
    stats = receiver.stats()
    assert stats["received"] == 4
    assert stats["ok"] == 3
    assert stats["bad_signature"] == 1


def test_a_hanging_path_never_answers(receiver: RunningReceiver) -> None:
    body = b"{}"
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(
            receiver.url("/r/timeout/z"),
            data=body,
            headers=signed_headers("/r/timeout/z", "msg_z", body),
            timeout=(2, 0.3),
        )
    [receipt] = receiver.receipts()
    assert (receipt.webhook_id, receipt.status, receipt.signature) == ("msg_z", 0, 1)


def test_raw_sender_posts_signed_bodies_round_robin(receiver: RunningReceiver) -> None:
    paths = ["/r/ok/a", "/r/ok/b"]
    result = send_raw(
        receiver.url(""), paths, [b'{"a":1}', b'{"b":2}'], seed=SEED, seconds=5, max_requests=40
    )
    assert (result.sent, result.ok, result.errors, result.threads) == (40, 40, 0, 8)
    assert result.per_second > 0
    assert result.cpu_seconds > 0
    assert result.cpu_ms_per_request == result.cpu_seconds * 1000 / 40
    receipts = receiver.receipts()
    assert len(receipts) == 40
    assert all(r.signature == 1 and r.status == 200 for r in receipts)
    # Each request once, whichever thread sent it: ids raw_0 ... raw_39, none repeated.
    assert sorted(r.webhook_id for r in receipts) == sorted(
        f"{RAW_ID_PREFIX}{n}" for n in range(40)
    )
    by_id = {r.webhook_id: r.path for r in receipts}
    assert all(by_id[f"{RAW_ID_PREFIX}{n}"] == paths[n % 2] for n in range(40))


def test_raw_sender_signature_verifies_with_the_official_library() -> None:
    path = "/r/ok/official"
    body = b'{"type":"a.b","data":{"n":1}}'
    secret = derive_secret(SEED, path)
    stamp = str(int(time.time()))
    header = raw_signature(secret, "raw_7", stamp, body)
    headers = {"webhook-id": "raw_7", "webhook-timestamp": stamp, "webhook-signature": header}
    assert Webhook(secret).verify(body, headers) == {"type": "a.b", "data": {"n": 1}}
    with pytest.raises(WebhookVerificationError):
        Webhook(derive_secret(SEED, "/r/ok/other")).verify(body, headers)


def test_raw_sender_counts_only_2xx_answers(receiver: RunningReceiver) -> None:
    result = send_raw(
        receiver.url(""), ["/r/fail100/x"], [b"{}"], seed=SEED, seconds=5, max_requests=24
    )
    assert (result.sent, result.ok, result.errors) == (24, 0, 0)
    assert result.per_second == 0
    assert {r.status for r in receiver.receipts()} == {500}


def test_raw_sender_threads_share_the_work(tmp_path: Path) -> None:
    # 16 requests the receiver answers after 300 ms each: one after another they take 4.8 s;
    # 8 threads with a connection each finish in about 0.6 s.
    with RunningReceiver(tmp_path / "recv", processes=1, seed=SEED) as receiver:
        result = send_raw(
            receiver.url(""), ["/r/delay300/slow"], [b"{}"], seed=SEED, seconds=30, max_requests=16
        )
    assert (result.sent, result.ok) == (16, 16)
    assert 0.55 <= result.seconds < 2.5


def test_raw_sender_stops_at_its_time(receiver: RunningReceiver) -> None:
    started = time.perf_counter()
    result = send_raw(receiver.url(""), ["/r/ok/t"], [b"{}"], seed=SEED, seconds=1.0)
    elapsed = time.perf_counter() - started
    assert result.sent == result.ok > 8
    assert 1.0 <= result.seconds < elapsed + 0.01
    assert elapsed < 4.0
