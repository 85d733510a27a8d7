"""Endpoints (subscriptions): upsert by (URL, event types), update, disable, secrets."""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from registration.services.endpoint_credentials import credential_columns
from registration.services.errors import Conflict, InvalidField, NotFound
from registration.services.pagination import Page, paginate
from webhooks_core.db import transaction
from webhooks_core.endpoints import credentials, sealing
from webhooks_core.endpoints.disable import disable_endpoint
from webhooks_core.envelope import utcnow
from webhooks_core.models import (
    Application,
    Endpoint,
    EndpointKind,
    EndpointSecret,
    EventType,
    cancel_open_deliveries,
)
from webhooks_core.settings import Settings
from webhooks_core.signing import (
    is_valid_secret,
    is_valid_signing_key,
    new_secret,
    new_signing_key,
    public_key,
    secret_key,
    signing_key_public_bytes,
)
from webhooks_core.targets import TargetRefused, check_url

_UPSERT_KEY_WHERE = text("kind = 'subscription' AND deleted_at IS NULL")
_MUTABLE = (
    "description",
    "channels",
    "rate_limit",
    "max_in_flight",
    "retry_schedule",
    "metadata",
)


SIGNING_KEY_RULE = (
    "must be whsk_ followed by base64 of an Ed25519 seed (32 bytes) or seed and public key"
    " (64 bytes)"
)


@dataclass(frozen=True)
class SecretView:
    """The current signing secret and the rotated-out ones still signing."""

    key: str
    previous: list[tuple[str, datetime]]


def normalize_event_types(names: list[str]) -> list[str]:
    """Sorted and without repeats, so that equal filters are equal arrays."""
    return sorted(set(names))


def _check_event_types(session: Session, names: list[str]) -> None:
    if not names:
        return
    query = select(EventType.name, EventType.archived).where(EventType.name.in_(names))
    found = dict(session.execute(query).all())
    unknown = [name for name in names if name not in found]
    if unknown:
        raise InvalidField(f"unknown event types: {', '.join(unknown)}", field="event_types")
    archived = [name for name in names if found[name]]
    if archived:
        raise InvalidField(f"archived event types: {', '.join(archived)}", field="event_types")


def _check_target(settings: Settings, url: str) -> None:
    try:
        check_url(url, settings.allowed_networks)
    except TargetRefused as exc:
        raise InvalidField(str(exc), field="url") from None


def _load(
    session: Session, app_id: uuid.UUID, endpoint_id: uuid.UUID, *, lock: bool = False
) -> Endpoint:
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


def _checked_values(
    settings: Settings, app_id: uuid.UUID, fields: dict[str, Any]
) -> dict[str, Any]:
    """The endpoint's row values from ``fields``, after the checks no schema can make."""
    _check_target(settings, fields["url"])
    secret, key = fields.get("secret"), fields.get("signing_key")
    if secret is not None and not is_valid_secret(secret):
        raise InvalidField("must be whsec_ followed by base64 of 24 to 64 bytes", field="secret")
    if key is not None and not is_valid_signing_key(key):
        raise InvalidField(SIGNING_KEY_RULE, field="signing_key")
    plain_headers, sensitive_headers = credentials.split_headers(fields.get("headers") or {})
    conflict = credentials.header_conflict(list(fields.get("headers") or {}), fields.get("auth"))
    if conflict is not None:
        raise InvalidField(conflict, field="auth")
    return {
        "application_id": app_id,
        "url": fields["url"],
        "event_types": normalize_event_types(fields.get("event_types") or []),
        "description": fields.get("description") or "",
        "channels": fields.get("channels"),
        "headers": plain_headers,
        "sealed_headers": credentials.seal_json(sensitive_headers),
        "rate_limit": fields.get("rate_limit"),
        "max_in_flight": fields.get("max_in_flight"),
        "retry_schedule": fields.get("retry_schedule"),
        "metadata": fields.get("metadata") or {},
        "auth": credentials.seal_json(fields.get("auth")),
        "signature_schemes": fields.get("signature_schemes") or ["v1"],
    }


