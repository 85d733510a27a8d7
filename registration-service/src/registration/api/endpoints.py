"""Routes of an application's endpoints (subscriptions) and their signing secrets."""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from registration.api.auth import authorize_application
from registration.api.delivery_schemas import WaitingKeysOut
from registration.api.endpoint_schemas import (
    DisableIn,
    EndpointIn,
    EndpointList,
    EndpointOut,
    EndpointPatch,
    EndpointPath,
    EndpointQuery,
    RotateIn,
    RotateSigningKeyIn,
    SecretOut,
    SigningKeyOut,
)
from registration.api.problems import Problem
from registration.api.schemas import ApplicationPath
from registration.api.serialize import BEARER, one, page
from registration.runtime import runtime
from registration.services import endpoint_secrets, endpoints, ordering_keys
from registration.services.endpoint_secrets import SecretView

tag = Tag(name="endpoints", description="Where an application's webhooks are delivered")
bp = APIBlueprint(
    "endpoints",
    __name__,
    url_prefix="/api/v1/applications/<app_id>/endpoints",
    abp_tags=[tag],
    abp_security=BEARER,
    abp_responses={401: Problem, 404: Problem, 422: Problem},
)


def _secret_body(view: SecretView) -> dict[str, object]:
    return {
        "key": view.key,
        "previous": [{"key": key, "expires_at": expires} for key, expires in view.previous],
    }


@bp.post("", responses={201: EndpointOut, 200: EndpointOut, 409: Problem})
def upsert_endpoint(path: ApplicationPath, body: EndpointIn) -> tuple[Response, int]:
    """Create an endpoint; posting the same URL and event types again updates it (200)."""
    app_id = authorize_application(path.app_id)
    fields = body.model_dump(exclude_unset=True)
    fields["url"] = body.url
    endpoint, created = endpoints.upsert_endpoint(
        runtime().sessions, runtime().settings, app_id, fields
    )
    return one(EndpointOut, endpoint, 201 if created else 200)


@bp.get("", responses={200: EndpointList})
def list_endpoints(path: ApplicationPath, query: EndpointQuery) -> tuple[Response, int]:
    """List endpoints, newest first; filter by subscribed event type and by state."""
    app_id = authorize_application(path.app_id)
    enabled = None if query.state is None else query.state == "enabled"
    result = endpoints.list_endpoints(
        runtime().sessions,
        app_id,
        event_type=query.event_type,
        enabled=enabled,
        limit=query.limit,
        cursor=query.iterator,
    )
    return page(EndpointOut, result)


@bp.get("/<endpoint_id>", responses={200: EndpointOut})
def get_endpoint(path: EndpointPath) -> tuple[Response, int]:
    """Get an endpoint, with its health."""
    app_id = authorize_application(path.app_id)
    return one(EndpointOut, endpoints.get_endpoint(runtime().sessions, app_id, path.endpoint_id))


@bp.get("/<endpoint_id>/waiting-keys", responses={200: WaitingKeysOut})
def get_waiting_keys(path: EndpointPath) -> tuple[Response, int]:
    """The ordering keys that wait: their oldest open delivery is retrying, or (policy
    ``block``) a dead-lettered delivery holds them until it is redriven."""
    app_id = authorize_application(path.app_id)
    return one(
        WaitingKeysOut,
        ordering_keys.waiting_keys(runtime().sessions, app_id, path.endpoint_id),
    )


@bp.patch("/<endpoint_id>", responses={200: EndpointOut, 409: Problem})
def update_endpoint(path: EndpointPath, body: EndpointPatch) -> tuple[Response, int]:
    """Change some of an endpoint's fields."""
    app_id = authorize_application(path.app_id)
    endpoint = endpoints.update_endpoint(
        runtime().sessions,
        runtime().settings,
        app_id,
        path.endpoint_id,
        body.model_dump(exclude_unset=True),
    )
    return one(EndpointOut, endpoint)


@bp.delete("/<endpoint_id>", responses={204: None})
def delete_endpoint(path: EndpointPath) -> tuple[str, int]:
    """Delete an endpoint; its undelivered messages end cancelled."""
    app_id = authorize_application(path.app_id)
    endpoints.delete_endpoint(runtime().sessions, app_id, path.endpoint_id)
    return "", 204


