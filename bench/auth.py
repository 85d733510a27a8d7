"""The ``auth`` scenario: what endpoint authentication costs the delivery engine.

The same number of stored deliveries, in turn, to endpoints that use

* ``hmac``: the Standard Webhooks signature only, over HTTP (the bench receiver);
* ``oauth``: OAuth 2.0 client credentials as well (the token cached by each worker process),
  over HTTP, with a token server on 127.0.0.1 (:mod:`bench.tokens`) that counts the tokens it
  issues, and a receiver that refuses any request without one of them (``bearer`` paths);
* ``https``: HTTPS to a receiver whose certificate a test CA issued, trusted through the
  endpoints' own CA bundle (server TLS only);
* ``mtls``: mutual TLS: the receiver requires a client certificate, the endpoints have one.

Every receiver still verifies every signature.  Endpoints get their OAuth and TLS settings
through the API's own code (:mod:`registration.services.endpoint_credentials`: checked, the
secret and the private key sealed), certificates come from ``trustme``.  Each variant has a
warm-up round (tokens fetched, TLS contexts built, connections opened), then a measured one:
delivered rows per second and CPU milliseconds per delivery of the workers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
from sqlalchemy import update

from bench import seed
from bench.receiver import ReceiverTLS, RunningReceiver, derive_client_secret, endpoint_path
from bench.report import AUTH_VARIANTS
from bench.scenarios import Bench, _tree_cpu, drain
from bench.tokens import TokenServer
from registration.config import APISettings
from registration.services.endpoint_credentials import oauth_columns, tls_columns
from webhooks_core.models import Endpoint

VARIANTS = AUTH_VARIANTS  # in the order they run
WARM_UP_EVENTS = 4  # per endpoint: every worker process meets every endpoint


@dataclass(frozen=True)
class BenchPKI:
    """A test CA (``trustme``), a server certificate for 127.0.0.1 and a client certificate,
    as PEM strings and files under ``directory``."""

    ca_pem: str
    client_certificate_pem: str
    client_key_pem: str
    server: ReceiverTLS
    mutual: ReceiverTLS

    @classmethod
    def create(cls, directory: Path) -> BenchPKI:
        """Issue the certificates and write their files."""
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="webhooks bench")
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert("bench-client.invalid")
        files = {
            "ca": ca.cert_pem,
            "server": server.cert_chain_pems[0],
            "server-key": server.private_key_pem,
            "client": client.cert_chain_pems[0],
            "client-key": client.private_key_pem,
        }
        paths = {name: directory / f"{name}.pem" for name in files}
        for name, blob in files.items():
            blob.write_to_path(str(paths[name]))
        server_tls = ReceiverTLS(paths["server"], paths["server-key"], paths["ca"])
        mutual = ReceiverTLS(
            paths["server"],
            paths["server-key"],
            paths["ca"],
            client_ca=paths["ca"],
            client_certificate=paths["client"],
            client_key=paths["client-key"],
        )
        return cls(
            ca_pem=ca.cert_pem.bytes().decode(),
            client_certificate_pem=client.cert_chain_pems[0].bytes().decode(),
            client_key_pem=client.private_key_pem.bytes().decode(),
            server=server_tls,
            mutual=mutual,
        )


@dataclass(frozen=True)
class Variant:
    """One way of authenticating: where its endpoints point and the settings they get."""

    name: str
    receiver: RunningReceiver
    spec: str  # the receiver's behaviour (bench.receiver.Behaviour)
    settings: Callable[[str], dict[str, Any]]  # endpoint path -> credential column values


@contextmanager
def auth_services(bench: Bench) -> Iterator[tuple[TokenServer, dict[str, Variant]]]:
    """The token server, the two TLS receivers and the four variants; stopped on exit."""
    directory = bench.out_dir / "auth"
    pki = BenchPKI.create(directory / "pki")
    receiver_seed = bench.receiver.seed
    processes = bench.config.receiver_processes
    # The API's checks of credentials, as the run's API would make them.
    platform = APISettings.from_env(
        database_url=bench.env["WEBHOOKS_DATABASE_URL"],
        broker_url=bench.env["WEBHOOKS_BROKER_URL"],
        allowed_target_networks=bench.env["WEBHOOKS_ALLOWED_TARGET_NETWORKS"].split(","),
    )
    with ExitStack() as stack:
        tokens = stack.enter_context(TokenServer(seed=receiver_seed))
        https, mtls = (
            stack.enter_context(
                RunningReceiver(directory / name, processes=processes, seed=receiver_seed, tls=tls)
            )
            for name, tls in (("https", pki.server), ("mtls", pki.mutual))
        )

        def oauth(path: str) -> dict[str, Any]:
            given = {
                "token_url": tokens.url,
                "client_id": path,
                "client_secret": derive_client_secret(receiver_seed, path),
            }
            return oauth_columns(platform, given, None)

        variants = {
            "hmac": Variant("hmac", bench.receiver, "ok", lambda _path: {}),
            "oauth": Variant("oauth", bench.receiver, "bearer", oauth),
            "https": Variant(
                "https", https, "ok", lambda _path: tls_columns({"ca_bundle": pki.ca_pem})
            ),
            "mtls": Variant(
                "mtls",
                mtls,
                "ok",
                lambda _path: tls_columns(
                    {
                        "client_certificate": pki.client_certificate_pem,
                        "client_key": pki.client_key_pem,
                        "ca_bundle": pki.ca_pem,
                    }
                ),
            ),
        }
        yield tokens, variants


def create_endpoints(bench: Bench, variant: Variant, count: int) -> list[seed.EndpointRow]:
    """``count`` endpoints of ``variant`` subscribed to ``bench.auth.<name>``, each with its
    signing secret and the variant's credentials."""
    event_type = f"bench.auth.{variant.name}"
    seed.ensure_event_types(bench.engine, [event_type])
    paths = [
        (endpoint_path(variant.spec, f"auth-{variant.name}-{i:04d}"), [event_type])
        for i in range(count)
    ]
    receiver = variant.receiver
    rows = seed.create_endpoints(
        bench.engine, bench.application_id, receiver.url(""), receiver.seed, paths
    )
    with bench.engine.begin() as conn:
        for row in rows:
            columns = variant.settings(row.path)
            if columns:
                conn.execute(update(Endpoint).where(Endpoint.id == row.id).values(**columns))
    return rows


