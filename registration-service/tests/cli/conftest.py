"""Fixtures of the CLI tests: the real registration service on 127.0.0.1, and a runner."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from click.testing import CliRunner, Result
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.serving import make_server

from registration.app import create_app
from registration.cli.main import cli
from registration.config import APISettings
from registration.services import applications


@dataclass(frozen=True)
class Tenant:
    """An application and a token of its own."""

    id: uuid.UUID
    token: str


@pytest.fixture
def api_url(settings: APISettings, db: sessionmaker[Session]) -> Iterator[str]:
    """The registration service on an ephemeral port, for this test."""
    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def tenant(db: sessionmaker[Session]) -> Tenant:
    app = applications.create_application(db, name="Acme", uid=None, metadata={})
    return Tenant(app.id, applications.issue_token(db, app.id, name="cli").token)


@pytest.fixture
def webhooks(api_url: str, tenant: Tenant) -> Callable[..., Result]:
    """Run ``webhooks ARGS`` as the tenant, configured through the environment."""

    def run(*args: str, input: str | bytes | None = None, **env: str) -> Result:
        environment = {
            "WEBHOOKS_API_URL": api_url,
            "WEBHOOKS_API_TOKEN": tenant.token,
            "WEBHOOKS_APPLICATION": str(tenant.id),
            **env,
        }
        return CliRunner().invoke(cli, list(args), input=input, env=environment)

    return run


@pytest.fixture
def endpoint_for(db: sessionmaker[Session], settings: APISettings) -> Callable[..., uuid.UUID]:
    """An endpoint of the tenant subscribed to ``person.created`` (catalogue included)."""
    from registration.services import endpoints, event_types

    def make(tenant: Tenant, url: str = "http://127.0.0.1:9/hook") -> uuid.UUID:
        event_types.ensure_event_types(db, {"person.created": "A person was added."})
        endpoint, _ = endpoints.upsert_endpoint(
            db, settings, tenant.id, {"url": url, "event_types": ["person.created"]}
        )
        return endpoint.id

    return make


@pytest.fixture
def dead_letter(db: sessionmaker[Session]) -> Callable[[int], int]:
    """Leave a delivery as the engine does when its retries run out; the dead letter's id."""
    from webhooks_core.db import transaction
    from webhooks_core.models import DeadLetter, Delivery

    def kill(delivery_id: int) -> int:
        with transaction(db) as session:
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None
            delivery.state = "dead"
            delivery.attempt_count = 8
            delivery.next_attempt_at = None
            delivery.last_status_code = 503
            delivery.last_error = "HTTP 503"
            letter = DeadLetter(
                delivery_id=delivery_id,
                endpoint_id=delivery.endpoint_id,
                application_id=delivery.application_id,
                reason="retries exhausted after 8 attempts",
            )
            session.add(letter)
            session.flush()
            return letter.id

    return kill
