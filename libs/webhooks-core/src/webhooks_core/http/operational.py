"""The unauthenticated operational routes every HTTP service has, written once.

``/health`` (a database round trip: 200 or 503), ``/metrics`` (Prometheus),
``/openapi.json``, the plain-text docs and ``/docs`` (straight to Swagger UI).
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, Response, jsonify, redirect
from flask_openapi3 import OpenAPI
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from webhooks_core.db import ping
from webhooks_core.observability import metrics_response
from webhooks_core.openapi_text import serve_plain_docs


def register_operational_routes(app: OpenAPI, database: Callable[[], Engine]) -> None:
    """Add /health, /metrics, /openapi.json and /docs to ``app``.

    ``database`` returns the engine whose reachability /health reports (called per request,
    so a service may build its engine after the routes are registered).
    """

    @app.get("/health", doc_ui=False)
    def health() -> tuple[Response, int]:
        try:
            ping(database())
        except SQLAlchemyError as exc:
            return jsonify(status="unavailable", database=type(exc).__name__), 503
        return jsonify(status="ok", database="ok"), 200

    @app.get("/metrics", doc_ui=False)
    def metrics() -> Response:
        return metrics_response()

    @app.get("/openapi.json", doc_ui=False)
    def openapi_json() -> Response:
        return jsonify(app.api_doc)

    serve_plain_docs(app, lambda: app.api_doc)

    def _docs() -> Response:
        # Straight to Swagger UI, not the UI chooser page.
        return redirect("/docs/swagger", code=302)  # type: ignore[return-value]

    Flask.add_url_rule(app, "/docs", "docs_home", _docs)
