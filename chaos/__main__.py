"""``python -m chaos`` (``make chaos``): at least 10,000 events through the people producer's
API to 20 endpoints (some flaky) while a fault schedule kills and restarts processes and
services; then the checker (:mod:`chaos.checker`) and exactly one closing line::

    chaos: events=N deliveries=N delivered=N dead=N lost=N duplicates=N

The run uses its own databases and vhost (``webhooks_bench``, ``webhooks_producer_bench``),
recreated at start.  Faults (see :func:`fault_schedule`): SIGKILL of single prefork pool
children and of whole workers, of the outbox relay and of the scheduler (each restarted), a
RabbitMQ ``stop_app``/``start_app`` and a PostgreSQL restart.  ``CHAOS_SERVICE_RESTARTS=0``
leaves RabbitMQ and PostgreSQL alone (they are shared with everything else on the machine).
Other knobs: ``CHAOS_EVENTS`` (10000), ``CHAOS_CONNECTIONS`` (8), ``CHAOS_DRAIN_SECONDS``
(900).  Exit status 0 only when the checker passed.
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
from chaos.checker import check, delivery_states, outbox_events

EVENT_TYPES = ("person.created", "person.updated", "person.deleted")
# 12 healthy endpoints, 4 that answer 500 to 30 % of requests, 4 that answer 500 to 10 % and
# never answer 2 % (the engine times out after 2 s).  The engine ends a batch at its first
# timeout and keeps 4 batches in flight per endpoint, so the hang ratio sets how long the
# run's tail is: 5 % made it about 10 minutes.
ENDPOINT_SPECS = ["ok"] * 12 + ["fail30"] * 4 + ["fail10-hang2"] * 4


def _flag(name: str, default: str) -> bool:
    return os.environ.get(name, default).lower() not in {"", "0", "false", "no"}


@dataclass
class ChaosConfig:
    """The run's sizes and switches, from ``CHAOS_*`` variables."""

    events: int = 10_000
    connections: int = 8
    service_restarts: bool = True
    drain_seconds: float = 900.0
    load_seconds: float = 900.0

    @classmethod
    def from_env(cls) -> ChaosConfig:
        """Read ``CHAOS_EVENTS``, ``CHAOS_CONNECTIONS``, ``CHAOS_SERVICE_RESTARTS``,
        ``CHAOS_DRAIN_SECONDS``."""
        return cls(
            events=int(os.environ.get("CHAOS_EVENTS", "10000")),
            connections=int(os.environ.get("CHAOS_CONNECTIONS", "8")),
            service_restarts=_flag("CHAOS_SERVICE_RESTARTS", "1"),
            drain_seconds=float(os.environ.get("CHAOS_DRAIN_SECONDS", "900")),
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


def fault_schedule(faults: Faults, services: bool) -> list[tuple[float, str, Callable[[], None]]]:
    """(seconds after the load starts, name, action), in order."""
    steps: list[tuple[float, str, Callable[[], None]]] = [
        (3, "pool child", lambda: faults.kill_pool_child("worker0")),
        (6, "worker1", lambda: faults.kill_and_restart("worker1")),
        (10, "pool child", lambda: faults.kill_pool_child("worker0")),
        (13, "relay", lambda: faults.kill_and_restart("relay")),
        (17, "scheduler", lambda: faults.kill_and_restart("scheduler")),
        (30, "pool child", lambda: faults.kill_pool_child("worker0")),
        (40, "worker0", lambda: faults.kill_and_restart("worker0")),
        (48, "scheduler", lambda: faults.kill_and_restart("scheduler")),
        (52, "relay", lambda: faults.kill_and_restart("relay")),
        # Not sooner after worker0's restart: a pool process killed while the prefork pool
        # is still starting makes Celery give up ("Could not start worker processes").
        (60, "pool child", lambda: faults.kill_pool_child("worker0")),
    ]
    if services:
        steps += [
            (21, "rabbitmq", faults.restart_rabbitmq),
            (34, "postgresql", faults.restart_postgresql),
        ]
    return sorted(steps, key=lambda step: step[0])


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


def main() -> int:
    """Run the chaos test; 0 when the checker passed."""
    config = ChaosConfig.from_env()
    names = ServiceNames()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = REPO / "var" / "chaos" / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    env = base_env(names, **engine_settings())
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
    report = None
    with stopping_on_signals():
        try:
            print(f"chaos: preparing {names.database} and vhost {names.vhost}", flush=True)
            reset_services(names, env)
            engine = seed.make_engine(names.database_url)
            producer_engine = seed.make_engine(names.producer_database_url)
            receiver.start()
            app_id = seed.create_application(engine, "chaos")
            seed.ensure_event_types(engine, EVENT_TYPES)
            subscriptions = {
                endpoint_path(spec, f"chaos-{i:02d}"): list(EVENT_TYPES)
                for i, spec in enumerate(ENDPOINT_SPECS)
            }
            seed.create_endpoints(
                engine, app_id, receiver.url(""), secret_seed, list(subscriptions.items())
            )
            start_processes(stack, env)
            producer_port = int(stack.processes["producer"].argv[-1].rsplit(":", 1)[1])

            log.started = time.monotonic()
            faults = Faults(stack, log)
            steps = fault_schedule(faults, config.service_restarts)
            fault_thread = threading.Thread(
                target=run_faults, args=(steps, log, stop_faults), daemon=True
            )
            fault_thread.start()

            def person(n: int) -> tuple[str, str, dict[str, str], bytes]:
                body = {"name": f"Grace Hopper {n}", "email": f"grace{n}@example.org"}
                return json_request("POST", "/people", body, {})

            statuses: dict[str, int] = {}
            load_deadline = time.monotonic() + config.load_seconds
            while time.monotonic() < load_deadline:
                committed = _count(producer_engine, "SELECT count(*) FROM outbox")
                if committed >= config.events:
                    break
                result = run_load(
                    producer_port,
                    person,
                    connections=config.connections,
                    seconds=max(1.0, load_deadline - time.monotonic()),
                    max_requests=config.events - committed,
                )
                for status, n in result.statuses.items():
                    statuses[str(status)] = statuses.get(str(status), 0) + n
            results["load"] = {
                "statuses": statuses,
                "seconds": round(time.monotonic() - log.started, 1),
            }
            print(f"chaos: load done: {results['load']}", flush=True)
            fault_thread.join(timeout=300)

            heal(stack, env)
            drained = drain(engine, producer_engine, config.drain_seconds)
            results["drained"] = drained
            time.sleep(2)  # the last answers reach the receiver's log
            events = outbox_events(producer_engine)
            states = delivery_states(engine, subscriptions)
            report = check(events, subscriptions, states, receiver.receipts())
            results["report"] = report.as_dict()
            results["messages_stored"] = _count(engine, "SELECT count(*) FROM messages")
        except KeyboardInterrupt:
            results["error"] = "interrupted"
        except Exception as exc:  # noqa: BLE001 - reported, and the run fails
            results["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        finally:
            stop_faults.set()
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
    if report is None:
        print(
            f"chaos: failed: {results.get('error')} (logs in {out_dir / 'logs'})", file=sys.stderr
        )
        print("chaos: events=0 deliveries=0 delivered=0 dead=0 lost=0 duplicates=0")
        return 1
    print(
        f"chaos: phantoms={report.phantoms} bad_signatures={report.bad_signatures} "
        f"unfinished={report.unfinished} delivered_without_receipt="
        f"{report.delivered_without_receipt} passed={report.passed} (details: {out_dir})",
        flush=True,
    )
    print(report.line(), flush=True)
    return 0 if report.passed else 1


def start_processes(stack: Stack, env: dict[str, str]) -> None:
    """Scheduler, a prefork worker and a thread-pool worker, the producer and its relay."""
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
            stored = _count(engine, "SELECT count(*) FROM messages")
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
