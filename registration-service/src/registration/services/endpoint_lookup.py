"""Finding an application's endpoint (a subscription, not deleted), for the endpoint services."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from registration.services.errors import NotFound
from webhooks_core.models import Endpoint, EndpointKind


def load_endpoint(
    session: Session, app_id: uuid.UUID, endpoint_id: uuid.UUID, *, lock: bool = False
) -> Endpoint:
    """The application's subscription endpoint (not deleted), locked for update with ``lock``;
    404 when there is none."""
    query = select(Endpoint).where(
        Endpoint.id == endpoint_id,
        Endpoint.application_id == app_id,
        Endpoint.kind == EndpointKind.SUBSCRIPTION,
        Endpoint.deleted_at.is_(None),
    )
    if lock:
        query = query.with_for_update()
    endpoint = session.scalar(query)
    if endpoint is None:
        raise NotFound(f"endpoint {endpoint_id} not found")
    return endpoint
