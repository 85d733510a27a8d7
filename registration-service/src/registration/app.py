"""The application factory of the registration service."""

from __future__ import annotations

import logging

from flask_openapi3 import Info

from registration.api import (
    applications,
    dead_letters,
    endpoints,
    event_types,
    ingest,
    statistics,
)
from registration.api import messages as message_views
from registration.api import replays as replay_views
from registration.api.auth import register_authentication
from registration.api.health import register_operational_routes
from registration.api.openapi import ManagementAPI
from registration.api.problems import Problem, register_error_handlers, validation_problem
from registration.config import APISettings
from registration.console import register_console
from registration.runtime import Runtime
from webhooks_core.db import make_engine, make_session_factory
from webhooks_core.endpoints import sealing
from webhooks_core.observability import instrument_flask

API_DESCRIPTION = """Manage applications, event types, endpoints and messages of the webhook
platform.  Authenticate with `Authorization: Bearer <token>`: the admin token from
`WEBHOOKS_ADMIN_TOKEN`, or an application token the admin issued.  Errors are
`application/problem+json` with an `errors` list naming each invalid field."""


def create_app(settings: APISettings | None = None) -> ManagementAPI:
    """Build the Flask app; a missing or unreachable database fails here, naming the variable."""
    settings = settings or APISettings.from_env()
    sealing.install(sealing.KeyRing.from_settings(settings))  # unset: fails here, says what
    engine = make_engine(settings)
    app = ManagementAPI(
        __name__,
        info=Info(title="Webhooks management API", version="1.0.0", description=API_DESCRIPTION),
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        validation_error_status=422,
        validation_error_model=Problem,
        validation_error_callback=validation_problem,
        doc_prefix="/docs",
        doc_url="/openapi.json",
    )
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["webhooks"] = Runtime(settings, engine, make_session_factory(engine))

    instrument_flask(app, "registration")
    register_error_handlers(app)
    register_authentication(app)
    register_operational_routes(app)
    for blueprint in (applications.bp, event_types.bp, endpoints.bp):
        app.register_api(blueprint)
    for blueprint in (message_views.bp, message_views.admin_bp, replay_views.bp):
        app.register_api(blueprint)
    app.register_api(dead_letters.bp)
    app.register_api(dead_letters.admin_bp)
    app.register_api(statistics.bp)
    ingest.register(app)  # last: it keeps other operations on the paths it shares
    register_console(app, settings)  # /console: session auth of its own, not bearer
    logging.getLogger(__name__).info("registration service ready")
    return app
