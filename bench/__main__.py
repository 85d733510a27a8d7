"""``python -m bench`` (``make bench``): run every scenario against the native stack.

Sets up its own databases and vhost (``webhooks_bench``, ``webhooks_producer_bench``),
migrates them, starts the scheduler and delivery workers (and the API for the e2e, latency
and ingest scenarios; the people producer and the outbox relay for ingest) with the run's
settings, runs the scenarios, stops everything it started (always: on failure and Ctrl-C
too), writes ``docs/bench/results.json`` and ``docs/bench/bench.png`` (and a copy of both
under ``var/bench/<time>/``, with the processes' logs), and ends with exactly one line::

    bench: deliveries_per_s=N e2e_per_s=N raw_per_s=N ratio=R p50_ms=N p99_ms=N

preceded by one ``bench-cpu:`` line (CPU milliseconds per delivery of each component, and the
raw sender's per request; see :func:`bench.report.cpu_line`), and before that, when the auth
scenario was to run, one ``bench-auth:`` line (see :func:`bench.report.auth_line`), when the
ordering scenario was, one ``bench-ordering:`` line (see :func:`bench.ordering.ordering_line`),
and when the flow scenario was, one ``bench-flow:`` line (see :func:`bench.flow.flow_line`).

``BENCH_SCALE=0.1`` makes a quick run; ``BENCH_ONLY=raw,throughput,e2e,latency`` runs some
scenarios (raw, throughput, e2e, latency, auth, fanout, isolation, backlog, ingest, ordering,
flow; and retention, only when named: see :mod:`bench.retention`);
see :class:`bench.scenarios.BenchConfig` for every knob.  ``BENCH_HTTP_CLIENT=aiohttp`` or
``urllib3`` gives the workers that HTTP client (``WEBHOOKS_HTTP_CLIENT``; else the default).
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from bench import auth, flow, ordering, probes, retention, scenarios, seed
from bench.receiver import DEFAULT_SEED, RunningReceiver
from bench.report import auth_line, bench_line, cpu_line, write_chart
from bench.stack import (
    REPO,
    ServiceNames,
    Stack,
    base_env,
    code_version,
    reset_services,
    stopping_on_signals,
)
from webhooks_core.endpoints import sealing

SCENARIOS: list[tuple[str, Callable[[scenarios.Bench], dict[str, Any]]]] = [
    ("raw", scenarios.scenario_raw),
    ("throughput", scenarios.scenario_throughput),
    ("e2e", scenarios.scenario_e2e),
    ("latency", scenarios.scenario_latency),
    ("auth", auth.scenario_auth),
    ("fanout", scenarios.scenario_fanout),
    ("isolation", scenarios.scenario_isolation),
    ("backlog", scenarios.scenario_backlog),
    ("ingest", scenarios.scenario_ingest),
    ("ordering", ordering.scenario_ordering),
    ("flow", flow.scenario_flow),
    ("retention", retention.scenario_retention),
]
# Run only when named in BENCH_ONLY: loading ten million attempts takes minutes.
NOT_BY_DEFAULT = {"retention"}


def engine_settings() -> dict[str, str]:
    """Platform settings of the run (``WEBHOOKS_*`` without the prefix)."""
    settings = {
        "admin_token": scenarios.ADMIN_TOKEN,
        # The isolation scenario's endpoint "times out (10 s)".
        "read_timeout_seconds": "10",
        "total_timeout_seconds": "12",
        "log_level": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        "log_format": "console",
    }
    # The workers' HTTP client (WEBHOOKS_HTTP_CLIENT), to compare them; else the default.
    if os.environ.get("BENCH_HTTP_CLIENT"):
        settings["http_client"] = os.environ["BENCH_HTTP_CLIENT"]
    return settings


def main() -> int:
    """Run the benchmark; 0 when every scenario ran."""
    config = scenarios.BenchConfig.from_env()
    only = {s for s in os.environ.get("BENCH_ONLY", "").split(",") if s}
    # BENCH_RUN_NAME=bench_b uses webhooks_bench_b, webhooks_producer_bench_b and vhost
    # webhooks_bench_b: two runs side by side do not reset each other's databases.
    run_name = os.environ.get("BENCH_RUN_NAME", "bench")
    names = ServiceNames(
        database=f"webhooks_{run_name}",
        producer_database=f"webhooks_producer_{run_name}",
        vhost=f"webhooks_{run_name}",
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = REPO / "var" / "bench" / stamp
    docs_dir = REPO / "docs" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    # One application takes the whole platform here: its fair share sized as docs/delivery.md
    # says, three quarters of the worker slots.
    share = str(max(config.workers * config.concurrency * 3 // 4, 1))
    env = base_env(names, **engine_settings(), application_max_in_flight=share)
    # The seeded endpoints' secrets are sealed with the key the platform's processes get.
    sealing.install(sealing.KeyRing.parse(env["WEBHOOKS_SEALING_KEYS"]))
    results: dict[str, Any] = {
        "started": stamp,
        "config": config.__dict__,
        "code": code_version(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
        },
    }
    errors: dict[str, str] = {}
    stack = Stack(out_dir / "logs")
    receiver = RunningReceiver(
        out_dir / "receipts",
        processes=config.receiver_processes,
        hang_seconds=60,
        seed=os.environ.get("BENCH_SECRET_SEED", DEFAULT_SEED),
    )
    with stopping_on_signals():
        try:
            print(f"bench: preparing {names.database} and vhost {names.vhost}", flush=True)
            reset_services(names, env)
            engine = seed.make_engine(names.database_url)
            receiver.start()
            bench = scenarios.Bench(
                config=config,
                stack=stack,
                env=env,
                engine=engine,
                receiver=receiver,
                application_id=seed.create_application(engine, "bench"),
                out_dir=out_dir,
                results=results,
            )
            results["probes"] = probes.measure(names.broker_url, engine)
            scenarios.start_engine(bench)
            results["memory_at_start"] = bench.memory()
            for name, scenario in SCENARIOS:
                if (only and name not in only) or (not only and name in NOT_BY_DEFAULT):
                    continue
                vacuumed = seed.vacuum_analyze(engine)
                print(f"bench: {name} ... (VACUUM ANALYZE took {vacuumed:.1f} s)", flush=True)
                started = time.monotonic()
                try:
                    results[name] = scenario(bench)
                except Exception as exc:  # noqa: BLE001 - one failed scenario must not hide the others
                    errors[name] = f"{type(exc).__name__}: {exc}"
                    traceback.print_exc()
                print(
                    f"bench: {name} done in {time.monotonic() - started:.0f} s: "
                    f"{_summary(results.get(name))}",
                    flush=True,
                )
        except KeyboardInterrupt:
            errors["interrupted"] = "stopped by a signal"
        except Exception as exc:  # noqa: BLE001 - reported in the result file and the exit code
            errors["setup"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        finally:
            stack.stop()
            receiver.stop()
    results["errors"] = errors
    results["finished"] = time.strftime("%Y%m%d-%H%M%S")
    (out_dir / "results.json").write_text(scenarios.dump(results))
    try:
        write_chart(results, out_dir / "bench.png")
    except Exception as exc:  # noqa: BLE001 - the numbers matter more than the picture
        print(f"bench: chart not written: {exc}", file=sys.stderr)
    if os.environ.get("BENCH_NO_DOCS", "0") in {"", "0"}:
        docs_dir.mkdir(parents=True, exist_ok=True)
        for name in ("results.json", "bench.png"):
            if (out_dir / name).exists():
                shutil.copy(out_dir / name, docs_dir / name)
    if errors:
        print(f"bench: errors: {errors} (logs in {out_dir / 'logs'})", file=sys.stderr)
    if not only or "auth" in only:
        print(auth_line(results), flush=True)
    if "retention" in only and "retention" in results:
        print(retention.retention_line(results["retention"]), flush=True)
    if not only or "ordering" in only:
        print(ordering.ordering_line(results), flush=True)
    if not only or "flow" in only:
        print(flow.flow_line(results), flush=True)
    print(cpu_line(results), flush=True)
    print(bench_line(results), flush=True)
    return 1 if errors else 0


def _summary(result: dict[str, Any] | None) -> str:
    if not result:
        return "failed"
    keys = (
        "raw_per_s",
        "cpu_ms_per_request",
        "deliveries_per_s",
        "e2e_per_s",
        "p50_ms",
        "p99_ms",
        "seconds_to_last_receipt",
        "relative_to_throughput",
        "memory_after",
        *(f"{variant}_{unit}" for variant in auth.VARIANTS for unit in ("per_s", "ms")),
        "oauth_tokens",
        "per_s",
        "unordered_per_s",
        "violations",
    )
    shown = {k: result[k] for k in keys if k in result}
    if "cpu_ms_per_delivery" in result:
        shown["worker_ms_per_delivery"] = result["cpu_ms_per_delivery"].get("worker_ms")
    if "http" in result:
        shown["http_events_per_s"] = result["http"]["events_per_s"]
    if "http_batch" in result:
        shown["http_batch_events_per_s"] = result["http_batch"]["events_per_s"]
    if "producer" in result:
        shown["producer_events_per_s"] = result["producer"]["events_per_s"]
    return ", ".join(f"{k}={v}" for k, v in shown.items())


if __name__ == "__main__":
    sys.exit(main())
