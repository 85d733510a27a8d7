"""The chaos run's load lasts through its whole fault schedule, and the run says when a fault
came after the load all the same."""

from __future__ import annotations

import pytest

from chaos.__main__ import ChaosConfig, fault_times, overlap


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
