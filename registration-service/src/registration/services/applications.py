"""Applications (tenants) and their API tokens."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from registration.services.errors import Conflict, InvalidField, NotFound
from registration.services.pagination import Page, paginate
from webhooks_core.db import run_transaction
from webhooks_core.messages.envelope import utcnow
from webhooks_core.models import ApiToken, Application
from webhooks_core.retention import policy
from webhooks_core.settings import CoreSettings

TOKEN_PREFIX = "wh_"  # noqa: S105 - a prefix, not a secret


def hash_token(token: str) -> str:
    """The stored form of a bearer token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    """A token as issued: the plain value exists only in this object."""

    id: uuid.UUID
    application_id: uuid.UUID
    name: str
    token: str
    created_at: datetime


def _set_retention(
    app: Application, retention: dict[str, int | None], settings: CoreSettings
) -> None:
    """Apply the retention values sent; 422 naming the field unless they hold together."""
    for field in ("attempts_days", "messages_days", "payload_days"):
        if field in retention:
            setattr(app, f"retention_{field.removesuffix('_days')}_days", retention[field])
    try:
        policy.check(policy.effective(app.retention, settings))
    except policy.RetentionError as exc:
        raise InvalidField(str(exc), field=exc.field) from None


def create_application(
    sessions: sessionmaker[Session],
    *,
    name: str,
    uid: str | None,
    metadata: dict[str, Any],
    retention: dict[str, int | None] | None = None,
    settings: CoreSettings | None = None,
) -> Application:
    """Create an application; a taken ``uid`` is a conflict, retention values that cannot
    hold together (with the platform's defaults of ``settings``) a 422."""

    def work(session: Session) -> Application:
        app = Application(name=name, uid=uid, metadata_=metadata)
        if retention and settings is not None:
            _set_retention(app, retention, settings)
        session.add(app)
        session.flush()
        return app

    try:
        return run_transaction(sessions, work)
    except IntegrityError:
        raise Conflict(f"an application with uid {uid!r} exists", field="uid") from None


def get_application(sessions: sessionmaker[Session], app_id: uuid.UUID) -> Application:
    """One application by id."""

    def work(session: Session) -> Application:
        app = session.get(Application, app_id)
        if app is None:
            raise NotFound(f"application {app_id} not found")
        return app

    return run_transaction(sessions, work)


def list_applications(
    sessions: sessionmaker[Session], *, limit: int, cursor: str | None
) -> Page[Application]:
    """Applications, newest first."""

    def work(session: Session) -> Page[Application]:
        return paginate(
            session,
            select(Application),
            Application.created_at,
            Application.id,
            limit=limit,
            cursor=cursor,
        )

    return run_transaction(sessions, work)


def update_application(
    sessions: sessionmaker[Session],
    app_id: uuid.UUID,
    changes: dict[str, Any],
    settings: CoreSettings | None = None,
) -> Application:
    """Change the name, metadata or retention (checked against ``settings``' defaults) of an
    application."""

    def work(session: Session) -> Application:
        app = session.get(Application, app_id, with_for_update=True)
        if app is None:
            raise NotFound(f"application {app_id} not found")
        if "name" in changes:
            app.name = changes["name"]
        if "metadata" in changes:
            app.metadata_ = changes["metadata"]
        if "retention" in changes and settings is not None:
            _set_retention(app, changes["retention"], settings)
        session.flush()
        return app

    return run_transaction(sessions, work)


def delete_application(sessions: sessionmaker[Session], app_id: uuid.UUID) -> None:
    """Delete an application and, by cascade, everything it owns."""

    def work(session: Session) -> None:
        app = session.get(Application, app_id)
        if app is None:
            raise NotFound(f"application {app_id} not found")
        session.delete(app)

    run_transaction(sessions, work)


def issue_token(sessions: sessionmaker[Session], app_id: uuid.UUID, *, name: str) -> IssuedToken:
    """Create a bearer token for an application; its value is returned once, never stored."""
    value = TOKEN_PREFIX + secrets.token_urlsafe(32)

    def work(session: Session) -> IssuedToken:
        if session.get(Application, app_id) is None:
            raise NotFound(f"application {app_id} not found")
        token = ApiToken(
            application_id=app_id, name=name, token_hash=hash_token(value), prefix=value[:10]
        )
        session.add(token)
        session.flush()
        return IssuedToken(token.id, app_id, name, value, token.created_at)

    return run_transaction(sessions, work)


def list_tokens(sessions: sessionmaker[Session], app_id: uuid.UUID) -> list[ApiToken]:
    """Every token of an application (without values)."""

    def work(session: Session) -> list[ApiToken]:
        if session.get(Application, app_id) is None:
            raise NotFound(f"application {app_id} not found")
        query = select(ApiToken).where(ApiToken.application_id == app_id)
        return list(session.scalars(query.order_by(ApiToken.created_at)))

    return run_transaction(sessions, work)


def revoke_token(sessions: sessionmaker[Session], app_id: uuid.UUID, token_id: uuid.UUID) -> None:
    """Revoke a token; it stops working at once."""

    def work(session: Session) -> None:
        result = session.execute(
            update(ApiToken)
            .where(ApiToken.id == token_id, ApiToken.application_id == app_id)
            .values(revoked_at=utcnow())
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound(f"token {token_id} not found")

    run_transaction(sessions, work)


def application_for_token(sessions: sessionmaker[Session], token: str) -> uuid.UUID | None:
    """The application a live bearer token acts for, or None.

    Every application-token request starts here, so it retries on a connection that died
    with a database restart (see ``run_transaction``) instead of answering 503.
    """
    query = select(ApiToken.application_id).where(
        ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None)
    )
    return run_transaction(sessions, lambda session: session.scalar(query))
