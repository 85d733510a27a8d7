"""Errors as ``application/problem+json`` (RFC 9457) with field-level messages.

Shared by the Flask services (the registration API and the people producer, which depend on
Flask themselves; the workers never import this module): one body model,
one way to turn pydantic errors into field errors, one set of handlers.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from flask import Flask, Response, request
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

PROBLEM_TYPE = "application/problem+json"
# What a client told "the database is unavailable" should wait before trying again.
UNAVAILABLE_RETRY_AFTER_SECONDS = 1


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


def validation_problem(exc: ValidationError) -> Response:
    """flask-openapi3's hook: a pydantic error on any part of the request becomes a 422."""
    errors = [
        FieldError(field=_field_name(tuple(err["loc"])), message=err["msg"])
        for err in exc.errors(include_url=False)
    ]
    return problem(422, "Validation failed", "the request has invalid fields", errors)


class ExpectedError(Protocol):
    """What a service's domain errors carry: a status, a title, a detail, maybe a field."""

    status: int
    title: str
    detail: str
    field: str | None


def register_problem_handlers(app: Flask, expected: type[Exception]) -> None:
    """Every error, expected (``expected`` and its subclasses) or not, leaves as problem+json."""

    @app.before_request
    def _reject_malformed_json() -> Response | None:
        if (
            request.method in ("POST", "PUT", "PATCH")
            and request.is_json
            and request.content_length
        ):
            # Parsed once: Flask keeps the result for the view's own get_json().
            if request.get_json(silent=True) is not None:
                return None
            try:
                json.loads(request.get_data(cache=True))
            except (ValueError, UnicodeDecodeError) as exc:
                return problem(400, "Malformed JSON", f"the body is not valid JSON: {exc}")
        return None

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
        if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
            # A restarting or unreachable database: the client may retry (with the same
            # Idempotency-Key), nothing was half-done.  The pool has already dropped the
            # connections that died with it.
            app.logger.warning(
                "database unavailable on %s %s: %s",
                request.method,
                request.path,
                type(exc.orig).__name__ if exc.orig else type(exc).__name__,
            )
            response = problem(503, "Service Unavailable", "the database is unavailable; retry")
            response.headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER_SECONDS)
            return response
        return _unexpected(exc)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        return problem(500, "Internal Server Error", "the error was logged")