def upsert_endpoint(
    sessions: sessionmaker[Session], settings: Settings, app_id: uuid.UUID, fields: dict[str, Any]
) -> tuple[Endpoint, bool]:
    """Create an endpoint, or update the one with the same URL and event types.

    Returns the endpoint and whether it was created.  The partial unique index on
    ``(application_id, url, event_types)`` decides, so concurrent posts never duplicate.
    """
    values = _checked_values(settings, app_id, fields)
    secret = fields.get("secret")
    # A POST defines the endpoint: its credentials come whole (no stored secret is kept).
    credential_values = credential_columns(settings, fields, None)
    values.update(credential_values)
    with transaction(sessions) as session:
        if session.get(Application, app_id) is None:
            raise NotFound(f"application {app_id} not found")
        _check_event_types(session, values["event_types"])
        table = Endpoint.__table__
        statement = insert(table).values(id=uuid.uuid4(), **values)  # type: ignore[arg-type]
        given = {
            *fields,
            *(("sealed_headers",) if "headers" in fields else ()),
            *credential_values,
        }
        changed: dict[str, Any] = {key: statement.excluded[key] for key in values if key in given}
        changed["updated_at"] = func.now()
        upsert = statement.on_conflict_do_update(
            index_elements=["application_id", "url", "event_types"],
            index_where=_UPSERT_KEY_WHERE,
            set_=changed,
        ).returning(table.c.id, text("xmax = 0 AS inserted"))
        endpoint_id, created = session.execute(upsert).one()
        if created:
            session.add(
                EndpointSecret(endpoint_id=endpoint_id, secret=sealing.seal(secret or new_secret()))
            )
        elif secret is not None:
            _rotate(session, settings, endpoint_id, secret, "secret")
        endpoint = _load(session, app_id, endpoint_id)
        _ensure_signing_key(session, settings, endpoint, fields.get("signing_key"))
        session.flush()
        return endpoint, bool(created)


def _ensure_signing_key(
    session: Session, settings: Settings, endpoint: Endpoint, key: str | None
) -> None:
    """Give an endpoint that signs ``v1a`` its Ed25519 key; a given ``key`` rotates to it."""
    has_key = bool(_active_secrets(session, endpoint.id, "v1a"))
    if key is not None and has_key:
        _rotate(session, settings, endpoint.id, key, "signing_key", "v1a")
    elif key is not None or ("v1a" in endpoint.signature_schemes and not has_key):
        sealed = sealing.seal(key or new_signing_key())
        session.add(EndpointSecret(endpoint_id=endpoint.id, scheme="v1a", secret=sealed))


def get_endpoint(
    sessions: sessionmaker[Session], app_id: uuid.UUID, endpoint_id: uuid.UUID
) -> Endpoint:
    """One endpoint of an application."""
    with sessions() as session:
        return _load(session, app_id, endpoint_id)


def list_endpoints(
    sessions: sessionmaker[Session],
    app_id: uuid.UUID,
    *,
    event_type: str | None,
    enabled: bool | None,
    limit: int,
    cursor: str | None,
) -> Page[Endpoint]:
    """Endpoints of an application, newest first; filter by subscribed type and state."""
    query = select(Endpoint).where(
        Endpoint.application_id == app_id,
        Endpoint.kind == EndpointKind.SUBSCRIPTION,
        Endpoint.deleted_at.is_(None),
    )
    if event_type is not None:
        query = query.where(
            Endpoint.event_types.contains([event_type])
            | (func.cardinality(Endpoint.event_types) == 0)
        )
    if enabled is not None:
        query = query.where(Endpoint.enabled.is_(enabled))
    with sessions() as session:
        if session.get(Application, app_id) is None:
            raise NotFound(f"application {app_id} not found")
        return paginate(
            session, query, Endpoint.created_at, Endpoint.id, limit=limit, cursor=cursor
        )


def update_endpoint(
    sessions: sessionmaker[Session],
    settings: Settings,
    app_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    changes: dict[str, Any],
) -> Endpoint:
    """Change some fields; moving onto another endpoint's (URL, event types) is a conflict."""
    if "url" in changes:
        _check_target(settings, changes["url"])
    try:
        with transaction(sessions) as session:
            endpoint = _load(session, app_id, endpoint_id, lock=True)
            if "url" in changes:
                endpoint.url = changes["url"]
            if "event_types" in changes:
                names = normalize_event_types(changes["event_types"] or [])
                _check_event_types(session, names)
                endpoint.event_types = names
            if "headers" in changes:
                _set_headers(endpoint, changes["headers"] or {})
            if "auth" in changes:
                auth = credentials.keep_masked(changes["auth"], endpoint.auth)
                endpoint.auth = credentials.seal_json(auth)
            _check_credentials(endpoint)
            if "signature_schemes" in changes:
                endpoint.signature_schemes = changes["signature_schemes"]
                _ensure_signing_key(session, settings, endpoint, None)
            for field in _MUTABLE:
                if field in changes:
                    setattr(endpoint, "metadata_" if field == "metadata" else field, changes[field])
            for column, value in credential_columns(settings, changes, endpoint).items():
                setattr(endpoint, column, value)
            session.flush()
            return endpoint
    except IntegrityError:
        raise Conflict(
            "another endpoint of this application has this URL and these event types",
            field="url",
        ) from None


