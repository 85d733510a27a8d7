"""Routes of dead letters: deliveries whose retries ran out.  List them; redrive one, those
matching a filter, or all.  Application tokens act on their own; the admin also across
applications under ``/api/v1/dead-letters``."""

from __future__ import annotations

import uuid

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from registration.api.auth import authorize_application, principal, require_admin
from registration.api.delivery_schemas import (
    AdminDeadLetterQuery,
    AdminRedriveIn,
    AppPath,
    DeadLetterList,
    DeadLetterOut,
    DeadLetterPath,
    DeadLetterQuery,
    RedriveIn,
    ReplayOut,
)
from registration.api.problems import Problem
from registration.api.serialize import BEARER, one, page
from registration.runtime import runtime
from registration.services import deliveries, replays
from registration.services.deliveries import Window

tag = Tag(name="dead-letters", description="Deliveries whose retries ran out, and redrive")
bp = APIBlueprint(
    "dead_letters",
    __name__,
    url_prefix="/api/v1/applications/<app_id>/dead-letters",
    abp_tags=[tag],
    abp_security=BEARER,
    abp_responses={401: Problem, 404: Problem, 422: Problem},
)
admin_bp = APIBlueprint(
    "dead_letters_admin",
    __name__,
    url_prefix="/api/v1/dead-letters",
    abp_tags=[tag],
    abp_security=BEARER,
    abp_responses={401: Problem, 403: Problem, 422: Problem},
)


def _list(app_id: uuid.UUID | None, query: DeadLetterQuery) -> tuple[Response, int]:
    result = deliveries.list_dead_letters(
        runtime().sessions,
        application_id=app_id,
        endpoint_id=query.endpoint_id,
        event_type=query.event_type,
        include_redriven=query.include_redriven,
        window=Window(query.since, query.until),
        limit=query.limit,
        cursor=query.iterator,
    )
    return page(DeadLetterOut, result)


def _redrive(app_id: uuid.UUID | None, body: RedriveIn) -> tuple[Response, int]:
    replay = replays.redrive_dead_letters(
        runtime().sessions,
        application_id=app_id,
        requested_by=principal().label,
        endpoint_id=body.endpoint_id,
        event_type=body.event_type,
        since=body.since,
        until=body.until,
    )
    return one(ReplayOut, replay, 202)


@bp.get("", responses={200: DeadLetterList})
def list_dead_letters(path: AppPath, query: DeadLetterQuery) -> tuple[Response, int]:
    """Open dead letters, newest first (``include_redriven`` for the history too)."""
    return _list(authorize_application(path.app_id), query)


@bp.post("/<int:dead_letter_id>/redrive", responses={202: ReplayOut})
def redrive_dead_letter(path: DeadLetterPath) -> tuple[Response, int]:
    """Deliver one dead letter again, with a fresh retry schedule."""
    app_id = authorize_application(path.app_id)
    replay = replays.redrive_dead_letters(
        runtime().sessions,
        application_id=app_id,
        requested_by=principal().label,
        dead_letter_id=path.dead_letter_id,
    )
    return one(ReplayOut, replay, 202)


@bp.post("/redrive", responses={202: ReplayOut})
def redrive_dead_letters(path: AppPath, body: RedriveIn) -> tuple[Response, int]:
    """Redrive the open dead letters matching the filter; an empty body redrives all."""
    return _redrive(authorize_application(path.app_id), body)


@admin_bp.get("", responses={200: DeadLetterList})
def list_all_dead_letters(query: AdminDeadLetterQuery) -> tuple[Response, int]:
    """Open dead letters of every application (admin); filter by ``application_id`` too."""
    require_admin()
    return _list(query.application_id, query)


@admin_bp.post("/redrive", responses={202: ReplayOut, 404: Problem})
def redrive_all_dead_letters(body: AdminRedriveIn) -> tuple[Response, int]:
    """Redrive open dead letters of every application (admin), or of the filter's."""
    require_admin()
    return _redrive(body.application_id, body)
