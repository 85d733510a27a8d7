"""Turning domain results into JSON responses."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import Response, jsonify
from pydantic import BaseModel

from registration.services.pagination import Page

M = TypeVar("M", bound=BaseModel)

BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def one(model: type[M], obj: Any, status: int = 200) -> tuple[Response, int]:
    """Serialize one object through ``model``."""
    return jsonify(model.model_validate(obj).model_dump(mode="json", by_alias=True)), status


def page(model: type[M], result: Page[Any]) -> tuple[Response, int]:
    """Serialize a page: ``{"data": [...], "iterator": ..., "done": ...}``."""
    data = [
        model.model_validate(item).model_dump(mode="json", by_alias=True) for item in result.items
    ]
    body = {"data": data, "iterator": result.next_cursor, "done": result.next_cursor is None}
    return jsonify(body), 200
