"""An endpoint's signing secrets: the whsec_ secrets (v1) and the Ed25519 whsk_ keys (v1a),
shown, rotated with a grace period, and the first key of an endpoint that signs v1a."""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from registration.config import APISettings
from registration.services.endpoint_lookup import load_endpoint
from registration.services.errors import Conflict, InvalidField, NotFound
from webhooks_core.db import run_transaction
from webhooks_core.endpoints import sealing
from webhooks_core.models import Endpoint, EndpointSecret
from webhooks_core.signing import (
    is_valid_secret,
    is_valid_signing_key,
    new_secret,
    new_signing_key,
    public_key,
    secret_key,
    signing_key_public_bytes,
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


def ensure_signing_key(
    session: Session, settings: APISettings, endpoint: Endpoint, key: str | None
) -> None:
    """Give an endpoint that signs ``v1a`` its Ed25519 key; a given ``key`` rotates to it."""
    has_key = bool(_active_secrets(session, endpoint.id, "v1a"))
    if key is not None and has_key:
        rotate_key(session, settings, endpoint.id, key, "signing_key", "v1a")
    elif key is not None or ("v1a" in endpoint.signature_schemes and not has_key):
        sealed = sealing.seal(key or new_signing_key())
        session.add(EndpointSecret(endpoint_id=endpoint.id, scheme="v1a", secret=sealed))


def get_secret(
    sessions: sessionmaker[Session], app_id: uuid.UUID, endpoint_id: uuid.UUID
) -> SecretView:
    """The signing secrets of an endpoint (shown only through this call)."""

    def work(session: Session) -> SecretView:
        endpoint = load_endpoint(session, app_id, endpoint_id)
        return _view(_active_secrets(session, endpoint.id))

    return run_transaction(sessions, work)


def rotate_key(
    session: Session,
    settings: APISettings,
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
    settings: APISettings,
    app_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    key: str | None,
) -> SecretView:
    """Start signing with a new secret; the old one keeps signing for the grace period.

    See :func:`rotate_key` for what happens to earlier secrets and to a ``key`` already known.
    """
    if key is not None and not is_valid_secret(key):
        raise InvalidField("must be whsec_ followed by base64 of 24 to 64 bytes", field="key")

    def work(session: Session) -> SecretView:
        endpoint = load_endpoint(session, app_id, endpoint_id, lock=True)
        rotate_key(session, settings, endpoint.id, key, "key")
        session.flush()
        return _view(_active_secrets(session, endpoint.id))

    return run_transaction(sessions, work)


def get_signing_key(
    sessions: sessionmaker[Session], app_id: uuid.UUID, endpoint_id: uuid.UUID
) -> SecretView:
    """The ``whpk_`` public keys receivers verify ``v1a`` with (current, and previous ones)."""

    def work(session: Session) -> SecretView:
        endpoint = load_endpoint(session, app_id, endpoint_id)
        active = _active_secrets(session, endpoint.id, "v1a")
        if not active:
            raise NotFound(
                f"endpoint {endpoint_id} has no Ed25519 key: add v1a to its signature_schemes"
            )
        return _view(active)

    return run_transaction(sessions, work)


def rotate_signing_key(
    sessions: sessionmaker[Session],
    settings: APISettings,
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

    def work(session: Session) -> SecretView:
        endpoint = load_endpoint(session, app_id, endpoint_id, lock=True)
        rotate_key(session, settings, endpoint.id, key, "key", "v1a")
        session.flush()
        return _view(_active_secrets(session, endpoint.id, "v1a"))

    return run_transaction(sessions, work)
