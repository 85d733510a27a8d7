"""Routes that show what happened: messages, deliveries, attempts and the undelivered view.

Application tokens see their own application's; the admin token sees any application's, and
the ``/api/v1/deliveries`` and ``/api/v1/undelivered`` lists across every application.
"""

from __future__ import annotations

import uuid

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag

from registration.api.auth import authorize_application, require_admin
from registration.api.delivery_schemas import (
    AdminDeliveryQuery,
    AdminUndeliveredQuery,
    AppPath,
    AttemptList,
    AttemptOut,
    AttemptQuery,
    DeliveryAttemptQuery,
    DeliveryList,
    DeliveryOut,
    DeliveryPath,
    DeliveryQuery,
    MessageDetail,
    MessageList,
    MessageOut,
    MessagePath,
    MessageQuery,
    UndeliveredList,
    UndeliveredOut,
    UndeliveredQuery,
)
from registration.api.problems import Problem
from registration.api.serialize import BEARER, one, page
from registration.runtime import runtime
from registration.services import deliveries
from registration.services.deliveries import (
    DeliverySearch,
    DeliveryView,
    Window,
    payload_containment,
)
from registration.services.pagination import Page

tag = Tag(name="deliveries", description="Messages, deliveries and attempts, as they happened")
bp = APIBlueprint(
    "messages",
    __name__,
    url_prefix="/api/v1/applications/<app_id>",
    abp_tags=[tag],
    abp_security=BEARER,
    abp_responses={401: Problem, 404: Problem, 422: Problem},
)
admin_bp = APIBlueprint(
    "deliveries_admin",
    __name__,
    url_prefix="/api/v1",
    abp_tags=[tag],
    abp_security=BEARER,
    abp_responses={401: Problem, 403: Problem, 422: Problem},
)


@bp.get("/messages", responses={200: MessageList})
def list_messages(path: AppPath, query: MessageQuery) -> tuple[Response, int]:
    """Messages of the application (and broadcasts that reached it), newest first."""
    app_id = authorize_application(path.app_id)
    result = deliveries.list_messages(
        runtime().sessions,
        application_id=app_id,
        event_type=query.event_type,
        window=Window(query.since, query.until),
        limit=query.limit,
        cursor=query.iterator,
    )
    return page(MessageOut, result)


@bp.get("/messages/<event_id>", responses={200: MessageDetail})
def get_message(path: MessagePath) -> tuple[Response, int]:
    """One message by its id (the webhook-id), with its deliveries."""
    app_id = authorize_application(path.app_id)
    message, views = deliveries.get_message(
        runtime().sessions, application_id=app_id, event_id=path.event_id
    )
    body = MessageOut.model_validate(message).model_dump(mode="json")
    body["deliveries"] = [DeliveryOut.model_validate(v).model_dump(mode="json") for v in views]
    return jsonify(body), 200


@bp.get("/deliveries", responses={200: DeliveryList})
def list_deliveries(path: AppPath, query: DeliveryQuery) -> tuple[Response, int]:
    """Deliveries, newest first; filter by endpoint, state, event type, message, time, the
    last status code, a channel, or a field of the payload (``payload_field`` =
    ``payload_value``, e.g. ``data.person.id`` = ``42``)."""
    app_id = authorize_application(path.app_id)
    return page(DeliveryOut, _deliveries(app_id, query))


def _deliveries(app_id: uuid.UUID | None, query: DeliveryQuery) -> Page[DeliveryView]:
    return deliveries.list_deliveries(
        runtime().sessions,
        application_id=app_id,
        endpoint_id=query.endpoint_id,
        states=[query.state] if query.state else None,
        event_type=query.event_type,
        event_id=query.event_id,
        window=Window(query.since, query.until),
        search=DeliverySearch(
            status_code=query.status_code,
            channel=query.channel,
            payload=(
                None
                if query.payload_field is None or query.payload_value is None
                else payload_containment(query.payload_field, query.payload_value)
            ),
        ),
        limit=query.limit,
        cursor=query.iterator,
    )


@bp.get("/deliveries/<int:delivery_id>", responses={200: DeliveryOut})
def get_delivery(path: DeliveryPath) -> tuple[Response, int]:
    """One delivery with its state and next attempt."""
    app_id = authorize_application(path.app_id)
    view = deliveries.get_delivery(
        runtime().sessions, application_id=app_id, delivery_id=path.delivery_id
    )
    return one(DeliveryOut, view)


@bp.get("/deliveries/<int:delivery_id>/attempts", responses={200: AttemptList})
def list_delivery_attempts(path: DeliveryPath, query: DeliveryAttemptQuery) -> tuple[Response, int]:
    """Every attempt of one delivery, newest first: status, latency, error, body excerpt."""
    app_id = authorize_application(path.app_id)
    result = deliveries.list_attempts(
        runtime().sessions,
        application_id=app_id,
        delivery_id=path.delivery_id,
        limit=query.limit,
        cursor=query.iterator,
    )
    return page(AttemptOut, result)


@bp.get("/attempts", responses={200: AttemptList})
def list_attempts(path: AppPath, query: AttemptQuery) -> tuple[Response, int]:
    """Attempts of the application's deliveries; filter by endpoint, outcome, status code,
    event type and time."""
    app_id = authorize_application(path.app_id)
    result = deliveries.list_attempts(
        runtime().sessions,
        application_id=app_id,
        endpoint_id=query.endpoint_id,
        outcome=query.outcome,
        status_code=query.status_code,
        event_type=query.event_type,
        window=Window(query.since, query.until),
        limit=query.limit,
        cursor=query.iterator,
    )
    return page(AttemptOut, result)


@bp.get("/undelivered", responses={200: UndeliveredList})
def list_undelivered(path: AppPath, query: UndeliveredQuery) -> tuple[Response, int]:
    """Every delivery not yet delivered, dead or cancelled, with its age and next attempt."""
    app_id = authorize_application(path.app_id)
    result = deliveries.list_deliveries(
        runtime().sessions,
        application_id=app_id,
        endpoint_id=query.endpoint_id,
        undelivered=True,
        limit=query.limit,
        cursor=query.iterator,
    )
    return page(UndeliveredOut, result)


@admin_bp.get("/deliveries", responses={200: DeliveryList})
def list_all_deliveries(query: AdminDeliveryQuery) -> tuple[Response, int]:
    """Deliveries of every application (admin); the same filters plus ``application_id``."""
    require_admin()
    return page(DeliveryOut, _deliveries(query.application_id, query))


@admin_bp.get("/undelivered", responses={200: UndeliveredList})
def list_all_undelivered(query: AdminUndeliveredQuery) -> tuple[Response, int]:
    """Every undelivered delivery of every application (admin), with age and next attempt."""
    require_admin()
    result = deliveries.list_deliveries(
        runtime().sessions,
        application_id=query.application_id,
        endpoint_id=query.endpoint_id,
        undelivered=True,
        limit=query.limit,
        cursor=query.iterator,
    )
    return page(UndeliveredOut, result)
