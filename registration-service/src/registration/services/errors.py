"""The domain errors of the management API: the shared ones of :mod:`webhooks_core.errors`."""

from __future__ import annotations

from webhooks_core.errors import Conflict, DomainError, Forbidden, InvalidField, NotFound

__all__ = ["Conflict", "DomainError", "Forbidden", "InvalidField", "NotFound"]
