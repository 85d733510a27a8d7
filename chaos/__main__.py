"""``python -m chaos`` (``make chaos``): 10,000 events through the people producer's API
(outbox path) to 20 endpoints (some flaky), and messages through the management API (single
and batch publishes) to a second healthy application, both paced so that the publishing load
lasts through the whole fault schedule; beside them a **poisoned application** whose
receivers and messages are hostile.  Then the checker (:mod:`chaos.checker`), a line for the
API's answers, one for the poisoned application, one for ordering (``chaos-ordering:
keyed_deliveries=N keys=N violations=N``: the people events are keyed by person id, most API
messages by one of a few keys), and exactly one closing line, for the healthy applications::

    chaos: events=N deliveries=N delivered=N dead=N lost=N duplicates=N

The run uses its own databases and vhost (``webhooks_bench``, ``webhooks_producer_bench``),
recreated at start.  Faults (see :func:`fault_schedule`): SIGKILL of single prefork pool
children and of whole workers, of the outbox relay, of the scheduler and of the API (each
restarted), a RabbitMQ ``stop_app``/``start_app`` and a PostgreSQL restart.
``CHAOS_SERVICE_RESTARTS=0`` leaves RabbitMQ and PostgreSQL alone (they are shared with
everything else on the machine).  Other knobs: ``CHAOS_EVENTS`` (10000),
``CHAOS_API_EVENTS`` (a fifth of the events), ``CHAOS_POISONED_EVENTS`` (a hundredth, at
least 20), ``CHAOS_HOSTILE_ROUNDS`` (3), ``CHAOS_LOAD_SECONDS`` (the last fault's time plus
30 s), ``CHAOS_CONNECTIONS`` (8), ``CHAOS_DRAIN_SECONDS`` (900).  Exit status 0 only when
the checker passed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from bench import seed
from bench.load import json_request, run_load
from bench.receiver import DEFAULT_SEED, RunningReceiver, endpoint_path
from bench.scenarios import wait_for_consumers
from bench.stack import (
    PYTHON,
    REPO,
    ServiceNames,
    Stack,
    base_env,
    celery_bin,
    code_version,
    free_port,
    reset_services,
    stopping_on_signals,
)
from chaos import api_load
from chaos.checker import (
    OrderingReport,
    check,
    check_ordering,
    check_poisoned,
    delivery_states,
    keyed_deliveries,
    outbox_events,
    passed,
    receipts_at,
    stored_events,
)
from webhooks_core.endpoints import sealing

EVENT_TYPES = ("person.created", "person.updated", "person.deleted")
# 12 healthy endpoints, 4 that answer 500 to 30 % of requests, 4 that answer 500 to 10 % and
# never answer 2 % (the engine times out after 2 s).  The engine ends a batch at its first
# timeout and keeps 4 batches in flight per endpoint, so the hang ratio sets how long the
# run's tail is: 5 % made it about 10 minutes.
ENDPOINT_SPECS = ["ok"] * 12 + ["fail30"] * 4 + ["fail10-hang2"] * 4
# The healthy application fed through the management API.
API_ENDPOINT_SPECS = ["ok"] * 4 + ["fail30", "fail10-hang2"]
# The poisoned application: (receiver spec, name, stored headers written straight into the
# table as an older version could have left them, or None for the ordinary {}).
POISONED_ENDPOINTS: list[tuple[str, str, str | None]] = [
    ("nul", "nul-body", None),  # 200 whose body and a header hold NUL and invalid UTF-8
    ("nul-fail50", "nul-body-500", None),  # the same bytes on a 500, half the time
    ("cut", "cut-headers", None),  # the connection cut in the middle of the headers
    # Never answer: four of them hold worker slots the healthy applications need.  They take
    # only POISON_SLOW_TYPE, two attempts each, or their tail would outlast the drain.
    *[("timeout", f"hang-{n}", None) for n in range(1, 5)],
    ("gone", "gone", None),  # 410: the endpoint is disabled, its deliveries cancelled
    ("ok", "headers-null", "null"),
    ("ok", "headers-number", '{"X-Odd": 5}'),
    ("ok", "headers-crlf", '{"X-Odd": "a\\r\\nInjected: 1"}'),
    ("ok", "old-timestamp", None),  # takes the messages of OLD_ROWS
]
# Messages an older API stored that the reader cannot turn back into a datetime (year 10000
# in UTC), written straight into the table with a delivery each to /r/ok/poison-old-timestamp.
OLD_ROWS = 5
OLD_TIMESTAMP = "9999-12-31T23:59:59-05:00"


def _flag(name: str, default: str) -> bool:
    return os.environ.get(name, default).lower() not in {"", "0", "false", "no"}


@dataclass
class ChaosConfig:
    """The run's sizes and switches, from ``CHAOS_*`` variables."""

    events: int = 10_000
    api_events: int = 2_000
    poisoned_events: int = 100
    hostile_rounds: int = 3
    connections: int = 8
    service_restarts: bool = True
    drain_seconds: float = 900.0
    # The paced load window: publishing lasts at least this long, past the last fault (with
    # a margin: a restart that is slow to become ready delays the faults after it).
    load_seconds: float = 90.0
    # The load's hard limit (requests refused during a fault are sent again until then).
    load_deadline_seconds: float = 900.0

    @classmethod
    def from_env(cls) -> ChaosConfig:
        """Read the ``CHAOS_*`` variables (see the module doc)."""
        events = int(os.environ.get("CHAOS_EVENTS", "10000"))
        service_restarts = _flag("CHAOS_SERVICE_RESTARTS", "1")
        last_fault = max(at for at, _ in fault_times(service_restarts))
        return cls(
            events=events,
            api_events=int(os.environ.get("CHAOS_API_EVENTS", str(events // 5))),
            poisoned_events=int(
                os.environ.get("CHAOS_POISONED_EVENTS", str(max(20, events // 100)))
            ),
            hostile_rounds=int(os.environ.get("CHAOS_HOSTILE_ROUNDS", "3")),
            connections=int(os.environ.get("CHAOS_CONNECTIONS", "8")),
            service_restarts=service_restarts,
            drain_seconds=float(os.environ.get("CHAOS_DRAIN_SECONDS", "900")),
            load_seconds=float(os.environ.get("CHAOS_LOAD_SECONDS", str(last_fault + 30))),
        )


def engine_settings() -> dict[str, str]:
    """Platform settings of the run: short retries and timeouts, so it ends in minutes."""
    return {
        "admin_token": "chaos-admin-token-0123456789",
        "retry_schedule": "0,1,2,4,8,15,30",
        "connect_timeout_seconds": "1",
        "read_timeout_seconds": "2",
        "total_timeout_seconds": "4",
        # A lease must outlast one request's total deadline plus a margin (see the engine).
        "lease_seconds": "20",
        "circuit_breaker_cooldown_seconds": "2",
        # The poisoned application's endpoints that always fail (a cut-off head, NUL answers)
        # hold their retries behind an open breaker, one probe per cooldown: disabling them
        # after a minute of nothing but failures cancels the rest, so the run ends in minutes.
        # A healthy flaky endpoint never fails for a minute without one success.
        "auto_disable_after_seconds": "60",
        "scheduler_poll_seconds": "0.5",
        "outbox_poll_seconds": "0.5",
        "log_level": os.environ.get("CHAOS_LOG_LEVEL", "WARNING"),
        "log_format": "json",
    }


@dataclass
class FaultLog:
    """What the fault schedule did, and when (seconds since the load started)."""

    started: float = field(default_factory=time.monotonic)
    entries: list[dict[str, Any]] = field(default_factory=list)

    def add(self, fault: str, detail: str = "", ok: bool = True) -> None:
        """Record one fault."""
        entry = {
            "at_s": round(time.monotonic() - self.started, 1),
            "fault": fault,
            "detail": detail,
            "ok": ok,
        }
        self.entries.append(entry)
        print(f"chaos: fault {entry}", flush=True)


class Faults:
    """The fault actions, on the run's own processes and (when allowed) the services."""

    def __init__(self, stack: Stack, log: FaultLog) -> None:
        self.stack = stack
        self.log = log
        self.lock = threading.Lock()
        self.aside: list[threading.Thread] = []

    def kill_pool_child(self, worker: str) -> None:
        """SIGKILL one prefork pool process of ``worker``; Celery replaces it."""
        children = self.stack.processes[worker].children()
        deadline = time.monotonic() + 15
        while not children and time.monotonic() < deadline:  # a restarted pool is forking
            time.sleep(0.2)
            children = self.stack.processes[worker].children()
        if not children:
            self.log.add("kill pool child", f"{worker} has no pool children", ok=False)
            return
        victim = random.choice(children)
        victim.send_signal(signal.SIGKILL)
        self.log.add("kill pool child", f"{worker} child pid {victim.pid}")

    def kill_and_restart(self, name: str, pause: float = 2.0) -> None:
        """SIGKILL the whole process group of ``name``, wait, start it again."""
        with self.lock:
            self.stack.kill(name, signal.SIGKILL)
            self.log.add("SIGKILL", name)
            time.sleep(pause)
            self.stack.restart(name)
            self.log.add("restarted", name)

    def kill_and_restart_aside(self, name: str, pause: float = 2.0) -> None:
        """SIGKILL ``name`` and start it again from a thread of its own, so that a process
        slow to become ready (the API took 12 to 20 s here) does not delay the next steps."""
        self.stack.kill(name, signal.SIGKILL)
        self.log.add("SIGKILL", name)

        def restart() -> None:
            time.sleep(pause)
            try:
                self.stack.restart(name)
            except Exception as exc:  # noqa: BLE001 - logged; the heal step starts it again
                self.log.add("restarted", f"{name} failed: {exc}", ok=False)
            else:
                self.log.add("restarted", name)

        thread = threading.Thread(target=restart, name=f"restart-{name}", daemon=True)
        thread.start()
        self.aside.append(thread)

    def join(self, timeout: float) -> None:
        """Wait for the restarts started aside."""
        deadline = time.monotonic() + timeout
        for thread in self.aside:
            thread.join(max(0.0, deadline - time.monotonic()))

    def restart_rabbitmq(self) -> None:
        """``rabbitmqctl stop_app``, a pause, ``start_app``: every connection drops, the
        durable queues and persistent messages stay."""
        ok = _sh(["rabbitmqctl", "-q", "stop_app"])
        self.log.add("rabbitmq stop_app", ok=ok)
        time.sleep(5)
        ok = _sh(["rabbitmqctl", "-q", "start_app"]) and _sh(["rabbitmqctl", "-q", "await_startup"])
        self.log.add("rabbitmq start_app", ok=ok)

    def restart_postgresql(self) -> None:
        """``pg_ctlcluster ... main restart`` of this machine's cluster."""
        version = sorted(os.listdir("/etc/postgresql"))[0]
        ok = _sh(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"])
        self.log.add("postgresql restart", ok=ok)


def _sh(argv: list[str]) -> bool:
    return subprocess.run(argv, capture_output=True, check=False, timeout=120).returncode == 0


def fault_times(services: bool) -> list[tuple[float, str]]:
    """(seconds after the load starts, fault name) of the schedule, in order.

    The publishing load is paced to last past the last of them (``load_seconds``), so every
    fault, the RabbitMQ stop and the PostgreSQL restart included, hits publishing through the
    producer and the API, ingestion and delivery at once.
    """
    times = [
        (3.0, "pool child"),
        (6.0, "worker1"),
        (10.0, "pool child"),
        (13.0, "relay"),
        (17.0, "scheduler"),
        (26.0, "api"),
        (30.0, "pool child"),
        (40.0, "worker0"),
        (48.0, "scheduler"),
        (52.0, "relay"),
        # Not sooner after worker0's restart: a pool process killed while the prefork pool
        # is still starting makes Celery give up ("Could not start worker processes").
        (60.0, "pool child"),
    ]
    if services:
        times += [(21.0, "rabbitmq"), (34.0, "postgresql")]
    return sorted(times)


def fault_schedule(faults: Faults, services: bool) -> list[tuple[float, str, Callable[[], None]]]:
    """(seconds after the load starts, name, action), in order."""
    actions: dict[str, Callable[[], None]] = {
        "pool child": lambda: faults.kill_pool_child("worker0"),
        "worker0": lambda: faults.kill_and_restart("worker0"),
        "worker1": lambda: faults.kill_and_restart("worker1"),
        "relay": lambda: faults.kill_and_restart("relay"),
        "scheduler": lambda: faults.kill_and_restart("scheduler"),
        "api": lambda: faults.kill_and_restart_aside("api"),
        "rabbitmq": faults.restart_rabbitmq,
        "postgresql": faults.restart_postgresql,
    }
    return [(at, name, actions[name]) for at, name in fault_times(services)]


def run_faults(
    steps: list[tuple[float, str, Callable[[], None]]], log: FaultLog, stop: threading.Event
) -> None:
    """Run each step at its time; a failing step is logged and the schedule goes on."""
    for at, name, action in steps:
        if stop.wait(max(0.0, at - (time.monotonic() - log.started))):
            return
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - the schedule must go on; the log says what failed
            log.add(name, f"failed: {type(exc).__name__}: {exc}", ok=False)


def _count(engine: Engine, sql: str) -> int:
    for attempt in range(30):  # the database may be restarting
        try:
            with engine.connect() as conn:
                return int(conn.execute(text(sql)).scalar_one())
        except Exception:
            if attempt == 29:
                raise
            time.sleep(1)
    return 0


@dataclass
class Applications:
    """The run's three applications and their endpoints' paths -> subscribed types."""

    producer_app: str
    api_app: str
    poisoned_app: str
    healthy: dict[str, list[str]]
    poisoned: dict[str, list[str]]


def create_applications(engine: Engine, base_url: str, secret_seed: str) -> Applications:
    """The producer's application (its 20 endpoints take the people events), the healthy API
    application and the poisoned one, with the poisoned endpoints' odd stored headers."""
    seed.ensure_event_types(
        engine,
        [*EVENT_TYPES, api_load.API_TYPE, api_load.POISON_TYPE, api_load.POISON_SLOW_TYPE],
    )
    producer_app = seed.create_application(engine, "chaos")
    people = {
        endpoint_path(spec, f"chaos-{i:02d}"): list(EVENT_TYPES)
        for i, spec in enumerate(ENDPOINT_SPECS)
    }
    seed.create_endpoints(engine, producer_app, base_url, secret_seed, list(people.items()))
    api_app = seed.create_application(engine, "chaos-api")
    api = {
        endpoint_path(spec, f"chaos-api-{i:02d}"): [api_load.API_TYPE]
        for i, spec in enumerate(API_ENDPOINT_SPECS)
    }
    seed.create_endpoints(engine, api_app, base_url, secret_seed, list(api.items()))
    poisoned_app = seed.create_application(engine, "chaos-poisoned")
    poisoned = {
        endpoint_path(spec, f"poison-{name}"): (
            [api_load.POISON_SLOW_TYPE]
            if spec == "timeout"
            else [api_load.POISON_TYPE, api_load.POISON_SLOW_TYPE]
        )
        for spec, name, _ in POISONED_ENDPOINTS
    }
    rows = []
    for path, types in poisoned.items():
        rows += seed.create_endpoints(
            engine,
            poisoned_app,
            base_url,
            secret_seed,
            [(path, types)],
            retry_schedule=[0, 1] if path.startswith("/r/timeout/") else None,
        )
    with engine.begin() as conn:
        for row, (_, _, headers) in zip(rows, POISONED_ENDPOINTS, strict=True):
            if headers is not None:  # what the API would refuse today, stored by an old one
                conn.execute(
                    text("UPDATE endpoints SET headers = CAST(:headers AS jsonb) WHERE id = :id"),
                    {"headers": headers, "id": row.id},
                )
    return Applications(
        str(producer_app), str(api_app), str(poisoned_app), {**people, **api}, poisoned
    )


def store_old_rows(engine: Engine, apps: Applications, run: str) -> dict[str, Any]:
    """Write :data:`OLD_ROWS` messages with :data:`OLD_TIMESTAMP` for the poisoned application,
    due 20 s into the load; a schema that now refuses such rows is an answer too."""
    path = endpoint_path("ok", "poison-old-timestamp")
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO messages (event_id, application_id, event_type, payload, "
                    "occurred_at, source) SELECT :run || '-old-' || n, :app, :type, "
                    "'{\"old\": true}'::jsonb, CAST(:at AS timestamptz), 'http' "
                    "FROM generate_series(1, :rows) AS n"
                ),
                {"run": run, "app": apps.poisoned_app, "type": api_load.POISON_TYPE,
                 "at": OLD_TIMESTAMP, "rows": OLD_ROWS},
            )  # fmt: skip
            stored = conn.execute(
                text(
                    "INSERT INTO deliveries (message_id, endpoint_id, application_id, "
                    "event_type, state, next_attempt_at) SELECT m.id, e.id, e.application_id, "
                    "m.event_type, 'pending', now() + interval '20 seconds' "
                    "FROM messages m JOIN endpoints e ON e.url LIKE '%' || :path "
                    "WHERE m.event_id LIKE :run || '-old-%'"
                ),
                {"run": run, "path": path},
            ).rowcount
    except Exception as exc:  # noqa: BLE001 - the schema refusing them is a result
        return {"stored": 0, "refused": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
    return {"stored": int(stored), "timestamp": OLD_TIMESTAMP}


def publish_people(
    config: ChaosConfig, producer_engine: Engine, port: int, started: float
) -> dict[str, Any]:
    """``POST /people`` paced at ``events / load_seconds`` until the outbox holds ``events``
    rows (requests refused during a fault are made up, at the same pace)."""

    def person(n: int) -> tuple[str, str, dict[str, str], bytes]:
        body = {"name": f"Grace Hopper {n}", "email": f"grace{n}@example.org"}
        return json_request("POST", "/people", body, {})

    rate = config.events / config.load_seconds
    statuses: dict[str, int] = {}
    errors = 0
    load_deadline = started + config.load_deadline_seconds
    while time.monotonic() < load_deadline:
        committed = _count(producer_engine, "SELECT count(*) FROM outbox")
        if committed >= config.events:
            break
        result = run_load(
            port,
            person,
            connections=config.connections,
            seconds=max(1.0, load_deadline - time.monotonic()),
            max_requests=config.events - committed,
            rate=rate,
        )
        errors += result.errors
        for status, n in result.statuses.items():
            statuses[str(status)] = statuses.get(str(status), 0) + n
    return {
        "rate_per_s": round(rate, 1),
        "statuses": statuses,
        "connection_errors": errors,
        "seconds": round(time.monotonic() - started, 1),
    }


def overlap(load: dict[str, Any], faults: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether every fault happened while both publishers were still sending."""
    until = min(load["producer"]["seconds"], load["api"]["feeding_seconds"])
    after = [f for f in faults if f["at_s"] > until]
    return {"load_until_s": until, "faults": len(faults), "faults_after_load": after}


def main() -> int:
    """Run the chaos test; 0 when the checker passed."""
    config = ChaosConfig.from_env()
    names = ServiceNames()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = REPO / "var" / "chaos" / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    env = base_env(names, **engine_settings())
    # The seeded endpoints' secrets are sealed with the key the platform's processes get.
    sealing.install(sealing.KeyRing.parse(env["WEBHOOKS_SEALING_KEYS"]))
    stack = Stack(out_dir / "logs")
    secret_seed = os.environ.get("BENCH_SECRET_SEED", DEFAULT_SEED)
    receiver = RunningReceiver(out_dir / "receipts", hang_seconds=30, seed=secret_seed)
    log = FaultLog()
    stop_faults = threading.Event()
    results: dict[str, Any] = {
        "started": stamp,
        "config": config.__dict__,
        "code": code_version(),
        "settings": engine_settings(),
    }
    report = poisoned_report = None
    ordering_report: OrderingReport | None = None
    publisher: api_load.ApiPublisher | None = None
    with stopping_on_signals():
        try:
            print(f"chaos: preparing {names.database} and vhost {names.vhost}", flush=True)
            reset_services(names, env)
            engine = seed.make_engine(names.database_url)
            producer_engine = seed.make_engine(names.producer_database_url)
            receiver.start()
            apps = create_applications(engine, receiver.url(""), secret_seed)
            results["old_rows"] = store_old_rows(engine, apps, stamp)
            start_processes(stack, env, out_dir)
            producer_port = _port(stack, "producer")
            jobs = api_load.plan(
                run=stamp,
                token=engine_settings()["admin_token"],
                api_app=apps.api_app,
                poisoned_app=apps.poisoned_app,
                api_events=config.api_events,
                poisoned_events=config.poisoned_events,
                hostile_rounds=config.hostile_rounds,
            )
            publisher = api_load.ApiPublisher(
                _port(stack, "api"), jobs, seconds=config.load_seconds
            )

            log.started = time.monotonic()
            faults = Faults(stack, log)
            steps = fault_schedule(faults, config.service_restarts)
            fault_thread = threading.Thread(
                target=run_faults, args=(steps, log, stop_faults), daemon=True
            )
            fault_thread.start()
            publisher.start()
            print(
                f"chaos: publishing for {config.load_seconds:.0f} s: {config.events} people "
                f"events, {len(jobs)} API requests; faults from {steps[0][0]:.0f} s to "
                f"{steps[-1][0]:.0f} s",
                flush=True,
            )
            results["load"] = {
                "producer": publish_people(config, producer_engine, producer_port, log.started)
            }
            publisher.join(timeout=config.load_deadline_seconds)
            results["load"]["api"] = {
                "requests": len(jobs),
                "feeding_seconds": round(publisher.fed_at - log.started, 1),
                "seconds": round(publisher.finished - log.started, 1),
                **publisher.tally.as_dict(),
            }
            fault_thread.join(timeout=300)
            faults.join(timeout=120)
            results["overlap"] = overlap(results["load"], log.entries)
            print(
                f"chaos: load done: producer {results['load']['producer']}, API requests "
                f"{dict(publisher.tally.requests)}; faults after the load: "
                f"{len(results['overlap']['faults_after_load'])}",
                flush=True,
            )

            heal(stack, env)
            drained = drain(engine, producer_engine, config.drain_seconds)
            results["drained"] = drained
            time.sleep(2)  # the last answers reach the receiver's log
            api_ids = publisher.tally.accepted_ids.get("api", set())
            api_ids |= set(stored_events(engine, apps.api_app, api_load.API_TYPE))
            events = outbox_events(producer_engine)
            events += [(event_id, api_load.API_TYPE) for event_id in sorted(api_ids)]
            all_paths = [*apps.healthy, *apps.poisoned]
            states = delivery_states(engine, all_paths)
            receipts = receiver.receipts()
            report = check(
                events,
                apps.healthy,
                {pair: state for pair, state in states.items() if pair[1] in apps.healthy},
                receipts_at(receipts, apps.healthy),
            )
            poisoned_report = check_poisoned(
                {pair: state for pair, state in states.items() if pair[1] in apps.poisoned},
                receipts_at(receipts, apps.poisoned),
            )
            ordering_report = check_ordering(
                keyed_deliveries(engine, apps.healthy), receipts_at(receipts, apps.healthy)
            )
            results["report"] = report.as_dict()
            results["poisoned"] = poisoned_report.as_dict()
            results["ordering"] = ordering_report.as_dict()
            results["messages_stored"] = _count(engine, "SELECT count(*) FROM messages")
        except KeyboardInterrupt:
            results["error"] = "interrupted"
        except Exception as exc:  # noqa: BLE001 - reported, and the run fails
            results["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        finally:
            stop_faults.set()
            if publisher is not None:
                publisher.stop()
            stack.stop()
            receiver.stop()
    results["faults"] = log.entries
    results["finished"] = time.strftime("%Y%m%d-%H%M%S")
    text_out = json.dumps(results, indent=2, default=str)
    (out_dir / "results.json").write_text(text_out)
    if os.environ.get("CHAOS_NO_DOCS", "0") in {"", "0"}:
        docs = REPO / "docs" / "chaos"
        docs.mkdir(parents=True, exist_ok=True)
        (docs / "results.json").write_text(text_out)
    if report is None or poisoned_report is None or publisher is None:
        print(
            f"chaos: failed: {results.get('error')} (logs in {out_dir / 'logs'})", file=sys.stderr
        )
        print("chaos: events=0 deliveries=0 delivered=0 dead=0 lost=0 duplicates=0")
        return 1
    ok = passed(report, poisoned_report, ordering_report)
    late = results["overlap"]["faults_after_load"]
    if late:
        print(f"chaos: warning: {len(late)} fault steps ended after the load: {late}", flush=True)
    print(f"{report.detail_line()} passed={ok} (details: {out_dir})", flush=True)
    print(publisher.tally.line(), flush=True)
    print(poisoned_report.line(), flush=True)
    if ordering_report is not None:
        print(ordering_report.line(), flush=True)
    print(report.line(), flush=True)
    return 0 if ok else 1


def _port(stack: Stack, name: str) -> int:
    return int(stack.processes[name].argv[-1].rsplit(":", 1)[1])


def start_processes(stack: Stack, env: dict[str, str], out_dir: Path) -> None:
    """Scheduler, a prefork worker and a thread-pool worker, the producer and its relay, the
    management API."""
    stack.start(
        "scheduler",
        [PYTHON, "-m", "delivery.scheduler"],
        {**env, "WEBHOOKS_METRICS_PORT": str(free_port())},
    )
    for name, pool, concurrency in (("worker0", "prefork", "4"), ("worker1", "threads", "16")):
        stack.start(
            name,
            [
                celery_bin(),
                "-A",
                "delivery.worker",
                "worker",
                "--pool",
                pool,
                "--concurrency",
                concurrency,
                "-Q",
                "webhooks.deliver",
                "-n",
                f"chaos-{name}@%h",
                "--without-mingle",
                "--without-gossip",
                "-l",
                "INFO",
            ],
            env,
        )
    wait_for_consumers(env["WEBHOOKS_BROKER_URL"], "webhooks.deliver", 2)
    stack.start(
        "relay",
        [PYTHON, "-m", "outbox.relay"],
        {**env, "WEBHOOKS_METRICS_PORT": str(free_port())},
    )
    port = free_port()
    stack.start(
        "producer",
        [
            str(Path(PYTHON).parent / "gunicorn"),
            "-c",
            "event-producer/gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{port}",
        ],
        env,
        ready_url=f"http://127.0.0.1:{port}/people",
    )
    metrics = out_dir / "metrics-api"
    metrics.mkdir(parents=True, exist_ok=True)
    port = free_port()
    stack.start(
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
        {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics)},
        ready_url=f"http://127.0.0.1:{port}/health",
    )


def heal(stack: Stack, env: dict[str, str]) -> None:
    """Start again whatever the faults left dead."""
    for name, managed in list(stack.processes.items()):
        if not managed.alive():
            print(f"chaos: {name} was down; starting it again", flush=True)
            stack.restart(name)


def drain(engine: Engine, producer_engine: Engine, timeout: float) -> bool:
    """Wait until every outbox row is sent, stored, and every delivery is final."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            unsent = _count(producer_engine, "SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            committed = _count(producer_engine, "SELECT count(*) FROM outbox")
            stored = _count(
                engine, "SELECT count(*) FROM messages WHERE event_type LIKE 'person.%'"
            )
            open_deliveries = _count(
                engine,
                "SELECT count(*) FROM deliveries WHERE state IN ('pending', 'sending', 'retrying')",
            )
        except Exception:  # noqa: BLE001 - the database may still be coming back
            time.sleep(1)
            continue
        if unsent == 0 and stored >= committed and open_deliveries == 0:
            return True
        time.sleep(1)
    print("chaos: deliveries still open at the drain deadline", flush=True)
    return False


if __name__ == "__main__":
    sys.exit(main())
