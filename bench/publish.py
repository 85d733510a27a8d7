"""Publishing through the platform's HTTP API, as an application would: the end-to-end and
latency scenarios' clients.

One ``urllib3.PoolManager`` per publisher, shared by its client threads (keep-alive, one
connection per thread).  Each call returns the event ids the API accepted, so the harness can
match them with the receiver's receipts (``webhook-id`` is the event id).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import urllib3

Payload = Callable[[int], dict[str, Any]]


@dataclass
class BatchRun:
    """What a run of batch publishes did: accepted event ids with the time (unix seconds) the
    request carrying each was sent, refused messages and failed requests."""

    published: dict[str, float] = field(default_factory=dict)
    refused: int = 0
    failed_requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    seconds: float = 0.0


class ApiPublisher:
    """``POST /api/v1/applications/<id>/messages[/batch]`` with the admin token."""

    def __init__(self, port: int, application_id: uuid.UUID, token: str, threads: int) -> None:
        self._base = f"http://127.0.0.1:{port}/api/v1/applications/{application_id}/messages"
        self._auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._pool = urllib3.PoolManager(maxsize=threads, block=True, retries=False, timeout=30.0)
        self._lock = threading.Lock()
        self.threads = threads

    def close(self) -> None:
        """Close the kept-alive connections."""
        self._pool.clear()

    def publish_one(self, event_type: str, payload: dict[str, Any], key: str) -> tuple[str, float]:
        """One message: (its event id, the unix time the request was sent)."""
        body = json.dumps({"event_type": event_type, "payload": payload}).encode()
        sent = time.time()
        response = self._pool.request(
            "POST", self._base, body=body, headers={**self._auth, "Idempotency-Key": key}
        )
        if response.status != 202:
            raise RuntimeError(f"publish answered {response.status}: {response.data[:300]!r}")
        return str(json.loads(response.data)["id"]), sent

    def publish_batches(
        self, event_type: str, payload: Payload, *, events: int, batch: int, tag: str
    ) -> BatchRun:
        """``events`` messages in batches of ``batch``, from the client threads, as fast as
        the API answers."""
        run = BatchRun()
        requests = -(-events // batch)
        numbers = iter(range(requests))

        def client() -> None:
            while True:
                with self._lock:
                    n = next(numbers, None)
                if n is None:
                    return
                first = n * batch
                items = [
                    {
                        "event_type": event_type,
                        "payload": payload(i),
                        "idempotency_key": f"{tag}-{i}",
                    }
                    for i in range(first, min(first + batch, events))
                ]
                self._post_batch(run, items)

        run.started = time.time()
        with ThreadPoolExecutor(self.threads, thread_name_prefix="publish") as executor:
            for future in [executor.submit(client) for _ in range(self.threads)]:
                future.result()
        run.seconds = time.time() - run.started
        return run

    def _post_batch(self, run: BatchRun, items: list[dict[str, Any]]) -> None:
        body = json.dumps({"messages": items}).encode()
        sent = time.time()
        try:
            response = self._pool.request(
                "POST", self._base + "/batch", body=body, headers=self._auth
            )
        except urllib3.exceptions.HTTPError:
            with self._lock:
                run.failed_requests += 1
            return
        accepted: dict[str, float] = {}
        refused = 0
        if response.status == 200:
            for result in json.loads(response.data)["results"]:
                if "message" in result:
                    accepted[result["message"]["id"]] = sent
                else:
                    refused += 1
        with self._lock:
            run.statuses[str(response.status)] = run.statuses.get(str(response.status), 0) + 1
            run.published.update(accepted)
            run.refused += refused
            run.failed_requests += response.status != 200
