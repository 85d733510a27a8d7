"""The matching rule's SQL shapes (no database; the fan-out tests run it for real)."""

from __future__ import annotations

import re

from sqlalchemy import column
from sqlalchemy.dialects.postgresql import ARRAY, TEXT, UUID
from sqlalchemy.dialects.postgresql import psycopg2 as pg

from webhooks_core.endpoints.matching import MAY_BROADCAST, receives, receives_sql


def test_statement_text_binds_only_the_message_terms() -> None:
    sql = receives_sql("endpoint")
    assert set(re.findall(r"(?<![:\w]):(\w+)", sql)) == {
        "subscription",
        "event_type",
        "channels",
        "app_id",
    }
    # ``@>`` (served by the GIN index) and a constant 0 (the all-types partial index).
    assert "endpoint.event_types @> ARRAY[CAST(:event_type AS TEXT)]" in sql
    assert "cardinality(endpoint.event_types) = 0" in sql
    assert "endpoint.application_id = CAST(:app_id AS UUID)" in sql
    assert "IS NULL OR endpoint.application_id" not in sql  # never a broadcast here


def _render(**terms: object) -> str:
    condition = receives(event_type=column("t", TEXT), **terms)  # type: ignore[arg-type]
    dialect = pg.dialect(paramstyle="named")  # type: ignore[no-untyped-call]
    return str(condition.compile(dialect=dialect))


def test_terms_the_message_lacks_add_no_condition() -> None:
    no_channels_broadcast = _render(channels=None, application_id=None)
    assert "&&" not in no_channels_broadcast
    assert "application_id" not in no_channels_broadcast
    batch = _render(
        channels=column("c", ARRAY(TEXT)),
        application_id=column("a", UUID),
        application=MAY_BROADCAST,
    )
    assert "endpoints.channels && c" in batch
    assert "a IS NULL OR endpoints.application_id = a" in batch
