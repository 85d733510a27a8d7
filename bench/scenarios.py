"""The benchmark's scenarios.  Each takes the :class:`Bench` context and returns a JSON-able
dict of what it measured (see docs/benchmarks.md for what each one means)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from kombu import Connection, Exchange

from bench import seed
from bench.load import json_request, run_load
from bench.publish import ApiPublisher
from bench.raw import send_raw
from bench.receiver import RunningReceiver, endpoint_path
from bench.stack import PYTHON, Managed, Stack, celery_bin, free_port
from webhooks_core.messages.envelope import Envelope

ADMIN_TOKEN = "bench-admin-token-0123456789"  # noqa: S105 - the run's own throwaway token


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True)
class BenchConfig:
    """Scenario sizes: the issue's by default, all scaled by ``BENCH_SCALE``."""

    scale: float = 1.0
    endpoints: int = 50
    throughput_seconds: float = 30.0
    raw_seconds: float = 10.0
    latency_rate: int = 1000
    latency_seconds: float = 20.0
    fanout_endpoints: int = 10_000
    backlog: int = 100_000
    ingest_seconds: float = 10.0
    ingest_connections: int = 32
    ingest_batch: int = 100
    e2e_events: int = 600
    e2e_batch: int = 20
    e2e_clients: int = 4
    auth_endpoints: int = 20
    auth_deliveries: int = 3000
    workers: int = 2
    concurrency: int = 16
    pool: str = "threads"
    receiver_processes: int = 2
    max_wait_seconds: float = 300.0
    profile: bool = False
    log_level: str = "WARNING"

    @classmethod
    def from_env(cls) -> BenchConfig:
        """``BENCH_SCALE`` (0 < s <= 1 shrinks every size) and one variable per knob."""
        s = _env_float("BENCH_SCALE", 1.0)
        return cls(
            scale=s,
            endpoints=_env_int("BENCH_ENDPOINTS", 50),
            throughput_seconds=_env_float("BENCH_THROUGHPUT_SECONDS", max(30.0 * s, 3.0)),
            raw_seconds=_env_float("BENCH_RAW_SECONDS", max(10.0 * s, 2.0)),
            latency_rate=_env_int("BENCH_LATENCY_RATE", 1000),
            latency_seconds=_env_float("BENCH_LATENCY_SECONDS", max(20.0 * s, 3.0)),
            fanout_endpoints=_env_int("BENCH_FANOUT_ENDPOINTS", max(int(10_000 * s), 100)),
            backlog=_env_int("BENCH_BACKLOG", max(int(100_000 * s), 1000)),
            ingest_seconds=_env_float("BENCH_INGEST_SECONDS", max(10.0 * s, 2.0)),
            ingest_connections=_env_int("BENCH_INGEST_CONNECTIONS", 32),
            ingest_batch=_env_int("BENCH_INGEST_BATCH", 100),
            e2e_events=_env_int("BENCH_E2E_EVENTS", max(int(600 * s), 40)),
            e2e_batch=_env_int("BENCH_E2E_BATCH", 20),
            e2e_clients=_env_int("BENCH_E2E_CLIENTS", 4),
            auth_endpoints=_env_int("BENCH_AUTH_ENDPOINTS", 20),
            auth_deliveries=_env_int("BENCH_AUTH_DELIVERIES", max(int(3000 * s), 300)),
            workers=_env_int("BENCH_WORKERS", 2),
            concurrency=_env_int("BENCH_CONCURRENCY", 16),
            pool=os.environ.get("BENCH_POOL", "threads"),
            receiver_processes=_env_int("BENCH_RECEIVER_PROCESSES", 2),
            max_wait_seconds=_env_float("BENCH_MAX_WAIT_SECONDS", 300.0),
            profile=os.environ.get("BENCH_PROFILE", "0") not in {"", "0", "false", "no"},
            log_level=os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        )


@dataclass
class Bench:
    """What every scenario shares."""

    config: BenchConfig
    stack: Stack
    env: dict[str, str]
    engine: Any  # sqlalchemy Engine
    receiver: RunningReceiver
    application_id: uuid.UUID
    out_dir: Path
    results: dict[str, Any] = field(default_factory=dict)
    api_port: int | None = None

    def endpoints(
        self, prefix: str, event_type: str, count: int, spec: str = "ok"
    ) -> list[seed.EndpointRow]:
        """``count`` endpoints with behaviour ``spec`` subscribed to ``event_type``."""
        seed.ensure_event_types(self.engine, [event_type])
        paths = [(endpoint_path(spec, f"{prefix}-{i:05d}"), [event_type]) for i in range(count)]
        return seed.create_endpoints(
            self.engine, self.application_id, self.receiver.url(""), self.receiver.seed, paths
        )

    def workers(self) -> list[Managed]:
        """The running delivery worker processes."""
        return [m for name, m in self.stack.processes.items() if name.startswith("worker")]

    def memory(self) -> dict[str, float]:
        """Resident memory in MiB of the scheduler and of all workers (pools included)."""
        mib = 1024 * 1024
        return {
            "scheduler_mib": round(self.stack.processes["scheduler"].rss_bytes() / mib, 1),
            "workers_mib": round(sum(w.rss_bytes() for w in self.workers()) / mib, 1),
        }


