"""Endpoints (with health, secrets, enable/disable) and the event type catalogue."""

from __future__ import annotations

import uuid
from datetime import UTC
from typing import Any

from flask import flash, render_template, request
from pydantic import BaseModel, ValidationError
from werkzeug.wrappers import Response as BaseResponse

from registration.api.endpoint_schemas import EndpointIn, EndpointPatch
from registration.api.flow_schemas import flow_view
from registration.console import charts, message_views
from registration.console.blueprint import back, bp, flash_problem, viewer
from registration.console.forms import (
    ActionForm,
    DisableForm,
    EndpointForm,
    RecoverForm,
    SelectChoice,
    auth_data,
    headers_text,
)
from registration.runtime import runtime
from registration.services import (
    endpoint_secrets,
    endpoints,
    event_types,
    ordering_keys,
    replays,
    statistics,
    test_events,
)
from registration.services.endpoint_health import endpoint_health
from registration.services.endpoint_secrets import SecretView
from registration.services.errors import DomainError, InvalidField, NotFound
from webhooks_core.models import Endpoint
from webhooks_core.targets import TargetRefused, check_url

PAGE_SIZE = 100


def _catalogue_choices() -> list[SelectChoice]:
    page = event_types.list_event_types(
        runtime().sessions, include_archived=False, limit=250, cursor=None
    )
    return [SelectChoice(name) for name in sorted(item.name for item in page.items)]


def _message(error: Any) -> str:
    """A schema error in the console's words (the retry delays are numbered from 1)."""
    loc = error["loc"]
    if loc and loc[0] == "retry_schedule" and len(loc) > 1:
        value = error.get("input")
        if error["type"] in ("int_parsing", "int_type", "int_from_float"):
            return f"{value!r} is not a whole number of seconds; write e.g. 0, 5, 300"
        if error["type"] == "less_than_equal":
            return f"delay {int(loc[1]) + 1} ({value} s) is longer than 7 days (604800 s)"
        if error["type"] == "greater_than_equal":
            return f"delay {int(loc[1]) + 1} ({value} s) must be 0 or more"
    if loc and loc[0] == "retry_schedule" and error["type"] == "too_long":
        return "at most 32 delays"
    return str(error["msg"]).removeprefix("Value error, ")


def _checked(form: EndpointForm, model: type[BaseModel]) -> dict[str, Any] | None:
    """Check every field at once: the form's own rules, the API's schema and the URL's address.

    Field errors go back onto the form, so one submission reports all of them.
    """
    form.validate()
    fields = form.fields_for_api()
    checked = set(form.errors)  # the form's own message is enough for these fields
    valid = not checked
    try:
        model.model_validate(fields)
    except ValidationError as exc:
        valid = False
        for error in exc.errors(include_url=False):
            name = _form_field(error["loc"])
            if name in checked:
                continue
            target = getattr(form, name, form.url)
            message = _message(error)
            if message not in target.errors:
                target.errors = [*target.errors, message]
    if fields.get("url") and not form.url.errors:
        try:
            check_url(fields["url"], runtime().settings.allowed_networks)
        except TargetRefused as exc:
            valid = False
            form.url.errors = [*form.url.errors, str(exc)]
    return fields if valid else None


def _form_field(loc: tuple[int | str, ...]) -> str:
    """The form field of an API schema error's location (``auth.basic.password``: the
    password field)."""
    if not loc:
        return "url"
    if loc[0] == "auth":
        return f"auth_{loc[2]}" if len(loc) > 2 else "auth_type"
    return str(loc[0])


def _attach(form: EndpointForm, exc: DomainError) -> None:
    field = getattr(form, _form_field((exc.field,)) if exc.field else "", None)
    if isinstance(exc, InvalidField) and field is not None:
        field.errors = [*field.errors, exc.detail]
    else:
        flash_problem(exc)


def _endpoint(endpoint_id: uuid.UUID) -> Endpoint:
    return endpoints.get_endpoint(runtime().sessions, viewer().app_id, endpoint_id)


