"""Errors the producer's domain raises; the API turns each into problem+json."""

from __future__ import annotations


class ProducerError(Exception):
    """Base of every expected error."""

    status = 400
    title = "Bad request"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class NotFound(ProducerError):
    status = 404
    title = "Not found"


class InvalidField(ProducerError):
    status = 422
    title = "Validation failed"
