"""Errors of the management API as ``application/problem+json`` (see webhooks_core.problems)."""

from __future__ import annotations

from flask import Flask

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


def register_error_handlers(app: Flask) -> None:
    """Every error, expected or not, leaves as problem+json."""
    register_problem_handlers(app, DomainError)
