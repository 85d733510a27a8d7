"""Broker ingestion: turn messages of the ``webhooks.ingest`` queue into stored messages.

:func:`ingest_batch` parses envelopes, stores them with
:func:`~webhooks_core.messages.fanout.accept_messages` (one delivery per message and matching
endpoint) in one transaction and commits; only then may the caller acknowledge the broker messages
(:func:`ingest_body` does one).  A body that cannot be parsed gets an :class:`Unparseable`
outcome, which the consumer answers with a reject (no requeue) so RabbitMQ dead-letters it to
``webhooks.ingest.dead``.  Ingesting the same envelope twice stores one message (an event id
is unique per application, and among broadcasts).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from pydantic import ValidationError
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core import json_input
from webhooks_core.db import run_transaction
from webhooks_core.messages.envelope import Envelope
from webhooks_core.messages.fanout import AcceptResult, accept_messages, record_accepted
from webhooks_core.models import Application
from webhooks_core.observability import MESSAGES_REJECTED

SOURCE = "broker"


class Unparseable(ValueError):
    """The body is not an envelope the platform can store; ``reason`` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def parse_envelope(body: bytes | str) -> Envelope:
    """The envelope in ``body``, or :class:`Unparseable` saying what is wrong with it."""
    try:
        raw = json_input.loads(body)
    except json_input.JSONRejected as exc:
        raise Unparseable("invalid_envelope", f"JSON the platform refuses: {exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unparseable("invalid_json", f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise Unparseable("invalid_envelope", "the envelope must be a JSON object")
    # The API's rules for JSON (depth, NUL, lone surrogates, numbers) hold on this path too.
    refused = json_input.problems(raw)
    if refused:
        detail = "; ".join(f"{p.field}: {p.message}" for p in refused)
        raise Unparseable("invalid_envelope", f"JSON the platform refuses: {detail}")
    try:
        return Envelope.model_validate(raw)
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, err["loc"])) or "body" for err in exc.errors())
        raise Unparseable("invalid_envelope", f"invalid envelope fields: {fields}") from None


def resolve_application(session: Session, reference: str | None) -> uuid.UUID | None:
    """The application an envelope names, by id or uid; None for a broadcast."""
    if reference is None:
        return None
    try:
        as_id: uuid.UUID | None = uuid.UUID(reference)
    except ValueError:
        as_id = None
    condition = Application.uid == reference
    if as_id is not None:
        condition = or_(condition, Application.id == as_id)
    found = session.execute(select(Application.id).where(condition).limit(1)).scalar()
    if found is None:
        raise Unparseable("unknown_application", f"no application {reference!r}")
    return found


def ingest_batch(
    sessions: sessionmaker[Session], bodies: Sequence[bytes | str]
) -> list[AcceptResult | Unparseable]:
    """Parse, store and fan out several broker messages in ONE transaction, committed when this
    returns; one outcome per body, in order.

    A body that cannot be parsed (or names an unknown application) gets an
    :class:`Unparseable` outcome and does not affect the others.  A database error propagates
    and nothing is stored: the caller returns every message to the queue.  One commit for a
    whole prefetch window is what lets a single consumer ingest hundreds of events per second.
    """
    outcomes: list[AcceptResult | Unparseable | None] = [None] * len(bodies)
    parsed: list[tuple[int, Envelope]] = []
    for index, body in enumerate(bodies):
        try:
            parsed.append((index, parse_envelope(body)))
        except Unparseable as exc:
            outcomes[index] = exc
    # Insert in (event id, application) order, so that two consumers holding the same
    # duplicates in different orders never wait on each other's unique-index entries (a
    # deadlock).  Two statements store and fan out the whole batch (accept_messages).
    parsed.sort(key=lambda item: (item[1].id, item[1].application or ""))
    types = {index: envelope.type for index, envelope in parsed}
    if parsed:
        stored = run_transaction(sessions, lambda session: _store(session, parsed), what="ingest")
        for index, result in stored.items():
            outcomes[index] = result
    ordered: list[AcceptResult | Unparseable] = []
    for index, outcome in enumerate(outcomes):
        assert outcome is not None
        if isinstance(outcome, Unparseable):
            MESSAGES_REJECTED.labels(outcome.reason).inc()
        else:
            record_accepted(types[index], outcome, SOURCE)
        ordered.append(outcome)
    return ordered


def _store(
    session: Session, parsed: list[tuple[int, Envelope]]
) -> dict[int, AcceptResult | Unparseable]:
    """Resolve each envelope's application, store and fan out; the outcome by index."""
    outcomes: dict[int, AcceptResult | Unparseable] = {}
    accepted: list[tuple[int, Envelope, uuid.UUID | None]] = []
    for index, envelope in parsed:
        try:
            application_id = resolve_application(session, envelope.application)
        except Unparseable as exc:
            outcomes[index] = exc
            continue
        accepted.append((index, envelope, application_id))
    results = accept_messages(
        session, [(envelope, app_id) for _, envelope, app_id in accepted], source=SOURCE
    )
    for (index, _, _), result in zip(accepted, results, strict=True):
        outcomes[index] = result
    return outcomes


def ingest_body(sessions: sessionmaker[Session], body: bytes | str) -> AcceptResult:
    """Parse, store and fan out one broker message, committed when this returns.

    Raises :class:`Unparseable` for a message that must be dead-lettered; database errors
    propagate (the caller leaves the message on the queue for a later attempt).
    """
    (outcome,) = ingest_batch(sessions, [body])
    if isinstance(outcome, Unparseable):
        raise outcome
    return outcome
