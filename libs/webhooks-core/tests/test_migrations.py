"""The one migration history builds the schema from an empty database and matches the models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from webhooks_core.migrations import downgrade, upgrade
from webhooks_core.models import Base
from webhooks_core.settings import CoreSettings


@pytest.fixture
def scratch_settings(settings: CoreSettings) -> Iterator[CoreSettings]:
    scratch = f"{make_url(settings.database_url).database}_migrations"
    admin = create_engine(
        make_url(settings.database_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {scratch}"))
    url = make_url(settings.database_url).set(database=scratch)
    yield settings.model_copy(update={"database_url": url.render_as_string(hide_password=False)})
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"))
    admin.dispose()


def _not_a_partition(name: str | None, type_: str, parent_names: object) -> bool:
    """The attempts' partitions (made by migration 0011 and retention) are no model's table."""
    return not (type_ == "table" and name is not None and name.startswith("attempts_"))


def test_upgrade_from_empty_matches_models_and_downgrades(scratch_settings: CoreSettings) -> None:
    upgrade(scratch_settings)
    engine = create_engine(scratch_settings.database_url)
    with engine.connect() as conn:
        assert set(Base.metadata.tables) <= set(inspect(conn).get_table_names())
        context = MigrationContext.configure(conn, opts={"include_name": _not_a_partition})
        diff = compare_metadata(context, Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"

    downgrade(scratch_settings)
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    engine.dispose()


EVENT_IDS_PER_APPLICATION = "0004_event_ids_per_application"


def test_event_ids_per_application_upgrade_and_downgrade_with_rows(
    scratch_settings: CoreSettings,
) -> None:
    upgrade(scratch_settings, "0003")
    engine = create_engine(scratch_settings.database_url)

    def store(event_id: str, app: str | None) -> None:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO messages (event_id, application_id, event_type, payload,"
                    " occurred_at, source) VALUES (:event_id, :app, 't.x', '{}', now(), 'http')"
                ),
                {"event_id": event_id, "app": app},
            )

    with engine.begin() as conn:
        apps = [
            str(
                conn.scalar(
                    text(
                        "INSERT INTO applications (id, name) VALUES (gen_random_uuid(), :name)"
                        " RETURNING id"
                    ),
                    {"name": name},
                )
            )
            for name in ("acme", "globex")
        ]
    store("evt_1", apps[0])
    store("evt_broadcast", None)
    with pytest.raises(IntegrityError):  # before: one id across every application
        store("evt_1", apps[1])

    upgrade(scratch_settings, EVENT_IDS_PER_APPLICATION)
    store("evt_1", apps[1])  # the same id in another application
    for event_id, app in (("evt_1", apps[0]), ("evt_1", apps[1]), ("evt_broadcast", None)):
        with pytest.raises(IntegrityError):  # still once per application, and per broadcast
            store(event_id, app)

    # Down again only once no two applications share an id; nothing is deleted for it.
    with pytest.raises(RuntimeError, match="more than one application"):
        downgrade(scratch_settings, "0003")
    with engine.begin() as conn:
        assert conn.scalar(text("SELECT count(*) FROM messages")) == 3
        conn.execute(
            text("DELETE FROM messages WHERE event_id = 'evt_1' AND application_id = :app"),
            {"app": apps[1]},
        )
    downgrade(scratch_settings, "0003")
    with pytest.raises(IntegrityError):
        store("evt_1", apps[1])
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM messages")) == 2
    engine.dispose()


def test_sealing_upgrade_seals_every_secret_and_credential_header_and_downgrade_restores(
    scratch_settings: CoreSettings,
) -> None:
    from webhooks_core.endpoints.sealing import key_ring

    upgrade(scratch_settings, "0005_lease_expiries")
    engine = create_engine(scratch_settings.database_url)
    secrets = [f"whsec_{n:02d}" + "A" * 32 for n in range(25)]
    headers = {"X-Team": "billing", "Authorization": "Basic dXNlcjpwYXNz", "X-Api-Key": "k-123"}
    with engine.begin() as conn:
        app = conn.scalar(
            text("INSERT INTO applications (id, name) VALUES (gen_random_uuid(), 'a') RETURNING id")
        )
        endpoint = conn.scalar(
            text(
                "INSERT INTO endpoints (id, application_id, url, headers) VALUES"
                " (gen_random_uuid(), :app, 'http://x/', CAST(:h AS jsonb)) RETURNING id"
            ),
            {"app": app, "h": json.dumps(headers)},
        )
        for secret in secrets:
            conn.execute(
                text(
                    "INSERT INTO endpoint_secrets (id, endpoint_id, secret)"
                    " VALUES (gen_random_uuid(), :e, :s)"
                ),
                {"e": endpoint, "s": secret},
            )

    upgrade(scratch_settings, "0006")
    with engine.connect() as conn:
        stored = [s for (s,) in conn.execute(text("SELECT secret FROM endpoint_secrets"))]
        row = conn.execute(text("SELECT headers, sealed_headers FROM endpoints")).one()
    assert sorted(key_ring().unseal(s) for s in stored) == secrets  # none lost, none in clear
    assert not any(secret in s for secret in secrets for s in stored)
    assert row.headers == {"X-Team": "billing"}
    assert json.loads(key_ring().unseal(row.sealed_headers)) == {
        "Authorization": "Basic dXNlcjpwYXNz",
        "X-Api-Key": "k-123",
    }

    downgrade(scratch_settings, "0005_lease_expiries")
    with engine.connect() as conn:
        assert sorted(s for (s,) in conn.execute(text("SELECT secret FROM endpoint_secrets"))) == (
            secrets
        )
        assert conn.scalar(text("SELECT headers FROM endpoints")) == headers
    engine.dispose()


RETENTION = "0011"
BEFORE_RETENTION = "0010"


def _attempt_ids(engine: Any) -> list[int]:
    with engine.connect() as conn:
        return [i for (i,) in conn.execute(text("SELECT id FROM attempts ORDER BY id"))]


def _relkind(engine: Any, table: str) -> str:
    with engine.connect() as conn:
        return str(
            conn.scalar(text("SELECT relkind FROM pg_class WHERE relname = :t"), {"t": table})
        )


def _new_attempt(engine: Any, delivery: int, endpoint: Any) -> int:
    with engine.begin() as conn:
        return int(
            conn.scalar(
                text(
                    "INSERT INTO attempts (delivery_id, endpoint_id, started_at, latency_ms,"
                    " outcome) VALUES (:d, :e, now(), 1, 'success') RETURNING id"
                ),
                {"d": delivery, "e": endpoint},
            )
        )


def _application_and_endpoint(conn: Any) -> tuple[Any, Any]:
    """A new application and an endpoint of it, by SQL (the models may be ahead of the
    schema a migration test stands at): their ids."""
    app = conn.scalar(
        text("INSERT INTO applications (id, name) VALUES (gen_random_uuid(), 'a') RETURNING id")
    )
    endpoint = conn.scalar(
        text(
            "INSERT INTO endpoints (id, application_id, url) VALUES"
            " (gen_random_uuid(), :app, 'http://x/') RETURNING id"
        ),
        {"app": app},
    )
    return app, endpoint


def test_retention_partitions_attempts_keeping_every_row_and_back(
    scratch_settings: CoreSettings,
) -> None:
    upgrade(scratch_settings, BEFORE_RETENTION)
    engine = create_engine(scratch_settings.database_url)
    with engine.begin() as conn:
        app, endpoint = _application_and_endpoint(conn)
        conn.execute(
            text(
                "INSERT INTO messages (event_id, application_id, event_type, payload,"
                " occurred_at, source) SELECT 'evt_' || n, :app, 't.x', '{}', now(), 'http'"
                " FROM generate_series(1, 3) n"
            ),
            {"app": app},
        )
        conn.execute(
            text(
                "INSERT INTO deliveries (message_id, endpoint_id, application_id, event_type,"
                " state) SELECT id, :e, :app, 't.x', 'delivered' FROM messages"
            ),
            {"app": app, "e": endpoint},
        )
        # 200 attempts over the last 60 days, then some deleted: ids with gaps.
        conn.execute(
            text(
                "INSERT INTO attempts (delivery_id, endpoint_id, started_at, latency_ms, outcome)"
                " SELECT d.id, :e, now() - n * interval '7 hours', n, 'success'"
                " FROM generate_series(1, 200) n, LATERAL (SELECT min(id) AS id FROM deliveries) d"
            ),
            {"e": endpoint},
        )
        conn.execute(text("DELETE FROM attempts WHERE id % 10 = 0"))
        delivery = conn.scalar(text("SELECT max(id) FROM deliveries"))
    before = _attempt_ids(engine)
    assert len(before) == 180

    upgrade(scratch_settings, RETENTION)
    assert _relkind(engine, "attempts") == "p"
    assert _attempt_ids(engine) == before  # every row, with its id
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM attempts_default")) == 0
        days = conn.scalar(
            text("SELECT count(*) FROM pg_inherits WHERE inhparent = 'attempts'::regclass")
        )
        assert days > 60  # a partition per day with rows, and the week ahead (and default)
        assert conn.scalar(text("SELECT count(*) FROM messages")) == 3
    assert _new_attempt(engine, delivery, endpoint) > 200  # the same numbers go on
    with pytest.raises(IntegrityError):  # the foreign key holds on the partitions
        _new_attempt(engine, 999_999, endpoint)
    with engine.begin() as conn:  # and cascades from a deleted delivery
        conn.execute(text("DELETE FROM deliveries WHERE id = :d"), {"d": delivery})
        assert (
            conn.scalar(
                text("SELECT count(*) FROM attempts WHERE delivery_id = :d"), {"d": delivery}
            )
            == 0
        )
    after = _attempt_ids(engine)

    downgrade(scratch_settings, BEFORE_RETENTION)
    assert _relkind(engine, "attempts") == "r"
    assert _attempt_ids(engine) == after
    with engine.connect() as conn:
        first_delivery = int(conn.scalar(text("SELECT min(id) FROM deliveries")))
    assert _new_attempt(engine, first_delivery, endpoint) > 201  # still the same numbers
    engine.dispose()


STATISTICS_DAYS = "0015_statistics_day_rows"
BEFORE_STATISTICS_DAYS = "0014_due_by_application"
_DAY_ROWS = text(
    "SELECT bucket, event_type, outcome, shard, attempts, latency_sum_ms, latency_histogram"
    " FROM attempt_stats WHERE width = 86400 ORDER BY bucket, outcome"
)
_MESSAGE_DAYS = text(
    "SELECT bucket, sum(messages) FROM message_stats WHERE width = 86400 GROUP BY 1 ORDER BY 1"
)


def _messages(conn: Any, app: Any, created_at: str, n: int) -> None:
    conn.execute(
        text(
            "INSERT INTO messages (event_id, application_id, event_type, payload, occurred_at,"
            " source, created_at) SELECT 'evt_' || gen_random_uuid(), :app, 't.x', '{}',"
            " now(), 'http', CAST(:at AS timestamptz) FROM generate_series(1, :n)"
        ),
        {"app": app, "at": created_at, "n": n},
    )


def test_statistics_day_rows_are_counted_from_the_hour_rows_and_back(
    scratch_settings: CoreSettings,
) -> None:
    upgrade(scratch_settings, BEFORE_STATISTICS_DAYS)
    engine = create_engine(scratch_settings.database_url)
    with engine.begin() as conn:
        app, endpoint = _application_and_endpoint(conn)
        # Hour rows of two days, two shards of one hour, and a minute row that must not
        # count twice; messages through the trigger of 0008 (minute and hour rows).
        for bucket, shard, outcome, attempts, last in (
            ("2026-11-29T23:00:00Z", 0, "success", 6, 0),
            ("2026-11-30T00:00:00Z", 3, "success", 10, 4),
            ("2026-11-30T00:00:00Z", 5, "success", 1, 1),
            ("2026-11-30T17:00:00Z", 1, "timeout", 2, 2),
        ):
            conn.execute(
                text(
                    "INSERT INTO attempt_stats (endpoint_id, width, bucket, event_type, outcome,"
                    " status_class, final_state, shard, application_id, attempts,"
                    " latency_sum_ms, latency_histogram) VALUES (:e, 3600, :bucket, 't.x',"
                    " :outcome, '2xx', 'delivered', :shard, :app, :n, :n * 1.5,"
                    " ARRAY[1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, :last])"
                ),
                {"e": endpoint, "app": app, "bucket": bucket, "shard": shard,
                 "outcome": outcome, "n": attempts, "last": last},
            )  # fmt: skip
        conn.execute(
            text(
                "INSERT INTO attempt_stats SELECT endpoint_id, 60, bucket, event_type, outcome,"
                " status_class, final_state, shard, application_id, attempts, latency_sum_ms,"
                " latency_histogram FROM attempt_stats WHERE width = 3600"
            )
        )
        _messages(conn, app, "2026-11-29T23:59:00Z", 2)
        _messages(conn, app, "2026-11-30T08:00:00Z", 3)

    upgrade(scratch_settings, STATISTICS_DAYS)
    with engine.begin() as conn:
        rows = [tuple(r) for r in conn.execute(_DAY_ROWS)]
        day1, day2 = rows[0][0], rows[1][0]
        assert (day1.isoformat(), day2.isoformat()) == (
            "2026-11-29T00:00:00+00:00",
            "2026-11-30T00:00:00+00:00",
        )
        # One row per key and day, shard 0: shards and hours summed, histograms too.
        assert [r[1:] for r in rows] == [
            ("t.x", "success", 0, 6, 9.0, [1, 2, 3] + [0] * 10),
            ("t.x", "success", 0, 11, 16.5, [2, 4, 6] + [0] * 9 + [5]),
            ("t.x", "timeout", 0, 2, 3.0, [1, 2, 3] + [0] * 9 + [2]),
        ]
        assert [(b.isoformat()[:10], n) for b, n in conn.execute(_MESSAGE_DAYS)] == [
            ("2026-11-29", 2),
            ("2026-11-30", 3),
        ]
        # The trigger now counts day rows too.
        _messages(conn, app, "2026-11-30T09:00:00Z", 4)
        assert [n for _, n in conn.execute(_MESSAGE_DAYS)] == [2, 7]

    downgrade(scratch_settings, BEFORE_STATISTICS_DAYS)
    with engine.begin() as conn:
        assert conn.execute(_DAY_ROWS).all() == []
        _messages(conn, app, "2026-11-30T10:00:00Z", 1)
        assert conn.execute(_MESSAGE_DAYS).all() == []
        assert conn.scalar(text("SELECT sum(messages) FROM message_stats WHERE width = 3600")) == 10
    upgrade(scratch_settings, STATISTICS_DAYS)  # and again, from the hour rows
    with engine.connect() as conn:
        assert [n for _, n in conn.execute(_MESSAGE_DAYS)] == [2, 8]
        assert [r[4] for r in conn.execute(_DAY_ROWS)] == [6, 11, 2]
    engine.dispose()