def _receiver_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in ("received", "ok", "bad_signature")}


def measure(
    bench: Bench, variant: Variant, endpoints: int, events: int, tokens: TokenServer
) -> dict[str, Any]:
    """A warm-up round, then ``events`` per endpoint measured; the endpoints are retired."""
    rows = create_endpoints(bench, variant, endpoints)
    event_type = f"bench.auth.{variant.name}"
    try:
        tokens_at_start = tokens.issued_total
        warm = drain(bench, event_type, rows, WARM_UP_EVENTS)
        tokens_after_warm_up = tokens.issued_total
        before = variant.receiver.stats()
        receiver_cpu = _tree_cpu(variant.receiver.pid)
        main = drain(bench, event_type, rows, events)
        receiver_cpu = _tree_cpu(variant.receiver.pid) - receiver_cpu
        after = variant.receiver.stats()
    finally:
        seed.retire(bench.engine, [row.id for row in rows])
    cpu = main["cpu_ms_per_delivery"]
    if variant.receiver is not bench.receiver and main["delivered"] > 0:
        # drain() samples the bench receiver; this variant's receiver is its own TLS one.
        cpu["receiver_ms"] = round(receiver_cpu * 1000 / main["delivered"], 3)
    worker_ms = cpu.get("worker_ms", 0.0)
    return {
        **main,
        "worker_ms_per_delivery": worker_ms,
        "receiver": _receiver_delta(before, after),
        "tokens_issued": {
            "warm_up": tokens_after_warm_up - tokens_at_start,
            "measured": tokens.issued_total - tokens_after_warm_up,
        },
        "warm_up": {
            key: warm[key]
            for key in ("deliveries", "delivered", "seconds", "deliveries_per_s", "finished")
        },
    }


def scenario_auth(bench: Bench) -> dict[str, Any]:
    """Plain HMAC, OAuth (cached), HTTPS and mutual TLS, the same deliveries each."""
    cfg = bench.config
    endpoints = cfg.auth_endpoints
    events = max(math.ceil(cfg.auth_deliveries / endpoints), 1)
    result: dict[str, Any] = {
        "endpoints_per_variant": endpoints,
        "deliveries_per_variant": events * endpoints,
        "warm_up_deliveries_per_variant": WARM_UP_EVENTS * endpoints,
        "workers": cfg.workers,
    }
    with auth_services(bench) as (tokens, variants):
        for name in VARIANTS:
            print(f"bench: auth: {name} ...", flush=True)
            measured = measure(bench, variants[name], endpoints, events, tokens)
            result[name] = measured
            result[f"{name}_per_s"] = measured["deliveries_per_s"]
            result[f"{name}_ms"] = measured["worker_ms_per_delivery"]
            if name == "oauth":
                result["oauth_tokens"] = tokens.issued_total
        result["oauth_tokens_refused"] = tokens.refused
    # One token per endpoint and worker process (each caches its own), over both rounds.
    result["oauth_tokens_expected"] = endpoints * cfg.workers
    return result
