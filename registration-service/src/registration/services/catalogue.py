"""The event-type catalogue as ingestion reads it: payloads checked against their type's schema.

Entries are cached per process; the fast publish statement stores nothing unless the catalogue
still holds the very schema an entry was read with (compared by digest), so a stale entry can
only send a request down the general path, which reads the catalogue again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import jsonschema
from sqlalchemy import TEXT, cast, func, select
from sqlalchemy.orm import Session

from registration.services.errors import InvalidField
from registration.services.event_types import Unresolvable, schema_validator
from webhooks_core.models import EventType


@dataclass(frozen=True)
class CataloguedType:
    """An unarchived event type as this process last read it."""

    digest: str  # md5 of the schema's jsonb text ('' for none), as PostgreSQL computes it
    validator: Any  # a jsonschema validator, or None when the type has no schema


class Catalogue:
    """Event types read from the catalogue, kept per process to validate payloads cheaply.

    Only what validation needs is kept; whether an entry is still current is checked by the
    statement that stores the message (:mod:`.publish_statement`), so entries need no expiry.
    """

    MAX_TYPES = 1024

    def __init__(self) -> None:
        self._types: dict[str, CataloguedType] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> CataloguedType | None:
        return self._types.get(name)

    def read(self, session: Session, name: str) -> CataloguedType:
        """Read ``name`` from the catalogue (422 if unknown or archived) and remember it."""
        found = session.execute(
            select(
                EventType.archived,
                EventType.schema,
                func.md5(func.coalesce(cast(EventType.schema, TEXT), "")),
            ).where(EventType.name == name)
        ).one_or_none()
        if found is None:
            self.forget(name)
            raise InvalidField(f"unknown event type {name!r}", field="event_type")
        archived, schema, digest = found
        if archived:
            self.forget(name)
            raise InvalidField(f"event type {name!r} is archived", field="event_type")
        validator = schema_validator(schema) if schema else None
        entry = CataloguedType(digest, validator)
        with self._lock:
            if len(self._types) >= self.MAX_TYPES:
                self._types.clear()
            self._types[name] = entry
        return entry

    def forget(self, name: str) -> None:
        with self._lock:
            self._types.pop(name, None)


catalogue = Catalogue()


def validate_payload(entry: CataloguedType, payload: dict[str, Any]) -> None:
    """Refuse (422, naming the field) a payload that does not match the type's schema."""
    if entry.validator is None:
        return
    try:
        error = jsonschema.exceptions.best_match(entry.validator.iter_errors(payload))
    except Unresolvable as exc:  # a schema stored before remote references were refused
        raise InvalidField(
            f"the event type's schema has a reference that cannot be resolved: {exc}",
            field="event_type",
        ) from None
    if error is not None:
        path = ".".join(str(part) for part in error.absolute_path)
        raise InvalidField(
            f"does not match the event type's schema: {error.message}",
            field="payload" + (f".{path}" if path else ""),
        )


def check_against_catalogue(session: Session, event_type: str, payload: dict[str, Any]) -> None:
    """Read ``event_type`` from the catalogue afresh and check ``payload`` against it."""
    validate_payload(catalogue.read(session, event_type), payload)
