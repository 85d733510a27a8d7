"""The chaos run's load lasts through its whole fault schedule, and the run says when a fault
came after the load all the same."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench.stack import Stack
from chaos.__main__ import ChaosConfig, FaultLog, Faults, fault_times, overlap


@pytest.mark.parametrize("services", [True, False])
def test_the_paced_load_outlasts_every_fault(
    services: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CHAOS_EVENTS", "CHAOS_LOAD_SECONDS", "CHAOS_API_EVENTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHAOS_SERVICE_RESTARTS", "1" if services else "0")
    config = ChaosConfig.from_env()
    times = fault_times(services)
    assert all(at + 20 <= config.load_seconds for at, _ in times)
    names = {name for _, name in times}
    assert ({"rabbitmq", "postgresql"} <= names) is services
    assert "api" in names  # the HTTP publishing path is hit too
    assert (config.api_events, config.poisoned_events) == (2000, 100)


def test_faults_after_the_load_are_reported() -> None:
    load = {"producer": {"seconds": 80.0}, "api": {"feeding_seconds": 70.0}}
    faults = [{"at_s": 21.0, "fault": "rabbitmq stop_app"}, {"at_s": 72.5, "fault": "x"}]
    result = overlap(load, faults)
    assert result["load_until_s"] == 70.0
    assert result["faults_after_load"] == [{"at_s": 72.5, "fault": "x"}]


def test_a_restart_aside_does_not_hold_the_schedule(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "logs")
    log = FaultLog()
    faults = Faults(stack, log)
    try:
        first = stack.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], {})
        faults.kill_and_restart_aside("sleeper", pause=3.0)
        # Back before the pause is over: killed, and the restart still to come.
        assert not first.alive()
        assert [e["fault"] for e in log.entries] == ["SIGKILL"]
        assert faults.aside[0].is_alive()
        faults.join(timeout=30)
        assert stack.processes["sleeper"].alive()
        assert stack.processes["sleeper"].pid != first.pid
        assert [(e["fault"], e["detail"], e["ok"]) for e in log.entries] == [
            ("SIGKILL", "sleeper", True),
            ("restarted", "sleeper", True),
        ]
    finally:
        stack.stop()
