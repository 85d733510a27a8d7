"""Running the metric catalogue of :mod:`webhooks_core.observability` in real processes.

* **Multiprocess mode.**  gunicorn workers and Celery pool processes each count in their own
  files under ``PROMETHEUS_MULTIPROC_DIR`` (set in the environment before the process starts,
  one directory per service); the exposition merges them so counters from all processes add
  up.  :func:`prepare_multiprocess_dir` empties the directory when the service starts, and
  :func:`mark_process_dead` drops a dead child's live gauges.  The gunicorn hooks below are what
  each service's ``gunicorn.conf.py`` installs.
* **Database-derived gauges.**  :class:`DatabaseGauges` computes pending deliveries, dead
  letters and endpoint health with a few cheap queries at scrape time.  Exactly one process
  exports them (the scheduler, through :func:`serve_process_metrics`), so that a sum over
  Prometheus targets never counts the same rows twice.
* **Non-HTTP processes** (delivery worker 9101, scheduler 9102, outbox relay 9103) expose
  their metrics with :func:`serve_process_metrics`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from webhooks_core.db import make_session_factory, run_transaction
from webhooks_core.deliveries.ordering import parked_sql
from webhooks_core.deliveries.states import OPEN_SQL, OPEN_STATES, first_due_by_application
from webhooks_core.endpoints.health import HEALTH_STATE_SQL, HEALTH_STATES
from webhooks_core.flow_monitoring import EndpointFlowGauges
from webhooks_core.settings import EndpointSettings

if TYPE_CHECKING:
    from sqlalchemy import Engine

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# A scrape must stay cheap even when the database is slow or locked: give up quickly and
# report the database gauges as unavailable rather than stall Prometheus.
DATABASE_GAUGES_TIMEOUT_MS = 2000

NON_TERMINAL_STATES = OPEN_STATES
CIRCUIT_STATES = ("closed", "open", "half_open")
# The settings' defaults, for gauges built without the process's settings.
DEFAULT_BREAKER_THRESHOLD: int = EndpointSettings.model_fields["circuit_breaker_threshold"].default
DEFAULT_AUTO_DISABLE_SECONDS: int = EndpointSettings.model_fields[
    "auto_disable_after_seconds"
].default
# The delivery side's default (its DeliverySettings.endpoint_max_in_flight), for the flow
# gauges of a process started without those settings.
DEFAULT_MAX_IN_FLIGHT = 4


def multiprocess_dir() -> str | None:
    """The multiprocess directory of this process, or ``None`` in single-process mode."""
    return os.environ.get(MULTIPROC_ENV) or None


def prepare_multiprocess_dir(path: str | None = None) -> None:
    """Create the directory and delete the files a previous run left in it.

    Stale files would add a previous run's counts to this one's, so the process that owns
    the service's directory (gunicorn's master, Celery's main process) calls this once at
    start, before any child writes to it.  The calling process's own files stay: it may
    have created its metrics already (Celery imports the tasks before ``worker_init``).
    """
    path = path or multiprocess_dir()
    if not path:
        return
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    own = str(os.getpid())
    for stale in directory.glob("*.db"):
        if stale.stem.rsplit("_", 1)[-1] != own:
            stale.unlink(missing_ok=True)


def mark_process_dead(pid: int) -> None:
    """Forget the live gauges (in-flight tasks) of a child process that exited."""
    if multiprocess_dir():
        prometheus_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def gunicorn_on_starting(server: object) -> None:
    """gunicorn ``on_starting`` hook: a clean multiprocess directory for this run."""
    prepare_multiprocess_dir()


def gunicorn_child_exit(server: object, worker: Any) -> None:
    """gunicorn ``child_exit`` hook: a dead worker's in-flight gauges stop counting."""
    mark_process_dead(int(worker.pid))


