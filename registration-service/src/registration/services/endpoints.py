"""Endpoints (subscriptions): upsert by (URL, event types), update, disable, pause, delete.

Their signing secrets and keys are :mod:`.endpoint_secrets`."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from registration.config import APISettings
from registration.services.endpoint_credentials import credential_columns
from registration.services.endpoint_lookup import load_endpoint
from registration.services.endpoint_secrets import SIGNING_KEY_RULE, ensure_signing_key, rotate_key
from registration.services.errors import Conflict, InvalidField, NotFound
from registration.services.pagination import Page, paginate
from webhooks_core.db import run_transaction
from webhooks_core.deliveries.ordering import KeyFailurePolicy
from webhooks_core.endpoints import credentials, sealing
from webhooks_core.endpoints.disable import disable_endpoint
from webhooks_core.endpoints.flow_limits import flow_control_on
from webhooks_core.endpoints.pause import pause_endpoint, resume_endpoint
from webhooks_core.messages.envelope import utcnow
from webhooks_core.models import (
    Application,
    Endpoint,
    EndpointFlow,
    EndpointKind,
    EndpointSecret,
    EventType,
    cancel_open_deliveries,
)
from webhooks_core.signing import (
    is_valid_secret,
    is_valid_signing_key,
    new_secret,
)
from webhooks_core.targets import TargetRefused, check_url

_UPSERT_KEY_WHERE = text("kind = 'subscription' AND deleted_at IS NULL")
_MUTABLE = (
    "description",
    "channels",
    "rate_limit",
    "max_in_flight",
    "adaptive_flow",
    "retry_schedule",
    "metadata",
    "key_failure_policy",
)


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


def _check_target(settings: APISettings, url: str) -> None:
    try:
        check_url(url, settings.allowed_networks)
    except TargetRefused as exc:
        raise InvalidField(str(exc), field="url") from None


def _checked_values(
    settings: APISettings, app_id: uuid.UUID, fields: dict[str, Any]
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
        "adaptive_flow": fields.get("adaptive_flow", True),
        "retry_schedule": fields.get("retry_schedule"),
        "key_failure_policy": fields.get("key_failure_policy") or KeyFailurePolicy.SKIP.value,
        "metadata": fields.get("metadata") or {},
        "auth": credentials.seal_json(fields.get("auth")),
        "signature_schemes": fields.get("signature_schemes") or ["v1"],
    }


def upsert_endpoint(
    sessions: sessionmaker[Session],
    settings: APISettings,
    app_id: uuid.UUID,
    fields: dict[str, Any],
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

    def work(session: Session) -> tuple[Endpoint, bool]:
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
            rotate_key(session, settings, endpoint_id, secret, "secret")
        endpoint = load_endpoint(session, app_id, endpoint_id)
        _forget_flow_when_off(session, endpoint)
        ensure_signing_key(session, settings, endpoint, fields.get("signing_key"))
        session.flush()
        return endpoint, bool(created)

    return run_transaction(sessions, work)


def get_endpoint(
    sessions: sessionmaker[Session], app_id: uuid.UUID, endpoint_id: uuid.UUID
) -> Endpoint:
    """One endpoint of an application."""

    def work(session: Session) -> Endpoint:
        return load_endpoint(session, app_id, endpoint_id)

    return run_transaction(sessions, work)


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

    def work(session: Session) -> Page[Endpoint]:
        if session.get(Application, app_id) is None:
            raise NotFound(f"application {app_id} not found")
        return paginate(
            session, query, Endpoint.created_at, Endpoint.id, limit=limit, cursor=cursor
        )

    return run_transaction(sessions, work)


def update_endpoint(
    sessions: sessionmaker[Session],
    settings: APISettings,
    app_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    changes: dict[str, Any],
) -> Endpoint:
    """Change some fields; moving onto another endpoint's (URL, event types) is a conflict."""
    if "url" in changes:
        _check_target(settings, changes["url"])

    def work(session: Session) -> Endpoint:
        endpoint = load_endpoint(session, app_id, endpoint_id, lock=True)
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
            ensure_signing_key(session, settings, endpoint, None)
        for field in _MUTABLE:
            if field in changes:
                setattr(endpoint, "metadata_" if field == "metadata" else field, changes[field])
        for column, value in credential_columns(settings, changes, endpoint).items():
            setattr(endpoint, column, value)
        _forget_flow_when_off(session, endpoint)
        session.flush()
        return endpoint

    try:
        return run_transaction(sessions, work)
    except IntegrityError:
        raise Conflict(
            "another endpoint of this application has this URL and these event types",
            field="url",
        ) from None


def _forget_flow_when_off(session: Session, endpoint: Endpoint) -> None:
    """An endpoint with flow control off keeps nothing it learnt (docs/delivery.md, *Flow
    control*): turned on again, it starts from its configured limits, not from a rate an
    old incident left."""
    if not flow_control_on(endpoint.adaptive_flow):
        session.execute(delete(EndpointFlow).where(EndpointFlow.endpoint_id == endpoint.id))


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

    def work(session: Session) -> None:
        endpoint = load_endpoint(session, app_id, endpoint_id, lock=True)
        endpoint.deleted_at = utcnow()
        endpoint.enabled = False
        endpoint.disabled_reason = "deleted"
        session.execute(cancel_open_deliveries(endpoint.id, "endpoint deleted"))

    return run_transaction(sessions, work)


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

    def work(session: Session) -> Endpoint:
        endpoint = load_endpoint(session, app_id, endpoint_id, lock=True)
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

    return run_transaction(sessions, work)


def set_paused(
    sessions: sessionmaker[Session],
    app_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    *,
    paused: bool,
) -> Endpoint:
    """Pause (hold deliveries) or resume (send the held ones, oldest first) an endpoint.

    The rules are :mod:`webhooks_core.endpoints.pause`; pausing a paused endpoint, or
    resuming one that is not, changes nothing.
    """

    def work(session: Session) -> Endpoint:
        endpoint = load_endpoint(session, app_id, endpoint_id, lock=True)
        change = pause_endpoint if paused else resume_endpoint
        if change(session, endpoint.id, utcnow()):
            session.refresh(endpoint)
        return endpoint

    return run_transaction(sessions, work)
