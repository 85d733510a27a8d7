"""The people demo producer: ``create_app(settings)`` builds its Flask app.

It keeps its own database (``WEBHOOKS_PRODUCER_DATABASE_URL``, migrated by
``python -m producer.migrations``) and publishes every change through the transactional
outbox; ``python -m outbox.relay`` moves the events to RabbitMQ.  At start it adds its event
types to the platform catalogue if they are missing.
"""

from __future__ import annotations

from pathlib import Path

from flask import Response, request
from flask_openapi3 import Info, OpenAPI

from producer.api import ProducerRuntime, people_bp, runtime, uploads_bp
from producer.catalogue import register_event_types
from producer.config import ProducerSettings
from webhooks_core.db import make_engine, make_session_factory
from webhooks_core.errors import DomainError
from webhooks_core.http.operational import register_operational_routes
from webhooks_core.observability import instrument_flask
from webhooks_core.problems import (
    Problem,
    problem,
    register_problem_handlers,
    validation_problem,
)


def create_app(settings: ProducerSettings | None = None, *, register_types: bool = True) -> OpenAPI:
    """Build the producer app; an unreachable producer database fails here, naming the variable."""
    settings = settings or ProducerSettings.from_env()
    # Every transaction runs through run_transaction (webhooks_core.db); what a dead
    # connection still meets is a 503 with Retry-After.
    engine = make_engine(
        settings, url=settings.producer_database_url, variable="PRODUCER_DATABASE_URL"
    )
    app = OpenAPI(
        __name__,
        info=Info(
            title="People demo producer",
            version="1.0.0",
            description="A CRUD app whose every change fires a webhook event via the outbox.",
        ),
        validation_error_status=422,
        validation_error_model=Problem,
        validation_error_callback=validation_problem,
        doc_prefix="/docs",
        doc_url="/openapi.json",
    )
    # Uploads are the largest requests; Werkzeug answers 413 beyond this.
    app.config["MAX_CONTENT_LENGTH"] = settings.upload_max_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["producer"] = ProducerRuntime(
        settings, engine, make_session_factory(engine), Path(settings.upload_dir).resolve()
    )
    instrument_flask(app, "producer")
    register_problem_handlers(app, DomainError)
    _register_operational_routes(app)
    app.register_api(people_bp)
    app.register_api(uploads_bp)
    if register_types:
        register_event_types(settings.database_url)
    return app


def _register_operational_routes(app: OpenAPI) -> None:
    register_operational_routes(app, lambda: runtime().engine)

    @app.before_request
    def _json_only() -> Response | None:
        # The people routes take JSON; a form post would meet pydantic's words about a model
        # class ("a valid dictionary or instance of PersonIn").  Say what to send instead.
        if (
            request.method in ("POST", "PUT", "PATCH")
            and request.path.rstrip("/").startswith("/people")
            and not request.is_json
        ):
            return problem(
                415,
                "Unsupported Media Type",
                "send the person as a JSON object with Content-Type: application/json",
            )
        return None
