"""Keyset pagination over ``(created_at, id)``, newest first, with opaque cursors."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from registration.services.errors import InvalidField

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of results and the cursor of the next one (None when done)."""

    items: list[T]
    next_cursor: str | None


def encode_cursor(created: datetime, key: Any) -> str:
    """An opaque cursor that resumes after the row with ``(created, key)``."""
    raw = json.dumps([created.isoformat(), str(key)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of :func:`encode_cursor`; a tampered cursor is a field error."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, key = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(created), str(key)
    except (ValueError, TypeError, binascii.Error):
        raise InvalidField("is not a cursor this API returned", field="iterator") from None


def paginate(
    session: Session,
    query: Select[Any],
    created: InstrumentedAttribute[datetime],
    key: InstrumentedAttribute[Any],
    *,
    limit: int,
    cursor: str | None,
) -> Page[Any]:
    """Run ``query`` newest first, ``limit`` rows after ``cursor``."""
    if cursor:
        after_created, raw_key = decode_cursor(cursor)
        try:
            after_key = key.type.python_type(raw_key)
        except ValueError:
            raise InvalidField("is not a cursor this API returned", field="iterator") from None
        query = query.where(tuple_(created, key) < tuple_(after_created, after_key))
    rows = list(session.scalars(query.order_by(created.desc(), key.desc()).limit(limit + 1)))
    if len(rows) <= limit:
        return Page(rows, None)
    rows = rows[:limit]
    last = rows[-1]
    return Page(rows, encode_cursor(getattr(last, created.key), getattr(last, key.key)))
