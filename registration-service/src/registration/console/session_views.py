"""Signing in and out, and the admin's choice of application."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import flash, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from registration.console.blueprint import bp, refresh_viewer, remember, viewer
from registration.console.forms import ActionForm, ApplicationForm, RetentionForm, SignInForm
from registration.runtime import runtime
from registration.services import applications, operators
from registration.services.errors import Forbidden, InvalidField
from webhooks_core.retention import policy


def _safe_next(target: str | None) -> str:
    """Only a path inside the console: never an open redirect."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and parts.path.startswith("/console/"):
            return target
    return url_for("console.endpoints")


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> BaseResponse | str | tuple[str, int]:
    """The sign-in page: one token field."""
    form = SignInForm()
    if form.validate_on_submit():
        settings = runtime().settings
        operator = operators.sign_in(
            runtime().sessions, settings.admin_token, form.token.data or ""
        )
        if operator is not None:
            target = _safe_next(request.args.get("next"))
            remember(operator)
            return redirect(target)
        form.token.errors = ["This token is not valid (wrong, revoked or mistyped)."]
        return render_template("console/sign_in.html", form=form), 401
    return render_template("console/sign_in.html", form=form)


@bp.post("/sign-out")
def sign_out() -> BaseResponse:
    """End the console session."""
    session.clear()
    flash("Signed out.", "info")
    return redirect(url_for("console.sign_in"))


@bp.get("/")
def index() -> BaseResponse:
    """The console opens on the endpoints."""
    return redirect(url_for("console.endpoints"))


@bp.post("/switch")
def switch_application() -> BaseResponse:
    """The admin shows another application."""
    if not viewer().operator.is_admin:
        raise Forbidden("only the admin can switch application")
    chosen = request.form.get("application", "")
    if any(str(app.id) == chosen for app in viewer().applications):
        session["app"] = chosen
    return redirect(_safe_next(request.form.get("next")))


@bp.route("/applications/new", methods=["GET", "POST"])
def new_application() -> BaseResponse | str:
    """The admin creates an application and its first token (shown once)."""
    if not viewer().operator.is_admin:
        raise Forbidden("only the admin can create applications")
    form = ApplicationForm()
    if form.validate_on_submit():
        sessions = runtime().sessions
        app = applications.create_application(
            sessions, name=(form.name.data or "").strip(), uid=None, metadata={}
        )
        issued = applications.issue_token(sessions, app.id, name="console")
        session["app"] = str(app.id)
        refresh_viewer()
        return render_template(
            "console/application_created.html", application=app, token=issued.token
        )
    return render_template("console/application_new.html", form=form, action=ActionForm())


@bp.route("/retention", methods=["GET", "POST"])
def retention() -> str:
    """What the application keeps for how long; the admin changes it."""
    app = applications.get_application(runtime().sessions, viewer().app_id)
    settings = runtime().settings
    form = RetentionForm(obj=app.retention)
    if request.method == "POST" and not viewer().operator.is_admin:
        raise Forbidden("only the admin can change retention")
    if form.validate_on_submit():
        values = {
            "attempts_days": form.attempts_days.data,
            "messages_days": form.messages_days.data,
            "payload_days": form.payload_days.data,
        }
        try:
            app = applications.update_application(
                runtime().sessions, app.id, {"retention": values}, settings=settings
            )
            flash("Retention saved.", "success")
        except InvalidField as exc:
            name = (exc.field or "").removeprefix("retention.")
            getattr(form, name, form.attempts_days).errors = [exc.detail]
    return render_template(
        "console/retention.html",
        form=form,
        kept=policy.effective(app.retention, settings),
        defaults=policy.defaults(settings),
        nav="retention",
    )


@bp.get("/<path:unknown>")
def not_found(unknown: str) -> tuple[str, int]:
    """Any other console address (``/console/endpoints/abc``): the console's own 404 page."""
    return render_template(
        "console/error.html",
        title="Not found",
        detail="There is no such page in the console. Use the tabs above to find your way.",
    ), 404
