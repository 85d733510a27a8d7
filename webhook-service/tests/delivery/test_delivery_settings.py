"""The delivery side's settings: validated at start, naming the variable; the test switches
(a fake sender, a moved clock) exist only in the settings of the processes tests start."""

from __future__ import annotations

from pathlib import Path

import pytest

from delivery.aiohttp_sender import AioHttpSender
from delivery.celery_app import create_celery
from delivery.clock import SystemClock
from delivery.config import DeliverySettings
from delivery.runtime import runtime_for
from delivery.sender import HttpSender
from delivery.testing import EngineTestSettings, FakeSender, OffsetClock
from webhooks_core.settings import SettingsError


@pytest.fixture
def urls(settings: DeliverySettings) -> dict[str, str]:
    return {"database_url": settings.database_url, "broker_url": settings.broker_url}


@pytest.fixture
def switches_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    offset = tmp_path / "offset"
    offset.write_text("3600")
    monkeypatch.setenv("WEBHOOKS_DELIVERY_SENDER", "fake")
    monkeypatch.setenv("WEBHOOKS_CLOCK_OFFSET_FILE", str(offset))
    return offset


def test_production_settings_have_no_test_switch(switches_on: Path, urls: dict[str, str]) -> None:
    assert not {"testing", "delivery_sender", "clock_offset_file"} & set(
        DeliverySettings.model_fields
    )
    # Set in a production process's environment, the switches change nothing.
    runtime = runtime_for(create_celery(DeliverySettings.from_env(**urls)))
    assert isinstance(runtime.sender, HttpSender)
    assert isinstance(runtime.clock, SystemClock)


@pytest.mark.parametrize(("value", "kind"), [("aiohttp", AioHttpSender), ("urllib3", HttpSender)])
def test_the_http_client_setting_picks_the_sender(
    monkeypatch: pytest.MonkeyPatch, urls: dict[str, str], value: str, kind: type
) -> None:
    monkeypatch.setenv("WEBHOOKS_HTTP_CLIENT", value)
    runtime = runtime_for(create_celery(DeliverySettings.from_env(**urls)))
    assert type(runtime.sender) is kind
    monkeypatch.setenv("WEBHOOKS_HTTP_CLIENT", "requests")
    with pytest.raises(SettingsError, match="WEBHOOKS_HTTP_CLIENT"):
        DeliverySettings.from_env(**urls)


def test_the_test_switches_work_in_the_test_settings(
    switches_on: Path, urls: dict[str, str]
) -> None:
    settings = EngineTestSettings.from_env(**urls)
    assert (settings.delivery_sender, settings.clock_offset_file) == ("fake", str(switches_on))
    assert isinstance(settings.sender(), FakeSender)
    clock = settings.clock()
    assert isinstance(clock, OffsetClock)
    assert clock.offset() == 3600


def test_bad_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, urls: dict[str, str]
) -> None:
    monkeypatch.setenv("WEBHOOKS_RETRY_SCHEDULE", "5,-1")
    with pytest.raises(SettingsError, match="WEBHOOKS_RETRY_SCHEDULE"):
        DeliverySettings.from_env(**urls)
    monkeypatch.setenv("WEBHOOKS_RETRY_SCHEDULE", "0,5,300")
    monkeypatch.setenv("WEBHOOKS_ALLOWED_TARGET_NETWORKS", "127.0.0.0/8, not-a-network")
    with pytest.raises(SettingsError, match="WEBHOOKS_ALLOWED_TARGET_NETWORKS"):
        DeliverySettings.from_env(**urls)
    monkeypatch.setenv("WEBHOOKS_ALLOWED_TARGET_NETWORKS", "127.0.0.0/8,::1/128")
    parsed = DeliverySettings.from_env(**urls)
    assert parsed.retry_schedule == [0, 5, 300]
    with pytest.raises(SettingsError, match="WEBHOOKS_LEASE_SECONDS"):
        DeliverySettings.from_env(**urls, lease_seconds=10, total_timeout_seconds=30)
    assert len(parsed.allowed_networks) == 2