@bp.get("/endpoints", endpoint="endpoints")
def endpoints_list() -> str:
    """Every endpoint of the application with its health."""
    state = request.args.get("state") or None
    if state not in (None, "enabled", "disabled"):
        state = None
    if viewer().application is None:
        return render_template("console/no_application.html")
    page = endpoints.list_endpoints(
        runtime().sessions,
        viewer().app_id,
        event_type=None,
        enabled=None if state is None else state == "enabled",
        limit=PAGE_SIZE,
        cursor=request.args.get("after") or None,
    )
    health = endpoint_health(runtime().sessions, runtime().settings, page.items)
    trends = statistics.success_trends(runtime().sessions, [e.id for e in page.items])
    return render_template(
        "console/endpoints.html",
        page=page,
        health=health,
        trends=trends,
        sparkline=charts.sparkline,
        state=state,
        nav="endpoints",
    )


@bp.route("/endpoints/new", methods=["GET", "POST"])
def endpoint_new() -> BaseResponse | str | tuple[str, int]:
    """Create an endpoint; the same URL and event types again updates that one (as the API)."""
    form = EndpointForm()
    form.event_types.choices = _catalogue_choices()
    if form.is_submitted():
        fields = _checked(form, EndpointIn)
        if fields is not None:
            try:
                endpoint, created = endpoints.upsert_endpoint(
                    runtime().sessions, runtime().settings, viewer().app_id, fields
                )
            except DomainError as exc:
                _attach(form, exc)
            else:
                flash(
                    "Endpoint created."
                    if created
                    else "An endpoint with this URL and these event types existed: it was updated.",
                    "success",
                )
                return back("console.endpoint_detail", endpoint_id=endpoint.id)
    status = 422 if form.errors or request.method == "POST" else 200
    return render_template(
        "console/endpoint_form.html", form=form, endpoint=None, nav="endpoints"
    ), status


@bp.route("/endpoints/<uuid:endpoint_id>/edit", methods=["GET", "POST"])
def endpoint_edit(endpoint_id: uuid.UUID) -> BaseResponse | str | tuple[str, int]:
    """Change an endpoint's URL, filters, headers and limits."""
    endpoint = _endpoint(endpoint_id)
    if request.method == "GET":
        form = EndpointForm(
            data={
                "url": endpoint.url,
                "description": endpoint.description,
                "event_types": endpoint.event_types,
                "channels": ", ".join(endpoint.channels or []),
                "headers": headers_text(endpoint.shown_headers),
                "rate_limit": endpoint.rate_limit,
                "max_in_flight": endpoint.max_in_flight,
                "adaptive_flow": endpoint.adaptive_flow,
                "retry_schedule": ", ".join(str(d) for d in endpoint.retry_schedule or []),
                "key_failure_policy": endpoint.key_failure_policy,
                "signature_schemes": endpoint.signature_schemes,
                **auth_data(endpoint.shown_auth),
            }
        )
    else:
        form = EndpointForm()
    choices = _catalogue_choices()
    # Keep showing a subscribed type that was archived since, so saving does not drop it.
    known = {choice.value for choice in choices}
    choices += [
        SelectChoice(name, f"{name} (archived)")
        for name in endpoint.event_types
        if name not in known
    ]
    form.event_types.choices = choices
    if form.is_submitted():
        fields = _checked(form, EndpointPatch)
        if fields is not None:
            try:
                endpoints.update_endpoint(
                    runtime().sessions, runtime().settings, viewer().app_id, endpoint_id, fields
                )
            except DomainError as exc:
                _attach(form, exc)
            else:
                flash("Endpoint saved.", "success")
                return back("console.endpoint_detail", endpoint_id=endpoint_id)
    status = 422 if request.method == "POST" else 200
    return render_template(
        "console/endpoint_form.html", form=form, endpoint=endpoint, nav="endpoints"
    ), status


def _charts(endpoint: Endpoint, window: str) -> dict[str, Any]:
    """The endpoint's success rate and latency over the window, as SVG charts."""
    stats = statistics.statistics(
        runtime().sessions,
        window=window,
        application_id=endpoint.application_id,
        endpoint_id=endpoint.id,
    )
    rate = [(p["start"], p["success_rate"]) for p in stats.series]
    p50 = [(p["start"], p["latency_ms"]["p50"]) for p in stats.series]
    p99 = [(p["start"], p["latency_ms"]["p99"]) for p in stats.series]
    return {
        "window": window,
        "totals": stats.totals,
        "success": charts.line_chart(
            rate, label=f"Success rate per {stats.bucket}, last {window}", unit="%", top=1
        ),
        "latency_p50": charts.line_chart(
            p50,
            label=f"Median latency per {stats.bucket}, last {window}",
            unit="ms",
            css="latency",
        ),
        "latency_p99": charts.line_chart(
            p99,
            label=f"99th percentile latency per {stats.bucket}, last {window}",
            unit="ms",
            css="latency",
        ),
    }


