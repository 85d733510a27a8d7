"""The one log line the engine writes per attempt, as an operator's log search sees it.

:func:`deliver_batch` runs in this process (no worker, so nothing else claims the rows) with
the real sender against receivers on 127.0.0.1; the ``delivery.attempt`` logger is read
through the JSON formatter the processes use.  Which level each outcome logs at (INFO
delivered, WARNING failed, ERROR dead) is asserted on a real worker's log by
``test_isolation.py``; this test asserts the fields operators search by.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from delivery.celery_app import create_celery
from delivery.config import DeliverySettings
from delivery.engine import DeliveryRuntime, deliver_batch
from delivery.runtime import runtime_for
from webhooks_core.db import transaction
from webhooks_core.endpoints.sealing import seal
from webhooks_core.logging import JsonFormatter, RedactSecrets
from webhooks_core.messages.envelope import Envelope
from webhooks_core.messages.fanout import accept_message
from webhooks_core.models import Application, Delivery, Endpoint, EndpointSecret
from webhooks_core.signing import new_secret


def runtime_logging(settings: DeliverySettings, successes: float) -> DeliveryRuntime:
    """A runtime that logs ``successes`` of the successful attempts (and every failed one)."""
    values = settings.model_dump()
    values.update(
        allowed_target_networks=["127.0.0.1/32"],
        connect_timeout_seconds=0.5,
        read_timeout_seconds=1.0,
        total_timeout_seconds=1.5,
        retry_schedule=[0, 60],
        retry_jitter=0,
        log_successful_attempts=successes,
    )
    return runtime_for(create_celery(DeliverySettings.from_env(**values)))


@pytest.fixture(scope="module")
def runtime(settings: DeliverySettings) -> DeliveryRuntime:
    return runtime_logging(settings, 1.0)


@pytest.fixture
def attempt_log() -> Iterator[io.StringIO]:
    """What the ``delivery.attempt`` logger writes, one JSON object per line."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("worker"))
    handler.addFilter(RedactSecrets())
    log = logging.getLogger("delivery.attempt")
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield stream
    log.removeHandler(handler)
    log.setLevel(level)


def leased_batch(
    sessions: sessionmaker[Session],
    urls: dict[str, tuple[str, list[int]]],
    lease_rows: Callable[[Session, list[int]], uuid.UUID],
) -> tuple[uuid.UUID, str, dict[str, tuple[uuid.UUID, int]]]:
    """One message to an endpoint per ``name: (url, retry schedule)``, its deliveries leased
    as one batch; (token, event id, name -> (endpoint id, delivery id))."""
    with transaction(sessions) as session:
        app = Application(name="attempt-logging")
        session.add(app)
        session.flush()
        endpoints = {}
        for name, (url, schedule) in urls.items():
            endpoint = Endpoint(application_id=app.id, url=url, retry_schedule=schedule)
            session.add(endpoint)
            session.flush()
            session.add(EndpointSecret(endpoint_id=endpoint.id, secret=seal(new_secret())))
            endpoints[name] = endpoint.id
        envelope = Envelope(type="thing.done", data={"n": 1})
        accept_message(session, envelope, source="http", application_id=app.id)
        session.flush()
        rows = session.execute(select(Delivery.endpoint_id, Delivery.id)).all()
        by_endpoint = dict(rows)
        token = lease_rows(session, list(by_endpoint.values()))
    named = {name: (eid, by_endpoint[eid]) for name, eid in endpoints.items()}
    return token, envelope.id, named


def test_each_attempt_logs_one_line_with_the_fields_operators_search_by(
    db: sessionmaker[Session],
    runtime: DeliveryRuntime,
    receiver: Callable[..., Any],
    attempt_log: io.StringIO,
    lease_rows: Any,
) -> None:
    fine = receiver()
    failing = receiver(lambda _got, _n: {"status": 503, "body": b"busy"})
    token, event_id, named = leased_batch(
        db,
        {
            "delivered": (fine.url, [0, 60]),
            "retrying": (failing.url, [0, 60]),
            "dead": (failing.url + "?last", [0]),
        },
        lease_rows,
    )

    deliver_batch(runtime, token, [delivery_id for _, delivery_id in named.values()])

    entries = {}
    for line in attempt_log.getvalue().splitlines():
        entry = json.loads(line)
        entries[entry["delivery_id"]] = entry
    assert sorted(entries) == sorted(delivery_id for _, delivery_id in named.values())
    for name, (endpoint_id, delivery_id) in named.items():
        entry = entries[delivery_id]
        assert entry["logger"] == "delivery.attempt"
        assert entry["service"] == "worker"
        assert entry["endpoint_id"] == str(endpoint_id)
        assert entry["event_id"] == event_id
        assert entry["attempt"] == 1
        assert entry["state"] == name
        assert entry["latency_ms"] >= 0
    delivered = entries[named["delivered"][1]]
    assert (delivered["outcome"], delivered["status_code"], delivered["error"]) == (
        "success",
        200,
        None,
    )
    assert delivered["message"] == "delivery attempt success"
    assert delivered["next_attempt_at"] is None
    retrying = entries[named["retrying"][1]]
    assert (retrying["outcome"], retrying["status_code"]) == ("http_5xx", 503)
    assert retrying["message"] == "delivery attempt http_5xx"
    wait = datetime.fromisoformat(retrying["next_attempt_at"]) - datetime.fromisoformat(
        retrying["ts"]
    )
    assert timedelta(seconds=50) < wait < timedelta(seconds=70)  # the endpoint's 60 s step
    dead = entries[named["dead"][1]]
    assert (dead["outcome"], dead["status_code"], dead["next_attempt_at"]) == (
        "http_5xx",
        503,
        None,
    )


def test_successful_attempts_are_sampled_failed_ones_never(
    db: sessionmaker[Session],
    settings: DeliverySettings,
    receiver: Callable[..., Any],
    attempt_log: io.StringIO,
    lease_rows: Any,
) -> None:
    # WEBHOOKS_LOG_SUCCESSFUL_ATTEMPTS=0.25: one success line in four, every failure.
    fine = receiver()
    failing = receiver(lambda _got, _n: {"status": 503, "body": b"busy"})
    urls = {f"fine{n}": (f"{fine.url}?n={n}", [0, 60]) for n in range(8)}
    urls.update({f"failing{n}": (f"{failing.url}?n={n}", [0, 60]) for n in range(3)})
    token, _event_id, named = leased_batch(db, urls, lease_rows)

    deliver_batch(
        runtime_logging(settings, 0.25),
        token,
        [delivery_id for _, delivery_id in named.values()],
    )

    entries = [json.loads(line) for line in attempt_log.getvalue().splitlines()]
    outcomes = sorted(entry["outcome"] for entry in entries)
    assert outcomes == ["http_5xx"] * 3 + ["success"] * 2
    assert len(fine.received) == 8
