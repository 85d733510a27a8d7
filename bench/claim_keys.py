"""``python -m bench.claim_keys [KEYS]``: how long one claim takes with many open ordering keys.

Only PostgreSQL is used (no broker, no workers): the database ``webhooks_bench_claim`` is
recreated and filled directly with ``KEYS`` (default 200,000) open keys over 20 endpoints,
each key with one due delivery and a tenth of them with a second one parked behind it (as
fan-out parks it, webhooks_core.deliveries.ordering), then five claims are timed, each rolled
back so the next one finds the same rows.  Prints one line per claim and, per statement, the
milliseconds of the first claim's round trips::

    claim-keys: keys=200000 parked=20000 claim_ms=N,N,N,N,N deliveries=N batches=N

This is the cost that grew with the open keys before parking (a claim read every key's head).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import sessionmaker

from bench.stack import ServiceNames, reset_services
from delivery.config import DeliverySettings
from delivery.scheduling import Claim, claim_cycle
from webhooks_core.messages.envelope import utcnow

ENDPOINTS = 20
T = TypeVar("T")


def names_of(run: str) -> ServiceNames:
    """The databases and vhost of a claim timer's run ``run``."""
    return ServiceNames(
        f"webhooks_bench_{run}", f"webhooks_producer_bench_{run}", f"webhooks_bench_{run}"
    )


NAMES = names_of("claim")


def fill(engine: Engine, keys: int) -> int:
    """One application, ``ENDPOINTS`` endpoints, ``keys`` keys (one endpoint each), a due
    delivery per key and a parked one behind every tenth key; the parked count."""
    parked = keys // 10
    with engine.begin() as conn:
        app = conn.execute(
            text(
                "INSERT INTO applications (id, name) VALUES (gen_random_uuid(), 'claim-keys')"
                " RETURNING id"
            )
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO endpoints (id, application_id, url, max_in_flight)"
                " SELECT gen_random_uuid(), :app, 'http://127.0.0.1:9/claim-' || g, 4"
                " FROM generate_series(1, :n) g"
            ),
            {"app": app, "n": ENDPOINTS},
        )
        conn.execute(
            text(
                "INSERT INTO messages (event_id, application_id, event_type, payload, source,"
                " ordering_key, occurred_at)"
                " SELECT 'e' || g, :app, 'bench.claim', '{}'::jsonb, 'http', 'k' || (g % :keys),"
                " now() FROM generate_series(1, :m) g"
            ),
            {"app": app, "keys": keys, "m": keys + parked},
        )
        endpoints = [str(row[0]) for row in conn.execute(text("SELECT id FROM endpoints"))]
        conn.execute(
            text(
                "INSERT INTO deliveries (message_id, endpoint_id, application_id, event_type,"
                " state, next_attempt_at, ordering_key)"
                " SELECT m.id,"
                " (CAST(:endpoints AS uuid[]))[1 + (hashtext(m.ordering_key) & 65535) % :n],"
                " :app, m.event_type, 'pending',"
                " CASE WHEN m.id > :keys THEN NULL ELSE now() - interval '1 minute' END,"
                " m.ordering_key FROM messages m ORDER BY m.id"
            ),
            {"endpoints": endpoints, "n": ENDPOINTS, "app": app, "keys": keys},
        )
        conn.execute(text("ANALYZE"))
    return parked


def time_claims(engine: Engine, settings: DeliverySettings, count: int = 5) -> ClaimTimes:
    """Time ``count`` claims, each rolled back so the next finds the same rows."""
    statements: list[tuple[float, str]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _started(conn, cursor, statement, params, context, many):  # type: ignore[no-untyped-def]
        conn.info["started"] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _ended(conn, cursor, statement, params, context, many):  # type: ignore[no-untyped-def]
        statements.append((time.perf_counter() - conn.info["started"], statement))

    sessions = sessionmaker(engine)
    times: list[float] = []
    claims: list[Claim] = []
    for _ in range(count):
        with sessions() as session:
            started = time.perf_counter()
            claims = claim_cycle(session, settings, utcnow()).claims
            times.append(time.perf_counter() - started)
            session.rollback()
    return ClaimTimes(times, claims, statements[: len(statements) // count])


@dataclass(frozen=True)
class ClaimTimes:
    """Seconds per claim, the last claim's batches, the first claim's statements."""

    seconds: list[float]
    claims: list[Claim]
    statements: list[tuple[float, str]]

    def print_statements(self) -> None:
        for seconds, statement in self.statements:
            print(f"  {seconds * 1000:7.1f} ms  {' '.join(statement.split())[:72]}")

    @property
    def line(self) -> str:
        """``claim_ms=N,N,... deliveries=N batches=N``"""
        claimed = sum(len(c.delivery_ids) for c in self.claims)
        milliseconds = ",".join(f"{t * 1000:.0f}" for t in self.seconds)
        return f"claim_ms={milliseconds} deliveries={claimed} batches={len(self.claims)}"


def settings_for(names: ServiceNames) -> DeliverySettings:
    """A fresh database for ``names`` and the settings that use it."""
    env = {
        **os.environ,
        "WEBHOOKS_DATABASE_URL": names.database_url,
        "WEBHOOKS_BROKER_URL": names.broker_url,
    }
    reset_services(names, env, producer=False)
    return DeliverySettings(database_url=names.database_url, broker_url=names.broker_url)


def fill_and_time(names: ServiceNames, fill: Callable[[Engine], T]) -> tuple[T, ClaimTimes, Engine]:
    """A fresh database for ``names``, filled by ``fill``; five claims timed (their
    statements printed); what ``fill`` returned, the timings and the database's engine."""
    settings = settings_for(names)
    engine = create_engine(names.database_url)
    filled = fill(engine)
    timed = time_claims(engine, settings)
    timed.print_statements()
    return filled, timed, engine


def main() -> int:
    """Fill, then time five claims (module doc)."""
    keys = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    parked, timed, _ = fill_and_time(NAMES, lambda engine: fill(engine, keys))
    print(f"claim-keys: keys={keys} parked={parked} {timed.line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
