"""Routes that send again: one delivery, a whole message, or an endpoint's failures since a
time.  Idempotent (a delivery already pending or sending is not queued twice) and audited."""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from registration.api.auth import authorize_application, principal
from registration.api.delivery_schemas import (
    AppPath,
    DeliveryPath,
    EndpointRecoverPath,
    MessagePath,
    RecoverIn,
    ReplayList,
    ReplayOut,
    ReplayQuery,
)
from registration.api.problems import Problem
from registration.api.serialize import BEARER, one, page
from registration.runtime import runtime
from registration.services import replays

tag = Tag(name="replays", description="Resend deliveries and recover failed ones")
bp = APIBlueprint(
    "replays",
    __name__,
    url_prefix="/api/v1/applications/<app_id>",
    abp_tags=[tag],
    abp_security=BEARER,
    abp_responses={401: Problem, 404: Problem, 409: Problem, 422: Problem},
)


@bp.post("/deliveries/<int:delivery_id>/resend", responses={202: ReplayOut})
def resend_delivery(path: DeliveryPath) -> tuple[Response, int]:
    """Send one delivery again now; a no-op (0 requeued) while it is pending or sending."""
    app_id = authorize_application(path.app_id)
    replay = replays.resend_delivery(
        runtime().sessions,
        application_id=app_id,
        delivery_id=path.delivery_id,
        requested_by=principal().label,
    )
    return one(ReplayOut, replay, 202)


@bp.post("/messages/<event_id>/resend", responses={202: ReplayOut})
def resend_message(path: MessagePath) -> tuple[Response, int]:
    """Send every delivery of a message again (to enabled endpoints)."""
    app_id = authorize_application(path.app_id)
    replay = replays.resend_message(
        runtime().sessions,
        application_id=app_id,
        event_id=path.event_id,
        requested_by=principal().label,
    )
    return one(ReplayOut, replay, 202)


@bp.post("/endpoints/<endpoint_id>/recover", responses={202: ReplayOut})
def recover_endpoint(path: EndpointRecoverPath, body: RecoverIn) -> tuple[Response, int]:
    """Resend every dead or retrying delivery of the endpoint created since ``since``.

    With ``include_cancelled``, also the deliveries cancelled when the endpoint was disabled:
    enable it, then recover them (409 while it is still disabled).
    """
    app_id = authorize_application(path.app_id)
    replay = replays.recover_endpoint(
        runtime().sessions,
        application_id=app_id,
        endpoint_id=path.endpoint_id,
        since=body.since,
        until=body.until,
        requested_by=principal().label,
        include_cancelled=body.include_cancelled,
    )
    return one(ReplayOut, replay, 202)


@bp.get("/replays", responses={200: ReplayList})
def list_replays(path: AppPath, query: ReplayQuery) -> tuple[Response, int]:
    """The audit log of replays, newest first."""
    app_id = authorize_application(path.app_id)
    result = replays.list_replays(
        runtime().sessions, application_id=app_id, limit=query.limit, cursor=query.iterator
    )
    return page(ReplayOut, result)
