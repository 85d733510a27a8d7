"""Test switches (a fake sender, a moved clock) are refused unless the process is a test."""

from __future__ import annotations

import pytest

from webhooks_core.settings import FIELD_GROUPS, Settings, SettingsError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WEBHOOKS_TESTING", "WEBHOOKS_DELIVERY_SENDER", "WEBHOOKS_CLOCK_OFFSET_FILE"):
        monkeypatch.delenv(name, raising=False)


def test_production_settings_have_no_test_switch_on() -> None:
    settings = Settings.from_env()
    assert (settings.testing, settings.delivery_sender, settings.clock_offset_file) == (
        False,
        "http",
        None,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [("WEBHOOKS_DELIVERY_SENDER", "fake"), ("WEBHOOKS_CLOCK_OFFSET_FILE", "/tmp/offset")],
)
def test_a_test_switch_outside_tests_is_refused_at_start_naming_what_to_do(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        Settings.from_env()
    message = str(raised.value)
    assert f"{name}={value} is only for tests" in message
    assert "set WEBHOOKS_TESTING=1" in message


def test_the_test_switches_work_when_the_process_is_a_test(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBHOOKS_TESTING", "1")
    monkeypatch.setenv("WEBHOOKS_DELIVERY_SENDER", "fake")
    monkeypatch.setenv("WEBHOOKS_CLOCK_OFFSET_FILE", "/tmp/offset")
    settings = Settings.from_env()
    assert (settings.delivery_sender, settings.clock_offset_file) == ("fake", "/tmp/offset")
    # Overrides passed by a test fixture follow the same rule.
    monkeypatch.delenv("WEBHOOKS_TESTING")
    with pytest.raises(SettingsError, match="WEBHOOKS_DELIVERY_SENDER=fake"):
        Settings.from_env(clock_offset_file=None)
    assert Settings.from_env(testing=True).delivery_sender == "fake"


def test_every_field_belongs_to_exactly_one_process_group() -> None:
    grouped = [name for names in FIELD_GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(Settings.model_fields)
