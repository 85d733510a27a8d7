"""Property tests of the recording path: whatever bytes and headers a receiver answers, and
whatever text an attempt carries, the delivery is recorded once and never left ``sending``.

The first property runs the engine's :func:`deliver_batch` in this process (no worker, so
nothing else claims the rows) against a raw socket on 127.0.0.1 answering Hypothesis'
bytes, with the real sender and PostgreSQL.  The second records arbitrary Unicode (NUL, lone
surrogates, anything) as an attempt's response and error.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from delivery.celery_app import create_celery
from delivery.config import DeliverySettings
from delivery.engine import (
    BatchReport,
    DeliveryRuntime,
    _Change,
    _record,
    deliver_batch,
    storable,
)
from delivery.runtime import runtime_for
from webhooks_core.db import transaction
from webhooks_core.endpoints.sealing import seal
from webhooks_core.messages.envelope import Envelope, utcnow
from webhooks_core.messages.fanout import accept_message
from webhooks_core.models import Application, Attempt, Delivery, Endpoint, EndpointSecret
from webhooks_core.signing import new_secret

PROPERTY = hypothesis_settings(
    max_examples=60,
    deadline=None,
    database=None,  # no example database in the repository: each run draws afresh
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class RawReceiver:
    """A socket on 127.0.0.1 that answers every request with ``self.answer`` and hangs up."""

    def __init__(self) -> None:
        self.answer = b""
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                with conn:
                    request = b""
                    while b"\r\n\r\n" not in request:
                        request += conn.recv(65536)
                    head, _, body = request.partition(b"\r\n\r\n")
                    length = next(
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    )
                    while len(body) < length:
                        body += conn.recv(65536)
                    conn.sendall(self.answer)


@pytest.fixture
def raw_receiver() -> Iterator[RawReceiver]:
    server = RawReceiver()
    yield server
    server.listener.close()


@pytest.fixture(scope="module")
def runtime(settings: DeliverySettings) -> DeliveryRuntime:
    values = settings.model_dump()
    values.update(
        allowed_target_networks=["127.0.0.1/32"],
        connect_timeout_seconds=0.5,
        read_timeout_seconds=1.0,
        total_timeout_seconds=1.5,
        retry_schedule=[0, 60],
        response_body_max_bytes=1024,
    )
    return runtime_for(create_celery(DeliverySettings.from_env(**values)))


def new_leased_delivery(
    sessions: sessionmaker[Session], endpoint_id: uuid.UUID, lease_rows: Any
) -> Any:
    """One message for the endpoint, its delivery leased as a batch of one; (token, id)."""
    with transaction(sessions) as session:
        app_id = session.scalar(select(Endpoint.application_id).where(Endpoint.id == endpoint_id))
        envelope = Envelope(type="thing.done", data={"n": 1})
        accept_message(session, envelope, source="http", application_id=app_id)
        session.flush()
        delivery_id = session.execute(
            text(
                "SELECT d.id FROM deliveries d JOIN messages m ON m.id = d.message_id"
                " WHERE m.event_id = :event_id"
            ),
            {"event_id": envelope.id},
        ).scalar_one()
        token = lease_rows(session, [delivery_id])
    return token, delivery_id


def an_endpoint(sessions: sessionmaker[Session], url: str) -> uuid.UUID:
    with transaction(sessions) as session:
        app = Application(name="properties")
        session.add(app)
        session.flush()
        endpoint = Endpoint(application_id=app.id, url=url)
        session.add(endpoint)
        session.flush()
        session.add(EndpointSecret(endpoint_id=endpoint.id, secret=seal(new_secret())))
        return endpoint.id


def recorded(sessions: sessionmaker[Session], delivery_id: int) -> tuple[Delivery, list[Attempt]]:
    with sessions() as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        attempts = list(session.scalars(select(Attempt).where(Attempt.delivery_id == delivery_id)))
        return delivery, attempts


TOKEN = st.text(
    alphabet="!#$%&'*+.^_`|~-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    min_size=1,
    max_size=20,
).filter(lambda n: n.lower() not in {"content-length", "connection", "transfer-encoding"})
HEADER_LINE = st.one_of(
    # name: value, the value any bytes but the line's end
    st.tuples(TOKEN, st.binary(max_size=60)).map(
        lambda nv: nv[0].encode() + b": " + nv[1].replace(b"\r", b"").replace(b"\n", b"")
    ),
    # or any bytes at all on a line of their own (often no header at all; an empty line
    # would end the head, and the rest be the body)
    st.binary(min_size=1, max_size=40)
    .map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
    .filter(bool),
)


@PROPERTY
@given(
    status=st.sampled_from([200, 201, 202, 299, 400, 404, 429, 500, 503]),
    reason=st.binary(max_size=20).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    header_lines=st.lists(HEADER_LINE, max_size=6),
    body=st.binary(max_size=2048),
)
# The two clients read this head differently (below): always tried, not left to the draw.
@example(status=200, reason=b"OK", header_lines=[b" "], body=b"{}")
def test_any_answer_is_recorded_once_and_never_strands_its_delivery(
    db: sessionmaker[Session],
    runtime: DeliveryRuntime,
    lease_rows: Any,
    raw_receiver: RawReceiver,
    status: int,
    reason: bytes,
    header_lines: list[bytes],
    body: bytes,
) -> None:
    endpoint_id = an_endpoint(db, raw_receiver.url)
    token, delivery_id = new_leased_delivery(db, endpoint_id, lease_rows)
    raw_receiver.answer = (
        b"HTTP/1.1 %d %s\r\n" % (status, reason)
        + b"".join(line + b"\r\n" for line in header_lines)
        + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        + body
    )

    deliver_batch(runtime, token, [delivery_id])

    delivery, attempts = recorded(db, delivery_id)
    assert delivery.state in {"delivered", "retrying"}
    assert delivery.lease_token is None
    assert len(attempts) == 1
    (attempt,) = attempts
    event(attempt.outcome)
    if attempt.outcome == "connect_error":  # a head the sender refused: a retried failure
        assert delivery.state == "retrying"
        assert attempt.error
        return
    assert attempt.status_code == status
    assert delivery.state == ("delivered" if status < 300 else "retrying")
    if header_lines[:1] == [b" "] and runtime.settings.http_client == "aiohttp":
        # llhttp, lenient as aiohttp runs it, ends the head at a lone space right after the
        # status line, where http.client refuses the head: the rest of the answer is its
        # body (docs/delivery.md, *The HTTP client*).
        header_lines, body = [], raw_receiver.answer.split(b"\r\n \r\n", 1)[1]
    encoded = any(
        line.lower().startswith(b"content-encoding:")
        and line.split(b":", 1)[1].strip().lower() not in (b"", b"identity")
        for line in header_lines
    )
    if not encoded:
        excerpt = body[:1024].decode("utf-8", errors="replace") or None
        assert attempt.response_body == storable(excerpt)


ANY_TEXT = st.text(
    alphabet=st.characters(codec=None, exclude_categories=()),  # NUL and lone surrogates too
    max_size=300,
)


@PROPERTY
@given(body=st.one_of(st.none(), ANY_TEXT), error=st.one_of(st.none(), ANY_TEXT))
def test_any_text_of_an_attempt_is_stored(
    db: sessionmaker[Session],
    runtime: DeliveryRuntime,
    lease_rows: Any,
    body: str | None,
    error: str | None,
) -> None:
    endpoint_id = an_endpoint(db, "http://127.0.0.1:9/hook")
    token, delivery_id = new_leased_delivery(db, endpoint_id, lease_rows)
    now = utcnow()
    change = _Change(
        delivery_id,
        "retrying",
        1,
        next_attempt_at=now + timedelta(seconds=60),
        attempted_at=now,
        status_code=500,
        error=error,
    )
    attempt = {
        "delivery_id": delivery_id,
        "endpoint_id": endpoint_id,
        "started_at": now,
        "latency_ms": 1.0,
        "status_code": 500,
        "outcome": "http_5xx",
        "error": error,
        "response_body": body,
        "trigger": "scheduled",
    }
    report = BatchReport()

    _record(runtime, db, token, [change], [attempt], {}, report)

    delivery, attempts = recorded(db, delivery_id)
    assert delivery.state == "retrying"
    assert report.retrying == 1
    (stored,) = attempts
    assert stored.response_body == storable(body)
    assert stored.error == storable(error, 1000)
    assert delivery.last_error == storable(error, 1000)
    for value in (stored.response_body, stored.error):
        if value is not None:
            assert "\x00" not in value
            value.encode("utf-8")  # no lone surrogate left


@hypothesis_settings(max_examples=100, database=None)
@given(value=ANY_TEXT)
def test_storable_text_is_valid_utf8_without_nul_and_keeps_the_rest(value: str) -> None:
    kept = storable(value)
    assert kept is not None
    assert "\x00" not in kept
    kept.encode("utf-8")
    assert len(kept) == len(value)
    assert all(
        k == v or (k == "\ufffd" and (v == "\x00" or "\ud800" <= v <= "\udfff"))
        for k, v in zip(kept, value, strict=True)
    )
