"""Publishing through the management API while the chaos faults run.

Two applications publish over HTTP, paced over the whole load window:

* the **healthy API application**: ``chaos.api`` messages, half one per ``POST .../messages``
  (with an ``Idempotency-Key``), half ten per ``POST .../messages/batch``.  Every message
  carries its own event id (and most an ``ordering_key``, one of a few, so its order at
  the receivers is checked), so a request whose answer was lost (a killed API, a database
  restart) is sent again, unchanged, until it is answered 2xx or 4xx: a careful client's
  at-least-once publish;
* the **poisoned application**: valid ``chaos.poison`` messages (its receivers are the
  hostile ones) and, a few rounds of each, the hostile-input classes of :data:`HOSTILE`,
  alone and in a batch between two valid messages.  The API may refuse a hostile message
  (4xx) or accept it; both are counted, per class.  A 5xx is sent again at most twice
  (it may be the database restarting) and then counted as a server error.

The tally (:class:`Tally`) says, per application and class, how many messages were accepted,
refused, answered 5xx or never answered; the healthy application's accepted event ids are
what :mod:`chaos.checker` expects to see delivered.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import requests

API_TYPE = "chaos.api"
POISON_TYPE = "chaos.poison"
# Taken by every poisoned endpoint, the hanging one included; POISON_TYPE by all but that one.
# A hanging endpoint costs the engine one read timeout (and a breaker cool-down) per attempt,
# so it gets a tenth of the poisoned messages, or its tail would outlast the drain.
POISON_SLOW_TYPE = "chaos.poison.slow"
BATCH_SIZE = 10
ORDERING_KEYS = 16

# Hostile-input classes: (payload as raw JSON text, timestamp or None).  Raw text, because
# json.dumps can write neither a lone surrogate nor 1e400 nor a 3,000-level nesting.
_DEEP = 3000
HOSTILE: dict[str, tuple[str, str | None]] = {
    "timestamp_after_year_9999_in_utc": ('{"n": 1}', "9999-12-31T23:59:59-05:00"),
    "timestamp_before_year_1_in_utc": ('{"n": 1}', "0001-01-01T00:00:00+01:00"),
    "timestamp_offset_16h": ('{"n": 1}', "2026-01-01T00:00:00+16:00"),
    "timestamp_offset_23h59": ('{"n": 1}', "2026-01-01T00:00:00-23:59"),
    "deep_json": ('{"a":' * _DEEP + "1" + "}" * _DEEP, None),
    "nan": ('{"x": NaN}', None),
    "infinity": ('{"x": Infinity, "y": -Infinity}', None),
    "beyond_float_range": ('{"x": 1e400, "y": -1e400}', None),
    "nul_in_string_and_key": ('{"x": "a\\u0000b", "\\u0000": 1}', None),
    "lone_surrogate": ('{"x": "\\ud800", "\\udfff": 2}', None),
}


def message_text(
    event_type: str,
    event_id: str,
    payload: str,
    timestamp: str | None,
    ordering_key: str | None = None,
) -> str:
    """One message of the publish API as JSON text, with ``payload`` inserted verbatim."""
    parts = [
        f'"event_type": {json.dumps(event_type)}',
        f'"event_id": {json.dumps(event_id)}',
        f'"payload": {payload}',
    ]
    if timestamp is not None:
        parts.append(f'"timestamp": {json.dumps(timestamp)}')
    if ordering_key is not None:
        parts.append(f'"ordering_key": {json.dumps(ordering_key)}')
    return "{" + ", ".join(parts) + "}"


def _ordering_key(run: str, n: int) -> str | None:
    """Most healthy API messages carry one of :data:`ORDERING_KEYS` keys (the checker then
    checks their order at every receiver); every fifth has none (unordered, as before)."""
    return None if n % 5 == 4 else f"{run}-key-{n % ORDERING_KEYS}"


def _with_key(message: str, key: str) -> str:
    return message[:-1] + f', "idempotency_key": {json.dumps(key)}}}'


@dataclass(frozen=True)
class Item:
    """One message of a request: its event id, its application and its class."""

    event_id: str
    application: str  # "api" (healthy) or "poisoned"
    kind: str  # "valid" or a key of HOSTILE


@dataclass(frozen=True)
class Job:
    """One request to send: a single publish or a batch."""

    path: str
    body: bytes
    headers: dict[str, str]
    items: tuple[Item, ...]
    batch: bool
    persistent: bool  # send again until answered 2xx or 4xx (the healthy application)


@dataclass
class Tally:
    """Per (application, class): accepted, refused, server_error, unanswered; plus statuses."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)
    statuses: dict[str, Counter[str]] = field(default_factory=dict)
    accepted_ids: dict[str, set[str]] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)  # first answer per class and status
    requests: Counter[str] = field(default_factory=Counter)  # answers by request kind
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, item: Item, outcome: str, status: int, sample: str = "") -> None:
        """Record what became of one message."""
        key = f"{item.application}/{item.kind}"
        with self.lock:
            self.counts.setdefault(key, Counter())[outcome] += 1
            self.statuses.setdefault(key, Counter())[str(status)] += 1
            if outcome == "accepted":
                self.accepted_ids.setdefault(item.application, set()).add(item.event_id)
            if sample and f"{key} {status}" not in self.samples:
                self.samples[f"{key} {status}"] = sample[:300]

    def totals(self, application: str) -> Counter[str]:
        """Outcomes of one application's messages, all classes together."""
        total: Counter[str] = Counter()
        for key, counts in self.counts.items():
            if key.split("/", 1)[0] == application:
                total.update(counts)
        return total

    def line(self) -> str:
        """One line for the run's output."""
        parts = []
        for application in ("api", "poisoned"):
            t = self.totals(application)
            parts.append(
                f"{application} accepted={t['accepted']} refused={t['refused']} "
                f"server_errors={t['server_error']} unanswered={t['unanswered']}"
            )
        return "chaos-api: " + "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """For the JSON result file."""
        return {
            "messages": {key: dict(c) for key, c in sorted(self.counts.items())},
            "statuses": {key: dict(c) for key, c in sorted(self.statuses.items())},
            "requests": dict(self.requests),
            "samples": dict(sorted(self.samples.items())),
        }


def _json_headers(token: str, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


def plan(
    *,
    run: str,
    token: str,
    api_app: str,
    poisoned_app: str,
    api_events: int,
    poisoned_events: int,
    hostile_rounds: int,
) -> list[Job]:
    """Every request of the run, interleaved: healthy singles and batches, valid poisoned
    messages, and ``hostile_rounds`` rounds of each hostile class alone and in a batch."""
    healthy: list[Job] = []
    single_path = f"/api/v1/applications/{api_app}/messages"
    batch_path = single_path + "/batch"
    singles = api_events // 2
    for n in range(singles):
        event_id = f"{run}-api-{n}"
        payload = json.dumps({"n": n, "via": "single"})
        text = message_text(API_TYPE, event_id, payload, None, _ordering_key(run, n))
        item = Item(event_id, "api", "valid")
        healthy.append(
            Job(single_path, text.encode(), _json_headers(token, event_id), (item,), False, True)
        )
    n = singles
    while n < api_events:
        items: list[Item] = []
        texts: list[str] = []
        for _ in range(min(BATCH_SIZE, api_events - n)):
            event_id = f"{run}-api-{n}"
            payload = json.dumps({"n": n, "via": "batch"})
            text = message_text(API_TYPE, event_id, payload, None, _ordering_key(run, n))
            texts.append(_with_key(text, event_id))
            items.append(Item(event_id, "api", "valid"))
            n += 1
        body = ('{"messages": [' + ", ".join(texts) + "]}").encode()
        healthy.append(Job(batch_path, body, _json_headers(token), tuple(items), True, True))

    poisoned: list[Job] = []
    p_single = f"/api/v1/applications/{poisoned_app}/messages"
    p_batch = p_single + "/batch"
    counter = iter(range(10**9))

    def valid(event_type: str = POISON_TYPE) -> tuple[Item, str]:
        event_id = f"{run}-poison-{next(counter)}"
        text = message_text(event_type, event_id, json.dumps({"ok": True}), None)
        return Item(event_id, "poisoned", "valid"), text

    for n in range(poisoned_events):
        item, text = valid(POISON_SLOW_TYPE if n % 10 == 0 else POISON_TYPE)
        poisoned.append(
            Job(p_single, text.encode(), _json_headers(token, item.event_id), (item,), False, False)
        )
    for _ in range(hostile_rounds):
        for kind, (payload, timestamp) in HOSTILE.items():
            event_id = f"{run}-poison-{next(counter)}"
            item = Item(event_id, "poisoned", kind)
            text = message_text(POISON_TYPE, event_id, payload, timestamp)
            poisoned.append(
                Job(p_single, text.encode(), _json_headers(token, event_id), (item,), False, False)
            )
            before, before_text = valid()
            after, after_text = valid()
            event_id = f"{run}-poison-{next(counter)}"
            bad = Item(event_id, "poisoned", kind)
            bad_text = message_text(POISON_TYPE, event_id, payload, timestamp)
            texts = [
                _with_key(t, i.event_id)
                for t, i in ((before_text, before), (bad_text, bad), (after_text, after))
            ]
            body = ('{"messages": [' + ", ".join(texts) + "]}").encode()
            poisoned.append(
                Job(p_batch, body, _json_headers(token), (before, bad, after), True, False)
            )
    return list(_interleave(healthy, poisoned))


def _interleave(first: list[Job], second: list[Job]) -> Iterator[Job]:
    """Both lists spread evenly over one sequence, each in its own order."""
    total = len(first) + len(second)
    i = j = 0
    for _ in range(total):
        # Take from the list that is further behind its share.
        if j >= len(second) or (i < len(first) and i * len(second) <= j * len(first)):
            yield first[i]
            i += 1
        else:
            yield second[j]
            j += 1


class ApiPublisher:
    """Sends the planned requests to ``127.0.0.1:port`` over ``seconds``, from ``threads``
    threads, and tallies what became of each message."""

    def __init__(
        self,
        port: int,
        jobs: list[Job],
        *,
        seconds: float,
        threads: int = 4,
        give_up: float = 120,
        backoff: float = 0.25,
    ) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.jobs = jobs
        self.seconds = seconds
        self.tally = Tally()
        self.started = 0.0
        self.fed_at = 0.0  # when the last request was handed to a sender
        self.finished = 0.0
        self._threads = threads
        self._give_up = give_up  # seconds after the load window a persistent job stops trying
        self._backoff = backoff  # the pause before a second try; it grows with each try
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._feeder: threading.Thread | None = None

    def start(self) -> ApiPublisher:
        """Start feeding and sending in the background."""
        self.started = time.monotonic()
        self._workers = [
            threading.Thread(target=self._work, name=f"chaos-api-{i}", daemon=True)
            for i in range(self._threads)
        ]
        for worker in self._workers:
            worker.start()
        self._feeder = threading.Thread(target=self._feed, name="chaos-api-feed", daemon=True)
        self._feeder.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        """Wait until every request was answered or given up."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in [self._feeder, *self._workers]:
            if thread is not None:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        self.finished = time.monotonic()

    def stop(self) -> None:
        """Stop early (the run is failing)."""
        self._stop.set()

    def _feed(self) -> None:
        interval = self.seconds / max(len(self.jobs), 1)
        for index, job in enumerate(self.jobs):
            if self._stop.wait(max(0.0, self.started + index * interval - time.monotonic())):
                break
            self._queue.put(job)
            self.fed_at = time.monotonic()
        for _ in self._workers:
            self._queue.put(None)

    def _work(self) -> None:
        with requests.Session() as http:
            while (job := self._queue.get()) is not None:
                try:
                    self._send(http, job)
                except Exception as exc:  # noqa: BLE001 - counted; the other requests go on
                    for item in job.items:
                        self.tally.add(item, "unanswered", 0, f"{type(exc).__name__}: {exc}")

    def _send(self, http: requests.Session, job: Job) -> None:
        give_up = self.started + self.seconds + self._give_up
        tries = 0
        while True:
            tries += 1
            try:
                response = http.post(self.base + job.path, data=job.body, headers=job.headers,
                                     timeout=(2, 30))  # fmt: skip
            except requests.RequestException as exc:
                status, text, answer = 0, f"{type(exc).__name__}: {exc}", None
            else:
                status, text = response.status_code, response.text
                answer = response
            if 0 < status < 500:
                break
            if self._stop.is_set() or time.monotonic() > give_up:
                break
            if not job.persistent and tries >= 3:
                break
            time.sleep(min(self._backoff * tries, 2.0))
        kind = "batch" if job.batch else "single"
        self.tally.requests[f"{kind} {status}"] += 1
        if answer is None or status >= 500:
            outcome = "unanswered" if answer is None else "server_error"
            for item in job.items:
                self.tally.add(item, outcome, status, text)
            return
        if not job.batch or status >= 300:
            outcome = "accepted" if status < 300 else "refused"
            for item in job.items:
                self.tally.add(item, outcome, status, "" if outcome == "accepted" else text)
            return
        try:
            results = {r.get("index"): r for r in answer.json().get("results", [])}
        except (ValueError, AttributeError, TypeError):  # not the documented batch answer
            results = {}
        for index, item in enumerate(job.items):
            result = results.get(index, {})
            item_status = int(result.get("status", 0))
            if 200 <= item_status < 300:
                self.tally.add(item, "accepted", item_status)
            elif 400 <= item_status < 500:
                self.tally.add(item, "refused", item_status, json.dumps(result.get("error")))
            else:
                self.tally.add(item, "server_error", item_status, json.dumps(result))
