"""The chaos run's API publisher: what it plans to send, and how it counts what the API
answered (accepted, refused, server error, unanswered), per message, batches included."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chaos.api_load import (
    API_TYPE,
    HOSTILE,
    POISON_SLOW_TYPE,
    POISON_TYPE,
    ApiPublisher,
    message_text,
    plan,
)


def test_hostile_payloads_are_sent_verbatim() -> None:
    text = message_text(POISON_TYPE, "id-1", HOSTILE["nan"][0], None)
    assert '"payload": {"x": NaN}' in text
    parsed = json.loads(text)  # Python's reader takes NaN; a strict one must refuse it
    assert parsed["event_id"] == "id-1"
    text = message_text(POISON_TYPE, "id-2", *HOSTILE["timestamp_offset_16h"])
    assert json.loads(text)["timestamp"] == "2026-01-01T00:00:00+16:00"
    assert HOSTILE["deep_json"][0].count("{") == 3000
    with pytest.raises(RecursionError):
        json.loads(HOSTILE["deep_json"][0])
    assert "\\ud800" in HOSTILE["lone_surrogate"][0]


def test_the_plan_mixes_both_applications_over_the_whole_run() -> None:
    jobs = plan(
        run="r",
        token="t",
        api_app="A",
        poisoned_app="P",
        api_events=25,
        poisoned_events=20,
        hostile_rounds=2,
    )
    healthy = [j for j in jobs if j.items[0].application == "api"]
    poisoned = [j for j in jobs if j.items[0].application == "poisoned"]
    # 12 singles and 13 in batches of at most 10: 12 + 2 requests, every event once.
    assert len(healthy) == 14
    assert sorted(i.event_id for j in healthy for i in j.items) == sorted(
        f"r-api-{n}" for n in range(25)
    )
    assert all(j.persistent for j in healthy)
    assert not any(j.persistent for j in poisoned)
    assert sum(1 for j in healthy if j.batch) == 2
    assert all(API_TYPE in j.body.decode() for j in healthy)
    # 20 valid singles (a tenth for the hanging endpoint), then each class alone and in a
    # batch between two valid messages, twice.
    assert len(poisoned) == 20 + 2 * 2 * len(HOSTILE)
    assert sum(1 for j in poisoned if POISON_SLOW_TYPE in j.body.decode()) == 2
    kinds = [i.kind for j in poisoned if j.batch for i in j.items]
    assert kinds.count("valid") == 2 * 2 * len(HOSTILE)
    assert {k for k in kinds if k != "valid"} == set(HOSTILE)
    # Interleaved: the poisoned requests are spread, not all at the end.
    positions = [n for n, j in enumerate(jobs) if j.items[0].application == "poisoned"]
    assert positions[0] < len(jobs) // 4
    assert positions[-1] > 3 * len(jobs) // 4


class _ScriptedApi(BaseHTTPRequestHandler):
    """Answers as the management API would, by path: each healthy single fails twice with 503
    before it is accepted; a poisoned single is always a 500; a batch is answered per item
    (the middle one refused)."""

    calls: dict[str, int] = {}
    lock = threading.Lock()

    def do_POST(self) -> None:
        # Event ids by pattern: some bodies are too deep for Python's JSON reader.
        ids = re.findall(
            r'"event_id": "([^"]+)"', self.rfile.read(int(self.headers["Content-Length"])).decode()
        )
        with self.lock:
            self.calls[self.path] = self.calls.get(self.path, 0) + 1
            self.calls[ids[0]] = tries = self.calls.get(ids[0], 0) + 1
        if "/applications/X/" in self.path:  # not the documented answer
            self._answer(200, "<html>a proxy's page</html>")
        elif self.path.endswith("/batch"):
            results = [
                {"index": n, "status": 422, "error": {"title": "bad"}}
                if n == 1
                else {"index": n, "status": 202, "message": {"id": event_id}}
                for n, event_id in enumerate(ids)
            ]
            self._answer(200, {"results": results})
        elif "/applications/A/" in self.path:
            self._answer(503 if tries <= 2 else 202, {"id": ids[0]})
        else:
            self._answer(500, {"title": "Internal Server Error"})

    def _answer(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def scripted_api() -> Iterator[int]:
    _ScriptedApi.calls = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ScriptedApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_answers_are_counted_per_message_and_healthy_ones_are_sent_until_answered(
    scripted_api: int,
) -> None:
    jobs = plan(
        run="r",
        token="t",
        api_app="A",
        poisoned_app="P",
        api_events=12,  # 6 singles, one batch of 6
        poisoned_events=2,
        hostile_rounds=1,
    )
    publisher = ApiPublisher(scripted_api, jobs, seconds=0.5, threads=3, backoff=0.01)
    publisher.start().join(timeout=60)
    tally = publisher.tally
    # Each healthy single answered 503 twice, then 202: accepted, sent three times.
    assert tally.counts["api/valid"] == {"accepted": 11, "refused": 1}
    assert tally.accepted_ids["api"] == {f"r-api-{n}" for n in range(12)} - {"r-api-7"}
    assert _ScriptedApi.calls["/api/v1/applications/A/messages"] == 6 * 3
    # A poisoned single is tried three times at most, then counted as a server error.
    assert tally.counts["poisoned/nan"] == {"server_error": 1, "refused": 1}
    assert tally.counts["poisoned/valid"] == {"server_error": 2, "accepted": 2 * len(HOSTILE)}
    assert tally.totals("poisoned")["server_error"] == 2 + len(HOSTILE)
    assert _ScriptedApi.calls["/api/v1/applications/P/messages"] == 3 * (2 + len(HOSTILE))
    assert tally.line() == (
        f"chaos-api: api accepted=11 refused=1 server_errors=0 unanswered=0; poisoned "
        f"accepted={2 * len(HOSTILE)} refused={len(HOSTILE)} "
        f"server_errors={2 + len(HOSTILE)} unanswered=0"
    )
    assert "poisoned/nan 500" in tally.as_dict()["samples"]


def test_requests_nobody_answers_are_counted_unanswered() -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    jobs = plan(
        run="r",
        token="t",
        api_app="A",
        poisoned_app="P",
        api_events=0,
        poisoned_events=3,
        hostile_rounds=0,
    )
    publisher = ApiPublisher(port, jobs, seconds=0.1, threads=1, backoff=0.01)
    publisher.start().join(timeout=60)
    assert publisher.tally.counts["poisoned/valid"] == {"unanswered": 3}


def test_a_batch_answer_that_is_not_the_documented_one_counts_as_a_server_error(
    scripted_api: int,
) -> None:
    jobs = plan(
        run="r",
        token="t",
        api_app="X",
        poisoned_app="P",
        api_events=4,  # 2 singles, one batch of 2
        poisoned_events=0,
        hostile_rounds=0,
    )
    publisher = ApiPublisher(scripted_api, jobs, seconds=0.1, threads=1, backoff=0.01)
    publisher.start().join(timeout=60)
    assert publisher.tally.counts["api/valid"] == {"accepted": 2, "server_error": 2}
    assert publisher.tally.accepted_ids["api"] == {"r-api-0", "r-api-1"}
