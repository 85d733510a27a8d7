"""The event type catalogue."""

from __future__ import annotations

from typing import Any

import jsonschema
from referencing import Registry
from referencing.exceptions import Unresolvable
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from registration.services.errors import Conflict, InvalidField, NotFound
from registration.services.pagination import Page, paginate
from webhooks_core.db import run_transaction
from webhooks_core.messages.catalogue import add_missing_event_types
from webhooks_core.models import EventType

# Resolves nothing but the schema itself: a "$ref" to a URL is never fetched (the API server
# would otherwise request any address an admin names, and fail with it).
_NO_RETRIEVAL: Registry[Any] = Registry()

__all__ = ["Unresolvable", "check_schema", "schema_validator"]


def schema_validator(schema: dict[str, Any]) -> Any:
    """A jsonschema validator of ``schema`` that never fetches a remote reference.

    Validating against a reference it cannot resolve raises
    ``referencing.exceptions.Unresolvable``.
    """
    return jsonschema.validators.validator_for(schema)(schema, registry=_NO_RETRIEVAL)


def _external_references(schema: dict[str, Any]) -> list[str]:
    """``$ref`` values that point outside the schema (to neither ``#...`` nor an inner $id)."""
    found: list[str] = []
    identifiers: set[str] = set()
    references: list[str] = []
    stack: list[Any] = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("$id"), str):
                identifiers.add(item["$id"].split("#", 1)[0])
            for key in ("$ref", "$dynamicRef"):
                if isinstance(item.get(key), str):
                    references.append(item[key])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    for reference in references:
        if not reference.startswith("#") and reference.split("#", 1)[0] not in identifiers:
            found.append(reference)
    return found


def check_schema(schema: dict[str, Any] | None, example: dict[str, Any] | None) -> None:
    """Refuse a JSON schema that is not one, or an example it does not accept."""
    if schema is None:
        return
    try:
        validator = jsonschema.validators.validator_for(schema)
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidField(f"is not a valid JSON schema: {exc.message}", field="schema") from None
    external = _external_references(schema)
    if external:
        raise InvalidField(
            f"may only refer to itself ($ref '#/...'), not to {external[0]!r}", field="schema"
        )
    if example is not None:
        try:
            error = jsonschema.exceptions.best_match(schema_validator(schema).iter_errors(example))
        except Unresolvable as exc:
            raise InvalidField(
                f"has a reference that cannot be resolved: {exc}", field="schema"
            ) from None
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

    def work(session: Session) -> EventType:
        event_type = EventType(name=name, description=description, schema=schema, example=example)
        session.add(event_type)
        session.flush()
        return event_type

    try:
        return run_transaction(sessions, work)
    except IntegrityError:
        raise Conflict(f"event type {name!r} exists", field="name") from None


def ensure_event_types(sessions: sessionmaker[Session], catalogue: dict[str, str]) -> None:
    """Create the named event types that are missing (used by producers at start)."""

    def work(session: Session) -> None:
        rows = [{"name": name, "description": text} for name, text in catalogue.items()]
        add_missing_event_types(session, rows)

    run_transaction(sessions, work)


def get_event_type(sessions: sessionmaker[Session], name: str) -> EventType:
    """One event type by name."""

    def work(session: Session) -> EventType:
        event_type = session.scalar(select(EventType).where(EventType.name == name))
        if event_type is None:
            raise NotFound(f"event type {name!r} not found")
        return event_type

    return run_transaction(sessions, work)


def list_event_types(
    sessions: sessionmaker[Session], *, include_archived: bool, limit: int, cursor: str | None
) -> Page[EventType]:
    """The catalogue, newest first."""
    query = select(EventType)
    if not include_archived:
        query = query.where(EventType.archived.is_(False))

    def work(session: Session) -> Page[EventType]:
        return paginate(
            session, query, EventType.created_at, EventType.id, limit=limit, cursor=cursor
        )

    return run_transaction(sessions, work)


def update_event_type(
    sessions: sessionmaker[Session], name: str, changes: dict[str, Any]
) -> EventType:
    """Change description, schema, example or archived flag of an event type."""

    def work(session: Session) -> EventType:
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

    return run_transaction(sessions, work)
