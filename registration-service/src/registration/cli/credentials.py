"""``webhooks endpoints oauth|tls|credentials``: an endpoint's OAuth client credentials and TLS.

Secrets are read from the environment or files, never from the command line (where other
users could read them in the process list), and never printed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from registration.cli.context import Context, fail_usage, human_time, pass_context, print_json


def _read(path: Path | None) -> str | None:
    return None if path is None else path.read_text(encoding="ascii", errors="replace")


def _patch(context: Context, endpoint_id: str, body: dict[str, Any]) -> dict[str, Any]:
    _status, endpoint = context.client().exchange(
        "PATCH", context.app_path(f"/endpoints/{endpoint_id}"), json=body
    )
    return dict(endpoint)


def print_credentials(endpoint: dict[str, Any]) -> None:
    """What an endpoint authenticates with (never a secret)."""
    oauth, tls = endpoint.get("oauth"), endpoint.get("tls")
    if oauth:
        scopes = " ".join(oauth["scopes"]) or "-"
        click.echo(
            f"oauth: client {oauth['client_id']} at {oauth['token_url']} "
            f"({oauth['auth_method']}, scopes {scopes}"
            + (f", audience {oauth['audience']}" if oauth.get("audience") else "")
            + ")"
        )
    else:
        click.echo("oauth: none")
    if tls and tls.get("client_certificate"):
        state = "EXPIRED" if tls["expired"] else "expires"
        click.echo(
            f"tls: client certificate {tls['subject']}, {state} {human_time(tls['not_after'])}"
            + (", with a CA bundle" if tls.get("ca_bundle") else "")
        )
    elif tls:
        click.echo("tls: a CA bundle, no client certificate")
    else:
        click.echo("tls: none")


@click.command("oauth")
@click.argument("endpoint_id")
@click.option("--token-url", help="The authorization server's token endpoint.")
@click.option("--client-id", help="The client id the receiver issued.")
@click.option(
    "--client-secret-env",
    default="WEBHOOKS_OAUTH_CLIENT_SECRET",
    show_default=True,
    help="Environment variable holding the client secret (empty keeps the stored one).",
)
@click.option("--scope", "scopes", multiple=True, help="A scope to ask for (repeat).")
@click.option("--audience", default=None, help="The audience parameter, when the server wants one.")
@click.option(
    "--auth-method",
    type=click.Choice(["client_secret_basic", "client_secret_post"]),
    default="client_secret_basic",
    show_default=True,
)
@click.option("--remove", is_flag=True, help="Remove the OAuth client credentials.")
@click.option("--json", "as_json", is_flag=True, help="Print the endpoint as JSON.")
@pass_context
def endpoints_oauth(
    context: Context,
    endpoint_id: str,
    token_url: str | None,
    client_id: str | None,
    client_secret_env: str,
    scopes: tuple[str, ...],
    audience: str | None,
    auth_method: str,
    remove: bool,
    as_json: bool,
) -> None:
    """Send OAuth 2.0 bearer tokens (client credentials grant) to an endpoint."""
    if remove:
        body: dict[str, Any] = {"oauth": None}
    elif not token_url or not client_id:
        fail_usage("give --token-url and --client-id, or --remove")
    else:
        oauth: dict[str, Any] = {
            "token_url": token_url,
            "client_id": client_id,
            "scopes": list(scopes),
            "auth_method": auth_method,
        }
        secret = os.environ.get(client_secret_env)
        if secret:
            oauth["client_secret"] = secret
        if audience:
            oauth["audience"] = audience
        body = {"oauth": oauth}
    endpoint = _patch(context, endpoint_id, body)
    if as_json:
        print_json(endpoint)
    else:
        print_credentials(endpoint)


@click.command("tls")
@click.argument("endpoint_id")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM client certificate (then any intermediates).")  # fmt: skip
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM private key of the certificate, without a passphrase.")  # fmt: skip
@click.option("--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM certificates to trust for the endpoint's server.")  # fmt: skip
@click.option("--remove", is_flag=True, help="Remove the TLS settings.")
@click.option("--json", "as_json", is_flag=True, help="Print the endpoint as JSON.")
@pass_context
def endpoints_tls(
    context: Context,
    endpoint_id: str,
    cert: Path | None,
    key: Path | None,
    ca: Path | None,
    remove: bool,
    as_json: bool,
) -> None:
    """Give an endpoint a client certificate (mutual TLS) and/or a CA bundle."""
    if remove:
        body: dict[str, Any] = {"tls": None}
    elif cert is None and ca is None:
        fail_usage("give --cert with --key, and/or --ca; or --remove")
    else:
        tls = {"client_certificate": _read(cert), "client_key": _read(key), "ca_bundle": _read(ca)}
        body = {"tls": {name: value for name, value in tls.items() if value is not None}}
    endpoint = _patch(context, endpoint_id, body)
    if as_json:
        print_json(endpoint)
    else:
        print_credentials(endpoint)


@click.command("credentials")
@click.argument("endpoint_id")
@pass_context
def endpoints_credentials(context: Context, endpoint_id: str) -> None:
    """Show what an endpoint authenticates with, and when its client certificate expires."""
    print_credentials(context.client().get(context.app_path(f"/endpoints/{endpoint_id}")))
