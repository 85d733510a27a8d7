"""The event type catalogue."""

from __future__ import annotations

from typing import Any

import jsonschema
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from registration.services.errors import Conflict, InvalidField, NotFound
from registration.services.pagination import Page, paginate
from webhooks_core.db import transaction
from webhooks_core.models import EventType


def check_schema(schema: dict[str, Any] | None, example: dict[str, Any] | None) -> None:
    """Refuse a JSON schema that is not one, or an example it does not accept."""
    if schema is None:
        return
    try:
        validator = jsonschema.validators.validator_for(schema)
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidField(f"is not a valid JSON schema: {exc.message}", field="schema") from None
    if example is not None:
        error = jsonschema.exceptions.best_match(validator(schema).iter_errors(example))
        if error is not None:
            raise InvalidField(f"does not match the schema: {error.message}", field="example")


def create_event_type(
    sessions: sessionmaker[Session],
    *,
    name: str,
    description: str,
    schema: dict[str, Any] | None,
    example: dict[str, Any] | None,
) -> EventType:
    """Add an event type; a taken name is a conflict."""
    check_schema(schema, example)
    try:
        with transaction(sessions) as session:
            event_type = EventType(
                name=name, description=description, schema=schema, example=example
            )
            session.add(event_type)
            session.flush()
            return event_type
    except IntegrityError:
        raise Conflict(f"event type {name!r} exists", field="name") from None


def ensure_event_types(sessions: sessionmaker[Session], catalogue: dict[str, str]) -> None:
    """Create the named event types that are missing (used by producers at start)."""
    from sqlalchemy.dialects.postgresql import insert

    if not catalogue:
        return
    with transaction(sessions) as session:
        rows = [{"name": name, "description": text} for name, text in catalogue.items()]
        session.execute(
            insert(EventType).values(rows).on_conflict_do_nothing(index_elements=["name"])
        )


def get_event_type(sessions: sessionmaker[Session], name: str) -> EventType:
    """One event type by name."""
    with sessions() as session:
        event_type = session.scalar(select(EventType).where(EventType.name == name))
        if event_type is None:
            raise NotFound(f"event type {name!r} not found")
        return event_type


def list_event_types(
    sessions: sessionmaker[Session], *, include_archived: bool, limit: int, cursor: str | None
) -> Page[EventType]:
    """The catalogue, newest first."""
    query = select(EventType)
    if not include_archived:
        query = query.where(EventType.archived.is_(False))
    with sessions() as session:
        return paginate(
            session, query, EventType.created_at, EventType.id, limit=limit, cursor=cursor
        )


def update_event_type(
    sessions: sessionmaker[Session], name: str, changes: dict[str, Any]
) -> EventType:
    """Change description, schema, example or archived flag of an event type."""
    with transaction(sessions) as session:
        event_type = session.scalar(
            select(EventType).where(EventType.name == name).with_for_update()
        )
        if event_type is None:
            raise NotFound(f"event type {name!r} not found")
        schema = changes.get("schema", event_type.schema)
        example = changes.get("example", event_type.example)
        check_schema(schema, example)
        for field in ("description", "schema", "example", "archived"):
            if field in changes:
                setattr(event_type, field, changes[field])
        session.flush()
        return event_type
