"""The load generator, the closing line and the profile summary of ``make bench``."""

from __future__ import annotations

import re
from pathlib import Path

from bench.load import json_request, run_load
from bench.profiles import summarise
from bench.receiver import RunningReceiver
from bench.report import bench_line, cpu_line, write_chart
from bench.scenarios import cpu_ms_per, cpu_used


def test_load_generator_stops_at_its_count(tmp_path: Path) -> None:
    with RunningReceiver(tmp_path / "recv") as receiver:
        result = run_load(
            receiver.port,
            lambda n: json_request("POST", f"/r/ok/load-{n % 3}", {"n": n}, {"webhook-id": str(n)}),
            connections=4,
            seconds=30,
            max_requests=40,
        )
        receipts = receiver.receipts()
    assert result.statuses == {200: 40}
    assert result.accepted == 40
    assert result.errors == 0
    assert len(receipts) == 40
    assert {r.path for r in receipts} == {"/r/ok/load-0", "/r/ok/load-1", "/r/ok/load-2"}


def test_a_paced_load_spreads_its_requests_over_the_time_its_rate_gives(tmp_path: Path) -> None:
    with RunningReceiver(tmp_path / "recv") as receiver:
        result = run_load(
            receiver.port,
            lambda n: json_request("POST", f"/r/ok/paced-{n}", {"n": n}, {"webhook-id": str(n)}),
            connections=4,
            seconds=30,
            max_requests=20,
            rate=10,
        )
        receipts = sorted(receiver.receipts(), key=lambda r: r.arrived)
    assert result.statuses == {200: 20}
    # Request n is not sent before (n - 1) / rate: the last one at least 1.9 s after the first
    # (a lower bound, which a slow machine cannot break).
    assert receipts[-1].arrived - receipts[0].arrived >= 1.85
    assert result.seconds >= 1.85
    assert {r.webhook_id for r in receipts} == {str(n) for n in range(1, 21)}


def test_load_generator_counts_answers_it_did_not_want(tmp_path: Path) -> None:
    with RunningReceiver(tmp_path / "recv") as receiver:
        result = run_load(
            receiver.port,
            lambda n: ("GET", "/nothing-here", {}, b""),
            connections=2,
            seconds=30,
            max_requests=10,
        )
    assert result.statuses == {404: 10}
    assert result.accepted == 0


def test_bench_line_is_the_contract() -> None:
    results = {
        "raw": {"raw_per_s": 1000.4},
        "throughput": {"deliveries_per_s": 1500.6},
        "e2e": {"e2e_per_s": 1200.5},
        "latency": {"p50_ms": 12.4, "p99_ms": 80.6},
    }
    line = bench_line(results)
    assert line == (
        "bench: deliveries_per_s=1501 e2e_per_s=1200 raw_per_s=1000 ratio=1.50 p50_ms=12 p99_ms=81"
    )
    # The shape tools parse (PRODUCT.md, "Contracts that tools rely on").
    contract = re.compile(
        r"bench: deliveries_per_s=\d+ e2e_per_s=\d+ raw_per_s=\d+ ratio=\d+\.\d\d "
        r"p50_ms=\d+ p99_ms=\d+"
    )
    assert contract.fullmatch(line)
    assert bench_line({}) == (
        "bench: deliveries_per_s=0 e2e_per_s=0 raw_per_s=0 ratio=0.00 p50_ms=0 p99_ms=0"
    )
    assert contract.fullmatch(bench_line({}))


def test_cpu_line_reads_the_end_to_end_scenario_first() -> None:
    per_delivery = {
        "worker_ms": 0.6412,
        "scheduler_ms": 0.05,
        "api_ms": 0.1,
        "postgres_ms": 0.17,
        "rabbitmq_ms": 0.02,
        "receiver_ms": 0.08,
    }
    results = {
        "raw": {"cpu_ms_per_request": 0.4104},
        "throughput": {"cpu_ms_per_delivery": {"worker_ms": 9.0}},
        "e2e": {"cpu_ms_per_delivery": per_delivery},
    }
    assert cpu_line(results) == (
        "bench-cpu: from=e2e worker_ms=0.641 scheduler_ms=0.050 api_ms=0.100 postgres_ms=0.170 "
        "rabbitmq_ms=0.020 receiver_ms=0.080 raw_ms_per_request=0.410"
    )
    del results["e2e"]
    assert cpu_line(results).startswith("bench-cpu: from=throughput worker_ms=9.000 ")
    assert cpu_line({}) == (
        "bench-cpu: from=none worker_ms=0.000 scheduler_ms=0.000 api_ms=0.000 postgres_ms=0.000 "
        "rabbitmq_ms=0.000 receiver_ms=0.000 raw_ms_per_request=0.000"
    )


def test_cpu_per_delivery_groups_the_processes_by_component() -> None:
    before = {"at": 0.0, "worker0": 1.0, "worker1": 2.0, "api": 0.5, "machine": 10.0}
    after = {
        "at": 2.0,
        "worker0": 1.4,
        "worker1": 2.4,
        "api": 0.6,
        "scheduler": 0.1,
        "rabbitmq": 0.0,
        "machine": 12.0,
    }
    figures = cpu_ms_per(before, after, 1000)
    assert figures["worker_ms"] == 0.8  # 0.8 s of both workers over 1,000 deliveries
    assert figures["api_ms"] == 0.1
    assert figures["scheduler_ms"] == 0.1
    assert figures["postgres_ms"] == 0.0
    assert cpu_ms_per(before, after, 0) == {}


def test_chart_is_written_from_partial_results(tmp_path: Path) -> None:
    chart = tmp_path / "bench.png"
    write_chart({"throughput": {"deliveries_per_s": 900}, "raw": {"raw_per_s": 800}}, chart)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_profile_summary_reads_collapsed_stacks(tmp_path: Path) -> None:
    profile = tmp_path / "p.txt"
    profile.write_text(
        "main (x.py:1);deliver (delivery/tasks/deliver.py:36);recv (socket.py:1) 3\n"
        "main (x.py:1);deliver (delivery/tasks/deliver.py:36);execute (db.py:9) 1\n"
    )
    summary = summarise(profile)
    assert "4 samples" in summary
    assert "75.0%  recv (socket.py:1)" in summary
    assert "100.0%  deliver (delivery/tasks/deliver.py:36)" in summary


def test_cpu_of_shared_servers_is_compared_process_by_process() -> None:
    # A postgres backend of someone else's test exits between the snapshots: the group's
    # sum falls, but the backends that stayed still count what they used.
    before = {"at": 0.0, "machine": 1.0, "postgresql (all databases)#10": 5.0}
    before["postgresql (all databases)#11"] = 50.0
    after = {"at": 1.0, "machine": 2.0, "postgresql (all databases)#10": 5.5}
    after["postgresql (all databases)#12"] = 0.25  # started in between
    used = cpu_used(before, after)
    assert used["postgresql (all databases)"] == 0.75
    assert cpu_ms_per(before, after, 100)["postgres_all_databases_ms"] == 7.5


def test_retention_line_has_the_contracted_fields() -> None:
    from bench.retention import retention_line

    line = retention_line(
        {"attempts": 10_000_000, "stats_p99_ms": 42.4, "search_p99_ms": 61.6,
         "drop_day_ms": 38.9, "load_s": 471.2}
    )  # fmt: skip
    assert line == (
        "bench-retention: attempts=10000000 stats_p99_ms=42 search_p99_ms=62 drop_day_ms=39"
        " load_s=471"
    )
