"""Routes of applications and their tokens (admin token only, but for reading one's own)."""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from registration.api.auth import authorize_application, require_admin
from registration.api.problems import Problem
from registration.api.schemas import (
    ApplicationIn,
    ApplicationList,
    ApplicationOut,
    ApplicationPatch,
    ApplicationPath,
    IssuedTokenOut,
    ListQuery,
    TokenIn,
    TokenList,
    TokenOut,
    TokenPath,
)
from registration.api.serialize import BEARER, one, page
from registration.runtime import runtime
from registration.services import applications

tag = Tag(name="applications", description="Tenants and their API tokens")
bp = APIBlueprint(
    "applications",
    __name__,
    url_prefix="/api/v1/applications",
    abp_tags=[tag],
    abp_security=BEARER,
    abp_responses={401: Problem, 403: Problem, 404: Problem, 422: Problem},
)


@bp.post("", responses={201: ApplicationOut, 409: Problem})
def create_application(body: ApplicationIn) -> tuple[Response, int]:
    """Create an application (admin)."""
    require_admin()
    app = applications.create_application(
        runtime().sessions,
        name=body.name,
        uid=body.uid,
        metadata=body.metadata,
        retention=body.retention.model_dump(exclude_unset=True),
        settings=runtime().settings,
    )
    return one(ApplicationOut, app, 201)


@bp.get("", responses={200: ApplicationList})
def list_applications(query: ListQuery) -> tuple[Response, int]:
    """List applications, newest first (admin)."""
    require_admin()
    result = applications.list_applications(
        runtime().sessions, limit=query.limit, cursor=query.iterator
    )
    return page(ApplicationOut, result)


@bp.get("/<app_id>", responses={200: ApplicationOut})
def get_application(path: ApplicationPath) -> tuple[Response, int]:
    """Get an application (admin, or the application's own token)."""
    app_id = authorize_application(path.app_id)
    return one(ApplicationOut, applications.get_application(runtime().sessions, app_id))


@bp.patch("/<app_id>", responses={200: ApplicationOut})
def update_application(path: ApplicationPath, body: ApplicationPatch) -> tuple[Response, int]:
    """Rename an application, replace its metadata or change its retention (admin)."""
    require_admin()
    changes = body.model_dump(exclude_unset=True)
    app = applications.update_application(
        runtime().sessions, path.app_id, changes, settings=runtime().settings
    )
    return one(ApplicationOut, app)


@bp.delete("/<app_id>", responses={204: None})
def delete_application(path: ApplicationPath) -> tuple[str, int]:
    """Delete an application with everything it owns (admin)."""
    require_admin()
    applications.delete_application(runtime().sessions, path.app_id)
    return "", 204


@bp.post("/<app_id>/tokens", responses={201: IssuedTokenOut})
def issue_token(path: ApplicationPath, body: TokenIn) -> tuple[Response, int]:
    """Issue an API token for the application (admin); the value is shown only here."""
    require_admin()
    issued = applications.issue_token(runtime().sessions, path.app_id, name=body.name)
    return one(IssuedTokenOut, issued, 201)


@bp.get("/<app_id>/tokens", responses={200: TokenList})
def list_tokens(path: ApplicationPath) -> tuple[Response, int]:
    """List the application's tokens, without their values (admin)."""
    require_admin()
    tokens = applications.list_tokens(runtime().sessions, path.app_id)
    data = [TokenOut.model_validate(t).model_dump(mode="json") for t in tokens]
    return one(TokenList, {"data": data})


@bp.delete("/<app_id>/tokens/<token_id>", responses={204: None})
def revoke_token(path: TokenPath) -> tuple[str, int]:
    """Revoke a token (admin)."""
    require_admin()
    applications.revoke_token(runtime().sessions, path.app_id, path.token_id)
    return "", 204
