"""Fixtures of every webhook-service test: the delivery side's settings."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from delivery.config import DeliverySettings


@pytest.fixture(scope="session")
def settings(make_settings: Callable[..., DeliverySettings]) -> DeliverySettings:
    """The delivery settings on the test database and vhost."""
    return make_settings(DeliverySettings)