# --- the engine's processes -------------------------------------------------------------


def start_engine(bench: Bench) -> None:
    """The scheduler and the delivery workers (which also run broker ingestion)."""
    cfg, env = bench.config, bench.env
    scheduler_env = {**env, "WEBHOOKS_METRICS_PORT": str(free_port())}
    bench.stack.start(
        "scheduler",
        [PYTHON, "-m", "delivery.scheduler"],
        scheduler_env,
        ready_marker=None,
    )
    for index in range(cfg.workers):
        bench.stack.start(
            f"worker{index}",
            [
                celery_bin(),
                "-A",
                "delivery.worker",
                "worker",
                "--pool",
                cfg.pool,
                "--concurrency",
                str(cfg.concurrency),
                "-Q",
                "webhooks.deliver",
                "-n",
                f"bench{index}@%h",
                "--without-mingle",
                "--without-gossip",
                "-l",
                cfg.log_level,
            ],
            env,
        )
    wait_for_consumers(bench.env["WEBHOOKS_BROKER_URL"], "webhooks.deliver", cfg.workers)


def ensure_api(bench: Bench) -> int:
    """The management API (gunicorn, 2 threaded workers), started once; its port."""
    if bench.api_port is not None and bench.stack.processes["api"].alive():
        return bench.api_port
    port = free_port()
    api_env = {
        **bench.env,
        "PROMETHEUS_MULTIPROC_DIR": str(_fresh_dir(bench.out_dir / "metrics-api")),
    }
    bench.stack.start(
        "api",
        [
            str(Path(PYTHON).parent / "gunicorn"),
            "-c",
            "registration-service/gunicorn.conf.py",
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
        ],
        api_env,
        ready_url=f"http://127.0.0.1:{port}/health",
    )
    bench.api_port = port
    return port


def stop_api(bench: Bench) -> None:
    """Stop the management API if it runs."""
    if bench.api_port is not None:
        bench.stack.stop_one("api")
        bench.api_port = None


