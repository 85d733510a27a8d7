"""``python -m bench.claim_siblings [BACKLOG]``: how long one claim takes when one endpoint's
backlog fills its application's rows and the endpoint can take only a few of them.

Only PostgreSQL is used (no broker, no workers): the database ``webhooks_bench_siblings`` is
recreated and filled directly with one application, an endpoint limited to 10 deliveries a
second with ``BACKLOG`` (default 100,000) due deliveries, and 50 other endpoints of the same
application with 20 due deliveries each, due after the whole backlog.  Then five claims are
timed, each rolled back so the next one finds the same rows::

    claim-siblings: backlog=N siblings=50 claim_ms=N,N,N,N,N deliveries=N batches=N
        sibling_deliveries=N  (one line)

``sibling_deliveries``: of the last claim's deliveries, those of the other 50 endpoints (none
before the claim read them apart, docs/delivery.md).
"""

from __future__ import annotations

import sys

from sqlalchemy import Engine, text

from bench.claim_keys import fill_and_time, names_of

SIBLINGS = 50
SIBLING_DUE = 20
NAMES = names_of("siblings")


def fill(engine: Engine, backlog: int) -> str:
    """The application, its limited endpoint's backlog and its siblings' rows; the limited
    endpoint's id."""
    with engine.begin() as conn:
        app = conn.execute(
            text(
                "INSERT INTO applications (id, name) VALUES (gen_random_uuid(), 'siblings')"
                " RETURNING id"
            )
        ).scalar_one()
        limited = conn.execute(
            text(
                "INSERT INTO endpoints (id, application_id, url, rate_limit)"
                " VALUES (gen_random_uuid(), :app, 'http://127.0.0.1:9/limited', 10)"
                " RETURNING id"
            ),
            {"app": app},
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO endpoints (id, application_id, url)"
                " SELECT gen_random_uuid(), :app, 'http://127.0.0.1:9/sibling-' || g"
                " FROM generate_series(1, :n) g"
            ),
            {"app": app, "n": SIBLINGS},
        )
        conn.execute(
            text(
                "INSERT INTO messages (event_id, application_id, event_type, payload, source,"
                " occurred_at) SELECT 'e' || g, :app, 'bench.claim', '{}'::jsonb, 'http', now()"
                " FROM generate_series(1, :m) g"
            ),
            {"app": app, "m": backlog + SIBLINGS * SIBLING_DUE},
        )
        # The backlog an hour old, the siblings' rows a minute old: all due, the backlog first.
        conn.execute(
            text(
                "INSERT INTO deliveries (message_id, endpoint_id, application_id, event_type,"
                " state, next_attempt_at)"
                " SELECT m.id, CASE WHEN m.id <= :backlog THEN :limited ELSE"
                " (SELECT id FROM endpoints WHERE url = 'http://127.0.0.1:9/sibling-'"
                "  || (1 + m.id % :n)) END,"
                " :app, m.event_type, 'pending',"
                " CASE WHEN m.id <= :backlog THEN now() - interval '1 hour'"
                " ELSE now() - interval '1 minute' END FROM messages m"
            ),
            {"backlog": backlog, "limited": limited, "n": SIBLINGS, "app": app},
        )
        conn.execute(text("ANALYZE"))
    return str(limited)


def main() -> int:
    """Fill, then time five claims (module doc)."""
    backlog = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    limited, timed, engine = fill_and_time(NAMES, lambda engine: fill(engine, backlog))
    with engine.connect() as conn:
        ids = [i for c in timed.claims for i in c.delivery_ids]
        siblings = conn.execute(
            text("SELECT count(*) FROM deliveries WHERE id = ANY(:ids) AND endpoint_id <> :e"),
            {"ids": ids, "e": limited},
        ).scalar_one()
    print(
        f"claim-siblings: backlog={backlog} siblings={SIBLINGS} {timed.line}"
        f" sibling_deliveries={siblings}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