def _set_headers(endpoint: Endpoint, headers: dict[str, str]) -> None:
    """Store ``headers``: the plain ones as they are, those carrying credentials sealed.

    A sensitive header sent back as the API showed it (masked) keeps its stored value, so
    that an edit form filled from a read does not overwrite a credential with its mask.
    """
    plain, sensitive = credentials.split_headers(headers)
    stored = credentials.unseal_json(endpoint.sealed_headers)
    for name, value in sensitive.items():
        if name in stored and value == credentials.mask(stored[name]):
            sensitive[name] = stored[name]
    endpoint.headers = plain
    endpoint.sealed_headers = credentials.seal_json(sensitive)


def _check_credentials(endpoint: Endpoint) -> None:
    names = list(credentials.unseal_json(endpoint.sealed_headers))
    conflict = credentials.header_conflict(names, credentials.unseal_json(endpoint.auth))
    if conflict is not None:
        raise InvalidField(conflict, field="auth")


def delete_endpoint(
    sessions: sessionmaker[Session], app_id: uuid.UUID, endpoint_id: uuid.UUID
) -> None:
    """Delete an endpoint: it stops receiving, its open deliveries end cancelled."""
    with transaction(sessions) as session:
        endpoint = _load(session, app_id, endpoint_id, lock=True)
        endpoint.deleted_at = utcnow()
        endpoint.enabled = False
        endpoint.disabled_reason = "deleted"
        session.execute(cancel_open_deliveries(endpoint.id, "endpoint deleted"))


def set_enabled(
    sessions: sessionmaker[Session],
    app_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    *,
    enabled: bool,
    reason: str | None = None,
) -> Endpoint:
    """Disable or re-enable an endpoint.

    Disabling is :func:`webhooks_core.endpoints.disable.disable_endpoint` with reason
    ``manual`` (``reason`` is the operator's words): open deliveries cancelled, breaker
    cleared, ``endpoint.disabled`` emitted.  Enabling resets its health (failures, failing
    since, breaker), so it starts healthy.
    """
    with transaction(sessions) as session:
        endpoint = _load(session, app_id, endpoint_id, lock=True)
        if enabled:
            endpoint.enabled = True
            endpoint.disabled_reason = None
            endpoint.disabled_at = None
            endpoint.consecutive_failures = 0
            endpoint.failing_since = None
            endpoint.circuit_open_until = None
        elif endpoint.enabled:
            disable_endpoint(
                session, endpoint.id, endpoint.application_id, "manual", utcnow(), detail=reason
            )
            session.refresh(endpoint)
        session.flush()
        return endpoint


def _active_secrets(
    session: Session, endpoint_id: uuid.UUID, scheme: str = "v1"
) -> list[EndpointSecret]:
    query = (
        select(EndpointSecret)
        .where(
            EndpointSecret.endpoint_id == endpoint_id,
            EndpointSecret.scheme == scheme,
            (EndpointSecret.expires_at.is_(None)) | (EndpointSecret.expires_at > func.now()),
        )
        .order_by(EndpointSecret.created_at.desc())
    )
    return list(session.scalars(query))


def _view(secrets: list[EndpointSecret]) -> SecretView:
    """The secrets as shown: ``whsec_`` secrets as they are, ``whsk_`` keys as public keys."""

    def shown(stored: EndpointSecret) -> str:
        plain = sealing.unseal(stored.secret)
        return public_key(plain) if stored.scheme == "v1a" else plain

    current = next(s for s in secrets if s.expires_at is None)
    previous = [(shown(s), s.expires_at) for s in secrets if s.expires_at is not None]
    return SecretView(shown(current), previous)


