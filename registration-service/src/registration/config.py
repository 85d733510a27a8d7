"""The settings of the management API and console (``WEBHOOKS_*``, read once at start).

:class:`APISettings` extends the shared endpoint rules (allowed targets, breaker and
auto-disable windows, which the API reports) with what only the API reads.  A new setting of
the API or the console goes here.
"""

from __future__ import annotations

from pydantic import Field

from webhooks_core.settings import EndpointSettings


class APISettings(EndpointSettings):
    """What the management API and the console may be configured with."""

    # Bearer token of the platform operator; no token means no admin access.
    admin_token: str | None = Field(default=None, min_length=16)
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    max_payload_bytes: int = Field(default=262_144, ge=256)
    secret_rotation_grace_seconds: int = Field(default=86_400, ge=0)
    idempotency_window_seconds: int = Field(default=86_400, ge=60)

    # Web console: signs its session cookie (generated per process when unset, which signs
    # everyone out on restart); Secure cookies when served over HTTPS.
    console_secret_key: str | None = Field(default=None, min_length=16)
    console_cookie_secure: bool = False
