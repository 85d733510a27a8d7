"""Structured logs for every process: JSON lines in containers, readable colour on a terminal.

``configure_logging(service)`` sets up the root logger once per process.  Formats:

* ``json``: one JSON object per line (``ts``, ``level``, ``service``, ``logger``, ``message``,
  then every ``extra`` field, then ``exception``), for log shippers;
* ``console``: ``time LEVEL logger: message key=value ...``, coloured when the stream is a TTY;
* ``auto`` (the default): ``console`` on a TTY, ``json`` otherwise.

Set ``WEBHOOKS_LOG_FORMAT`` and ``WEBHOOKS_LOG_LEVEL`` to choose.  Every record passes through
:class:`RedactSecrets` first, so ``whsec_`` signing secrets, bearer tokens and URL passwords
never reach a log line, whatever the caller formatted into it.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any, Literal
from uuid import UUID

LogFormat = Literal["auto", "json", "console"]

REDACTED = "[REDACTED]"
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"whsec_[A-Za-z0-9+/=_-]+"), f"whsec_{REDACTED}"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), rf"\1 {REDACTED}"),
    # Application tokens issued by the management API, wherever they appear.
    (re.compile(r"\bwh_[A-Za-z0-9_-]{20,}"), f"wh_{REDACTED}"),
    (re.compile(r"(?i)(\"?(?:password|secret|token|authorization)\"?\s*[:=]\s*\"?)[^\s\",}]+"),
     rf"\1{REDACTED}"),
    # user:password@ in URLs (database and broker URLs in error messages).
    (re.compile(r"(://[^:/@\s]+:)[^@/\s]+@"), rf"\1{REDACTED}@"),
)  # fmt: skip

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime"}
)


def redact(text: str) -> str:
    """``text`` with anything that looks like a secret replaced by ``[REDACTED]``."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: object) -> object:
    if isinstance(value, str):
        return redact(value)
    return value


class RedactSecrets(logging.Filter):
    """Rewrite each record's message, extra fields and traceback with secrets redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keep the record; only its text changes."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit: log them, never raise
            message = f"{record.msg} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS:
                setattr(record, key, _redact_value(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return repr(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra`` fields become top-level keys."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single line of JSON."""
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=_json_default, ensure_ascii=False)


_COLOURS = {
    "DEBUG": "\x1b[2m",
    "INFO": "\x1b[32m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[31m",
    "CRITICAL": "\x1b[1;31m",
}
_DIM = "\x1b[2m"
_CYAN = "\x1b[36m"
_RESET = "\x1b[0m"


class ConsoleFormatter(logging.Formatter):
    """``12:00:00.123 INFO  logger: message key=value``, in colour when asked to."""

    def __init__(self, service: str, *, colour: bool) -> None:
        super().__init__()
        self._service = service
        self._colour = colour

    def _paint(self, code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if self._colour else text

    def format(self, record: logging.LogRecord) -> str:
        """The record as one readable line (plus a traceback, if any)."""
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        level = self._paint(_COLOURS.get(record.levelname, ""), f"{record.levelname:<7}")
        fields = " ".join(
            f"{self._paint(_CYAN, key)}={value}" for key, value in _extras(record).items()
        )
        line = (
            f"{self._paint(_DIM, when)} {level} {self._paint(_DIM, record.name + ':')} "
            f"{record.getMessage()}"
        )
        if fields:
            line = f"{line} {fields}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        return line


def resolve_format(log_format: LogFormat, stream: IO[str]) -> Literal["json", "console"]:
    """``auto`` means console on a terminal and JSON anywhere else (containers, files)."""
    if log_format != "auto":
        return log_format
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


def logging_config(
    service: str,
    *,
    log_format: LogFormat = "auto",
    level: str = "INFO",
    stream: IO[str] | None = None,
) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` dictionary (gunicorn's ``logconfig_dict`` too).

    gunicorn's own loggers are routed to the root handler so that access and error lines
    share the format.
    """
    stream = stream or sys.stderr
    chosen = resolve_format(log_format, stream)
    isatty = getattr(stream, "isatty", None)
    colour = chosen == "console" and isatty is not None and bool(isatty())
    formatter: dict[str, Any] = (
        {"()": JsonFormatter, "service": service}
        if chosen == "json"
        else {"()": ConsoleFormatter, "service": service, "colour": colour}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactSecrets}},
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": stream,
                "formatter": "default",
                "filters": ["redact"],
            }
        },
        "root": {"level": level.upper(), "handlers": ["default"]},
        "loggers": {
            "gunicorn.error": {"handlers": [], "propagate": True},
            "gunicorn.access": {"handlers": [], "propagate": True},
            # Per-request lines of the libraries are noise at INFO.
            "urllib3": {"level": "WARNING"},
            "amqp": {"level": "WARNING"},
        },
    }


def configure_logging(
    service: str,
    *,
    log_format: LogFormat | None = None,
    level: str | None = None,
    stream: IO[str] | None = None,
) -> None:
    """Set up the root logger of this process for ``service`` (call once, at start).

    ``log_format`` and ``level`` default to ``WEBHOOKS_LOG_FORMAT`` / ``WEBHOOKS_LOG_LEVEL``.
    """
    if log_format is None or level is None:
        from webhooks_core.settings import LogSettings

        settings = LogSettings.from_env()
        log_format = log_format or settings.log_format
        level = level or settings.log_level
    logging.config.dictConfig(
        logging_config(service, log_format=log_format, level=level, stream=stream)
    )