class ProcessGroupCollector(Collector):
    """CPU seconds and resident memory of every process in this process's group.

    In multiprocess mode the merged exposition has no ``process_*`` metrics, and the process
    serving it (one gunicorn worker, Celery's main process) is only part of the service.  The
    group holds the master and all its children, so the standard names describe the whole
    service.  CPU of reaped children is included through their parent's ``cutime``.
    """

    def __init__(self, proc: str = "/proc") -> None:
        self._proc = Path(proc)
        self._ticks = float(os.sysconf("SC_CLK_TCK"))
        self._page_size = float(os.sysconf("SC_PAGE_SIZE"))

    def _boot_time(self) -> float:
        for line in (self._proc / "stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
        return 0.0

    def _group_stats(self, group: int) -> Iterator[list[str]]:
        for entry in self._proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                raw = (entry / "stat").read_text()
            except OSError:  # the process exited while we looked
                continue
            # Fields after the parenthesised command name, which may itself hold spaces.
            fields = raw[raw.rfind(")") + 2 :].split()
            if int(fields[2]) == group:
                yield fields

    def collect(self) -> Iterable[Metric]:
        """One sample per metric: the sums over the process group."""
        try:
            group = os.getpgid(0)
            cpu_ticks = 0.0
            rss_pages = 0.0
            started = float("inf")
            processes = 0
            for fields in self._group_stats(group):
                # utime, stime, cutime, cstime are fields 14-17 of proc(5); we dropped 2.
                cpu_ticks += sum(float(value) for value in fields[11:15])
                rss_pages += float(fields[21])
                started = min(started, float(fields[19]))
                processes += 1
            boot = self._boot_time()
        except OSError:  # no /proc (not Linux): nothing to report
            return []
        cpu = CounterMetricFamily(
            "process_cpu_seconds_total",
            "User and system CPU time of the service's processes (process group), in seconds.",
        )
        cpu.add_metric([], cpu_ticks / self._ticks)
        memory = GaugeMetricFamily(
            "process_resident_memory_bytes",
            "Resident memory of the service's processes (process group), in bytes.",
        )
        memory.add_metric([], rss_pages * self._page_size)
        start = GaugeMetricFamily(
            "process_start_time_seconds",
            "Start time of the service's oldest process since the Unix epoch, in seconds.",
        )
        start.add_metric([], boot + started / self._ticks if processes else 0.0)
        count = GaugeMetricFamily(
            "webhooks_processes", "Processes of the service (its process group) right now."
        )
        count.add_metric([], float(processes))
        return [cpu, memory, start, count]


class DatabaseGauges(Collector):
    """Gauges read from the platform database at scrape time (register in ONE process).

    Three small queries, each served by a partial or composite index of the schema:
    deliveries not yet terminal (``ix_deliveries_open_created``, ``ix_deliveries_due_application``),
    open dead letters (``uq_dead_letters_open_delivery``) and endpoint health.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        circuit_breaker_threshold: int = DEFAULT_BREAKER_THRESHOLD,
        auto_disable_after_seconds: float = DEFAULT_AUTO_DISABLE_SECONDS,
    ) -> None:
        self._sessions = make_session_factory(engine)
        self._threshold = circuit_breaker_threshold
        self._auto_disable_after = float(auto_disable_after_seconds)

    def _query(self) -> dict[str, Any]:
        by_state, ages, health, first_failing, clock, certificate_expiry = run_transaction(
            self._sessions, self._read, what="database gauges"
        )
        states = {state: int(health.get(state, 0)) for state in HEALTH_STATES}
        auto_disable_in = None
        if first_failing is not None:
            auto_disable_in = max(
                self._auto_disable_after - (clock - first_failing).total_seconds(), 0.0
            )
        return {
            "by_state": {state: int(by_state.get(state, 0)) for state in NON_TERMINAL_STATES},
            "oldest_age": float(ages[0] or 0.0),
            "overdue": max(float(ages[1] or 0.0), 0.0),
            "dead_letters": int(ages[2]),
            "parked": int(ages[3]),
            "health": states,
            "circuits": {
                "closed": states["healthy"] + states["failing"],
                "open": states["open"],
                "half_open": states["half_open"],
            },
            "disabled": states["disabled"],
            "auto_disable_in": auto_disable_in,
            "certificate_expiry": None if certificate_expiry is None else float(certificate_expiry),
        }

    def _read(self, session: Session) -> tuple[Any, ...]:
        """The gauges' rows, in one transaction with a statement timeout."""
        session.execute(text(f"SET LOCAL statement_timeout = {DATABASE_GAUGES_TIMEOUT_MS}"))
        by_state: dict[str, int] = dict(
            session.execute(
                text(
                    "SELECT state, count(*) FROM deliveries"  # noqa: S608 - state constants
                    f" WHERE state IN {OPEN_SQL} GROUP BY state"
                )
            ).all()
        )
        ages = session.execute(
            text(
                # Only the state constants of deliveries.states are interpolated.
                "SELECT"  # noqa: S608
                " (SELECT extract(epoch FROM now() - min(created_at)) FROM deliveries"
                f"   WHERE state IN {OPEN_SQL}),"
                f" (WITH RECURSIVE firsts AS ({first_due_by_application('firsts')})"
                "   SELECT extract(epoch FROM now() - min(next_attempt_at)) FROM firsts"
                "   WHERE next_attempt_at <= now()),"
                " (SELECT count(*) FROM dead_letters WHERE redriven_at IS NULL),"
                f" (SELECT count(*) FROM deliveries d WHERE {parked_sql('d')})"
            )
        ).one()
        health: dict[str, int] = dict(
            session.execute(
                text(
                    # A constant of this package, no input: the shared health reading.
                    f"SELECT {HEALTH_STATE_SQL} AS state, count(*) FROM endpoints"  # noqa: S608
                    " WHERE deleted_at IS NULL AND kind = 'subscription' GROUP BY 1"
                ),
                {"threshold": self._threshold},
            ).all()
        )
        first_failing, clock = session.execute(
            text(
                "SELECT min(failing_since), now() FROM endpoints"
                " WHERE deleted_at IS NULL AND kind = 'subscription' AND enabled"
                " AND failing_since IS NOT NULL"
            )
        ).one()
        certificate_expiry = session.execute(
            text(
                "SELECT extract(epoch FROM min(tls_certificate_expires_at) - now())"
                " FROM endpoints WHERE deleted_at IS NULL AND enabled"
                " AND tls_certificate_expires_at IS NOT NULL"
            )
        ).scalar()
        return by_state, ages, health, first_failing, clock, certificate_expiry

    def collect(self) -> Iterable[Metric]:
        """Query the database; on failure report ``webhooks_database_up 0`` and nothing else."""
        started = time.perf_counter()
        up = GaugeMetricFamily(
            "webhooks_database_up", "1 when the database gauges could be read at this scrape."
        )
        duration = GaugeMetricFamily(
            "webhooks_database_gauges_duration_seconds",
            "Time the database gauges took to compute at this scrape.",
        )
        try:
            values = self._query()
        except SQLAlchemyError as exc:
            logger.warning("database gauges unavailable: %s", type(exc).__name__)
            up.add_metric([], 0.0)
            duration.add_metric([], time.perf_counter() - started)
            return [up, duration]
        up.add_metric([], 1.0)
        pending = GaugeMetricFamily(
            "webhooks_deliveries_pending",
            "Deliveries not yet in a terminal state, by state (pending, sending, retrying).",
            labels=["state"],
        )
        for state, count in values["by_state"].items():
            pending.add_metric([state], float(count))
        oldest = GaugeMetricFamily(
            "webhooks_deliveries_oldest_pending_age_seconds",
            "Age of the oldest delivery not yet in a terminal state (0 when there is none).",
        )
        oldest.add_metric([], values["oldest_age"])
        overdue = GaugeMetricFamily(
            "webhooks_deliveries_overdue_seconds",
            "How long the most overdue due delivery has waited past its next_attempt_at.",
        )
        overdue.add_metric([], values["overdue"])
        parked = GaugeMetricFamily(
            "webhooks_deliveries_parked",
            "Keyed deliveries waiting behind an earlier open delivery of their ordering key.",
        )
        parked.add_metric([], float(values["parked"]))
        dead = GaugeMetricFamily("webhooks_dead_letters_open", "Dead letters not redriven yet.")
        dead.add_metric([], float(values["dead_letters"]))
        circuits = GaugeMetricFamily(
            "webhooks_endpoints_circuit_state",
            "Enabled subscription endpoints by circuit-breaker state (closed, open, half_open).",
            labels=["state"],
        )
        for state in CIRCUIT_STATES:
            circuits.add_metric([state], float(values["circuits"][state]))
        disabled = GaugeMetricFamily(
            "webhooks_endpoints_disabled", "Subscription endpoints disabled (and not deleted)."
        )
        disabled.add_metric([], float(values["disabled"]))
        health = GaugeMetricFamily(
            "webhooks_endpoints_health",
            "Subscription endpoints by health state (healthy, failing, half_open, open,"
            " disabled), as the console and the API show it.",
            labels=["state"],
        )
        for state, count in values["health"].items():
            health.add_metric([state], float(count))
        auto_disable = GaugeMetricFamily(
            "webhooks_endpoints_auto_disable_in_seconds",
            "Seconds until the first failing endpoint is disabled if it keeps failing"
            " (no sample when no enabled endpoint is failing).",
        )
        if values["auto_disable_in"] is not None:
            auto_disable.add_metric([], values["auto_disable_in"])
        certificates = GaugeMetricFamily(
            "webhooks_endpoints_client_certificate_expiry_seconds",
            "Seconds until the first client certificate (mutual TLS) of an enabled endpoint"
            " expires, negative once expired (no sample when no endpoint has one).",
        )
        if values["certificate_expiry"] is not None:
            certificates.add_metric([], values["certificate_expiry"])
        duration.add_metric([], time.perf_counter() - started)
        return [
            up,
            pending,
            oldest,
            overdue,
            parked,
            dead,
            circuits,
            disabled,
            health,
            auto_disable,
            certificates,
            duration,
        ]


def exposition_registry(
    *, database_gauges_engine: Engine | None = None, settings: EndpointSettings | None = None
) -> CollectorRegistry:
    """The registry a metrics server of this process exposes.

    In multiprocess mode every process's files merged, plus the process group's CPU and
    memory; otherwise this process's default registry (which has its ``process_*`` metrics).
    """
    if multiprocess_dir():
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(ProcessGroupCollector())
    else:
        registry = REGISTRY
    if database_gauges_engine is not None:
        registry.register(
            DatabaseGauges(
                database_gauges_engine,
                circuit_breaker_threshold=(
                    settings.circuit_breaker_threshold if settings else DEFAULT_BREAKER_THRESHOLD
                ),
                auto_disable_after_seconds=(
                    settings.auto_disable_after_seconds
                    if settings
                    else DEFAULT_AUTO_DISABLE_SECONDS
                ),
            )
        )
        default_in_flight = getattr(settings, "endpoint_max_in_flight", DEFAULT_MAX_IN_FLIGHT)
        registry.register(EndpointFlowGauges(database_gauges_engine, default_in_flight))
    return registry


def serve_process_metrics(
    port: int,
    *,
    host: str = "127.0.0.1",
    database_gauges_engine: Engine | None = None,
    settings: EndpointSettings | None = None,
) -> int:
    """Serve ``/metrics`` of a non-HTTP process on ``host:port`` from a daemon thread.

    Pass ``database_gauges_engine`` in exactly one process of the platform (the scheduler),
    with its ``settings`` (the breaker threshold and auto-disable window the gauges read).
    Port 0 picks a free port; the bound port is returned.  A port in use raises ``OSError``:
    a process whose metrics cannot be scraped should not pretend to run normally.
    """
    registry = exposition_registry(database_gauges_engine=database_gauges_engine, settings=settings)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound = int(server.server_address[1])
    logger.info("metrics on http://%s:%d/metrics", host, bound)
    return bound
