"""``BENCH_ONLY=retention``: statistics and search over ten million attempts, and a day dropped.

Loads, with ``INSERT ... SELECT generate_series`` (not the API), 40 days of history at scale 1:
``BENCH_RETENTION_ATTEMPTS`` attempts (10,000,000 x ``BENCH_SCALE``), two per delivery, five
deliveries (one per endpoint of five) per message, in the day partitions of ``attempts``.
``message_stats`` is kept by its trigger as on ingestion; ``attempt_stats`` is filled from
the loaded attempts with the engine's buckets and histogram (as migration 0008's backfill
does), in one statement.  Then it times,
in this process through the registration service's functions (the HTTP layer adds its own
few milliseconds on top):

* the statistics queries (``statistics()`` of the application and of an endpoint, windows
  1 h, 24 h and 7 d);
* the search queries (an endpoint's attempts by status code; deliveries by a payload field;
  deliveries by last status code), first page of 50;
* dropping the oldest day partition (``partitions.drop_partition``: the open-delivery check
  and the ``DROP``), and a whole retention run over the expired days.

Ends with one line::

    bench-retention: attempts=N stats_p99_ms=N search_p99_ms=N drop_day_ms=N load_s=N

It is not in the default run (``make bench``): loading takes minutes; name it in BENCH_ONLY.
"""

from __future__ import annotations

import gc
import os
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from bench import scenarios
from registration.services import deliveries, statistics
from webhooks_core.retention import partitions
from webhooks_core.retention.run import run_retention
from webhooks_core.settings import CoreSettings
from webhooks_core.statistics import WIDTHS

DAYS = 40
ENDPOINTS = 5
ATTEMPTS_PER_DELIVERY = 2
EVENT_TYPE = "retention.sample"
QUERIES = 60  # of each kind

