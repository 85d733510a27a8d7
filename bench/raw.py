"""The raw baseline: one process, one ``urllib3.PoolManager`` shared by 8 threads.

It posts the same bodies, signed the same way (Standard Webhooks), to the same receiver paths
as the platform does, with none of the platform's durability (no rows, no attempts, no
broker).  It is the fastest plain single-process Python sender measured on this machine
(issue 12: a ``requests.Session`` in the same shape reached less than half its rate), so its
rate, ``raw_per_s``, is the honest denominator of the benchmark's ratio.  It also reports
the CPU it spent per request (the process's CPU time over the requests it sent), to compare
with the delivery workers' CPU per delivery.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import urllib3

from bench.receiver import derive_secret

RAW_ID_PREFIX = "raw_"
RAW_THREADS = 8


@dataclass(frozen=True)
class RawResult:
    """What the raw sender did."""

    sent: int
    ok: int
    seconds: float
    cpu_seconds: float
    threads: int
    errors: int = 0

    @property
    def per_second(self) -> float:
        """Successful posts per second."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        """CPU time of the sending process per request sent, in milliseconds."""
        return self.cpu_seconds * 1000 / self.sent if self.sent else 0.0


def signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """The ``webhook-signature`` header: ``v1,`` base64 HMAC-SHA256 of id.timestamp.body."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


class _Counts:
    """Requests sent and answered 2xx, shared by the sending threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.ok = 0
        self.errors = 0

    def add(self, sent: int, ok: int, errors: int) -> None:
        with self.lock:
            self.sent += sent
            self.ok += ok
            self.errors += errors


def send_raw(
    base_url: str,
    paths: Sequence[str],
    bodies: Sequence[bytes],
    *,
    seed: str,
    seconds: float,
    max_requests: int = 10_000_000,
    threads: int = RAW_THREADS,
) -> RawResult:
    """Post ``bodies`` round-robin over ``paths`` from ``threads`` threads sharing one
    ``PoolManager`` (one keep-alive connection per thread), for ``seconds`` or
    ``max_requests`` requests in all.

    Every request carries Standard Webhooks headers with a ``raw_`` webhook-id, so the
    receiver verifies it and the harness can tell these receipts from the platform's.
    """
    secrets = {path: derive_secret(seed, path) for path in paths}
    numbers = itertools.count()  # next() on a count is atomic under the GIL
    counts = _Counts()
    # block=True: a thread waits for a free connection instead of opening one it would then
    # discard ("Connection pool is full"); with maxsize == threads it never has to wait.
    pool = urllib3.PoolManager(
        num_pools=4, maxsize=threads, block=True, retries=False, timeout=10.0
    )

    def sender(deadline: float) -> None:
        sent = ok = errors = 0
        while time.perf_counter() < deadline:
            n = next(numbers)
            if n >= max_requests:
                break
            path = paths[n % len(paths)]
            body = bodies[n % len(bodies)]
            msg_id = f"{RAW_ID_PREFIX}{n}"
            stamp = str(int(time.time()))
            headers = {
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": stamp,
                "webhook-signature": signature(secrets[path], msg_id, stamp, body),
            }
            sent += 1
            try:
                response = pool.request("POST", base_url + path, body=body, headers=headers)
            except urllib3.exceptions.HTTPError:
                errors += 1
                continue
            ok += 200 <= response.status < 300
        counts.add(sent, ok, errors)

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="raw") as executor:
        cpu_started = time.process_time()
        started = time.perf_counter()
        deadline = started + seconds
        for future in [executor.submit(sender, deadline) for _ in range(threads)]:
            future.result()
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
    pool.clear()
    return RawResult(
        sent=counts.sent,
        ok=counts.ok,
        seconds=elapsed,
        cpu_seconds=cpu,
        threads=threads,
        errors=counts.errors,
    )
