"""Disabling an endpoint from the delivery engine (410 Gone, or failing too long)."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from webhooks_core.envelope import Envelope
from webhooks_core.models import cancel_open_deliveries
from webhooks_core.observability import ENDPOINTS_DISABLED

logger = logging.getLogger("delivery.attempt")

_DISABLE = text(
    """
    UPDATE endpoints SET enabled = false, disabled_reason = :reason, disabled_at = :now,
                         circuit_open_until = NULL, updated_at = now()
    WHERE id = :id AND enabled
    RETURNING id
    """
)


def disable_endpoint(
    session: Session, endpoint_id: uuid.UUID, application_id: uuid.UUID, reason: str, now: datetime
) -> bool:
    """Disable an endpoint, cancel its open deliveries, emit ``endpoint.disabled``.

    ``reason`` is ``gone`` (it answered 410) or ``failing`` (past the auto-disable window).
    Returns False when another process disabled it first (then it emitted the event).
    """
    detail = (
        "the endpoint answered 410 Gone"
        if reason == "gone"
        else "the endpoint kept failing past the auto-disable window"
    )
    if session.execute(_DISABLE, {"id": endpoint_id, "reason": detail, "now": now}).first() is None:
        return False
    session.execute(cancel_open_deliveries(endpoint_id, f"endpoint disabled: {detail}"))
    from webhooks_core.fanout import accept_message

    envelope = Envelope(
        type="endpoint.disabled",
        data={
            "endpoint_id": str(endpoint_id),
            "application_id": str(application_id),
            "reason": reason,
            "detail": detail,
            "disabled_at": now.isoformat(),
        },
    )
    accept_message(session, envelope, source="platform", application_id=application_id)
    ENDPOINTS_DISABLED.labels(reason).inc()
    logger.warning("endpoint disabled endpoint_id=%s reason=%s", endpoint_id, reason)
    return True