MESSAGES = """
INSERT INTO messages (event_id, application_id, event_type, payload, occurred_at, source,
                      created_at)
SELECT 'ret_' || g, :app, :type, jsonb_build_object('person', jsonb_build_object('id', g)),
       :t0 + g * :step, 'http', :t0 + g * :step
FROM generate_series(1, :n) AS g
"""
DELIVERIES = """
INSERT INTO deliveries (message_id, endpoint_id, application_id, event_type, state,
                        attempt_count, last_attempt_at, last_status_code, delivered_at,
                        created_at, updated_at)
SELECT m.id, e.id, :app, :type,
       CASE WHEN m.created_at > now() - interval '1 hour' AND k = 1 THEN 'retrying'
            WHEN m.id % 97 = 0 THEN 'dead' ELSE 'delivered' END,
       2, m.created_at + interval '2 seconds',
       CASE WHEN m.id % 97 = 0 THEN 500 ELSE 200 END,
       m.created_at + interval '2 seconds', m.created_at, m.created_at
FROM messages m
CROSS JOIN LATERAL (SELECT id, row_number() OVER (ORDER BY id) AS k FROM endpoints
                    WHERE id = ANY(:endpoints)) AS e
WHERE m.event_type = :type
"""
ATTEMPTS = """
INSERT INTO attempts (delivery_id, endpoint_id, started_at, latency_ms, status_code, outcome)
SELECT d.id, d.endpoint_id, d.created_at + a * interval '1 second', 5 + (d.id % 400),
       CASE WHEN a = 1 THEN 503 WHEN d.last_status_code = 500 THEN 500 ELSE 200 END,
       CASE WHEN a = 1 OR d.last_status_code = 500 THEN 'http_error' ELSE 'success' END
FROM deliveries d CROSS JOIN generate_series(1, :per) AS a
WHERE d.event_type = :type
"""
BOUNDS = "ARRAY[5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]::float8[]"
HISTOGRAM = (
    "ARRAY["
    + ", ".join(
        f"count(*) FILTER (WHERE width_bucket(a.latency_ms, {BOUNDS}) = {i})::int"
        for i in range(13)
    )
    + "]"
)
# The engine's bucket widths (minute, hour, day), as a VALUES list.
_WIDTHS = ", ".join(f"({width})" for width in WIDTHS)
# From the attempts alone (the load makes every attempt's outcome tell its delivery's state:
# a 503 left it retrying, a 200 delivered, a 500 dead), which saves a join of ten million.
ATTEMPT_STATS = f"""
INSERT INTO attempt_stats (endpoint_id, width, bucket, event_type, outcome, status_class,
                           final_state, shard, application_id, attempts, latency_sum_ms,
                           latency_histogram)
SELECT a.endpoint_id, w.width,
       date_bin(make_interval(secs => w.width), a.started_at, TIMESTAMPTZ '2000-01-01'),
       :type, a.outcome, (a.status_code / 100)::text || 'xx',
       CASE a.status_code WHEN 503 THEN 'retrying' WHEN 500 THEN 'dead' ELSE 'delivered' END,
       0, :app, count(*), sum(a.latency_ms), {HISTOGRAM}
FROM attempts a CROSS JOIN (VALUES {_WIDTHS}) AS w(width)
WHERE a.endpoint_id = ANY(:endpoints)
GROUP BY 1, 2, 3, 5, 6, 7
"""  # noqa: S608 - constants only


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _load(bench: scenarios.Bench, endpoints: list[uuid.UUID], attempts: int) -> float:
    deliveries_count = attempts // ATTEMPTS_PER_DELIVERY
    messages = max(deliveries_count // ENDPOINTS, 1)
    now = datetime.now(UTC)
    t0 = now - timedelta(days=DAYS)
    step = timedelta(days=DAYS) / messages
    started = time.monotonic()
    sessions = sessionmaker(bench.engine)
    # Day partitions of the whole span first: rows go straight to their day.
    partitions.ensure_ahead(sessions, now.date(), 7, 10_000)
    for offset in range(DAYS + 1):
        partition = partitions.DayPartition((t0 + timedelta(days=offset)).date())
        with sessions() as session, session.begin():
            if session.scalar(text("SELECT to_regclass(:n)"), {"n": partition.name}) is None:
                partitions.create_partition(session, partition, 10_000)
    params: dict[str, Any] = {
        "app": bench.application_id,
        "type": EVENT_TYPE,
        "t0": t0,
        "step": step,
        "n": messages,
        "endpoints": endpoints,
        "per": ATTEMPTS_PER_DELIVERY,
    }
    with bench.engine.begin() as conn:
        conn.execute(text(MESSAGES), params)  # message_stats: by the trigger, as on ingest
    print(f"bench: retention: {messages} messages in {time.monotonic() - started:.0f} s")
    with bench.engine.begin() as conn:
        # Bulk load only: foreign keys of rows made right here are not checked again, and
        # no scheduler listens for the NOTIFY of new deliveries.
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(DELIVERIES), params)
        print(f"bench: retention: deliveries in {time.monotonic() - started:.0f} s")
        conn.execute(text(ATTEMPTS), params)
        print(f"bench: retention: attempts in {time.monotonic() - started:.0f} s")
        conn.execute(text(ATTEMPT_STATS), params)
    print(f"bench: retention: attempt_stats in {time.monotonic() - started:.0f} s")
    # As autovacuum would have by then: visibility maps (index-only scans) and statistics.
    with bench.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) messages, deliveries, attempts, attempt_stats"))
    return time.monotonic() - started


def _timed(call: Any) -> float:
    began = time.perf_counter()
    call()
    return (time.perf_counter() - began) * 1000


def _stats_queries(
    sessions: Any, app: uuid.UUID, endpoints: list[uuid.UUID]
) -> tuple[list[float], list[str]]:
    """The calls' times, and each call's label (its number, window and scope)."""
    samples, labels = [], []
    for n in range(QUERIES):
        window = ("1h", "24h", "7d")[n % 3]
        endpoint = random.choice(endpoints) if n % 2 else None
        samples.append(
            _timed(
                lambda w=window, e=endpoint: statistics.statistics(
                    sessions, window=w, application_id=app, endpoint_id=e
                )
            )
        )
        labels.append(f"#{n} {window} {'endpoint' if endpoint else 'application'}")
    return samples, labels


