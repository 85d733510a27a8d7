"""Docstrings written for Sphinx, shown as Markdown in the OpenAPI documents.

flask-openapi3 takes an operation's summary and description from its view's docstring, and a
schema's descriptions from its models, where this project writes reStructuredText literals
(``name``) and roles (:func:`name`).  Swagger UI renders descriptions as Markdown and summaries
as plain text, so it would show the backticks literally.  :func:`plain_docs` rewrites them:
Markdown code (`name`) in descriptions, quotes ("name") in summaries.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, request

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def markdown(text: str) -> str:
    """``name`` and :role:`name` as Markdown code."""
    return _LITERAL.sub(r"`\1`", _ROLE.sub(r"`\1`", text))


def plain(text: str) -> str:
    """``name`` and :role:`name` as "name", for a summary (plain text)."""
    return re.sub(r"`([^`]+)`", r'"\1"', markdown(text))


def plain_docs(node: Any) -> Any:
    """Rewrite every summary and description of an OpenAPI document in place; return it."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "summary" and isinstance(value, str):
                node[key] = plain(value)
            elif key == "description" and isinstance(value, str):
                node[key] = markdown(value)
            else:
                plain_docs(value)
    elif isinstance(node, list):
        for item in node:
            plain_docs(item)
    return node


def serve_plain_docs(app: Flask, spec: Any) -> None:
    """Rewrite ``spec()`` (the app's cached document) before the first request that reads it.

    ``spec`` is called lazily, so building an app does not build its document; rewriting an
    already rewritten document changes nothing.
    """
    done: list[bool] = []

    @app.before_request
    def _plain_docs() -> None:
        if not done and request.path.endswith("openapi.json"):
            plain_docs(spec())
            done.append(True)
