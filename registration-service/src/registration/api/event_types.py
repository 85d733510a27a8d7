"""Routes of the event type catalogue: the admin writes it, every token reads it."""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from registration.api.auth import require_admin
from registration.api.problems import Problem
from registration.api.schemas import (
    EventTypeIn,
    EventTypeList,
    EventTypeOut,
    EventTypePatch,
    EventTypePath,
    EventTypeQuery,
)
from registration.api.serialize import BEARER, one, page
from registration.runtime import runtime
from registration.services import event_types

tag = Tag(name="event-types", description="The catalogue of event types")
bp = APIBlueprint(
    "event_types",
    __name__,
    url_prefix="/api/v1/event-types",
    abp_tags=[tag],
    abp_security=BEARER,
    abp_responses={401: Problem, 403: Problem, 404: Problem, 422: Problem},
)


@bp.post("", responses={201: EventTypeOut, 409: Problem})
def create_event_type(body: EventTypeIn) -> tuple[Response, int]:
    """Add an event type, optionally with a JSON schema its payloads must match (admin)."""
    require_admin()
    created = event_types.create_event_type(
        runtime().sessions,
        name=body.name,
        description=body.description,
        schema=body.schema_,
        example=body.example,
    )
    return one(EventTypeOut, created, 201)


@bp.get("", responses={200: EventTypeList})
def list_event_types(query: EventTypeQuery) -> tuple[Response, int]:
    """List event types, newest first; archived ones only on request."""
    result = event_types.list_event_types(
        runtime().sessions,
        include_archived=query.include_archived,
        limit=query.limit,
        cursor=query.iterator,
    )
    return page(EventTypeOut, result)


@bp.get("/<name>", responses={200: EventTypeOut})
def get_event_type(path: EventTypePath) -> tuple[Response, int]:
    """Get an event type by name."""
    return one(EventTypeOut, event_types.get_event_type(runtime().sessions, path.name))


@bp.patch("/<name>", responses={200: EventTypeOut})
def update_event_type(path: EventTypePath, body: EventTypePatch) -> tuple[Response, int]:
    """Change an event type's description, schema or example, or (un)archive it (admin)."""
    require_admin()
    changes = body.model_dump(exclude_unset=True)
    if "schema_" in changes:
        changes["schema"] = changes.pop("schema_")
    updated = event_types.update_event_type(runtime().sessions, path.name, changes)
    return one(EventTypeOut, updated)


@bp.delete("/<name>", responses={200: EventTypeOut})
def archive_event_type(path: EventTypePath) -> tuple[Response, int]:
    """Archive an event type: kept for history, refused for new messages and filters (admin)."""
    require_admin()
    archived = event_types.update_event_type(runtime().sessions, path.name, {"archived": True})
    return one(EventTypeOut, archived)
