"""The console's forms.  Each carries a CSRF token (Flask-WTF)."""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateTimeLocalField,
    IntegerField,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    widgets,
)
from wtforms.fields import URLField

# WTForms 3.3 wants choices as SelectChoice (tuples are deprecated, gone in 3.4); the type
# stubs (types-WTForms 3.2) do not know it yet.  The console's views take it from here.
from wtforms.fields.choices import SelectChoice as SelectChoice  # type: ignore[attr-defined]
from wtforms.validators import InputRequired, Length, NumberRange, Optional
from wtforms.widgets import PasswordInput


class SignInForm(FlaskForm):
    """An application token, or the admin token."""

    token = PasswordField(
        "API token", validators=[InputRequired(), Length(max=512)], render_kw={"autofocus": True}
    )


class ActionForm(FlaskForm):
    """A button that changes something: carries only the CSRF token."""


class ApplicationForm(FlaskForm):
    """The admin creates an application (and its first token)."""

    name = StringField("Name", validators=[InputRequired(), Length(min=1, max=256)])


class RetentionForm(FlaskForm):
    """The admin sets how long the application's data is kept (empty: the default)."""

    attempts_days = IntegerField(
        "Attempts (days)",
        validators=[Optional(), NumberRange(min=1, max=3650)],
        description="Empty: the platform default.",
    )
    messages_days = IntegerField(
        "Messages and deliveries (days)",
        validators=[Optional(), NumberRange(min=1, max=3650)],
        description="Empty: the platform default.",
    )
    payload_days = IntegerField(
        "Payloads (days)",
        validators=[Optional(), NumberRange(min=1, max=3650)],
        description="Then replaced by {}. Empty: the platform default.",
    )


class CheckboxesField(SelectMultipleField):
    """Several choices as a list of checkboxes, which a keyboard can walk with Tab/Space."""

    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


class EndpointForm(FlaskForm):
    """Create or edit an endpoint.  Values are checked again by the API's own schema."""

    url = URLField(
        "URL",
        validators=[InputRequired(), Length(max=2048)],
        render_kw={"placeholder": "https://example.com/webhooks", "autofocus": True},
    )
    description = StringField("Description", validators=[Optional(), Length(max=1024)])
    event_types = CheckboxesField("Event types", choices=[], validate_choice=True)
    channels = StringField(
        "Channels",
        validators=[Optional(), Length(max=2048)],
        render_kw={"placeholder": "e.g. eu, project:42"},
        description="Comma separated. Empty receives every message.",
    )
    headers = TextAreaField(
        "Custom headers",
        validators=[Optional(), Length(max=8192)],
        render_kw={"placeholder": "X-Team: payments", "rows": 3},
        description="One per line, as Name: value.",
    )
    rate_limit = IntegerField(
        "Rate limit",
        validators=[Optional(), NumberRange(min=1, max=100_000)],
        description="Deliveries per second at most. Empty: no limit.",
    )
    max_in_flight = IntegerField(
        "Concurrent requests",
        validators=[Optional(), NumberRange(min=1, max=256)],
        description="Empty: the platform default.",
    )
    adaptive_flow = BooleanField(
        "Adaptive flow control",
        default=True,
        description="Lower the concurrency and rate below these while the receiver answers"
        " 429 or 503, times out or slows down. Off: these limits only, and a 429 counts as a"
        " failure.",
    )
    retry_schedule = StringField(
        "Retry schedule",
        validators=[Optional(), Length(max=1024)],
        render_kw={"placeholder": "0, 5, 300, 1800"},
        description="Seconds before each retry, comma separated. Empty: the platform default.",
    )
    key_failure_policy = SelectField(
        "When a keyed message is dead-lettered",
        choices=[
            SelectChoice("skip", "Skip: later messages of its ordering key go on"),
            SelectChoice("block", "Block: its key waits until the dead letter is redriven"),
        ],
        default="skip",
        validate_choice=True,
        description="Messages with the same ordering key are delivered one at a time, in order.",
    )
    auth_type = SelectField(
        "Authentication",
        choices=[
            SelectChoice("", "None"),
            SelectChoice("basic", "Basic (username and password)"),
            SelectChoice("bearer", "Bearer token"),
        ],
        default="",
        description="Sent as the Authorization header; stored sealed, shown masked.",
    )
    auth_username = StringField("Username", validators=[Optional(), Length(max=256)])
    # Filled with the masked value when editing: left as it is, the stored secret stays.
    auth_password = PasswordField(
        "Password",
        validators=[Optional(), Length(max=1024)],
        widget=PasswordInput(hide_value=False),
    )
    auth_token = PasswordField(
        "Bearer token",
        validators=[Optional(), Length(max=4096)],
        widget=PasswordInput(hide_value=False),
    )
    signature_schemes = CheckboxesField(
        "Signatures",
        choices=[
            SelectChoice("v1", "v1: HMAC-SHA256 with the whsec_ secret"),
            SelectChoice("v1a", "v1a: Ed25519, receivers verify with the whpk_ public key"),
        ],
        default=["v1"],
        validate_choice=True,
    )

    def auth_for_api(self) -> dict[str, str] | None:
        """The auth fields as the API's ``auth`` object (None: no authentication)."""
        if self.auth_type.data == "basic":
            return {
                "type": "basic",
                "username": self.auth_username.data or "",
                "password": self.auth_password.data or "",
            }
        if self.auth_type.data == "bearer":
            return {"type": "bearer", "token": self.auth_token.data or ""}
        return None

    def fields_for_api(self) -> dict[str, Any]:
        """The form as the API's endpoint fields (same names and shapes as the JSON body)."""
        headers: dict[str, str] = {}
        for line in (self.headers.data or "").splitlines():
            if not line.strip():
                continue
            name, separator, value = line.partition(":")
            # A line without a colon becomes a header name the schema refuses, with its message.
            headers[name.strip()] = value.strip() if separator else ""
        return {
            "url": (self.url.data or "").strip(),
            "description": (self.description.data or "").strip(),
            "event_types": list(self.event_types.data or []),
            "channels": _csv(self.channels.data) or None,
            "headers": headers,
            "rate_limit": self.rate_limit.data,
            "max_in_flight": self.max_in_flight.data,
            "adaptive_flow": bool(self.adaptive_flow.data),
            "retry_schedule": _csv(self.retry_schedule.data) or None,
            "key_failure_policy": self.key_failure_policy.data or "skip",
            "auth": self.auth_for_api(),
            # None checked (or a form without the field): v1, the default.
            "signature_schemes": list(self.signature_schemes.data or []) or ["v1"],
        }


