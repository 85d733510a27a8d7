"""``webhooks endpoints oauth|tls|credentials`` against the real API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import trustme
from sqlalchemy.orm import Session, sessionmaker

from registration.config import APISettings
from registration.services import endpoints

SECRET = "cli-oauth-secret-0123456789"


def test_oauth_and_tls_from_the_command_line(
    webhooks: Any, tenant: Any, db: sessionmaker[Session], settings: APISettings, tmp_path: Path
) -> None:
    endpoint, _ = endpoints.upsert_endpoint(
        db, settings, tenant.id, {"url": "https://127.0.0.1:9/hook"}
    )
    eid = str(endpoint.id)
    missing = webhooks("endpoints", "oauth", eid, "--token-url", "https://auth.example/token",
                       "--client-id", "platform")  # fmt: skip
    assert missing.exit_code != 0
    assert "client_secret" in missing.output  # the API's field error, in plain words

    done = webhooks(
        "endpoints", "oauth", eid, "--token-url", "https://auth.example/token",
        "--client-id", "platform", "--scope", "a", "--scope", "b",
        WEBHOOKS_OAUTH_CLIENT_SECRET=SECRET,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert done.output.startswith(
        "oauth: client platform at https://auth.example/token (client_secret_basic, scopes a b)"
    )
    assert SECRET not in done.output

    ca = trustme.CA()
    leaf = ca.issue_cert("cli.example", common_name="cli.example",
                         not_after=datetime.now(UTC) + timedelta(days=90))  # fmt: skip
    (tmp_path / "cert.pem").write_bytes(leaf.cert_chain_pems[0].bytes())
    (tmp_path / "key.pem").write_bytes(leaf.private_key_pem.bytes())
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem.bytes())
    files = {name: str(tmp_path / f"{name}.pem") for name in ("cert", "key", "ca")}
    tls = webhooks(
        "endpoints", "tls", eid, "--cert", files["cert"], "--key", files["key"], "--ca", files["ca"]
    )
    assert tls.exit_code == 0, tls.output
    assert "tls: client certificate CN=cli.example" in tls.output
    assert "with a CA bundle" in tls.output

    shown = webhooks("endpoints", "credentials", eid)
    assert shown.exit_code == 0, shown.output
    assert "oauth: client platform" in shown.output
    expiry = (datetime.now(UTC) + timedelta(days=90)).strftime("%Y-%m-%d")
    assert f", expires {expiry} " in shown.output
    assert "PRIVATE KEY" not in shown.output

    wrong_key = tmp_path / "other.pem"
    wrong_key.write_bytes(ca.issue_cert("x.example").private_key_pem.bytes())
    refused = webhooks("endpoints", "tls", eid, "--cert", str(tmp_path / "cert.pem"),
                       "--key", str(wrong_key))  # fmt: skip
    assert refused.exit_code != 0
    assert "tls.client_key" in refused.output

    removed = webhooks("endpoints", "oauth", eid, "--remove")
    assert removed.exit_code == 0
    assert "oauth: none" in removed.output
    removed = webhooks("endpoints", "tls", eid, "--remove")
    assert "tls: none" in removed.output
