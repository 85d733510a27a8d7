"""Pausing an endpoint: deliveries are accepted and held, none is sent, until it is resumed.

Pause is not disable.  A paused endpoint still matches messages (fan-out creates its
deliveries as usual), and its deliveries stay in their state (``pending``, or ``retrying``
with their retry time) with nothing counted against them:

* the scheduler leaves a paused endpoint's due rows alone (:data:`PAUSED_SQL` in its claim,
  the same exclusion as an open breaker's), so no attempt is made, none fails, and no
  retry schedule is spent: a held delivery cannot reach ``dead`` while the endpoint is
  paused.  Messages have no expiry of their own in this platform, so nothing else ends
  them;
* a batch already leased when the pause came is sent to its end (at most one batch per
  in-flight slot);
* resuming makes the held deliveries claimable again: the scheduler takes due rows oldest
  ``next_attempt_at`` first and sends each endpoint's batch in delivery id order, so the
  held deliveries go in acceptance order (strictly, at the receiver, when the endpoint's
  ``max_in_flight`` is 1; otherwise up to that many batches run side by side).

Time spent paused does not count towards auto-disable: resuming an endpoint that was
failing before the pause restarts its failing window at the resume.

Disabling a paused endpoint cancels its held deliveries like any open delivery (and leaves
it paused: enabling it again brings it back paused).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

# The claim's condition for "hold this endpoint's deliveries" over an ``endpoints e`` row.
PAUSED_SQL = "e.paused_at IS NOT NULL"

_PAUSE = text(
    """
    UPDATE endpoints SET paused_at = :now, updated_at = now()
    WHERE id = :id AND paused_at IS NULL
    RETURNING id
    """
)
# Resuming wakes the scheduler (its LISTEN channel) so held deliveries go at once, not at
# its next poll.
_RESUME = text(
    """
    WITH resumed AS (
        UPDATE endpoints
        SET paused_at = NULL, updated_at = now(),
            failing_since = CASE WHEN failing_since IS NULL THEN NULL ELSE :now END
        WHERE id = :id AND paused_at IS NOT NULL
        RETURNING id
    )
    SELECT id, pg_notify('webhooks_deliveries', 'due') FROM resumed
    """
)


def pause_endpoint(session: Session, endpoint_id: uuid.UUID, now: datetime) -> bool:
    """Hold the endpoint's deliveries from now on; False when it was already paused.

    The caller commits.
    """
    return session.execute(_PAUSE, {"id": endpoint_id, "now": now}).first() is not None


def resume_endpoint(session: Session, endpoint_id: uuid.UUID, now: datetime) -> bool:
    """Send the held deliveries again, oldest first; False when it was not paused.

    The caller commits (the scheduler's wake-up is delivered with the commit).
    """
    return session.execute(_RESUME, {"id": endpoint_id, "now": now}).first() is not None
