"""Who is signed in to the web console, and whether that sign-in still holds.

A console session never stores a token.  It stores the id of the application token that
signed in (checked on every request, so a revoked token signs its sessions out), or, for the
admin, a keyed fingerprint of the admin token (so changing ``WEBHOOKS_ADMIN_TOKEN`` signs the
admin out everywhere).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass

from sqlalchemy import Row, select
from sqlalchemy.orm import Session, sessionmaker

from registration.services.applications import hash_token
from webhooks_core.db import run_transaction
from webhooks_core.models import ApiToken, Application


@dataclass(frozen=True)
class Operator:
    """A signed-in console user: the admin (``token_id`` None) or one application's token."""

    application_id: uuid.UUID | None
    token_id: uuid.UUID | None

    @property
    def is_admin(self) -> bool:
        """True when signed in with the admin token."""
        return self.token_id is None

    @property
    def label(self) -> str:
        """How audit records name the operator (the same form the API uses)."""
        return "admin" if self.is_admin else f"app:{self.application_id}"


def admin_fingerprint(admin_token: str, key: str) -> str:
    """A keyed digest of the admin token: reveals nothing, changes when the token does."""
    return hmac.new(key.encode(), admin_token.encode(), hashlib.sha256).hexdigest()


def sign_in(
    sessions: sessionmaker[Session], admin_token: str | None, token: str
) -> Operator | None:
    """The operator a token identifies, or None for a wrong, revoked or empty token."""
    token = token.strip()
    if not token:
        return None
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Operator(application_id=None, token_id=None)

    def work(session: Session) -> Row[uuid.UUID, uuid.UUID] | None:
        return session.execute(
            select(ApiToken.id, ApiToken.application_id).where(
                ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None)
            )
        ).first()

    row = run_transaction(sessions, work)
    return Operator(application_id=row.application_id, token_id=row.id) if row else None


def token_is_live(sessions: sessionmaker[Session], token_id: uuid.UUID) -> uuid.UUID | None:
    """The application of a token that is still valid, or None once it is revoked or gone."""

    def work(session: Session) -> uuid.UUID | None:
        return session.scalar(
            select(ApiToken.application_id).where(
                ApiToken.id == token_id, ApiToken.revoked_at.is_(None)
            )
        )

    return run_transaction(sessions, work)


def application_names(sessions: sessionmaker[Session], limit: int = 500) -> list[Application]:
    """Applications by name, for the admin's application switcher."""

    def work(session: Session) -> list[Application]:
        query = select(Application).order_by(Application.name, Application.id).limit(limit)
        return list(session.scalars(query))

    return run_transaction(sessions, work)
