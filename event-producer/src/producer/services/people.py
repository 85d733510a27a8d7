"""People: create, read, replace, change and delete, each change firing a ``person.*`` event.

The event is written to the outbox in the same transaction as the change, so it exists if and
only if the change committed.  Every event carries the full resource; ``person.updated`` also
names the changed fields and their previous values.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text, tuple_
from sqlalchemy.orm import Session, sessionmaker

from outbox import publish
from producer.models import Person
from producer.schemas import PersonOut
from webhooks_core.db import run_transaction
from webhooks_core.errors import InvalidField, NotFound
from webhooks_core.messages.envelope import Envelope

FIELDS = ("name", "email", "phone")


# Creating is the demo's busiest write: one plain INSERT, built once, instead of the ORM's unit
# of work, which was over a third of a POST /people's CPU.  The columns are models.Person's.
_INSERT_PERSON = text(
    "INSERT INTO people (id, name, email, phone)"
    " VALUES (CAST(:id AS uuid), :name, :email, :phone)"
    " RETURNING created_at, updated_at"
)


@dataclass(frozen=True)
class Change:
    """A person after a change and the event it fired (None when nothing changed)."""

    person: Person
    event_id: str | None


@dataclass(frozen=True)
class PeoplePage:
    """One page of people, newest first, and the cursor of the next page."""

    items: list[Person]
    next_cursor: str | None


def resource(person: Person) -> dict[str, Any]:
    """The person as JSON data, exactly as the API returns it."""
    return PersonOut.model_validate(person).model_dump(mode="json")


def _fire(session: Session, event_type: str, data: dict[str, Any]) -> str:
    # Keyed by the person: each endpoint gets one person's created, updated... deleted in
    # the order they happened (docs/delivery.md, Ordering).
    key = str(data["person"]["id"])
    return publish(session, Envelope(type=event_type, data=data, ordering_key=key))


def create_person(sessions: sessionmaker[Session], fields: dict[str, Any]) -> Change:
    """Store a new person and fire ``person.created``."""
    values: dict[str, Any] = {"id": uuid.uuid4(), **{name: fields.get(name) for name in FIELDS}}

    def work(session: Session) -> Change:
        stamps = session.execute(_INSERT_PERSON, {**values, "id": str(values["id"])}).one()
        person = Person(**values, created_at=stamps.created_at, updated_at=stamps.updated_at)
        return Change(person, _fire(session, "person.created", {"person": resource(person)}))

    return run_transaction(sessions, work)


def get_person(sessions: sessionmaker[Session], person_id: uuid.UUID) -> Person:
    """The person, or NotFound."""

    def work(session: Session) -> Person:
        person = session.get(Person, person_id)
        if person is None:
            raise NotFound(f"no person {person_id}")
        return person

    return run_transaction(sessions, work)


def list_people(sessions: sessionmaker[Session], *, limit: int, cursor: str | None) -> PeoplePage:
    """People newest first, ``limit`` at a time (keyset pagination on created_at, id)."""
    query = select(Person)
    if cursor:
        after_created, after_id = _decode_cursor(cursor)
        query = query.where(tuple_(Person.created_at, Person.id) < tuple_(after_created, after_id))
    query = query.order_by(Person.created_at.desc(), Person.id.desc()).limit(limit + 1)
    rows = run_transaction(sessions, lambda session: list(session.scalars(query)))
    if len(rows) <= limit:
        return PeoplePage(rows, None)
    rows = rows[:limit]
    return PeoplePage(rows, _encode_cursor(rows[-1].created_at, rows[-1].id))


def update_person(
    sessions: sessionmaker[Session], person_id: uuid.UUID, changes: dict[str, Any]
) -> Change:
    """Apply ``changes`` (all fields for PUT, some for PATCH); fire ``person.updated`` if any
    value actually changed."""

    def work(session: Session) -> Change:
        person = session.get(Person, person_id, with_for_update=True)
        if person is None:
            raise NotFound(f"no person {person_id}")
        previous: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in FIELDS:
                continue
            if name == "name" and value is None:
                raise InvalidField("must not be null", field="name")
            if getattr(person, name) != value:
                previous[name] = getattr(person, name)
                setattr(person, name, value)
        if not previous:
            return Change(person, None)
        session.flush()
        session.refresh(person, ["updated_at"])
        event_id = _fire(
            session,
            "person.updated",
            {"person": resource(person), "changed_fields": sorted(previous), "previous": previous},
        )
        return Change(person, event_id)

    return run_transaction(sessions, work)


def delete_person(sessions: sessionmaker[Session], person_id: uuid.UUID) -> Change:
    """Delete the person and fire ``person.deleted`` with what it was."""

    def work(session: Session) -> Change:
        person = session.get(Person, person_id, with_for_update=True)
        if person is None:
            raise NotFound(f"no person {person_id}")
        data = {"person": resource(person)}
        session.delete(person)
        return Change(person, _fire(session, "person.deleted", data))

    return run_transaction(sessions, work)


def _encode_cursor(created: datetime, key: uuid.UUID) -> str:
    raw = json.dumps([created.isoformat(), str(key)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, key = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(created), uuid.UUID(key)
    except (ValueError, TypeError, binascii.Error):
        raise InvalidField("is not a cursor this API returned", field="iterator") from None
