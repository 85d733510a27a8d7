"""An endpoint's credentials in the console: OAuth client credentials and mutual TLS.

One page with a form for each (docs/security.md); the secrets are never shown, the client
certificate's expiry is.  The views call the same domain function as the API's ``PATCH``.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import flash, render_template
from flask_wtf import FlaskForm
from pydantic import BaseModel, ValidationError
from werkzeug.wrappers import Response as BaseResponse

from registration.api.credential_schemas import OAuthIn, TLSIn, tls_view
from registration.console.blueprint import back, bp, flash_problem, viewer
from registration.console.forms import ActionForm, OAuthForm, TLSForm
from registration.runtime import runtime
from registration.services import endpoints
from registration.services.errors import DomainError, InvalidField
from webhooks_core.messages.envelope import utcnow
from webhooks_core.models import Endpoint


def _endpoint(endpoint_id: uuid.UUID) -> Endpoint:
    return endpoints.get_endpoint(runtime().sessions, viewer().app_id, endpoint_id)


def _page(endpoint: Endpoint, oauth: OAuthForm, tls: TLSForm, status: int = 200) -> Any:
    return render_template(
        "console/endpoint_credentials.html",
        endpoint=endpoint,
        oauth=oauth,
        tls=tls,
        tls_view=tls_view(endpoint),
        now=utcnow(),
        action=ActionForm(),
        nav="endpoints",
    ), status


def _oauth_form(endpoint: Endpoint) -> OAuthForm:
    return OAuthForm(
        prefix="oauth",
        data={
            "token_url": endpoint.oauth_token_url,
            "client_id": endpoint.oauth_client_id,
            "scopes": " ".join(endpoint.oauth_scopes or []),
            "audience": endpoint.oauth_audience,
            "auth_method": endpoint.oauth_auth_method or "client_secret_basic",
        },
    )


@bp.get("/endpoints/<uuid:endpoint_id>/credentials")
def endpoint_credentials(endpoint_id: uuid.UUID) -> Any:
    """The endpoint's OAuth client credentials and TLS settings, each with its form."""
    endpoint = _endpoint(endpoint_id)
    return _page(
        endpoint,
        _oauth_form(endpoint),
        TLSForm(prefix="tls", data={"ca_bundle": endpoint.tls_ca_bundle}),
    )


def _save(endpoint_id: uuid.UUID, form: FlaskForm, name: str, model: type[BaseModel]) -> bool:
    """Check the form against the API's schema and save it as the endpoint's ``name``."""
    form.validate()
    fields = form.fields_for_api()
    valid = not form.errors
    try:
        model.model_validate(fields)
    except ValidationError as exc:
        valid = False
        for error in exc.errors(include_url=False):
            target = getattr(form, str(error["loc"][0]) if error["loc"] else "", None)
            message = str(error["msg"]).removeprefix("Value error, ")
            if target is not None and message not in target.errors:
                target.errors = [*target.errors, message]
            elif target is None:
                flash(message, "error")
    if not valid:
        return False
    try:
        endpoints.update_endpoint(
            runtime().sessions, runtime().settings, viewer().app_id, endpoint_id, {name: fields}
        )
    except InvalidField as exc:
        target = getattr(form, (exc.field or "").removeprefix(f"{name}."), None)
        if target is not None:
            target.errors = [*target.errors, exc.detail]
        else:
            flash(exc.detail, "error")
        return False
    except DomainError as exc:
        flash_problem(exc)
        return False
    return True


@bp.post("/endpoints/<uuid:endpoint_id>/credentials/oauth")
def endpoint_oauth(endpoint_id: uuid.UUID) -> Any:
    """Save the OAuth client credentials."""
    form = OAuthForm(prefix="oauth")
    if _save(endpoint_id, form, "oauth", OAuthIn):
        flash("OAuth client credentials saved.", "success")
        return back("console.endpoint_credentials", endpoint_id=endpoint_id)
    endpoint = _endpoint(endpoint_id)
    return _page(endpoint, form, TLSForm(prefix="tls"), 422)


@bp.post("/endpoints/<uuid:endpoint_id>/credentials/tls")
def endpoint_tls(endpoint_id: uuid.UUID) -> Any:
    """Save the client certificate, its key and the CA bundle."""
    form = TLSForm(prefix="tls")
    if _save(endpoint_id, form, "tls", TLSIn):
        flash("TLS settings saved.", "success")
        return back("console.endpoint_credentials", endpoint_id=endpoint_id)
    form.client_key.data = ""  # a private key is not sent back in a page, even its own
    endpoint = _endpoint(endpoint_id)
    return _page(endpoint, _oauth_form(endpoint), form, 422)


@bp.post("/endpoints/<uuid:endpoint_id>/credentials/<any(oauth, tls):which>/remove")
def endpoint_credentials_remove(endpoint_id: uuid.UUID, which: str) -> BaseResponse:
    """Remove the OAuth client credentials or the TLS settings."""
    if ActionForm().validate_on_submit():
        endpoints.update_endpoint(
            runtime().sessions, runtime().settings, viewer().app_id, endpoint_id, {which: None}
        )
        flash(
            "OAuth client credentials removed." if which == "oauth" else "TLS settings removed.",
            "success",
        )
    return back("console.endpoint_credentials", endpoint_id=endpoint_id)