@bp.post("/<endpoint_id>/disable", responses={200: EndpointOut})
def disable_endpoint(path: EndpointPath, body: DisableIn) -> tuple[Response, int]:
    """Stop delivering to an endpoint; its undelivered messages end cancelled."""
    app_id = authorize_application(path.app_id)
    endpoint = endpoints.set_enabled(
        runtime().sessions, app_id, path.endpoint_id, enabled=False, reason=body.reason
    )
    return one(EndpointOut, endpoint)


@bp.post("/<endpoint_id>/enable", responses={200: EndpointOut})
def enable_endpoint(path: EndpointPath) -> tuple[Response, int]:
    """Resume delivering to an endpoint, with its failure count reset."""
    app_id = authorize_application(path.app_id)
    endpoint = endpoints.set_enabled(runtime().sessions, app_id, path.endpoint_id, enabled=True)
    return one(EndpointOut, endpoint)


@bp.post("/<endpoint_id>/pause", responses={200: EndpointOut})
def pause_endpoint(path: EndpointPath) -> tuple[Response, int]:
    """Hold deliveries: messages keep arriving, nothing is sent until resumed.

    Unlike disable nothing is cancelled: held deliveries are not attempted, so they neither
    fail nor spend their retry schedule.  Pausing a paused endpoint changes nothing.
    """
    app_id = authorize_application(path.app_id)
    endpoint = endpoints.set_paused(runtime().sessions, app_id, path.endpoint_id, paused=True)
    return one(EndpointOut, endpoint)


@bp.post("/<endpoint_id>/resume", responses={200: EndpointOut})
def resume_endpoint(path: EndpointPath) -> tuple[Response, int]:
    """Send the held deliveries, in acceptance order, and whatever arrives from now on."""
    app_id = authorize_application(path.app_id)
    endpoint = endpoints.set_paused(runtime().sessions, app_id, path.endpoint_id, paused=False)
    return one(EndpointOut, endpoint)


@bp.get("/<endpoint_id>/secret", responses={200: SecretOut})
def get_secret(path: EndpointPath) -> tuple[Response, int]:
    """Reveal the signing secret, and any rotated-out secret still signing."""
    app_id = authorize_application(path.app_id)
    view = endpoint_secrets.get_secret(runtime().sessions, app_id, path.endpoint_id)
    return one(SecretOut, _secret_body(view))


@bp.post("/<endpoint_id>/secret/rotate", responses={200: SecretOut, 409: Problem})
def rotate_secret(path: EndpointPath, body: RotateIn) -> tuple[Response, int]:
    """Sign with a new secret; the old one keeps signing for the grace period.

    At most the current and the previous secret sign.  ``key`` equal to the current secret
    changes nothing; equal to the previous one, still signing, is a conflict (409).
    """
    app_id = authorize_application(path.app_id)
    view = endpoint_secrets.rotate_secret(
        runtime().sessions, runtime().settings, app_id, path.endpoint_id, body.key
    )
    return one(SecretOut, _secret_body(view))


def _signing_key_body(view: SecretView) -> dict[str, object]:
    return {
        "public_key": view.key,
        "previous": [{"public_key": key, "expires_at": expires} for key, expires in view.previous],
    }


@bp.get("/<endpoint_id>/signing-key", responses={200: SigningKeyOut})
def get_signing_key(path: EndpointPath) -> tuple[Response, int]:
    """The whpk_ public key receivers verify v1a (Ed25519) signatures with.

    And the previous public key while it still signs (its grace period).  The whsk_ secret
    key is never returned.  404 when the endpoint has no Ed25519 key (it does not sign v1a).
    """
    app_id = authorize_application(path.app_id)
    view = endpoint_secrets.get_signing_key(runtime().sessions, app_id, path.endpoint_id)
    return one(SigningKeyOut, _signing_key_body(view))


@bp.post("/<endpoint_id>/signing-key/rotate", responses={200: SigningKeyOut, 409: Problem})
def rotate_signing_key(path: EndpointPath, body: RotateSigningKeyIn) -> tuple[Response, int]:
    """Sign v1a with a new Ed25519 key; the old one keeps signing for the grace period.

    The same rules as the secret's rotation: at most the current and the previous key sign;
    ``key`` equal to the current key changes nothing, equal to the previous one is a 409.
    """
    app_id = authorize_application(path.app_id)
    view = endpoint_secrets.rotate_signing_key(
        runtime().sessions, runtime().settings, app_id, path.endpoint_id, body.key
    )
    return one(SigningKeyOut, _signing_key_body(view))
