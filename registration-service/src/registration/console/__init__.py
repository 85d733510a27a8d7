"""The web console: server-rendered pages under ``/console`` for operators.

It signs in with an application token or the admin token and keeps that sign-in in a signed,
HttpOnly, SameSite=Lax session cookie.  Every form carries a CSRF token (Flask-WTF); the JSON
API under ``/api/`` uses bearer tokens, so CSRF is checked only on the console's own routes.
Views call the same domain functions as the API and never open a database session.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from flask import Flask
from flask_wtf.csrf import CSRFProtect

from registration.config import APISettings
from registration.console import (  # noqa: F401 - importing registers the routes
    credential_views,
    endpoint_views,
    message_views,
    session_views,
)
from registration.console.blueprint import bp

log = logging.getLogger(__name__)

SESSION_LIFETIME = timedelta(hours=12)


def register_console(app: Flask, settings: APISettings) -> None:
    """Mount the console on ``app`` and configure its cookie and CSRF protection."""
    secret_key = settings.console_secret_key
    if secret_key is None:
        # Sessions then last as long as this process; several workers would not share it.
        log.warning(
            "WEBHOOKS_CONSOLE_SECRET_KEY is not set: generated one for this process; "
            "console sign-ins end when it restarts"
        )
        secret_key = secrets.token_urlsafe(32)
    app.secret_key = secret_key
    app.config.update(
        SESSION_COOKIE_NAME="webhooks_console",
        SESSION_COOKIE_PATH="/console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.console_cookie_secure,
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        # The console blueprint checks CSRF itself; bearer-token API routes are not checked.
        WTF_CSRF_CHECK_DEFAULT=False,
        # A form stays valid as long as the session, not an hour.
        WTF_CSRF_TIME_LIMIT=None,
    )
    CSRFProtect(app)
    app.register_blueprint(bp)
