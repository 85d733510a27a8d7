"""The flow-control scenario (``BENCH_ONLY=flow``): adaptive limits against receivers that
push back, beside healthy endpoints of another application.

Two receivers of this process's own (a threaded HTTP server on 127.0.0.1; the fast bench
receiver has no shared state across its processes to keep a rate in):

* ``/limited/...`` answers 429 above a hidden rate (``BENCH_FLOW_RATE``, 200 per second by
  default: a token bucket of one second's worth), 200 below; the endpoint has no
  ``rate_limit`` of its own, so the rate it ends up with is all flow control's;
* ``/slow/...`` answers after 10 ms times the requests it is serving at that moment
  (latency grows with load); its endpoint may have 8 batches in flight, and learnt its
  latency from a few deliveries at low load first.

Healthy endpoints of another application (the fast receiver) run a windowed drain alone,
then the same beside the two.  The scenario ends with one line (see :func:`flow_line`)::

    bench-flow: converge_s=N refused_after=R latency_converge_s=N healthy_per_s=N
        healthy_alone_per_s=N  (one line)

* ``converge_s``: seconds from the release to the end of the last second in which 5 % or
  more of the limited endpoint's requests were refused (``n/a``: the window's last);
* ``refused_after``: the share of its requests refused (429) from then to the window's end
  (every second of it under 5 % by definition; this is the whole stretch's share);
* ``latency_converge_s``: seconds to the first second in which the slow receiver served
  at most 3 requests at once (median over the second's requests; 8 at the start);
* ``healthy_per_s`` / ``healthy_alone_per_s``: the healthy endpoints' deliveries per second
  beside the two, and alone.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench import seed
from bench.scenarios import Bench, drain
from bench.stack import free_port

LIMITED = "bench.flow.limited"
SLOW = "bench.flow.slow"
HEALTHY = "bench.flow.healthy"
# The slow receiver's answer time per request it serves at once.
SLOW_MS_PER_REQUEST = 10.0
CONVERGED_REFUSED = 0.05


@dataclass
class FlowReceiver:
    """The two receivers, and a record of every request: (arrival, kind, status, served)."""

    rate: float
    records: list[tuple[float, str, int, int]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> FlowReceiver:
        lock = threading.Lock()
        bucket = [self.rate, time.monotonic()]
        serving = [0]
        receiver = self

        def limited() -> int:
            with lock:
                now = time.monotonic()
                bucket[0] = min(receiver.rate, bucket[0] + (now - bucket[1]) * receiver.rate)
                bucket[1] = now
                if bucket[0] < 1:
                    return 429
                bucket[0] -= 1
                return 200

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                arrived = time.time()
                if self.path.startswith("/slow/"):
                    with lock:
                        serving[0] += 1
                        load = serving[0]
                    time.sleep(SLOW_MS_PER_REQUEST * load / 1000)
                    with lock:
                        serving[0] -= 1
                    kind, status = "slow", 200
                else:
                    kind, status, load = "limited", limited(), 0
                receiver.records.append((arrived, kind, status, load))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server_class = type(
            "FlowServer",
            (ThreadingHTTPServer,),
            {"daemon_threads": True, "request_queue_size": 128},
        )
        self.server = server_class(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def scenario_flow(bench: Bench) -> dict[str, Any]:
    """See the module doc."""
    cfg = bench.config
    seconds = float(os.environ.get("BENCH_FLOW_SECONDS", max(15.0 * cfg.scale, 10.0)))
    rate = float(os.environ.get("BENCH_FLOW_RATE", "200"))
    receiver = FlowReceiver(rate).start()
    try:
        return _run(bench, receiver, seconds, rate)
    finally:
        receiver.stop()


def _run(bench: Bench, receiver: FlowReceiver, seconds: float, rate: float) -> dict[str, Any]:
    engine = bench.engine
    seed.ensure_event_types(engine, [LIMITED, SLOW, HEALTHY])
    other = seed.create_application(engine, "flow-healthy")
    healthy = seed.create_endpoints(
        engine,
        other,
        bench.receiver.url(""),
        bench.receiver.seed,
        [(f"/r/ok/flow-{i:03d}", [HEALTHY]) for i in range(min(bench.config.endpoints, 20))],
    )
    events = max(10, int(1500 * seconds / len(healthy)))
    alone = drain(bench, HEALTHY, healthy, events, window=min(seconds, 8.0))

    app = bench.application_id
    limited = seed.create_endpoints(
        engine, app, receiver.url, bench.receiver.seed, [("/limited/1", [LIMITED])]
    )
    slow = seed.create_endpoints(
        engine, app, receiver.url, bench.receiver.seed, [("/slow/1", [SLOW])], max_in_flight=8
    )
    # The slow receiver's latency at low load, learnt as an endpoint's history would be.
    for n in range(1, 4):
        seed.preload(engine, app, SLOW, 1)
        seed.release(engine, SLOW)
        _wait_delivered(engine, SLOW, n)
    receiver.records.clear()

    seed.preload(engine, app, LIMITED, int(rate * seconds * 1.5))
    seed.preload(engine, app, SLOW, int(seconds * 1000 / SLOW_MS_PER_REQUEST))
    seed.preload(engine, app, HEALTHY, events)
    seed.vacuum_analyze(engine)
    started = seed.release(engine, LIMITED)
    seed.release(engine, SLOW)
    seed.release(engine, HEALTHY)
    time.sleep(max(seconds - (seed.db_clock(engine) - started), 0.0))
    healthy_ids = [row.id for row in healthy]
    beside = seed.delivered_until(engine, HEALTHY, started + seconds, healthy_ids)
    for event_type in (LIMITED, SLOW, HEALTHY):
        seed.cancel_open(engine, event_type)
    time.sleep(1.0)
    seed.retire(engine, [row.id for row in healthy + limited + slow])
    records = [r for r in receiver.records if started <= r[0] < started + seconds]
    return {
        "seconds": seconds,
        "hidden_rate": rate,
        **_limited(records, started, seconds, rate),
        **_slow(records, started, seconds),
        "healthy_per_s": round(beside / seconds, 1),
        "healthy_alone_per_s": alone["deliveries_per_s"],
    }


def _wait_delivered(engine: Any, event_type: str, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if seed.states(engine, event_type).get("delivered", 0) >= count:
            return
        time.sleep(0.1)


def _limited(
    records: Sequence[tuple[float, str, int, int]], started: float, seconds: float, rate: float
) -> dict[str, Any]:
    per_second: defaultdict[int, list[int]] = defaultdict(lambda: [0, 0])
    for at, kind, status, _ in records:
        if kind == "limited":
            per_second[int(at - started)][status == 429] += 1
    windows = [per_second[s] for s in range(int(seconds))]
    # Converged after the last second with 5 % or more refused (0: never refused so much).
    converged = max(
        (s + 1 for s, (a, r) in enumerate(windows) if r and r / (a + r) >= CONVERGED_REFUSED),
        default=0,
    )
    after = windows[converged:]
    accepted_after = sum(a for a, _ in after)
    refused_after = sum(r for _, r in after)
    total_after = accepted_after + refused_after
    refused = sum(r for _, r in windows)
    total = refused + sum(a for a, _ in windows)
    return {
        "converge_s": converged if converged < int(seconds) else None,
        "refused_after": round(refused_after / total_after, 4) if total_after else None,
        "refused_overall": round(refused / total, 4) if total else None,
        "accepted_after_per_s": round(accepted_after / max(len(after), 1), 1),
        "limited_per_second": windows,
    }


def _slow(
    records: Sequence[tuple[float, str, int, int]], started: float, seconds: float
) -> dict[str, Any]:
    per_second: defaultdict[int, list[int]] = defaultdict(list)
    for at, kind, _, load in records:
        if kind == "slow":
            per_second[int(at - started)].append(load)
    converged = None
    medians = []
    for second in range(int(seconds)):
        loads = per_second[second]
        median = statistics.median(loads) if loads else None
        medians.append(median)
        if converged is None and median is not None and median <= 3:
            converged = second + 1
    return {"latency_converge_s": converged, "slow_concurrency_per_second": medians}


def flow_line(results: dict[str, Any]) -> str:
    """The scenario's one line (``n/a`` for what it could not measure)."""
    flow = results.get("flow") or {}

    def shown(key: str) -> str:
        value = flow.get(key)
        return "n/a" if value is None else f"{value:g}"

    keys = ("converge_s", "refused_after", "latency_converge_s", "healthy_per_s")
    parts = [f"{key}={shown(key)}" for key in (*keys, "healthy_alone_per_s")]
    return "bench-flow: " + " ".join(parts)
