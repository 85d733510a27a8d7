"""The event types the people demo fires, registered in the platform's catalogue at start.

Registration writes the platform database directly (``WEBHOOKS_DATABASE_URL``) with the
catalogue's rule for producers (:func:`webhooks_core.messages.catalogue.add_missing_event_types`):
it needs no admin token, is safe to run from every worker at once, and never overwrites a type
an operator has changed or archived.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import create_engine, pool
from sqlalchemy.exc import SQLAlchemyError

from webhooks_core.db import make_session_factory, run_transaction
from webhooks_core.messages.catalogue import add_missing_event_types
from webhooks_core.settings import redact_url

log = logging.getLogger(__name__)

_NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}
PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "name", "email", "phone", "created_at", "updated_at"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "name": {"type": "string"},
        "email": _NULLABLE_STRING,
        "phone": _NULLABLE_STRING,
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}
FILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "name", "size", "sha256", "content_type", "created_at"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "name": {"type": "string"},
        "size": {"type": "integer", "minimum": 0},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "content_type": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
    },
}
_EXAMPLE_PERSON = {
    "id": "0b6d3c52-5d0c-4a43-9a67-3f4c8f2f1c11",
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "phone": None,
    "created_at": "2026-01-01T12:00:00Z",
    "updated_at": "2026-01-01T12:00:00Z",
}


def _person_event(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    properties: dict[str, Any] = {"person": PERSON_SCHEMA, **(extra or {})}
    return {"type": "object", "required": list(properties), "properties": properties}


EVENT_TYPES: list[dict[str, Any]] = [
    {
        "name": "person.created",
        "description": "A person was created in the people demo; data.person is the person.",
        "schema": _person_event(),
        "example": {"person": _EXAMPLE_PERSON},
    },
    {
        "name": "person.updated",
        "description": "A person changed; data.changed_fields names what changed and "
        "data.previous holds the old values.",
        "schema": _person_event(
            {
                "changed_fields": {"type": "array", "items": {"type": "string"}},
                "previous": {"type": "object"},
            }
        ),
        "example": {
            "person": _EXAMPLE_PERSON,
            "changed_fields": ["email"],
            "previous": {"email": "ada@old.example.com"},
        },
    },
    {
        "name": "person.deleted",
        "description": "A person was deleted; data.person is what it was.",
        "schema": _person_event(),
        "example": {"person": _EXAMPLE_PERSON},
    },
    {
        "name": "file.uploaded",
        "description": "A file was uploaded to the people demo; data.file describes it.",
        "schema": {"type": "object", "required": ["file"], "properties": {"file": FILE_SCHEMA}},
        "example": {
            "file": {
                "id": "6f1d1f0e-13a4-4d8a-8d1e-0f4f3b1f7a21",
                "name": "report.pdf",
                "size": 1024,
                "sha256": "0" * 64,
                "content_type": "application/pdf",
                "created_at": "2026-01-01T12:00:00Z",
            }
        },
    },
]


def register_event_types(platform_database_url: str) -> list[str]:
    """Add the demo's event types the catalogue lacks; return the names added.

    An unreachable platform database is logged and skipped: the producer works without it
    (its events wait in RabbitMQ's ingest queue like any other).
    """
    engine = create_engine(platform_database_url, poolclass=pool.NullPool)
    try:
        names = run_transaction(
            make_session_factory(engine),
            lambda session: add_missing_event_types(session, EVENT_TYPES),
        )
    except SQLAlchemyError as exc:
        log.warning(
            "could not register the demo event types in %s: %s",
            redact_url(platform_database_url),
            exc.__class__.__name__,
        )
        return []
    finally:
        engine.dispose()
    if names:
        log.info("registered event types %s", ", ".join(names))
    return names
