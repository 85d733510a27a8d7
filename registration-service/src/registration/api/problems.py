"""Errors of the management API as ``application/problem+json`` (see webhooks_core.problems)."""

from __future__ import annotations

from flask import Flask, Response, request

from registration.services.errors import DomainError
from webhooks_core.problems import (
    PROBLEM_TYPE,
    FieldError,
    Problem,
    field_errors,
    judge_items_in_view,
    problem,
    register_problem_handlers,
    validation_problem,
)

__all__ = [
    "PROBLEM_TYPE",
    "FieldError",
    "Problem",
    "field_errors",
    "judge_items_in_view",
    "problem",
    "register_error_handlers",
    "validation_problem",
]


# The longest request target the API reads (path and query string, in bytes); gunicorn refuses
# a request line over 8190 bytes itself (gunicorn.conf.py), with an HTML 414.
MAX_TARGET_BYTES = 4096


def register_error_handlers(app: Flask) -> None:
    """Every error, expected or not, leaves as problem+json."""
    register_problem_handlers(app, DomainError)

    @app.before_request
    def _refuse_long_targets() -> Response | None:
        if len(request.full_path.encode("utf-8", "replace")) > MAX_TARGET_BYTES:
            return problem(
                414, "URI Too Long", f"the path and query are over {MAX_TARGET_BYTES} bytes"
            )
        return None
