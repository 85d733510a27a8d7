"""What a running registration service holds: settings, engine, session factory."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from registration.config import APISettings


@dataclass(frozen=True)
class Runtime:
    """Built once by ``create_app``; views reach it through :func:`runtime`."""

    settings: APISettings
    engine: Engine
    sessions: sessionmaker[Session]


def runtime() -> Runtime:
    """The runtime of the current Flask app."""
    return current_app.extensions["webhooks"]  # type: ignore[no-any-return]
