"""The load generator, the closing line and the profile summary of ``make bench``."""

from __future__ import annotations

from pathlib import Path

from bench.load import json_request, run_load
from bench.profiles import summarise
from bench.receiver import RunningReceiver
from bench.report import bench_line, write_chart


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
        "latency": {"p50_ms": 12.4, "p99_ms": 80.6},
    }
    assert bench_line(results) == (
        "bench: deliveries_per_s=1501 raw_per_s=1000 ratio=1.50 p50_ms=12 p99_ms=81"
    )
    assert bench_line({}) == "bench: deliveries_per_s=0 raw_per_s=0 ratio=0.00 p50_ms=0 p99_ms=0"


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