def _identity(scheme: str, plain: str) -> bytes:
    """What makes two secrets of ``scheme`` the same key."""
    return signing_key_public_bytes(plain) if scheme == "v1a" else secret_key(plain)


def get_secret(
    sessions: sessionmaker[Session], app_id: uuid.UUID, endpoint_id: uuid.UUID
) -> SecretView:
    """The signing secrets of an endpoint (shown only through this call)."""
    with sessions() as session:
        endpoint = _load(session, app_id, endpoint_id)
        return _view(_active_secrets(session, endpoint.id))


def _rotate(
    session: Session,
    settings: Settings,
    endpoint_id: uuid.UUID,
    key: str | None,
    field: str,
    scheme: str = "v1",
) -> None:
    """Make ``key`` (or a fresh secret) current; keep at most one previous secret signing.

    The secret that was current signs on until the grace period ends; a secret rotated out
    earlier and still in its grace period stops signing at once, so a delivery carries at most
    two signatures however often the secret is rotated.  ``key`` equal to the current secret
    is a no-op (a repeated request); equal to the previous one is refused (409), since making
    it current again would sign twice with it.  The caller holds the endpoint's row lock.
    """
    active = _active_secrets(session, endpoint_id, scheme)
    if key is not None:
        wanted = _identity(scheme, key)
        for known in active:
            if not hmac.compare_digest(_identity(scheme, sealing.unseal(known.secret)), wanted):
                continue
            if known.expires_at is None:
                return
            raise Conflict(
                "is the previous secret, still signing during the grace period; "
                "choose a new secret",
                field=field,
            )
    # Database time on both sides, so a zero grace period ends the old secret at once.
    grace_end = func.now() + timedelta(seconds=settings.secret_rotation_grace_seconds)
    mine = (EndpointSecret.endpoint_id == endpoint_id) & (EndpointSecret.scheme == scheme)
    session.execute(
        update(EndpointSecret)
        .where(mine, EndpointSecret.expires_at > func.now())
        .values(expires_at=func.now())
    )
    session.execute(
        update(EndpointSecret)
        .where(mine, EndpointSecret.expires_at.is_(None))
        .values(expires_at=grace_end)
    )
    fresh = key or (new_signing_key() if scheme == "v1a" else new_secret())
    session.add(EndpointSecret(endpoint_id=endpoint_id, scheme=scheme, secret=sealing.seal(fresh)))


def rotate_secret(
    sessions: sessionmaker[Session],
    settings: Settings,
    app_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    key: str | None,
) -> SecretView:
    """Start signing with a new secret; the old one keeps signing for the grace period.

    See :func:`_rotate` for what happens to earlier secrets and to a ``key`` already known.
    """
    if key is not None and not is_valid_secret(key):
        raise InvalidField("must be whsec_ followed by base64 of 24 to 64 bytes", field="key")
    with transaction(sessions) as session:
        endpoint = _load(session, app_id, endpoint_id, lock=True)
        _rotate(session, settings, endpoint.id, key, "key")
        session.flush()
        return _view(_active_secrets(session, endpoint.id))


def get_signing_key(
    sessions: sessionmaker[Session], app_id: uuid.UUID, endpoint_id: uuid.UUID
) -> SecretView:
    """The ``whpk_`` public keys receivers verify ``v1a`` with (current, and previous ones)."""
    with sessions() as session:
        endpoint = _load(session, app_id, endpoint_id)
        active = _active_secrets(session, endpoint.id, "v1a")
        if not active:
            raise NotFound(
                f"endpoint {endpoint_id} has no Ed25519 key: add v1a to its signature_schemes"
            )
        return _view(active)


def rotate_signing_key(
    sessions: sessionmaker[Session],
    settings: Settings,
    app_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    key: str | None,
) -> SecretView:
    """Sign ``v1a`` with a new Ed25519 key (``key``, a ``whsk_`` key, or a fresh one).

    The same grace rules as :func:`rotate_secret`: the key that was current signs on for the
    grace period, at most two keys sign, the previous key again is a 409.
    """
    if key is not None and not is_valid_signing_key(key):
        raise InvalidField(SIGNING_KEY_RULE, field="key")
    with transaction(sessions) as session:
        endpoint = _load(session, app_id, endpoint_id, lock=True)
        _rotate(session, settings, endpoint.id, key, "key", "v1a")
        session.flush()
        return _view(_active_secrets(session, endpoint.id, "v1a"))
