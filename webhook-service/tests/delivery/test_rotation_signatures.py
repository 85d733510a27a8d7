"""A real delivery carries at most two signatures however often the secret is rotated."""

from __future__ import annotations

from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from registration.config import APISettings
from registration.services import endpoint_secrets
from registration.services.errors import Conflict


def _v1_signatures(header: str) -> list[str]:
    return [part for part in header.split() if part.startswith("v1,")]


def test_rotations_within_the_grace_period_sign_with_two_secrets_at_most(
    platform: Any, receiver: Any, wait_for: Any, api_settings: APISettings
) -> None:
    server = receiver()
    endpoint_id, first = platform.endpoint(server.url)
    app_id = platform.application()
    assert api_settings.secret_rotation_grace_seconds > 0
    secrets = [first]
    for _ in range(3):
        view = endpoint_secrets.rotate_secret(
            platform.sessions, api_settings, app_id, endpoint_id, None
        )
        secrets.append(view.key)
    # Rotating to the current secret again changes nothing; back to the previous is refused.
    endpoint_secrets.rotate_secret(
        platform.sessions, api_settings, app_id, endpoint_id, secrets[-1]
    )
    with pytest.raises(Conflict):
        endpoint_secrets.rotate_secret(
            platform.sessions, api_settings, app_id, endpoint_id, secrets[-2]
        )

    platform.publish()
    wait_for(lambda: len(server.received) == 1, message="one delivery")
    got = server.received[0]
    header = got.headers["webhook-signature"]
    assert len(_v1_signatures(header)) == 2
    headers = {name.lower(): value for name, value in got.headers.items()}
    for secret in secrets[-2:]:  # the current and the previous secret verify
        Webhook(secret).verify(got.body, headers)
    for secret in secrets[:-2]:  # the older ones stopped signing at the next rotation
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(got.body, headers)
