"""Errors as ``application/problem+json`` (RFC 9457) with field-level messages.

Shared by the Flask services (the registration API and the people producer, which depend on
Flask themselves; the workers never import this module): one body model,
one way to turn pydantic errors into field errors, one set of handlers, and the gate that
judges every JSON body by the rules of ``webhooks_core.json_input`` before a view sees it.
"""

from __future__ import annotations

from typing import Any, Protocol

from flask import Flask, Response, request
from flask.json.provider import DefaultJSONProvider
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from webhooks_core import json_input
from webhooks_core.db import LOST_CONNECTION, database_unavailable

PROBLEM_TYPE = "application/problem+json"


class FieldError(BaseModel):
    """One thing wrong with one field of the request."""

    field: str
    message: str


class Problem(BaseModel):
    """The body of every error response."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldError] = []


def problem(
    status: int, title: str, detail: str | None = None, errors: list[FieldError] | None = None
) -> Response:
    """A problem+json response."""
    body = Problem(title=title, status=status, detail=detail, errors=errors or [])
    return Response(body.model_dump_json(exclude_none=True), status=status, mimetype=PROBLEM_TYPE)


def _field_name(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def field_errors(exc: ValidationError) -> list[FieldError]:
    """The field errors of a pydantic error, one per invalid field."""
    return [
        FieldError(field=_field_name(tuple(err["loc"])), message=err["msg"])
        for err in exc.errors(include_url=False)
    ]


def validation_problem(exc: ValidationError) -> Response:
    """flask-openapi3's hook: a pydantic error on any part of the request becomes a 422."""
    return problem(422, "Validation failed", "the request has invalid fields", field_errors(exc))


def json_problem(problems: list[json_input.JSONProblem]) -> Response:
    """A 422 naming each place where a body breaks the JSON rules."""
    errors = [FieldError(field=p.field, message=p.message) for p in problems]
    return problem(422, "Validation failed", "the body holds JSON the API does not accept", errors)


class PlatformJSONProvider(DefaultJSONProvider):
    """Flask's JSON, parsing request bodies with :func:`webhooks_core.json_input.loads`."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return json_input.loads(s)


# Flask endpoint name -> a top-level key of its body whose list items the view judges one by
# one (a batch refuses a bad item alone); the gate leaves problems inside those items to it.
_ITEMS_JUDGED_BY_VIEW: dict[str, str] = {}


def judge_items_in_view(endpoint: str, key: str) -> None:
    """Let the view of ``endpoint`` judge the items of the body's ``key`` list itself."""
    _ITEMS_JUDGED_BY_VIEW[endpoint] = key


class ExpectedError(Protocol):
    """What a service's domain errors carry: a status, a title, a detail, maybe a field."""

    status: int
    title: str
    detail: str
    field: str | None


def register_problem_handlers(app: Flask, expected: type[Exception]) -> None:
    """Every error, expected (``expected`` and its subclasses) or not, leaves as problem+json."""

    provider = PlatformJSONProvider(app)
    for setting in ("sort_keys", "ensure_ascii", "compact", "mimetype"):
        setattr(provider, setting, getattr(app.json, setting))
    app.json = provider

    @app.before_request
    def _judge_json_body() -> Response | None:
        if request.method not in ("POST", "PUT", "PATCH") or not request.is_json:
            return None
        body = request.get_json(silent=True)  # parsed once: the view's get_json() reuses it
        if body is None:
            raw = request.get_data(cache=True)
            if not raw:
                return None  # no body: the view's model says whether one is needed
            try:
                json_input.loads(raw)
            except json_input.JSONRejected as exc:
                return json_problem(exc.problems)
            except ValueError as exc:  # UnicodeDecodeError too
                return problem(400, "Malformed JSON", f"the body is not valid JSON: {exc}")
            return None  # the body is JSON null
        found = json_input.problems(body)
        items = _ITEMS_JUDGED_BY_VIEW.get(request.endpoint or "")
        if items is not None and isinstance(body, dict) and isinstance(body.get(items), list):
            found = [p for p in found if not p.field.startswith(f"{items}.")]
        return json_problem(found) if found else None

    @app.errorhandler(expected)
    def _domain(exc: ExpectedError) -> Response:
        errors = [FieldError(field=exc.field, message=exc.detail)] if exc.field else []
        return problem(exc.status, exc.title, exc.detail, errors)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        return problem(status, exc.name, exc.description)

    @app.errorhandler(DBAPIError)
    def _database(exc: DBAPIError) -> Response:
        if database_unavailable(exc):
            # A restarting or unreachable database (the lost-connection policy of
            # webhooks_core.db already ran the transaction again if it could): the client may
            # retry (with the same Idempotency-Key), nothing was half-done.
            app.logger.warning(
                "database unavailable on %s %s: %s",
                request.method,
                request.path,
                type(exc.orig).__name__ if exc.orig else type(exc).__name__,
            )
            response = problem(503, "Service Unavailable", "the database is unavailable; retry")
            response.headers["Retry-After"] = str(LOST_CONNECTION.retry_after_seconds)
            return response
        return _unexpected(exc)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        return problem(500, "Internal Server Error", "the error was logged")
