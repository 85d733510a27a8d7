"""Errors a domain function raises on purpose; each service's API turns them into problem+json.

The management API (``registration``) and the people demo (``producer``) share these: the
status and title of each kind live here once, and each service registers one handler for
:class:`DomainError` (``webhooks_core.problems.register_problem_handlers``).
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a domain function raises on purpose."""

    status = 400
    title = "Bad request"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class NotFound(DomainError):
    """The object does not exist, or the caller may not see it."""

    status = 404
    title = "Not found"


class Conflict(DomainError):
    """The request contradicts what exists (a duplicate, a reused idempotency key...)."""

    status = 409
    title = "Conflict"


class InvalidField(DomainError):
    """One field of an otherwise well-formed request is not acceptable."""

    status = 422
    title = "Validation failed"


class Forbidden(DomainError):
    """The caller is known but may not do this."""

    status = 403
    title = "Forbidden"
