"""The raw baseline: one process, one thread, one ``requests.Session`` with keep-alive.

It posts the same bodies, signed the same way, to the same receiver paths as the platform
does, with none of the platform's durability (no rows, no attempts, no broker).  Its rate is
``raw_per_s``, the denominator of the benchmark's ratio.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import requests

from bench.receiver import derive_secret

RAW_ID_PREFIX = "raw_"


@dataclass(frozen=True)
class RawResult:
    """What the raw sender did."""

    sent: int
    ok: int
    seconds: float

    @property
    def per_second(self) -> float:
        """Successful posts per second."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0


def _signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def send_raw(
    base_url: str,
    paths: Sequence[str],
    bodies: Sequence[bytes],
    *,
    seed: str,
    seconds: float,
    max_requests: int = 10_000_000,
) -> RawResult:
    """Post ``bodies`` round-robin over ``paths`` for ``seconds`` (or ``max_requests``).

    Every request carries Standard Webhooks headers with a ``raw_`` webhook-id, so the
    receiver verifies it and the harness can tell these receipts from the platform's.
    """
    secrets = {path: derive_secret(seed, path) for path in paths}
    targets = itertools.cycle(paths)
    payloads = itertools.cycle(bodies)
    sent = ok = 0
    with requests.Session() as session:
        started = time.perf_counter()
        deadline = started + seconds
        while sent < max_requests and time.perf_counter() < deadline:
            path = next(targets)
            body = next(payloads)
            msg_id = f"{RAW_ID_PREFIX}{sent}"
            stamp = str(int(time.time()))
            headers = {
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": stamp,
                "webhook-signature": _signature(secrets[path], msg_id, stamp, body),
            }
            response = session.post(base_url + path, data=body, headers=headers, timeout=10)
            sent += 1
            ok += 200 <= response.status_code < 300
        elapsed = time.perf_counter() - started
    return RawResult(sent=sent, ok=ok, seconds=elapsed)