def wait_for_consumers(broker_url: str, queue: str, count: int, timeout: float = 90.0) -> None:
    """Wait until ``count`` consumers listen on ``queue`` (the workers are ready)."""
    vhost = broker_url.rsplit("/", 1)[1]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listing = subprocess.run(
            ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "consumers"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        for line in listing.splitlines():
            parts = line.split()
            ready = len(parts) == 2 and parts[0] == queue and parts[1].isdigit()
            if ready and int(parts[1]) >= count:
                return
        time.sleep(0.5)
    raise TimeoutError(f"fewer than {count} consumers on {queue} after {timeout} s")


# --- helpers ----------------------------------------------------------------------------


def _wait(
    until: Callable[[], bool], timeout: float, poll: float = 0.25, what: str = "condition"
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until():
            return True
        time.sleep(poll)
    if what:
        print(f"bench: gave up waiting for {what} after {timeout:.0f} s", flush=True)
    return False


def _open(states: dict[str, int]) -> int:
    return sum(states.get(s, 0) for s in ("pending", "sending", "retrying"))


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def drain(
    bench: Bench,
    event_type: str,
    rows: Sequence[seed.EndpointRow],
    events: int,
    *,
    measured: Sequence[seed.EndpointRow] | None = None,
    profile_as: str | None = None,
    window: float | None = None,
) -> dict[str, Any]:
    """Preload ``events`` x endpoints held deliveries, release them, and measure delivered
    rows per second from the release to the last durable write of the ``measured``
    endpoints (default: all).

    With ``window`` the measurement stops after that many seconds even if deliveries are
    left (they are cancelled), so a generous preload gives exactly ``window`` seconds of
    load; the rate is then the rows delivered within the window divided by the window.
    """
    engine = bench.engine
    measured = rows if measured is None else measured
    measured_ids = [row.id for row in measured]
    before = seed.states(engine, event_type, measured_ids).get("delivered", 0)
    seed.preload(engine, bench.application_id, event_type, events)
    seed.vacuum_analyze(engine)  # statistics that know the preload (no autovacuum here)
    expected = events * len(measured)
    profiler = _start_profiles(bench, profile_as) if profile_as else []
    cpu_before = cpu_snapshot(bench)
    started = seed.release(engine, event_type)
    timeout = min(bench.config.max_wait_seconds, 60 + expected / 50)
    if window is not None:
        timeout = window - (seed.db_clock(engine) - started)
    finished = _wait(
        lambda: _open(seed.states(engine, event_type, measured_ids)) == 0,
        timeout,
        poll=0.25,
        what=f"{expected} {event_type} deliveries" if window is None else "",
    )
    cpu_after = cpu_snapshot(bench)
    cpu = cpu_cores(cpu_before, cpu_after)
    _stop_profiles(profiler)
    if finished or window is None:
        states = seed.states(engine, event_type, measured_ids)
        delivered = states.get("delivered", 0) - before
        last = seed.last_write(engine, event_type, measured_ids)
        seconds = max(last - started, 1e-6)
    else:
        delivered = seed.delivered_until(engine, event_type, started + window, measured_ids)
        delivered -= before
        seconds = window
        seed.cancel_open(engine, event_type)
        time.sleep(1.0)  # batches in flight finish (their rows are cancelled, not recorded)
        states = seed.states(engine, event_type, measured_ids)
    return {
        "events": events,
        "deliveries": expected,
        "delivered": delivered,
        "finished": finished,
        "windowed": window is not None and not finished,
        "states": states,
        "seconds": round(seconds, 3),
        "deliveries_per_s": round(delivered / seconds, 1),
        "cpu_cores": cpu,
        "cpu_ms_per_delivery": cpu_ms_per(cpu_before, cpu_after, delivered),
    }


# --- profiles ---------------------------------------------------------------------------


def _start_profiles(
    bench: Bench, label: str, targets: dict[str, int] | None = None
) -> list[subprocess.Popen[bytes]]:
    """py-spy on the first worker (with its pool) and the scheduler (or ``targets``), while
    a scenario runs."""
    py_spy = Path(PYTHON).parent / "py-spy"
    if not py_spy.exists():
        return []
    out = bench.out_dir / "profiles"
    out.mkdir(parents=True, exist_ok=True)
    if targets is None:
        targets = {
            "worker": bench.workers()[0].pid,
            "scheduler": bench.stack.processes["scheduler"].pid,
        }
    started = []
    for name, pid in targets.items():
        started.append(
            subprocess.Popen(
                [
                    str(py_spy),
                    "record",
                    "--pid",
                    str(pid),
                    "--subprocesses",
                    "--rate",
                    os.environ.get("BENCH_PROFILE_RATE", "50"),
                    "--format",
                    "raw",
                    "--output",
                    str(out / f"{label}-{name}.txt"),
                    "--nonblocking",
                    # BENCH_PROFILE=gil: only threads holding the GIL, i.e. Python's CPU time.
                    *(["--gil"] if os.environ.get("BENCH_PROFILE") == "gil" else []),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return started


def _stop_profiles(profilers: list[subprocess.Popen[bytes]]) -> None:
    import signal

    for proc in profilers:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    for proc in profilers:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- scenarios --------------------------------------------------------------------------


def scenario_raw(bench: Bench) -> dict[str, Any]:
    """The plain single-process sender (8 threads sharing one urllib3 PoolManager) against the
    throughput endpoints' paths, with its CPU per request; then what
    the receiver itself can take (16 connections of the uvloop load generator, 3 s), to
    show it is not what limits the platform."""
    event_type = "bench.throughput"
    paths = [endpoint_path("ok", f"tp-{i:05d}") for i in range(bench.config.endpoints)]
    bodies = [seed.sample_body(event_type, n) for n in range(100)]
    result = send_raw(
        bench.receiver.url(""),
        paths,
        bodies,
        seed=bench.receiver.seed,
        seconds=bench.config.raw_seconds,
    )
    headers = {"Content-Type": "application/json", "webhook-timestamp": "0"}

    def unsigned(n: int) -> tuple[str, str, dict[str, str], bytes]:
        return "POST", paths[n % len(paths)], {**headers, "webhook-id": f"cap_{n}"}, bodies[0]

    capacity = run_load(bench.receiver.port, unsigned, connections=16, seconds=3.0)
    return {
        "sender": f"urllib3.PoolManager shared by {result.threads} threads, one process",
        "threads": result.threads,
        "sent": result.sent,
        "ok": result.ok,
        "errors": result.errors,
        "seconds": round(result.seconds, 3),
        "raw_per_s": round(result.per_second, 1),
        "cpu_seconds": round(result.cpu_seconds, 3),
        "cpu_ms_per_request": round(result.cpu_ms_per_request, 3),
        "receiver_capacity_per_s": round(capacity.per_second, 1),
    }


def scenario_throughput(bench: Bench) -> dict[str, Any]:
    """50 endpoints on one type: a calibration round, then enough events for the set time."""
    cfg = bench.config
    event_type = "bench.throughput"
    rows = bench.endpoints("tp", event_type, cfg.endpoints)
    calibration = drain(bench, event_type, rows, max(2000 // cfg.endpoints, 10))
    # Three times what the calibration rate needs, cut at the set time, so the load lasts
    # that long; a (warmed-up) engine that still drains it early gets a second, larger round.
    rate = max(calibration["deliveries_per_s"], 100.0)
    short_rounds = []
    for factor in (3.0, 2.0):
        events = max(10, math.ceil(rate * cfg.throughput_seconds * factor / cfg.endpoints))
        main = drain(
            bench,
            event_type,
            rows,
            events,
            profile_as="throughput" if cfg.profile else None,
            window=cfg.throughput_seconds,
        )
        if main["windowed"]:
            break
        short_rounds.append(main)
        rate = max(main["deliveries_per_s"], rate)
    bench.results["_throughput_rows"] = rows
    return {
        "endpoints": cfg.endpoints,
        "calibration": calibration,
        "rounds_drained_before_the_window": short_rounds,
        **main,
        "receiver": bench.receiver.stats(),
        "memory_after": bench.memory(),
    }


def _publisher(bench: Bench) -> tuple[Connection, Any]:
    connection = Connection(
        bench.env["WEBHOOKS_BROKER_URL"], transport_options={"confirm_publish": True}
    )
    producer = connection.Producer(
        exchange=Exchange("webhooks.events", type="topic", durable=True), serializer=None
    )
    return connection, producer


def _publish(producer: Any, envelope: Envelope) -> None:
    producer.publish(
        envelope.to_json(),
        routing_key=envelope.type,
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=2,
    )


def _first_receipts(bench: Bench, event_ids: set[str]) -> dict[tuple[str, str], float]:
    first: dict[tuple[str, str], float] = {}
    for receipt in bench.receiver.receipts():
        if receipt.accepted and receipt.webhook_id in event_ids:
            key = (receipt.webhook_id, receipt.path)
            if key not in first or receipt.arrived < first[key]:
                first[key] = receipt.arrived
    return first


def scenario_e2e(bench: Bench) -> dict[str, Any]:
    """End to end: events published through the HTTP API's batch endpoint by several client
    threads, stored and fanned out to the throughput scenario's number of endpoints, delivered;
    receipts counted at the receiver.  The rate is receipts over the time from the first
    publish to the last receipt (the whole run, not a steady window: it includes the ramp-up
    and the tail)."""
    cfg = bench.config
    event_type = "bench.e2e"
    rows = bench.endpoints("e2e", event_type, cfg.endpoints)
    seed.ensure_event_types(bench.engine, ["bench.e2e.warm"])
    seed.vacuum_analyze(bench.engine)
    publisher = ApiPublisher(ensure_api(bench), bench.application_id, ADMIN_TOKEN, cfg.e2e_clients)
    tag = uuid.uuid4().hex[:8]
    # Warm each client's connection and the API's workers on a type nobody subscribes to.
    publisher.publish_batches(
        "bench.e2e.warm", seed.sample_payload, events=cfg.e2e_clients * 2, batch=1, tag=f"{tag}w"
    )
    ok_before = bench.receiver.stats()["ok"]
    profilers = _start_profiles(bench, "e2e") if cfg.profile else []
    cpu_before = cpu_snapshot(bench)
    run = publisher.publish_batches(
        event_type, seed.sample_payload, events=cfg.e2e_events, batch=cfg.e2e_batch, tag=tag
    )
    publisher.close()
    if run.refused or run.failed_requests:
        print(f"bench: e2e: {run.refused} messages refused, {run.failed_requests} requests failed")
    expected = len(run.published) * len(rows)
    finished = _wait(
        lambda: bench.receiver.stats()["ok"] - ok_before >= expected,
        min(cfg.max_wait_seconds, 60 + expected / 50),
        poll=0.1,
        what="end-to-end receipts",
    )
    cpu_after = cpu_snapshot(bench)
    _stop_profiles(profilers)
    first = _first_receipts(bench, set(run.published))
    last_receipt = max(first.values(), default=run.started)
    seconds = max(last_receipt - run.started, 1e-6)
    states = seed.states(bench.engine, event_type)
    seed.retire(bench.engine, [row.id for row in rows])
    return {
        "endpoints": len(rows),
        "clients": cfg.e2e_clients,
        "batch_size": cfg.e2e_batch,
        "events": cfg.e2e_events,
        "accepted": len(run.published),
        "refused": run.refused,
        "failed_requests": run.failed_requests,
        "statuses": run.statuses,
        "publish_seconds": round(run.seconds, 3),
        "events_published_per_s": round(len(run.published) / run.seconds, 1)
        if run.seconds
        else 0.0,
        "deliveries": expected,
        "received": len(first),
        "finished": finished,
        "states": states,
        "rate_window": "first publish to last receipt",
        "seconds": round(seconds, 3),
        "e2e_per_s": round(len(first) / seconds, 1),
        "cpu_cores": cpu_cores(cpu_before, cpu_after),
        "cpu_ms_per_delivery": cpu_ms_per(cpu_before, cpu_after, len(first)),
    }


def scenario_latency(bench: Bench) -> dict[str, Any]:
    """Publish through the HTTP API (one message per request) at a fixed rate of deliveries
    per second; measure publish-to-receipt per delivery, from the moment the publish request
    is sent to the receiver's arrival time.  The set rate (1,000/s) first, then a tenth of it,
    which shows the latency of a machine that is not saturated."""
    cfg = bench.config
    main = _latency_round(bench, "bench.latency", cfg.latency_rate, cfg.latency_seconds, "latency")
    low_rate = max(cfg.latency_rate // 10, 1)
    main[f"at_{low_rate}_per_s"] = _latency_round(
        bench, "bench.latency-low", low_rate, min(cfg.latency_seconds, 10.0), None
    )
    return main


def _publish_paced(
    publisher: ApiPublisher, event_type: str, total: int, events_per_s: float, tag: str
) -> tuple[dict[str, float], int, float]:
    """``total`` single publishes at ``events_per_s``, each sent by a free client thread at
    its time: (event id -> unix time its request was sent, late starts, seconds taken)."""
    from concurrent.futures import ThreadPoolExecutor

    late = 0
    with ThreadPoolExecutor(publisher.threads, thread_name_prefix="latency") as executor:
        futures = []
        started = time.perf_counter()
        for n in range(total):
            pause = started + n / events_per_s - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            elif pause < -0.05:
                late += 1
            futures.append(
                executor.submit(
                    publisher.publish_one, event_type, seed.sample_payload(n), f"{tag}-{n}"
                )
            )
        published = dict(future.result() for future in futures)
        seconds = time.perf_counter() - started
    return published, late, seconds


def _latency_round(
    bench: Bench, event_type: str, rate: int, seconds: float, profile_as: str | None
) -> dict[str, Any]:
    cfg = bench.config
    rows = bench.endpoints(event_type.replace(".", "-"), event_type, cfg.endpoints)
    events_per_s = rate / len(rows)
    total = max(1, int(events_per_s * seconds))
    publisher = ApiPublisher(ensure_api(bench), bench.application_id, ADMIN_TOKEN, threads=4)
    tag = uuid.uuid4().hex[:8]
    # Warm the connections and the API with events that are not measured; let them drain.
    warm_ok = bench.receiver.stats()["ok"]
    for n in range(4):
        publisher.publish_one(event_type, seed.sample_payload(-1 - n), f"{tag}-warm{n}")
    _wait(
        lambda: bench.receiver.stats()["ok"] - warm_ok >= 4 * len(rows),
        30.0,
        poll=0.1,
        what="the warm-up receipts",
    )
    ok_before = bench.receiver.stats()["ok"]
    profilers = _start_profiles(bench, profile_as) if cfg.profile and profile_as else []
    cpu_before = cpu_snapshot(bench)
    published, late, publish_seconds = _publish_paced(
        publisher, event_type, total, events_per_s, tag
    )
    publisher.close()
    expected = total * len(rows)

    # Count with the receiver's counters (cheap); read its logs once, at the end.
    finished = _wait(
        lambda: bench.receiver.stats()["ok"] - ok_before >= expected,
        min(cfg.max_wait_seconds, 60 + expected / 100),
        poll=0.2,
        what="latency receipts",
    )
    cpu_after = cpu_snapshot(bench)
    cpu = cpu_cores(cpu_before, cpu_after)
    _stop_profiles(profilers)
    first = _first_receipts(bench, set(published))
    latencies = [(arrived - published[event_id]) * 1000 for (event_id, _), arrived in first.items()]
    seed.retire(bench.engine, [row.id for row in rows])
    return {
        "published_through": "HTTP API, POST .../messages, one message per request",
        "endpoints": len(rows),
        "events": total,
        "events_per_s": round(events_per_s, 1),
        "target_deliveries_per_s": rate,
        "achieved_publish_rate": round(total * len(rows) / publish_seconds, 1),
        "late_publishes": late,
        "deliveries": expected,
        "received": len(latencies),
        "finished": finished,
        "p50_ms": round(_percentile(latencies, 0.50), 1),
        "p95_ms": round(_percentile(latencies, 0.95), 1),
        "p99_ms": round(_percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies, default=0.0), 1),
        "mean_ms": round(statistics.fmean(latencies), 1) if latencies else 0.0,
        "cpu_cores": cpu,
        "cpu_ms_per_delivery": cpu_ms_per(cpu_before, cpu_after, len(latencies)),
    }


def scenario_fanout(bench: Bench) -> dict[str, Any]:
    """One event to N endpoints, published to the events exchange; time to the last receipt."""
    cfg = bench.config
    event_type = "bench.fanout"
    rows = bench.endpoints("fo", event_type, cfg.fanout_endpoints)
    seed.vacuum_analyze(bench.engine)  # statistics that know the 10,000 endpoints
    connection, producer = _publisher(bench)
    envelope = Envelope(type=event_type, data=seed.sample_payload(0))
    profilers = _start_profiles(bench, "fanout") if cfg.profile else []
    cpu_before = cpu_snapshot(bench)
    with connection:
        started = time.time()
        started_db = seed.db_clock(bench.engine)
        _publish(producer, envelope)
    expected = len(rows)
    ids = [row.id for row in rows]

    def all_final() -> bool:
        states = seed.states(bench.engine, event_type, ids)  # one snapshot for both checks
        return sum(states.values()) >= expected and _open(states) == 0

    finished = _wait(
        all_final,
        min(cfg.max_wait_seconds, 120 + expected / 100),
        poll=0.25,
        what="fan-out",
    )
    cpu = cpu_cores(cpu_before, cpu_snapshot(bench))
    _stop_profiles(profilers)
    first = _first_receipts(bench, {envelope.id})
    last_receipt = max(first.values(), default=started)
    states = seed.states(bench.engine, event_type, ids)
    seed.retire(bench.engine, ids)
    return {
        "endpoints": expected,
        "received": len(first),
        "finished": finished,
        "states": states,
        "seconds_to_last_receipt": round(last_receipt - started, 3),
        "cpu_cores": cpu,
        "seconds_to_last_durable_write": round(
            seed.last_write(bench.engine, event_type) - started_db, 3
        ),
    }


def scenario_isolation(bench: Bench) -> dict[str, Any]:
    """One endpoint that never answers (the engine gives up after its 10 s read timeout)
    beside 49 healthy ones; healthy deliveries/s relative to the throughput scenario."""
    cfg = bench.config
    event_type = "bench.isolation"
    healthy = bench.endpoints("iso", event_type, cfg.endpoints - 1)
    slow = bench.endpoints("iso-slow", event_type, 1, spec="timeout")
    throughput = bench.results.get("throughput", {})
    rate = float(throughput.get("deliveries_per_s") or 500.0)
    events = max(10, math.ceil(rate * cfg.throughput_seconds * 1.5 / cfg.endpoints))
    result = drain(
        bench,
        event_type,
        healthy + slow,
        events,
        measured=healthy,
        window=cfg.throughput_seconds,
    )
    slow_states = seed.states(bench.engine, event_type, [slow[0].id])
    seed.retire(bench.engine, [row.id for row in healthy + slow])
    relative = result["deliveries_per_s"] / rate if rate else 0.0
    return {
        "healthy_endpoints": len(healthy),
        **result,
        "slow_endpoint_states": slow_states,
        "throughput_deliveries_per_s": rate,
        "relative_to_throughput": round(relative, 3),
    }


def scenario_backlog(bench: Bench) -> dict[str, Any]:
    """100,000 retries waiting in PostgreSQL: memory of the scheduler and workers before and
    after, and a throughput round with the backlog in place."""
    cfg = bench.config
    event_type = "bench.backlog"
    rows = bench.endpoints("bl", event_type, cfg.endpoints)
    before = bench.memory()
    started = time.monotonic()
    seed.preload(
        bench.engine,
        bench.application_id,
        event_type,
        max(1, cfg.backlog // len(rows)),
        state="retrying",
        attempt_count=1,
    )
    load_seconds = time.monotonic() - started
    time.sleep(3.0)  # a few scheduler cycles with the backlog in the table
    throughput_rows = bench.results.get("_throughput_rows") or bench.endpoints(
        "tp", "bench.throughput", cfg.endpoints
    )
    rate = float(bench.results.get("throughput", {}).get("deliveries_per_s") or 500.0)
    seconds = min(cfg.throughput_seconds, 10.0)
    events = max(10, math.ceil(rate * seconds * 1.5 / cfg.endpoints))
    with_backlog = drain(bench, "bench.throughput", throughput_rows, events, window=seconds)
    after = bench.memory()
    waiting = seed.states(bench.engine, event_type)
    seed.retire(bench.engine, [row.id for row in rows])
    return {
        "pending_retries": sum(waiting.values()),
        "insert_seconds": round(load_seconds, 1),
        "memory_before": before,
        "memory_after": after,
        "throughput_with_backlog": with_backlog,
    }


def scenario_ingest(bench: Bench) -> dict[str, Any]:
    """Events per second accepted by the HTTP ingestion API and by the people producer."""
    cfg = bench.config
    event_type = "bench.ingest"
    seed.ensure_event_types(bench.engine, [event_type])
    results: dict[str, Any] = {}

    api_port = ensure_api(bench)
    path = f"/api/v1/applications/{bench.application_id}/messages"
    run_tag = uuid.uuid4().hex[:8]

    def message(n: int) -> tuple[str, str, dict[str, str], bytes]:
        return json_request(
            "POST",
            path,
            {"event_type": event_type, "payload": seed.sample_payload(n)},
            {"Authorization": f"Bearer {ADMIN_TOKEN}", "Idempotency-Key": f"{run_tag}-{n}"},
        )

    profilers = (
        _start_profiles(bench, "ingest", {"api": bench.stack.processes["api"].pid})
        if cfg.profile
        else []
    )
    cpu_before = cpu_snapshot(bench)
    http = run_load(
        api_port, message, connections=cfg.ingest_connections, seconds=cfg.ingest_seconds
    )
    http_cpu = cpu_cores(cpu_before, cpu_snapshot(bench))
    _stop_profiles(profilers)
    results["http"] = {
        "cpu_cores": http_cpu,
        "accepted": http.accepted,
        "statuses": {str(k): v for k, v in http.statuses.items()},
        "seconds": round(http.seconds, 2),
        "events_per_s": round(http.per_second, 1),
        "connection_errors": http.errors,
    }
    results["http_batch"] = _ingest_batches(bench, api_port, run_tag)
    stop_api(bench)

    producer_port = free_port()
    producer_env = {
        **bench.env,
        "PROMETHEUS_MULTIPROC_DIR": str(_fresh_dir(bench.out_dir / "metrics-producer")),
    }
    bench.stack.start(
        "producer",
        [
            str(Path(PYTHON).parent / "gunicorn"),
            "-c",
            "event-producer/gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{producer_port}",
        ],
        producer_env,
        ready_url=f"http://127.0.0.1:{producer_port}/people",
    )
    bench.stack.start(
        "relay",
        [PYTHON, "-m", "outbox.relay"],
        {**bench.env, "WEBHOOKS_METRICS_PORT": str(free_port())},
    )

    def person(n: int) -> tuple[str, str, dict[str, str], bytes]:
        return json_request(
            "POST", "/people", {"name": f"Ada {n}", "email": f"ada{n}@example.org"}, {}
        )

    stored_before = _messages_of(bench, "person.created")
    profilers = (
        _start_profiles(bench, "producer", {"producer": bench.stack.processes["producer"].pid})
        if cfg.profile
        else []
    )
    cpu_before = cpu_snapshot(bench)
    producer = run_load(
        producer_port, person, connections=cfg.ingest_connections, seconds=cfg.ingest_seconds
    )
    producer_cpu = cpu_cores(cpu_before, cpu_snapshot(bench))
    _stop_profiles(profilers)
    done = producer.accepted + stored_before
    drained = _wait(
        lambda: _messages_of(bench, "person.created") >= done,
        min(cfg.max_wait_seconds, 60 + producer.accepted / 100),
        poll=0.5,
        what="the outbox to drain into the platform",
    )
    pipeline_seconds = max(
        _last_message_at(bench, "person.created") - _first_message_at(bench, "person.created"), 1e-6
    )
    results["producer"] = {
        "cpu_cores": producer_cpu,
        "accepted": producer.accepted,
        "statuses": {str(k): v for k, v in producer.statuses.items()},
        "seconds": round(producer.seconds, 2),
        "events_per_s": round(producer.per_second, 1),
        "connection_errors": producer.errors,
        "stored_in_platform": _messages_of(bench, "person.created") - stored_before,
        "drained": drained,
        "relay_and_ingestion_events_per_s": round(producer.accepted / pipeline_seconds, 1),
    }
    bench.stack.stop_one("relay")
    bench.stack.stop_one("producer")
    return results


def _ingest_batches(bench: Bench, api_port: int, run_tag: str) -> dict[str, Any]:
    """Events per second through ``POST .../messages/batch`` (``BENCH_INGEST_BATCH`` messages
    per request, each with its own idempotency key), counted as messages stored in the
    platform during the load, not as answers."""
    cfg = bench.config
    event_type = "bench.ingest.batch"
    seed.ensure_event_types(bench.engine, [event_type])
    size = cfg.ingest_batch
    connections = min(8, cfg.ingest_connections)
    path = f"/api/v1/applications/{bench.application_id}/messages/batch"

    def messages(n: int) -> tuple[str, str, dict[str, str], bytes]:
        items = [
            {
                "event_type": event_type,
                "payload": seed.sample_payload(n * size + i),
                "idempotency_key": f"{run_tag}-b{n}-{i}",
            }
            for i in range(size)
        ]
        return json_request(
            "POST", path, {"messages": items}, {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )

    stored_before = _messages_of(bench, event_type)
    cpu_before = cpu_snapshot(bench)
    load = run_load(api_port, messages, connections=connections, seconds=cfg.ingest_seconds)
    cpu = cpu_cores(cpu_before, cpu_snapshot(bench))
    stored = _messages_of(bench, event_type) - stored_before
    return {
        "cpu_cores": cpu,
        "batch_size": size,
        "connections": connections,
        "requests_answered": load.accepted,
        "statuses": {str(k): v for k, v in load.statuses.items()},
        "seconds": round(load.seconds, 2),
        "stored": stored,
        "events_per_s": round(stored / load.seconds, 1) if load.seconds else 0.0,
        "connection_errors": load.errors,
    }


def _fresh_dir(path: Path) -> Path:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _messages_of(bench: Bench, event_type: str) -> int:
    from sqlalchemy import text

    with bench.engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM messages WHERE event_type = :t"), {"t": event_type}
            ).scalar_one()
        )


def _first_message_at(bench: Bench, event_type: str) -> float:
    from sqlalchemy import text

    with bench.engine.connect() as conn:
        return float(
            conn.execute(
                text(
                    "SELECT extract(epoch FROM min(created_at)) FROM messages WHERE event_type = :t"
                ),
                {"t": event_type},
            ).scalar_one()
            or 0.0
        )


def _last_message_at(bench: Bench, event_type: str) -> float:
    from sqlalchemy import text

    with bench.engine.connect() as conn:
        return float(
            conn.execute(
                text(
                    "SELECT extract(epoch FROM max(created_at)) FROM messages WHERE event_type = :t"
                ),
                {"t": event_type},
            ).scalar_one()
            or 0.0
        )


def dump(results: dict[str, Any]) -> str:
    """The results as JSON (internal keys, those starting with ``_``, left out)."""
    return json.dumps(
        {k: v for k, v in results.items() if not k.startswith("_")}, indent=2, default=str
    )


# --- where the CPU goes -----------------------------------------------------------------


def _tree_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    total = 0.0
    try:
        main = psutil.Process(pid)
        for proc in [main, *main.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
    except psutil.Error:
        pass
    return total


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _named_cpu(group: str, name: str, skip: str | None = None) -> dict[str, float]:
    """CPU seconds of every process called ``name`` (its command line without ``skip``),
    one ``group#pid`` entry each, so that two snapshots compare process by process."""
    found = {}
    for proc in psutil.process_iter(["name"]):
        if proc.info.get("name") != name:
            continue
        with contextlib.suppress(psutil.Error):
            if skip and any(skip in part for part in proc.cmdline()):
                continue
            found[f"{group}#{proc.pid}"] = _cpu_seconds(proc)
    return found


RUN_DATABASE = "postgresql (this run's database)"
ALL_DATABASES = "postgresql (all databases)"


def _database_cpu(engine: Any) -> dict[str, float]:
    """CPU seconds of each PostgreSQL backend connected to the run's database now.

    Other helpers' tests share the server: this leaves their backends (and the server's shared
    background processes) out.  A backend that exits between two snapshots takes its time
    with it, so the difference of two snapshots is a lower bound (the engine's processes keep
    their pooled connections, so few exit during a scenario).
    """
    from sqlalchemy import text

    with engine.connect() as conn:
        pids = list(
            conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            ).scalars()
        )
    found = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found[f"{RUN_DATABASE}#{pid}"] = _cpu_seconds(psutil.Process(pid))
    return found


def cpu_snapshot(bench: Bench) -> dict[str, float]:
    """CPU seconds used so far by each process group that shares the machine (the groups
    of shared servers, PostgreSQL and RabbitMQ, as one ``group#pid`` entry per process)."""
    snapshot = {name: _tree_cpu(m.pid) for name, m in bench.stack.processes.items() if m.alive()}
    snapshot["receiver"] = _tree_cpu(bench.receiver.pid)
    snapshot["harness"] = _cpu_seconds(psutil.Process())
    snapshot.update(_named_cpu(ALL_DATABASES, "postgres"))
    snapshot.update(_database_cpu(bench.engine))
    # The broker, not the command-line tools (rabbitmqctl runs as an escript on beam.smp too).
    snapshot.update(_named_cpu("rabbitmq", "beam.smp", skip="escript"))
    machine = psutil.cpu_times()
    snapshot["machine"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
    snapshot["at"] = time.monotonic()
    return snapshot


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds used by each group between two snapshots.

    A process that exited in between takes its CPU time with it (never below zero); one that
    started in between counts from its start.  Per-process entries (``group#pid``) add up into
    their group, so a shared server's short-lived processes cannot turn its sum negative.
    """
    used: dict[str, float] = {}
    for key, seconds in after.items():
        if key == "at":
            continue
        group = key.split("#", 1)[0]
        used[group] = used.get(group, 0.0) + max(seconds - before.get(key, 0.0), 0.0)
    for group in (ALL_DATABASES, RUN_DATABASE, "rabbitmq"):
        used.setdefault(group, 0.0)
    return used


def cpu_cores(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Cores used by each group between two snapshots (2.0 = the whole machine)."""
    seconds = max(after["at"] - before["at"], 1e-6)
    cores = {name: round(used / seconds, 2) for name, used in cpu_used(before, after).items()}
    # The run database's backends are already counted in "all databases".
    ours = sum(v for k, v in cores.items() if k not in {"machine", RUN_DATABASE})
    cores["everything else on the machine"] = round(max(cores["machine"] - ours, 0.0), 2)
    return cores


# Components of the CPU-per-delivery figures: name in the results -> snapshot groups.
CPU_COMPONENTS: dict[str, Callable[[str], bool]] = {
    "worker_ms": lambda group: group.startswith("worker"),
    "scheduler_ms": lambda group: group == "scheduler",
    "api_ms": lambda group: group == "api",
    "postgres_ms": lambda group: group == RUN_DATABASE,
    "postgres_all_databases_ms": lambda group: group == ALL_DATABASES,
    "rabbitmq_ms": lambda group: group == "rabbitmq",
    "receiver_ms": lambda group: group == "receiver",
    "harness_ms": lambda group: group == "harness",
}


def cpu_ms_per(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    """Milliseconds of CPU per unit of work (``count`` deliveries) of each component between
    two snapshots: ``worker_ms`` (the delivery workers with their pools, which also run the
    broker ingest step), ``scheduler_ms``, ``api_ms`` (HTTP ingest and its fan-out),
    ``postgres_ms`` (the run database's backends), ``postgres_all_databases_ms`` (every
    ``postgres`` process on the machine, other people's included), ``rabbitmq_ms`` (the whole
    broker, every vhost), ``receiver_ms`` and ``harness_ms``."""
    if count <= 0:
        return {}
    used = cpu_used(before, after)
    return {
        name: round(sum(s for g, s in used.items() if belongs(g)) * 1000 / count, 3)
        for name, belongs in CPU_COMPONENTS.items()
    }
