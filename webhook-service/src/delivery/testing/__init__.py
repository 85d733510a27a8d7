"""Test hooks of the delivery side, read only by the processes that tests start.

The production processes (``celery -A delivery.worker``, ``python -m delivery.scheduler``)
read :class:`~delivery.config.DeliverySettings`, which has no test switch: setting
``WEBHOOKS_DELIVERY_SENDER`` or ``WEBHOOKS_CLOCK_OFFSET_FILE`` there changes nothing.  The
tests start the same processes through these entry points instead, which read
:class:`EngineTestSettings` (the delivery settings plus the two switches):

* ``celery -A delivery.testing.worker worker ...``: a worker (it also ingests);
* ``python -m delivery.testing.scheduler``: a scheduler.

With ``WEBHOOKS_CLOCK_OFFSET_FILE`` every one of them (and the test itself) adds the file's
seconds to the wall clock of scheduling decisions, so a test can jump hours ahead; with
``WEBHOOKS_DELIVERY_SENDER=fake`` the worker answers 200 without any network.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from celery import Celery

from delivery.celery_app import create_celery
from delivery.clock import Clock, SystemClock
from delivery.config import DeliverySettings
from delivery.sender import OutboundRequest, Sender, SendResult, outcome_of_status


class EngineTestSettings(DeliverySettings):
    """The delivery settings plus the switches only tests use."""

    # ``fake`` answers 200 at once without a request (tests of the engine's bookkeeping).
    delivery_sender: Literal["http", "fake"] = "http"
    # A file holding seconds to add to the wall clock of scheduling decisions.
    clock_offset_file: str | None = None

    def clock(self) -> Clock:
        """The clock these settings ask for."""
        if self.clock_offset_file:
            return OffsetClock(self.clock_offset_file)
        return SystemClock()

    def sender(self) -> Sender | None:
        """The sender these settings ask for (None: the real one)."""
        return FakeSender() if self.delivery_sender == "fake" else None


def create_test_celery(settings: EngineTestSettings, *, ingest: bool = False) -> Celery:
    """:func:`delivery.celery_app.create_celery` with the sender and clock of ``settings``."""
    return create_celery(settings, ingest=ingest, sender=settings.sender(), clock=settings.clock())


class OffsetClock:
    """The wall clock plus an offset read from a file that tests move forward."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def offset(self) -> float:
        """Seconds added to the wall clock; a missing or empty file means none."""
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return 0.0
        return float(text) if text else 0.0

    def now(self) -> datetime:
        """The wall clock moved by the file's offset."""
        return datetime.now(UTC) + timedelta(seconds=self.offset())

    def advance(self, seconds: float) -> None:
        """Move every process's clock forward (written atomically, read on every call)."""
        staged = self.path.with_suffix(".tmp")
        staged.write_text(repr(self.offset() + seconds))
        staged.replace(self.path)


@dataclass
class FakeSender:
    """Answers every request with ``status`` at once and remembers the last requests."""

    status: int = 200
    sent: deque[OutboundRequest] = field(default_factory=lambda: deque(maxlen=10_000))

    def send(self, request: OutboundRequest) -> SendResult:
        """Record the request and answer ``status``."""
        self.sent.append(request)
        return SendResult(outcome_of_status(self.status), 0.0, status_code=self.status)