class DisableForm(FlaskForm):
    """Disable an endpoint, optionally saying why."""

    reason = StringField(
        "Reason",
        validators=[Optional(), Length(max=256)],
        render_kw={"placeholder": "e.g. receiver under maintenance"},
    )


class RecoverForm(FlaskForm):
    """Resend everything that failed for an endpoint since a time."""

    since = DateTimeLocalField(
        "Failed since (UTC)", format="%Y-%m-%dT%H:%M", validators=[InputRequired()]
    )
    include_cancelled = BooleanField("Also cancelled ones (cancelled when it was disabled)")


def _csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def auth_data(shown: dict[str, str] | None) -> dict[str, str]:
    """The edit form's auth fields from the endpoint's masked auth setting."""
    if not shown:
        return {"auth_type": ""}
    return {
        "auth_type": shown["type"],
        "auth_username": shown.get("username") or "",
        "auth_password": shown.get("password") or "",
        "auth_token": shown.get("token") or "",
    }


def headers_text(headers: dict[str, str]) -> str:
    """The inverse of the headers field's parsing, to fill the edit form."""
    return "\n".join(f"{name}: {value}" for name, value in headers.items())


class OAuthForm(FlaskForm):
    """An endpoint's OAuth 2.0 client credentials (docs/security.md)."""

    token_url = URLField(
        "Token URL",
        validators=[InputRequired(), Length(max=2048)],
        render_kw={"placeholder": "https://auth.example.com/oauth/token"},
    )
    client_id = StringField("Client id", validators=[InputRequired(), Length(max=512)])
    client_secret = PasswordField(
        "Client secret",
        validators=[Optional(), Length(max=4096)],
        description="Stored sealed, never shown. Empty keeps the stored one (same token URL"
        " and client id).",
    )
    scopes = StringField(
        "Scopes",
        validators=[Optional(), Length(max=4096)],
        render_kw={"placeholder": "webhooks:receive"},
        description="Space separated.",
    )
    audience = StringField("Audience", validators=[Optional(), Length(max=2048)])
    auth_method = SelectField(
        "Client authentication",
        choices=[
            SelectChoice("client_secret_basic", "HTTP Basic (client_secret_basic)"),
            SelectChoice("client_secret_post", "In the request body (client_secret_post)"),
        ],
    )

    def fields_for_api(self) -> dict[str, Any]:
        """The form as the API's ``oauth`` object."""
        return {
            "token_url": (self.token_url.data or "").strip(),
            "client_id": (self.client_id.data or "").strip(),
            "client_secret": self.client_secret.data or None,
            "scopes": (self.scopes.data or "").split(),
            "audience": (self.audience.data or "").strip() or None,
            "auth_method": self.auth_method.data,
        }


class TLSForm(FlaskForm):
    """An endpoint's client certificate and CA bundle (docs/security.md)."""

    client_certificate = TextAreaField(
        "Client certificate",
        validators=[Optional(), Length(max=65_536)],
        render_kw={"rows": 6, "placeholder": "-----BEGIN CERTIFICATE-----"},
        description="PEM: the certificate first, then any intermediates.",
    )
    client_key = TextAreaField(
        "Private key",
        validators=[Optional(), Length(max=65_536)],
        render_kw={"rows": 6, "placeholder": "-----BEGIN PRIVATE KEY-----"},
        description="PEM, without a passphrase. Stored sealed, never shown.",
    )
    ca_bundle = TextAreaField(
        "CA bundle",
        validators=[Optional(), Length(max=65_536)],
        render_kw={"rows": 6, "placeholder": "-----BEGIN CERTIFICATE-----"},
        description="PEM certificates trusted for the endpoint's server instead of the"
        " system's. Optional.",
    )

    def fields_for_api(self) -> dict[str, Any]:
        """The form as the API's ``tls`` object."""
        return {
            "client_certificate": (self.client_certificate.data or "").strip() or None,
            "client_key": (self.client_key.data or "").strip() or None,
            "ca_bundle": (self.ca_bundle.data or "").strip() or None,
        }
