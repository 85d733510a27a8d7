"""Messages, deliveries and their attempts, resend, the undelivered view, dead letters."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import flash, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from registration.console.blueprint import back, bp, viewer
from registration.runtime import runtime
from registration.services import deliveries, endpoints, replays
from registration.services.deliveries import (
    PAYLOAD_FIELD_PATTERN,
    DeliverySearch,
    DeliveryView,
    Window,
    payload_containment,
)
from registration.services.errors import DomainError
from webhooks_core.models import DeliveryState

PAGE_SIZE = 50
RECENT = 10
# The state filter's choices: every state, plus the undelivered view (not yet terminal).
STATE_CHOICES = ("undelivered", *(state.value for state in DeliveryState))


@dataclass(frozen=True)
class Filters:
    """The list filters of the query string, checked; bad values are dropped with a note."""

    endpoint: str | None
    state: str | None
    event_type: str | None
    event_id: str | None
    since: str | None
    until: str | None
    status_code: str | None = None
    # A payload field and its value, as typed: ``data.person.id=42``.
    field: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        """The filters by query-string name, for links that keep them."""
        return {
            "endpoint_id": self.endpoint,
            "state": self.state,
            "event_type": self.event_type,
            "event_id": self.event_id,
            "since": self.since,
            "until": self.until,
            "status_code": self.status_code,
            "field": self.field,
        }

    @property
    def search(self) -> DeliverySearch:
        """The status code and payload field filters as the query service's search."""
        payload = None
        if self.field:
            path, _, value = self.field.partition("=")
            payload = payload_containment(path.strip(), value.strip())
        return DeliverySearch(
            status_code=int(self.status_code) if self.status_code else None, payload=payload
        )

    @property
    def endpoint_id(self) -> uuid.UUID | None:
        """The endpoint filter as a UUID."""
        return uuid.UUID(self.endpoint) if self.endpoint else None

    @property
    def window(self) -> Window:
        """The time filters as the query service's window."""
        return Window(_moment(self.since), _moment(self.until))


def _moment(value: str | None) -> datetime | None:
    """A ``datetime-local`` value, read as UTC."""
    if not value:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _filters() -> Filters:
    args = request.args
    endpoint = args.get("endpoint_id") or None
    state = args.get("state") or None
    event_type = (args.get("event_type") or "").strip() or None
    event_id = (args.get("event_id") or "").strip() or None
    since, until = args.get("since") or None, args.get("until") or None
    if endpoint is not None:
        try:
            uuid.UUID(endpoint)
        except ValueError:
            flash("Unknown endpoint in the filter; showing every endpoint.", "error")
            endpoint = None
    if state is not None and state not in STATE_CHOICES:
        flash(f"Unknown state {state!r}; showing every state.", "error")
        state = None
    for label, value in (("since", since), ("until", until)):
        try:
            _moment(value)
        except ValueError:
            flash(f"{label.capitalize()} must be a date and time; it was ignored.", "error")
            since, until = (None, until) if label == "since" else (since, None)
    status_code, field = _search_filters()
    return Filters(endpoint, state, event_type, event_id, since, until, status_code, field)


def _search_filters() -> tuple[str | None, str | None]:
    """The status code and payload field of the query string; bad ones dropped with a note."""
    status_code = (request.args.get("status_code") or "").strip() or None
    field = (request.args.get("field") or "").strip() or None
    if status_code is not None and not (status_code.isdigit() and 100 <= int(status_code) <= 599):
        flash("The status code must be a number from 100 to 599; it was ignored.", "error")
        status_code = None
    if field is not None:
        path, sep, _ = field.partition("=")
        if not sep or not re.fullmatch(PAYLOAD_FIELD_PATTERN, path.strip()):
            flash("Search a payload field as path=value, like data.person.id=42.", "error")
            field = None
    return status_code, field


def _endpoint_urls() -> dict[uuid.UUID, str]:
    page = endpoints.list_endpoints(
        runtime().sessions, viewer().app_id, event_type=None, enabled=None, limit=250, cursor=None
    )
    return {endpoint.id: endpoint.url for endpoint in page.items}


