"""The console blueprint: who is signed in, which application is shown, CSRF, errors."""

from __future__ import annotations

import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from registration.runtime import runtime
from registration.services import operators
from registration.services.applications import get_application
from registration.services.errors import DomainError
from webhooks_core.messages.envelope import utcnow
from webhooks_core.models import Application

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="../templates",
    static_folder="../static/console",
    static_url_path="/static",
)

# Views reachable without signing in.
PUBLIC_VIEWS = frozenset({"console.sign_in", "console.static"})


@dataclass(frozen=True)
class Viewer:
    """The signed-in operator and the application the console shows."""

    operator: operators.Operator
    application: Application | None
    applications: list[Application]  # the admin's switcher; empty for an application token

    @property
    def app_id(self) -> uuid.UUID:
        """The shown application's id; views that need one are reached only with one."""
        if self.application is None:
            raise DomainError("create an application first")
        return self.application.id


def viewer() -> Viewer:
    """The viewer of the current console request."""
    return g.viewer  # type: ignore[no-any-return]


def remember(operator: operators.Operator) -> None:
    """Start a console session for ``operator`` (after a successful sign-in)."""
    session.clear()
    session.permanent = True
    if operator.is_admin:
        settings = runtime().settings
        assert settings.admin_token is not None
        session["op"] = "admin"
        session["fp"] = operators.admin_fingerprint(settings.admin_token, _secret())
    else:
        session["op"] = "app"
        session["token"] = str(operator.token_id)
        session["app"] = str(operator.application_id)


def _secret() -> str:
    return str(current_app.secret_key)


def _load_operator() -> operators.Operator | None:
    kind = session.get("op")
    if kind == "admin":
        admin_token = runtime().settings.admin_token
        if not admin_token:
            return None
        expected = operators.admin_fingerprint(admin_token, _secret())
        if not hmac.compare_digest(str(session.get("fp", "")), expected):
            return None
        return operators.Operator(application_id=None, token_id=None)
    if kind == "app":
        try:
            token_id = uuid.UUID(session.get("token", ""))
        except ValueError:
            return None
        app_id = operators.token_is_live(runtime().sessions, token_id)
        if app_id is None or str(app_id) != session.get("app"):
            return None
        return operators.Operator(application_id=app_id, token_id=token_id)
    return None


def _load_viewer(operator: operators.Operator) -> Viewer:
    sessions = runtime().sessions
    if not operator.is_admin:
        assert operator.application_id is not None
        return Viewer(operator, get_application(sessions, operator.application_id), [])
    applications = operators.application_names(sessions)
    chosen = session.get("app")
    shown = next((app for app in applications if str(app.id) == chosen), None)
    if shown is None and applications:
        shown = applications[0]
        session["app"] = str(shown.id)
    return Viewer(operator, shown, applications)


def refresh_viewer() -> None:
    """Load the viewer again (after a change to what the switcher lists)."""
    g.viewer = _load_viewer(viewer().operator)


@bp.before_request
def _guard() -> BaseResponse | None:
    if request.endpoint == "console.static":
        return None
    current_app.extensions["csrf"].protect()
    if request.endpoint in PUBLIC_VIEWS:
        return None
    operator = _load_operator()
    if operator is None:
        session.clear()
        target = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for("console.sign_in", next=target))
    g.viewer = _load_viewer(operator)
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    # Pages may show secrets: never cache them; never frame them.
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    )
    return response


@bp.context_processor
def _template_globals() -> dict[str, Any]:
    # Sections appear in the navigation once their views exist.
    return {"available_views": frozenset(current_app.view_functions), "nav": None}


@bp.errorhandler(CSRFError)
def _csrf_failed(exc: CSRFError) -> tuple[str, int]:
    return render_template(
        "console/error.html",
        title="Form expired",
        detail="The form was missing its security token or it expired. "
        "Go back, reload the page and try again.",
    ), 400


@bp.errorhandler(DomainError)
def _domain_error(exc: DomainError) -> tuple[str, int]:
    return render_template("console/error.html", title=exc.title, detail=exc.detail), exc.status


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[str, int]:
    return render_template(
        "console/error.html", title=exc.name, detail=exc.description
    ), exc.code or 500


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> tuple[str, int]:
    current_app.logger.exception("console error on %s %s", request.method, request.path)
    return render_template(
        "console/error.html", title="Something went wrong", detail="The error was logged."
    ), 500


@bp.app_template_filter("ago")
def _ago(value: datetime | None) -> str:
    """``3 min ago`` / ``in 5 s``; the exact time goes in a title attribute."""
    if value is None:
        return "never"
    seconds = (utcnow() - value).total_seconds()
    if abs(seconds) < 1:
        return "just now"
    future = seconds < 0
    seconds = abs(seconds)
    for size, unit in ((86_400, "d"), (3_600, "h"), (60, "min"), (1, "s")):
        if seconds >= size or unit == "s":
            amount = int(seconds // size)
            text = f"{amount} {unit}"
            return f"in {text}" if future else f"{text} ago"
    return ""  # pragma: no cover - the loop always returns


@bp.app_template_filter("count")
def _count(number: int, noun: str) -> str:
    """``1 attempt``, ``3 attempts``: the noun agrees with the number."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


@bp.app_template_filter("isotime")
def _isotime(value: datetime | str | None) -> str:
    """UTC time to the second, for title attributes and tables (an ISO string too)."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
    else:
        moment = value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.app_template_filter("pretty_json")
def _pretty_json(value: Any) -> str:
    """Indented JSON for payload and schema blocks."""
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False)


@bp.app_template_filter("percent")
def _percent(value: float | None) -> str:
    """``97.5 %``, or an en dash when there is nothing to divide."""
    return "\u2013" if value is None else f"{value * 100:.1f} %".replace(".0 %", " %")


def flash_problem(exc: DomainError) -> None:
    """Show a domain error at the top of the next page."""
    flash(exc.detail, "error")


def back(default: str, **values: Any) -> BaseResponse:
    """Redirect to a console view (after a POST)."""
    return redirect(url_for(default, **values))
