"""Unauthenticated operational routes: the shared ones, and / (to the console)."""

from __future__ import annotations

from flask import Flask, Response, redirect
from flask_openapi3 import OpenAPI

from registration.runtime import runtime
from webhooks_core.http.operational import register_operational_routes as register_shared


def register_operational_routes(app: OpenAPI) -> None:
    """Add /health, /metrics, /openapi.json, /docs and / (to the console)."""
    register_shared(app, lambda: runtime().engine)

    def _home() -> Response:
        # A person opening the service's address in a browser wants the console.
        return redirect("/console/", code=302)  # type: ignore[return-value]

    Flask.add_url_rule(app, "/", "home", _home)