def recent_deliveries_of(endpoint_id: uuid.UUID) -> list[DeliveryView]:
    """The latest deliveries of an endpoint, for its page."""
    page = deliveries.list_deliveries(
        runtime().sessions,
        application_id=viewer().app_id,
        endpoint_id=endpoint_id,
        limit=RECENT,
        cursor=None,
    )
    return page.items


def _older(view: str, cursor: str | None, **args: Any) -> str | None:
    if cursor is None:
        return None
    kept = {key: value for key, value in args.items() if value}
    return url_for(view, after=cursor, **kept)


@bp.get("/deliveries", endpoint="deliveries")
def deliveries_list() -> str:
    """Deliveries, filterable by endpoint, state (or undelivered), event type and time."""
    filters = _filters()
    undelivered = filters.state == "undelivered"
    page = deliveries.list_deliveries(
        runtime().sessions,
        application_id=viewer().app_id,
        endpoint_id=filters.endpoint_id,
        states=[filters.state] if filters.state and not undelivered else None,
        event_type=filters.event_type,
        event_id=filters.event_id,
        window=filters.window,
        undelivered=undelivered,
        search=filters.search,
        limit=PAGE_SIZE,
        cursor=request.args.get("after") or None,
    )
    urls = _endpoint_urls()
    if request.headers.get("X-Fragment"):
        return render_template(
            "console/_deliveries_table.html", recent=page.items, endpoint_urls=urls
        )
    kept: dict[str, Any] = {key: value for key, value in filters.as_dict().items() if value}
    live = None if request.args.get("after") else url_for("console.deliveries", **kept)
    return render_template(
        "console/deliveries.html",
        heading="Undelivered" if undelivered else "Deliveries",
        recent=page.items,
        endpoint_urls=urls,
        filters=filters.as_dict(),
        states=STATE_CHOICES,
        next_cursor=page.next_cursor,
        older_url=_older("console.deliveries", page.next_cursor, **filters.as_dict()),
        live_url=live,
        nav="undelivered" if undelivered else "deliveries",
    )


@bp.get("/deliveries/<int:delivery_id>")
def delivery_detail(delivery_id: int) -> str:
    """One delivery: its endpoint, its message and payload, every attempt."""
    sessions = runtime().sessions
    app_id = viewer().app_id
    delivery = deliveries.get_delivery(sessions, application_id=app_id, delivery_id=delivery_id)
    message, _ = deliveries.get_message(sessions, application_id=app_id, event_id=delivery.event_id)
    attempts = deliveries.list_attempts(
        sessions, application_id=app_id, delivery_id=delivery_id, limit=250, cursor=None
    ).items
    try:
        endpoint = endpoints.get_endpoint(sessions, app_id, delivery.endpoint_id)
    except DomainError:
        endpoint = None  # deleted since: the delivery stays visible
    return render_template(
        "console/delivery.html",
        delivery=delivery,
        message=message,
        attempts=list(reversed(attempts)),  # oldest first: the story of the delivery
        endpoint=endpoint,
        nav="deliveries",
    )


@bp.post("/deliveries/<int:delivery_id>/resend")
def delivery_resend(delivery_id: int) -> BaseResponse:
    """Send one delivery again, from the first step of its retry schedule."""
    replay = replays.resend_delivery(
        runtime().sessions,
        application_id=viewer().app_id,
        delivery_id=delivery_id,
        requested_by=viewer().operator.label,
    )
    if replay.deliveries_requeued:
        flash("Resend queued: the delivery is pending and will be attempted now.", "success")
    else:
        flash("This delivery is already pending or being sent: nothing to do.", "info")
    return back("console.delivery_detail", delivery_id=delivery_id)


