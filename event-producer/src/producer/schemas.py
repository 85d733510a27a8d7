"""Request and response models of the people API (they generate its OpenAPI document)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from flask_openapi3 import FileStorage
from pydantic import BaseModel, ConfigDict, Field

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
PHONE_PATTERN = r"^\+?[0-9 ()\-.]{3,40}$"


class Strict(BaseModel):
    """Unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class PersonIn(Strict):
    """A whole person (POST and PUT)."""

    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320, pattern=EMAIL_PATTERN)
    phone: str | None = Field(default=None, pattern=PHONE_PATTERN)


class PersonPatch(Strict):
    """Some fields of a person; only those sent change."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320, pattern=EMAIL_PATTERN)
    phone: str | None = Field(default=None, pattern=PHONE_PATTERN)


class PersonOut(BaseModel):
    """A person as the API and the ``person.*`` events show it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    email: str | None
    phone: str | None
    created_at: datetime
    updated_at: datetime


class PersonList(BaseModel):
    """A page of people, newest first; ``iterator`` resumes after the last one."""

    data: list[PersonOut]
    iterator: str | None
    done: bool


class PersonPath(BaseModel):
    person_id: uuid.UUID


class PersonQuery(Strict):
    limit: int = Field(default=50, ge=1, le=250)
    iterator: str | None = Field(default=None, max_length=512)


class UploadForm(BaseModel):
    """A multipart form with one file field named ``file``."""

    file: FileStorage


class UploadOut(BaseModel):
    """A stored file as the API and the ``file.uploaded`` event show it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    size: int
    sha256: str
    content_type: str
    created_at: datetime


class PersonChange(PersonOut):
    """A person after a change, with the id of the event it fired (None: nothing changed)."""

    event_id: str | None = None


class UploadAccepted(UploadOut):
    event_id: str


def dump(model: type[BaseModel], obj: Any, **extra: Any) -> dict[str, Any]:
    """``obj`` serialized through ``model`` as JSON-ready data."""
    return {**model.model_validate(obj).model_dump(mode="json"), **extra}
