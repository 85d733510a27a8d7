"""Unauthenticated operational routes: health, metrics and the API documentation."""

from __future__ import annotations

from flask import Flask, Response, jsonify, redirect
from flask_openapi3 import OpenAPI
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from registration.runtime import runtime
from webhooks_core.observability import metrics_response
from webhooks_core.openapi_text import serve_plain_docs


def register_operational_routes(app: OpenAPI) -> None:
    """Add /health, /metrics, /openapi.json, /docs and / (to the console)."""

    @app.get("/health", doc_ui=False)
    def health() -> tuple[Response, int]:
        try:
            with runtime().engine.connect() as conn:
                conn.execute(text("SELECT 1"))
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
        return redirect("/docs/swagger", code=302)  # type: ignore[return-value]

    Flask.add_url_rule(app, "/docs", "docs_home", _docs)

    def _home() -> Response:
        # A person opening the service's address in a browser wants the console.
        return redirect("/console/", code=302)  # type: ignore[return-value]

    Flask.add_url_rule(app, "/", "home", _home)
