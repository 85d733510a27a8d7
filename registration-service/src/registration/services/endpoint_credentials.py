"""An endpoint's OAuth client credentials and TLS settings, from the API's input to columns.

The rules are :mod:`webhooks_core.endpoints.authentication` (what a certificate, a key and a
CA bundle must be; how secrets are sealed); this module applies them to a request and says
which input field is wrong.  Secrets are sealed here, before anything is stored.
"""

from __future__ import annotations

from typing import Any

from registration.services.errors import InvalidField
from webhooks_core.endpoints.authentication import (
    CredentialProblem,
    check_ca_bundle,
    check_client_certificate,
    seal_secret,
)
from webhooks_core.models import Endpoint
from webhooks_core.settings import Settings
from webhooks_core.targets import TargetRefused, check_url

OAUTH_COLUMNS = (
    "oauth_token_url",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_scopes",
    "oauth_audience",
    "oauth_auth_method",
)
TLS_COLUMNS = (
    "tls_client_certificate",
    "tls_client_key",
    "tls_ca_bundle",
    "tls_certificate_expires_at",
)


def oauth_columns(
    settings: Settings, oauth: dict[str, Any] | None, current: Endpoint | None
) -> dict[str, Any]:
    """The ``oauth_*`` column values of ``oauth`` (None clears them).

    The client secret may be left out only when one is stored for the same token URL and
    client id: a secret is never sent to a token URL it was not given for.
    """
    if oauth is None:
        return dict.fromkeys(OAUTH_COLUMNS)
    token_url = oauth["token_url"]
    try:
        check_url(token_url, settings.allowed_networks)
    except TargetRefused as exc:
        raise InvalidField(str(exc), field="oauth.token_url") from None
    secret = oauth.get("client_secret")
    if secret is not None:
        sealed = seal_secret(secret)
    elif (
        current is not None
        and current.oauth_client_secret is not None
        and current.oauth_token_url == token_url
        and current.oauth_client_id == oauth["client_id"]
    ):
        sealed = current.oauth_client_secret
    else:
        raise InvalidField(
            "is required with a new token_url or client_id", field="oauth.client_secret"
        )
    return {
        "oauth_token_url": token_url,
        "oauth_client_id": oauth["client_id"],
        "oauth_client_secret": sealed,
        "oauth_scopes": list(oauth.get("scopes") or []),
        "oauth_audience": oauth.get("audience"),
        "oauth_auth_method": oauth.get("auth_method") or "client_secret_basic",
    }


def tls_columns(tls: dict[str, Any] | None) -> dict[str, Any]:
    """The ``tls_*`` column values of ``tls`` (None clears them)."""
    if tls is None:
        return dict.fromkeys(TLS_COLUMNS)
    certificate, key, ca_bundle = (
        tls.get("client_certificate"),
        tls.get("client_key"),
        tls.get("ca_bundle"),
    )
    if certificate is None and key is None and ca_bundle is None:
        raise InvalidField(
            "give client_certificate with client_key, or ca_bundle, or both (null removes"
            " the TLS settings)",
            field="tls",
        )
    if (certificate is None) != (key is None):
        missing = "tls.client_key" if key is None else "tls.client_certificate"
        raise InvalidField("is required with the other half of the client pair", field=missing)
    try:
        if ca_bundle is not None:
            check_ca_bundle(ca_bundle)
        info = None if certificate is None else check_client_certificate(certificate, str(key))
    except CredentialProblem as exc:
        raise InvalidField(str(exc), field=exc.field) from None
    return {
        "tls_client_certificate": certificate,
        "tls_client_key": None if key is None else seal_secret(key),
        "tls_ca_bundle": ca_bundle,
        "tls_certificate_expires_at": None if info is None else info.not_after,
    }


def credential_columns(
    settings: Settings, fields: dict[str, Any], current: Endpoint | None
) -> dict[str, Any]:
    """The credential columns the request changes (none when it has no oauth nor tls)."""
    columns: dict[str, Any] = {}
    auth = fields.get("auth", current.auth if current else None)
    oauth = fields.get("oauth", current.oauth_token_url if current else None)
    if auth and oauth:
        raise InvalidField(
            "auth and oauth both set the Authorization header: give one of them", field="oauth"
        )
    if "oauth" in fields:
        columns.update(oauth_columns(settings, fields["oauth"], current))
    if "tls" in fields:
        columns.update(tls_columns(fields["tls"]))
    return columns
