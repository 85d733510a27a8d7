"""Structured logs: JSON lines for machines, colour for people, never a secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from webhooks_core.logging import configure_logging, redact


class Terminal(io.StringIO):
    """A stream that says it is a TTY."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_lines_carry_service_level_logger_and_extra_fields(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("worker", log_format="json", level="INFO", stream=stream)

    logging.getLogger("delivery.engine").info("claimed %d deliveries", 3, extra={"batch": 7})
    logging.getLogger("delivery.engine").debug("not shown at INFO")

    [line] = lines(stream)
    entry = json.loads(line)
    assert entry["service"] == "worker"
    assert entry["level"] == "info"
    assert entry["logger"] == "delivery.engine"
    assert entry["message"] == "claimed 3 deliveries"
    assert entry["batch"] == 7
    assert entry["ts"].endswith("+00:00")


def test_auto_format_is_json_off_a_terminal_and_colour_on_one(restore_logging: None) -> None:
    piped = io.StringIO()
    configure_logging("api", log_format="auto", level="INFO", stream=piped)
    logging.getLogger("x").warning("hello")
    assert json.loads(lines(piped)[0])["message"] == "hello"

    terminal = Terminal()
    configure_logging("api", log_format="auto", level="INFO", stream=terminal)
    logging.getLogger("x").warning("hello", extra={"endpoint_id": "ep_1"})
    [line] = lines(terminal)
    assert "\x1b[33mWARNING" in line  # yellow level
    assert "hello" in line
    assert "endpoint_id\x1b[0m=ep_1" in line


def test_console_format_without_a_terminal_has_no_colour(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("api", log_format="console", level="INFO", stream=stream)
    logging.getLogger("registration").info("ready", extra={"port": 8000})
    [line] = lines(stream)
    assert "\x1b[" not in line
    assert "INFO" in line
    assert line.endswith("registration: ready port=8000")


def test_secrets_never_reach_a_log_line(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("api", log_format="json", level="INFO", stream=stream)
    log = logging.getLogger("leaky")
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    token = "wh_" + "A" * 43
    log.info("signing with %s", secret)
    log.info("request", extra={"authorization": "Bearer abc.def.ghi", "note": f"token {token}"})
    log.info("cannot reach amqp://guest:hunter2@rabbit:5672/webhooks")
    try:
        raise ValueError(f"bad secret {secret}")
    except ValueError:
        log.exception("failed")

    text = stream.getvalue()
    for leaked in (secret, "MfKQ9r8", "abc.def.ghi", token, "hunter2"):
        assert leaked not in text
    entries = [json.loads(line) for line in lines(stream)]
    assert entries[0]["message"] == "signing with whsec_[REDACTED]"
    assert entries[1]["authorization"] == "Bearer [REDACTED]"
    assert entries[2]["message"] == "cannot reach amqp://guest:[REDACTED]@rabbit:5672/webhooks"
    assert "whsec_[REDACTED]" in entries[3]["exception"]
    assert "ValueError" in entries[3]["exception"]


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "delivered 12 messages to https://example.com/hooks in 30 ms"
    assert redact(text) == text


def test_a_malformed_log_call_is_logged_not_raised(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("api", log_format="json", level="INFO", stream=stream)
    logging.getLogger("sloppy").info("%d deliveries for %s", "whsec_notanumber1234")
    [line] = lines(stream)
    assert "whsec_[REDACTED]" in json.loads(line)["message"]
