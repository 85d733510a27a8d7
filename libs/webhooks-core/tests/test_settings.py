"""The settings every process shares: a missing URL stops a process at start, saying what to
set; nothing only tests use is among them."""

from __future__ import annotations

import pytest

from webhooks_core.settings import CoreSettings, EndpointSettings, LogSettings, SettingsError

TEST_SWITCHES = ("testing", "delivery_sender", "clock_offset_file")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WEBHOOKS_DATABASE_URL", "WEBHOOKS_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)


def test_a_missing_url_fails_at_start_naming_what_to_set() -> None:
    with pytest.raises(SettingsError) as raised:
        CoreSettings.from_env()
    message = str(raised.value)
    assert "WEBHOOKS_DATABASE_URL is not set: set it to the platform's PostgreSQL" in message
    assert "WEBHOOKS_BROKER_URL is not set: set it to the RabbitMQ vhost" in message


def test_the_urls_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOKS_DATABASE_URL", "postgresql+psycopg2://db.example/webhooks")
    monkeypatch.setenv("WEBHOOKS_BROKER_URL", "amqp://mq.example/webhooks")
    settings = CoreSettings.from_env()
    assert (settings.database_url, settings.broker_url) == (
        "postgresql+psycopg2://db.example/webhooks",
        "amqp://mq.example/webhooks",
    )


def test_logging_reads_its_settings_without_the_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOKS_LOG_LEVEL", "WARNING")
    assert LogSettings.from_env().log_level == "WARNING"


def test_no_shared_settings_hold_a_test_switch() -> None:
    for kind in (LogSettings, CoreSettings, EndpointSettings):
        assert not set(TEST_SWITCHES) & set(kind.model_fields)