def _signing_key(endpoint: Endpoint) -> SecretView | None:
    """The v1a public keys (public: always shown), or None when it has no Ed25519 key."""
    try:
        return endpoint_secrets.get_signing_key(runtime().sessions, viewer().app_id, endpoint.id)
    except NotFound:
        return None


def _detail(endpoint: Endpoint, *, secret: SecretView | None = None) -> str:
    health = endpoint_health(runtime().sessions, runtime().settings, [endpoint])[endpoint.id]
    window = request.args.get("window") or "24h"
    if window not in statistics.WINDOWS:
        window = "24h"
    return render_template(
        "console/endpoint.html",
        endpoint=endpoint,
        health=health,
        flow=flow_view(endpoint),
        secret=secret,
        signing_key=_signing_key(endpoint),
        action=ActionForm(),
        disable=DisableForm(),
        recover=RecoverForm(),
        recent=_recent_deliveries(endpoint.id),
        waiting=ordering_keys.waiting_keys(
            runtime().sessions, endpoint.application_id, endpoint.id, limit=20
        ),
        stats=_charts(endpoint, window),
        hide_endpoint=True,
        nav="endpoints",
    )


def _recent_deliveries(endpoint_id: uuid.UUID) -> list[Any]:
    """The endpoint's latest deliveries."""
    return message_views.recent_deliveries_of(endpoint_id)


@bp.get("/endpoints/<uuid:endpoint_id>")
def endpoint_detail(endpoint_id: uuid.UUID) -> str:
    """One endpoint: settings, health, secret (hidden), actions, recent deliveries."""
    return _detail(_endpoint(endpoint_id))


@bp.post("/endpoints/<uuid:endpoint_id>/secret")
def endpoint_secret(endpoint_id: uuid.UUID) -> str:
    """Reveal the signing secret, on this response only."""
    secret = endpoint_secrets.get_secret(runtime().sessions, viewer().app_id, endpoint_id)
    return _detail(_endpoint(endpoint_id), secret=secret)


@bp.post("/endpoints/<uuid:endpoint_id>/secret/rotate")
def endpoint_rotate(endpoint_id: uuid.UUID) -> str:
    """Sign with a new secret; the old one keeps signing during the grace period."""
    secret = endpoint_secrets.rotate_secret(
        runtime().sessions, runtime().settings, viewer().app_id, endpoint_id, None
    )
    flash(
        "Secret rotated. The previous secret keeps signing until the time shown, "
        "so receivers can switch without losing a delivery.",
        "success",
    )
    return _detail(_endpoint(endpoint_id), secret=secret)


@bp.post("/endpoints/<uuid:endpoint_id>/signing-key/rotate")
def endpoint_rotate_signing_key(endpoint_id: uuid.UUID) -> str:
    """Sign v1a with a new Ed25519 key; the old one keeps signing during the grace period."""
    endpoint_secrets.rotate_signing_key(
        runtime().sessions, runtime().settings, viewer().app_id, endpoint_id, None
    )
    flash(
        "Signing key rotated. Give receivers the new public key: the previous key keeps "
        "signing until the time shown.",
        "success",
    )
    return _detail(_endpoint(endpoint_id))


@bp.post("/endpoints/<uuid:endpoint_id>/disable")
def endpoint_disable(endpoint_id: uuid.UUID) -> BaseResponse:
    """Stop delivering; undelivered messages end cancelled."""
    form = DisableForm()
    reason = (form.reason.data or "").strip() or None
    endpoints.set_enabled(
        runtime().sessions, viewer().app_id, endpoint_id, enabled=False, reason=reason
    )
    flash("Endpoint disabled. Its undelivered messages were cancelled.", "success")
    return back("console.endpoint_detail", endpoint_id=endpoint_id)


