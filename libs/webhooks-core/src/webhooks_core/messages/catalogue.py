"""The event-type catalogue as producers fill it: add the types it lacks, change none.

A producer (the people demo at start, the benchmark and chaos harnesses, the CLI tests)
registers its types with ``INSERT ... ON CONFLICT (name) DO NOTHING``: safe from every worker
at once, and a type an operator has since edited or archived stays as the operator left it.
Checking a payload against its type's schema is the API's (registration's
``services/catalogue.py``), the only path that validates payloads.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from webhooks_core.models import EventType


def add_missing_event_types(
    connection: Connection | Session, event_types: Sequence[Mapping[str, Any]]
) -> list[str]:
    """Insert the ``event_types`` (columns of :class:`EventType`, ``name`` at least) that the
    catalogue lacks; return the names added, sorted.  The caller owns the transaction."""
    if not event_types:
        return []
    added = connection.execute(
        insert(EventType)
        .values([{"id": uuid.uuid4(), **event_type} for event_type in event_types])
        .on_conflict_do_nothing(index_elements=[EventType.name])
        .returning(EventType.name)
    ).scalars()
    return sorted(added)