def _search_queries(
    sessions: Any, app: uuid.UUID, endpoints: list[uuid.UUID], messages: int
) -> list[float]:
    samples = []
    for _ in range(QUERIES):
        endpoint = random.choice(endpoints)
        samples.append(
            _timed(
                lambda e=endpoint: deliveries.list_attempts(
                    sessions,
                    application_id=app,
                    endpoint_id=e,
                    status_code=500,
                    limit=50,
                    cursor=None,
                )
            )
        )
        person = random.randint(1, messages)
        payload = deliveries.payload_containment("person.id", str(person))
        samples.append(
            _timed(
                lambda p=payload: deliveries.list_deliveries(
                    sessions,
                    application_id=app,
                    search=deliveries.DeliverySearch(payload=p),
                    limit=50,
                    cursor=None,
                )
            )
        )
        samples.append(
            _timed(
                lambda e=endpoint: deliveries.list_deliveries(
                    sessions,
                    application_id=app,
                    endpoint_id=e,
                    search=deliveries.DeliverySearch(status_code=500),
                    limit=50,
                    cursor=None,
                )
            )
        )
    return samples


def scenario_retention(bench: scenarios.Bench) -> dict[str, Any]:
    """Load the history, time the queries and the drop of a day (see the module)."""
    attempts = int(
        os.environ.get(
            "BENCH_RETENTION_ATTEMPTS", max(int(10_000_000 * bench.config.scale), 10_000)
        )
    )
    rows = bench.endpoints("ret", EVENT_TYPE, ENDPOINTS)
    endpoints = [row.id for row in rows]
    load_s = _load(bench, endpoints, attempts)
    sessions = sessionmaker(bench.engine)
    messages = attempts // ATTEMPTS_PER_DELIVERY // ENDPOINTS
    # As an API worker does after loading (registration-service/gunicorn.conf.py): what this
    # process holds now is kept out of the collector's full passes.  Without it, one of the
    # 60 calls met a full collection of the bench's own objects (about 100 ms here) and
    # that pause, not the query, was the p99.
    gc.collect()
    gc.freeze()
    stats_ms, stats_labels = _stats_queries(sessions, bench.application_id, endpoints)
    search_ms = _search_queries(sessions, bench.application_id, endpoints, messages)

    oldest = partitions.day_partitions(sessions())[0]
    with sessions() as session, session.begin():
        rows_in_day = session.scalar(text(f"SELECT count(*) FROM {oldest.name}"))  # noqa: S608
    began = time.perf_counter()
    with sessions() as session, session.begin():
        dropped = partitions.drop_partition(session, oldest, 10_000)
        checked_and_dropped = time.perf_counter()
    drop_day_ms = (time.perf_counter() - began) * 1000
    drop_day_commit_ms = (time.perf_counter() - checked_and_dropped) * 1000
    settings = CoreSettings.from_env(
        database_url=bench.engine.url.render_as_string(False), broker_url="amqp://unused"
    )
    began = time.perf_counter()
    report = run_retention(sessions, settings)
    run_s = time.perf_counter() - began
    result = {
        "attempts": attempts,
        "load_s": round(load_s, 1),
        "stats_p99_ms": round(_p99(stats_ms), 1),
        "stats_p50_ms": round(sorted(stats_ms)[len(stats_ms) // 2], 1),
        # Which calls the p99 is made of (with 60 samples, the slowest is the p99).
        "stats_slowest": [
            f"{label}: {ms:.1f} ms"
            for ms, label in sorted(zip(stats_ms, stats_labels, strict=True))[-3:][::-1]
        ],
        "search_p99_ms": round(_p99(search_ms), 1),
        "search_p50_ms": round(sorted(search_ms)[len(search_ms) // 2], 1),
        "drop_day_ms": round(drop_day_ms, 1),
        "drop_day_commit_ms": round(drop_day_commit_ms, 1),  # of drop_day_ms
        "drop_day_rows": rows_in_day,
        "drop_day_dropped": dropped,
        "retention_run_s": round(run_s, 2),
        "retention_run": report.line(),
    }
    print(f"bench: retention done: {result}", flush=True)
    print(retention_line(result), flush=True)
    return result


def retention_line(result: dict[str, Any]) -> str:
    """``bench-retention: attempts=N stats_p99_ms=N search_p99_ms=N drop_day_ms=N load_s=N``"""
    return (
        f"bench-retention: attempts={result['attempts']} "
        f"stats_p99_ms={result['stats_p99_ms']:.0f} search_p99_ms={result['search_p99_ms']:.0f} "
        f"drop_day_ms={result['drop_day_ms']:.0f} load_s={result['load_s']:.0f}"
    )