@bp.get("/messages", endpoint="messages")
def messages_list() -> BaseResponse | str:
    """Messages of the application, filterable by event type and time; a webhook-id opens one."""
    filters = _filters()
    if filters.event_id:
        return back("console.message_detail", event_id=filters.event_id)
    page = deliveries.list_messages(
        runtime().sessions,
        application_id=viewer().app_id,
        event_type=filters.event_type,
        window=filters.window,
        limit=PAGE_SIZE,
        cursor=request.args.get("after") or None,
    )
    return render_template(
        "console/messages.html",
        messages=page.items,
        filters={key: filters.as_dict()[key] for key in ("event_type", "since", "until")},
        next_cursor=page.next_cursor,
        older_url=_older(
            "console.messages",
            page.next_cursor,
            event_type=filters.event_type,
            since=filters.since,
            until=filters.until,
        ),
        nav="messages",
    )


@bp.get("/messages/<event_id>")
def message_detail(event_id: str) -> str:
    """One message, its payload and its deliveries to this application's endpoints."""
    message, views = deliveries.get_message(
        runtime().sessions, application_id=viewer().app_id, event_id=event_id
    )
    return render_template(
        "console/message.html",
        message=message,
        recent=views,
        endpoint_urls=_endpoint_urls(),
        nav="messages",
    )


@bp.post("/messages/<event_id>/resend")
def message_resend(event_id: str) -> BaseResponse:
    """Send every delivery of a message again."""
    replay = replays.resend_message(
        runtime().sessions,
        application_id=viewer().app_id,
        event_id=event_id,
        requested_by=viewer().operator.label,
    )
    flash(f"Resend queued {replay.deliveries_requeued} deliveries.", "success")
    return back("console.message_detail", event_id=event_id)


@bp.get("/dead-letters")
def dead_letters() -> str:
    """Open dead letters, to redrive one, a selection, or all (of an endpoint)."""
    filters = _filters()
    page = deliveries.list_dead_letters(
        runtime().sessions,
        application_id=viewer().app_id,
        endpoint_id=filters.endpoint_id,
        limit=250,
        cursor=None,
    )
    return render_template(
        "console/dead_letters.html",
        letters=page.items,
        more=page.next_cursor is not None,
        endpoint_urls=_endpoint_urls(),
        filters={"endpoint_id": filters.endpoint},
        nav="dead_letters",
    )


@bp.post("/dead-letters/redrive")
def dead_letters_redrive() -> BaseResponse:
    """Redrive the selected dead letters, or all (of the filtered endpoint)."""
    sessions = runtime().sessions
    app_id = viewer().app_id
    label = viewer().operator.label
    endpoint = request.form.get("endpoint_id") or None
    endpoint_id = uuid.UUID(endpoint) if endpoint else None
    if request.form.get("scope") == "all":
        replay = replays.redrive_dead_letters(
            sessions, application_id=app_id, requested_by=label, endpoint_id=endpoint_id
        )
        requeued = replay.deliveries_requeued
    else:
        chosen = request.form.getlist("dead_letter")
        try:
            ids = [int(value) for value in chosen]
        except ValueError:
            ids = []
        if not ids:
            flash("Select the dead letters to redrive first.", "error")
            return back("console.dead_letters", endpoint_id=endpoint)
        requeued = 0
        for dead_letter_id in ids:
            # One audited replay per selected letter: each says exactly what was asked.
            requeued += replays.redrive_dead_letters(
                sessions, application_id=app_id, requested_by=label, dead_letter_id=dead_letter_id
            ).deliveries_requeued
    if requeued:
        flash(
            f"Redrive queued {requeued} deliver{'y' if requeued == 1 else 'ies'}; "
            "they are pending and will be attempted now.",
            "success",
        )
    else:
        flash("Nothing was redriven (disabled endpoint, or already pending).", "info")
    return back("console.dead_letters", endpoint_id=endpoint)


@bp.get("/replays")
def replay_history() -> str:
    """The audit log of resends, recovers and redrives of the application."""
    page = replays.list_replays(
        runtime().sessions,
        application_id=viewer().app_id,
        limit=PAGE_SIZE,
        cursor=request.args.get("after") or None,
    )
    return render_template(
        "console/replays.html",
        items=page.items,
        older_url=_older("console.replay_history", page.next_cursor),
        endpoint_urls={str(key): url for key, url in _endpoint_urls().items()},
        nav="dead_letters",
    )
