"""Request and response models of an endpoint's OAuth 2.0 client credentials and its TLS
settings (client certificate, CA bundle): used by the endpoint routes and the console."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from registration.api.schemas import Strict
from webhooks_core.endpoints.authentication import (
    PEM_MAX_CHARS,
    CredentialProblem,
    OAuthAuthMethod,
    certificate_info,
)
from webhooks_core.messages.envelope import utcnow

# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
ScopeToken = Annotated[str, StringConstraints(pattern=r"^[\x21\x23-\x5b\x5d-\x7e]{1,256}$")]
Pem = Annotated[str, StringConstraints(min_length=1, max_length=PEM_MAX_CHARS)]


class OAuthIn(Strict):
    """OAuth 2.0 client credentials (RFC 6749 section 4.4): the platform fetches a token
    from ``token_url`` and sends it as ``Authorization: Bearer`` with every delivery."""

    token_url: str = Field(
        min_length=1,
        max_length=2048,
        description="the authorization server's token endpoint; the same address rules as"
        " endpoint URLs apply to it",
    )
    client_id: str = Field(min_length=1, max_length=512)
    client_secret: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="stored sealed, never returned; required when creating the credentials"
        " or changing token_url or client_id, else omitted keeps the stored one",
    )
    scopes: list[ScopeToken] = Field(default_factory=list, max_length=32)
    audience: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="sent as the audience parameter of the token request (Auth0, Okta)",
    )
    auth_method: OAuthAuthMethod = Field(
        default="client_secret_basic",
        description="client_secret_basic (HTTP Basic) or client_secret_post (in the body)",
    )


class TLSIn(Strict):
    """Mutual TLS: a client certificate with its private key, and/or a CA bundle trusted for
    the endpoint's server certificate (instead of the system's)."""

    client_certificate: Pem | None = Field(
        default=None, description="PEM; the client certificate first, then any intermediates"
    )
    client_key: Pem | None = Field(
        default=None,
        description="PEM private key of the client certificate, not encrypted; stored sealed,"
        " never returned; required with client_certificate",
    )
    ca_bundle: Pem | None = Field(
        default=None, description="PEM certificates trusted for this endpoint's server"
    )


class OAuthOut(BaseModel):
    """The endpoint's OAuth client credentials; the client secret is never returned."""

    token_url: str
    client_id: str
    scopes: list[str]
    audience: str | None
    auth_method: str


class TLSOut(BaseModel):
    """The endpoint's TLS settings; the private key is never returned."""

    client_certificate: str | None = Field(description="PEM (public)")
    subject: str | None = Field(description="the client certificate's subject (RFC 4514)")
    issuer: str | None
    not_before: datetime | None
    not_after: datetime | None = Field(description="when the client certificate expires")
    expired: bool = Field(description="the client certificate has expired")
    sha256_fingerprint: str | None
    ca_bundle: str | None = Field(description="PEM certificates trusted for the server")


def oauth_view(endpoint: Any) -> OAuthOut | None:
    if endpoint.oauth_token_url is None:
        return None
    return OAuthOut(
        token_url=endpoint.oauth_token_url,
        client_id=endpoint.oauth_client_id or "",
        scopes=list(endpoint.oauth_scopes or []),
        audience=endpoint.oauth_audience,
        auth_method=endpoint.oauth_auth_method or "client_secret_basic",
    )


def tls_view(endpoint: Any) -> TLSOut | None:
    certificate, ca_bundle = endpoint.tls_client_certificate, endpoint.tls_ca_bundle
    if certificate is None and ca_bundle is None:
        return None
    info = None
    if certificate is not None:
        try:
            info = certificate_info(certificate)
        except CredentialProblem:
            info = None  # stored by hand: shown without what cannot be read
    return TLSOut(
        client_certificate=certificate,
        subject=info.subject if info else None,
        issuer=info.issuer if info else None,
        not_before=info.not_before if info else None,
        not_after=info.not_after if info else endpoint.tls_certificate_expires_at,
        expired=bool(info and info.expired(utcnow())),
        sha256_fingerprint=info.sha256_fingerprint if info else None,
        ca_bundle=ca_bundle,
    )
