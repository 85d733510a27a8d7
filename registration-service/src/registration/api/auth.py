"""Bearer-token authentication of ``/api/``.

The admin token comes from ``WEBHOOKS_ADMIN_TOKEN`` and may act on any application; an
application token (issued by the admin, stored hashed) acts on its own application only, and
another application's objects look to it as if they did not exist.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass

from flask import Flask, Response, g, request

from registration.api.problems import problem
from registration.runtime import runtime
from registration.services.applications import application_for_token
from registration.services.errors import Forbidden, NotFound

PROTECTED_PREFIX = "/api/"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the admin, or one application."""

    application_id: uuid.UUID | None

    @property
    def is_admin(self) -> bool:
        """True for the bootstrap admin token."""
        return self.application_id is None

    @property
    def label(self) -> str:
        """How audit records name the caller."""
        return "admin" if self.is_admin else f"app:{self.application_id}"


def principal() -> Principal:
    """The authenticated caller of the current request."""
    return g.principal  # type: ignore[no-any-return]


def require_admin() -> None:
    """Only the admin token may do this."""
    if not principal().is_admin:
        raise Forbidden("this operation needs the admin token")


def authorize_application(app_id: uuid.UUID) -> uuid.UUID:
    """The admin may act on any application, an application token on its own only."""
    caller = principal()
    if not caller.is_admin and caller.application_id != app_id:
        raise NotFound(f"application {app_id} not found")
    return app_id


def _authenticate(token: str) -> Principal | None:
    admin_token = runtime().settings.admin_token
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal(None)
    app_id = application_for_token(runtime().sessions, token)
    return Principal(app_id) if app_id else None


def register_authentication(app: Flask) -> None:
    """Refuse unauthenticated calls to ``/api/`` before any view runs."""

    @app.before_request
    def _require_token() -> Response | None:
        if not request.path.startswith(PROTECTED_PREFIX):
            return None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            response = problem(401, "Unauthorized", "send Authorization: Bearer <token>")
        else:
            caller = _authenticate(token.strip())
            if caller is not None:
                g.principal = caller
                return None
            response = problem(401, "Unauthorized", "the token is not valid")
        response.headers["WWW-Authenticate"] = 'Bearer realm="webhooks"'
        return response
