"""HTTP routes of the people demo: validate, call one domain function, serialize."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from flask import Response, current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from producer.config import ProducerSettings
from producer.schemas import (
    PersonChange,
    PersonIn,
    PersonList,
    PersonOut,
    PersonPatch,
    PersonPath,
    PersonQuery,
    UploadAccepted,
    UploadForm,
    UploadOut,
    dump,
)
from producer.services import people, uploads
from webhooks_core.problems import Problem


@dataclass(frozen=True)
class ProducerRuntime:
    """What a running producer holds; built once by ``create_app``."""

    settings: ProducerSettings
    engine: Engine
    sessions: sessionmaker[Session]
    upload_dir: Path


def runtime() -> ProducerRuntime:
    """The runtime of the current app."""
    return current_app.extensions["producer"]  # type: ignore[no-any-return]


ERRORS: dict[str | int | HTTPStatus, type[BaseModel] | dict[Any, Any] | None] = {
    404: Problem,
    422: Problem,
}

people_bp = APIBlueprint(
    "people",
    __name__,
    url_prefix="/people",
    abp_tags=[Tag(name="people", description="People; every change fires a person.* event")],
    abp_responses=ERRORS,
)
uploads_bp = APIBlueprint(
    "uploads",
    __name__,
    url_prefix="/uploads",
    abp_tags=[Tag(name="uploads", description="Files; every upload fires file.uploaded")],
    abp_responses={413: Problem, 422: Problem},
)


def _change(result: people.Change, status: int = 200) -> tuple[Response, int]:
    return jsonify(dump(PersonOut, result.person, event_id=result.event_id)), status


@people_bp.post("", responses={201: PersonChange})
def create_person(body: PersonIn) -> tuple[Response, int]:
    """Create a person; fires ``person.created``."""
    return _change(people.create_person(runtime().sessions, body.model_dump()), 201)


@people_bp.get("", responses={200: PersonList})
def list_people(query: PersonQuery) -> tuple[Response, int]:
    """List people, newest first; pass ``iterator`` from a page to get the next one."""
    page = people.list_people(runtime().sessions, limit=query.limit, cursor=query.iterator)
    data = [dump(PersonOut, person) for person in page.items]
    return jsonify(data=data, iterator=page.next_cursor, done=page.next_cursor is None), 200


@people_bp.get("/<person_id>", responses={200: PersonOut})
def get_person(path: PersonPath) -> tuple[Response, int]:
    """Get one person."""
    return jsonify(dump(PersonOut, people.get_person(runtime().sessions, path.person_id))), 200


@people_bp.put("/<person_id>", responses={200: PersonChange})
def replace_person(path: PersonPath, body: PersonIn) -> tuple[Response, int]:
    """Replace a person (omitted optional fields become null); fires ``person.updated`` when
    anything changed."""
    return _change(people.update_person(runtime().sessions, path.person_id, body.model_dump()))


@people_bp.patch("/<person_id>", responses={200: PersonChange})
def change_person(path: PersonPath, body: PersonPatch) -> tuple[Response, int]:
    """Change the fields sent; fires ``person.updated`` when anything changed."""
    changes = body.model_dump(exclude_unset=True)
    return _change(people.update_person(runtime().sessions, path.person_id, changes))


@people_bp.delete("/<person_id>", responses={200: PersonChange})
def delete_person(path: PersonPath) -> tuple[Response, int]:
    """Delete a person; fires ``person.deleted`` with the person as it was."""
    return _change(people.delete_person(runtime().sessions, path.person_id))


@uploads_bp.post("", responses={201: UploadAccepted})
def upload_file(form: UploadForm) -> tuple[Response, int]:
    """Upload one file (multipart field ``file``); fires ``file.uploaded`` with its name, size,
    SHA-256 and content type."""
    stored = uploads.store_upload(
        runtime().sessions,
        runtime().upload_dir,
        name=form.file.filename or "",
        content_type=form.file.mimetype or None,
        stream=form.file.stream,
    )
    body = dump(UploadOut, stored.upload, event_id=stored.event_id)
    return jsonify(body), 201