@bp.post("/endpoints/<uuid:endpoint_id>/enable")
def endpoint_enable(endpoint_id: uuid.UUID) -> BaseResponse:
    """Resume delivering, with the failure count and breaker reset."""
    endpoints.set_enabled(runtime().sessions, viewer().app_id, endpoint_id, enabled=True)
    flash("Endpoint enabled.", "success")
    return back("console.endpoint_detail", endpoint_id=endpoint_id)


@bp.post("/endpoints/<uuid:endpoint_id>/pause")
def endpoint_pause(endpoint_id: uuid.UUID) -> BaseResponse:
    """Hold deliveries: messages keep arriving, nothing is sent until resumed."""
    endpoints.set_paused(runtime().sessions, viewer().app_id, endpoint_id, paused=True)
    flash("Endpoint paused. New messages are held, none is sent, until you resume.", "success")
    return back("console.endpoint_detail", endpoint_id=endpoint_id)


@bp.post("/endpoints/<uuid:endpoint_id>/resume")
def endpoint_resume(endpoint_id: uuid.UUID) -> BaseResponse:
    """Send the held deliveries, oldest first."""
    endpoints.set_paused(runtime().sessions, viewer().app_id, endpoint_id, paused=False)
    flash("Endpoint resumed. Held messages are being sent, oldest first.", "success")
    return back("console.endpoint_detail", endpoint_id=endpoint_id)


@bp.post("/endpoints/<uuid:endpoint_id>/test")
def endpoint_test(endpoint_id: uuid.UUID) -> BaseResponse:
    """Send a ``webhook.test`` message to this endpoint only."""
    sent = test_events.send_test_event(runtime().sessions, viewer().app_id, endpoint_id)
    flash(f"Test event {sent.event_id} sent; its delivery is below.", "success")
    return back("console.endpoint_detail", endpoint_id=endpoint_id)


@bp.post("/endpoints/<uuid:endpoint_id>/recover")
def endpoint_recover(endpoint_id: uuid.UUID) -> BaseResponse | str | tuple[str, int]:
    """Resend every failed delivery of this endpoint since a time."""
    form = RecoverForm()
    chosen = form.since.data
    if not form.validate_on_submit() or chosen is None:
        flash("Give the time to recover from, as YYYY-MM-DD HH:MM (UTC).", "error")
        return back("console.endpoint_detail", endpoint_id=endpoint_id)
    since = chosen.replace(tzinfo=UTC)
    replay = replays.recover_endpoint(
        runtime().sessions,
        application_id=viewer().app_id,
        endpoint_id=endpoint_id,
        since=since,
        until=None,
        requested_by=viewer().operator.label,
        include_cancelled=bool(form.include_cancelled.data),
    )
    flash(
        f"Recover requeued {replay.deliveries_requeued} "
        f"{'failed or cancelled' if form.include_cancelled.data else 'failed'} "
        f"deliver{'y' if replay.deliveries_requeued == 1 else 'ies'} since "
        f"{since:%Y-%m-%d %H:%M} UTC.",
        "success",
    )
    return back("console.endpoint_detail", endpoint_id=endpoint_id)


@bp.post("/endpoints/<uuid:endpoint_id>/delete")
def endpoint_delete(endpoint_id: uuid.UUID) -> BaseResponse:
    """Delete an endpoint; its deliveries stay visible, open ones end cancelled."""
    endpoints.delete_endpoint(runtime().sessions, viewer().app_id, endpoint_id)
    flash("Endpoint deleted.", "success")
    return back("console.endpoints")


@bp.get("/event-types")
def event_type_catalogue() -> str:
    """The catalogue: names, descriptions, example payloads and schemas."""
    include_archived = request.args.get("archived") == "1"
    page = event_types.list_event_types(
        runtime().sessions, include_archived=include_archived, limit=250, cursor=None
    )
    items = sorted(page.items, key=lambda item: item.name)
    volume = None
    if viewer().application is not None:
        stats = statistics.statistics(
            runtime().sessions, window="24h", application_id=viewer().app_id
        )
        volume = charts.bar_chart(
            [(t["event_type"], t["messages"]) for t in stats.event_types if t["messages"]],
            label="Messages accepted per event type, last 24 hours",
        )
    return render_template(
        "console/event_types.html",
        items=items,
        include_archived=include_archived,
        volume=volume,
        nav="event_types",
    )
