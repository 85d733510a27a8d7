"""retention: attempts in day partitions, per-application retention, payload drop marker

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 16:00:00

* ``attempts`` becomes a table partitioned by ``RANGE (started_at)``, one partition a day
  (``attempts_pYYYYMMDD``) plus a default partition that catches a row no day partition
  covers (so an insert never fails if the retention task has not run).  Its primary key
  becomes ``(id, started_at)`` (a partitioned table's keys hold the partition key); ids keep
  coming from the same numbers (a sequence set past the largest id).  Every row is copied.
* ``applications.retention_*_days``: per-application retention (null: the platform's
  default, ``WEBHOOKS_RETENTION_*_DAYS``).
* ``messages.payload_dropped_at``: set when retention replaced the payload by ``{}``.
* Indexes for the cascades of retention's deletes: dead letters and idempotency keys by the
  delivery and the message they reference (without them each deleted row scans the table).

messages and deliveries stay plain tables: their unique keys (event id per application,
one delivery per message and endpoint) and the foreign keys to them cannot hold on a
partitioned table without the partition key in them (docs/retention.md, *Design*).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

# Days ahead of today with a partition after the upgrade (the retention task keeps this).
AHEAD_DAYS = 7

COLUMNS = """
    id bigint NOT NULL DEFAULT nextval('attempts_id_seq'),
    delivery_id bigint NOT NULL,
    endpoint_id uuid NOT NULL,
    started_at timestamp with time zone NOT NULL,
    latency_ms double precision NOT NULL,
    status_code smallint,
    outcome varchar(32) NOT NULL,
    error text,
    response_body text,
    trigger varchar(16) NOT NULL DEFAULT 'scheduled'
"""
INDEXES = (
    ('ix_attempts_delivery_started', 'delivery_id, started_at'),
    ('ix_attempts_endpoint_started', 'endpoint_id, started_at'),
    ('ix_attempts_endpoint_status_started', 'endpoint_id, status_code, started_at'),
)
COMMENTS = (
    "COMMENT ON COLUMN attempts.outcome IS "
    "'success, http_error, timeout, connect_error, blocked, too_large, ...'",
    "COMMENT ON COLUMN attempts.response_body IS 'first KiB'",
)


def _day_partition(day: date) -> str:
    nxt = day + timedelta(days=1)
    return (
        f"CREATE TABLE attempts_p{day:%Y%m%d} PARTITION OF attempts "
        f"FOR VALUES FROM ('{day.isoformat()} 00:00:00+00') TO ('{nxt.isoformat()} 00:00:00+00')"
    )


def _partitioned_days(conn: sa.Connection) -> list[date]:
    with_rows = {
        row[0]
        for row in conn.execute(
            sa.text(
                "SELECT DISTINCT (started_at AT TIME ZONE 'UTC')::date "
                "FROM attempts_unpartitioned"
            )
        )
    }
    today = datetime.now(UTC).date()
    ahead = {today + timedelta(days=n) for n in range(-1, AHEAD_DAYS + 1)}
    return sorted(with_rows | ahead)


def upgrade() -> None:
    conn = op.get_bind()
    op.execute('ALTER TABLE attempts RENAME TO attempts_unpartitioned')
    op.execute(
        'ALTER TABLE attempts_unpartitioned RENAME CONSTRAINT pk_attempts TO pk_attempts_old'
    )
    for name, _ in INDEXES:
        op.execute(f'ALTER INDEX {name} RENAME TO {name}_old')
    op.execute(
        'ALTER TABLE attempts_unpartitioned RENAME CONSTRAINT fk_attempts_delivery_id_deliveries'
        ' TO fk_attempts_old_delivery'
    )
    op.execute(
        'ALTER TABLE attempts_unpartitioned RENAME CONSTRAINT fk_attempts_endpoint_id_endpoints'
        ' TO fk_attempts_old_endpoint'
    )
    op.execute('ALTER SEQUENCE attempts_id_seq RENAME TO attempts_id_seq_old')
    op.execute('CREATE SEQUENCE attempts_id_seq AS bigint')
    op.execute(
        f'CREATE TABLE attempts ({COLUMNS},'
        ' CONSTRAINT pk_attempts PRIMARY KEY (id, started_at),'
        ' CONSTRAINT fk_attempts_delivery_id_deliveries FOREIGN KEY (delivery_id)'
        ' REFERENCES deliveries (id) ON DELETE CASCADE,'
        ' CONSTRAINT fk_attempts_endpoint_id_endpoints FOREIGN KEY (endpoint_id)'
        ' REFERENCES endpoints (id) ON DELETE CASCADE'
        ') PARTITION BY RANGE (started_at)'
    )
    op.execute('ALTER SEQUENCE attempts_id_seq OWNED BY attempts.id')
    for statement in COMMENTS:
        op.execute(statement)
    for name, columns in INDEXES:
        op.execute(f'CREATE INDEX {name} ON attempts ({columns})')
    for day in _partitioned_days(conn):
        op.execute(_day_partition(day))
    op.execute('CREATE TABLE attempts_default PARTITION OF attempts DEFAULT')
    op.execute(
        'INSERT INTO attempts (id, delivery_id, endpoint_id, started_at, latency_ms, status_code,'
        ' outcome, error, response_body, trigger) SELECT id, delivery_id, endpoint_id,'
        ' started_at, latency_ms, status_code, outcome, error, response_body, trigger'
        ' FROM attempts_unpartitioned'
    )
    # The same numbers go on: the new sequence takes the old one's exact state.
    op.execute(
        "SELECT setval('attempts_id_seq', last_value, is_called) FROM attempts_id_seq_old"
    )
    op.execute('DROP TABLE attempts_unpartitioned')

    for column in ('attempts', 'messages', 'payload'):
        op.add_column(
            'applications',
            sa.Column(
                f'retention_{column}_days', sa.Integer(), nullable=True,
                comment=f"days {column} are kept; null: the platform default",
            ),
        )
    op.create_index('ix_dead_letters_delivery', 'dead_letters', ['delivery_id'])
    op.create_index('ix_idempotency_keys_message', 'idempotency_keys', ['message_id'])
    op.add_column(
        'messages',
        sa.Column(
            'payload_dropped_at', sa.DateTime(timezone=True), nullable=True,
            comment='retention replaced the payload by {} at this time',
        ),
    )


def downgrade() -> None:
    op.drop_column('messages', 'payload_dropped_at')
    op.drop_index('ix_idempotency_keys_message', table_name='idempotency_keys')
    op.drop_index('ix_dead_letters_delivery', table_name='dead_letters')
    for column in ('attempts', 'messages', 'payload'):
        op.drop_column('applications', f'retention_{column}_days')
    op.execute('ALTER TABLE attempts RENAME TO attempts_partitioned')
    op.execute('ALTER TABLE attempts_partitioned RENAME CONSTRAINT pk_attempts TO pk_attempts_new')
    op.execute(
        'ALTER TABLE attempts_partitioned RENAME CONSTRAINT fk_attempts_delivery_id_deliveries'
        ' TO fk_attempts_new_delivery'
    )
    op.execute(
        'ALTER TABLE attempts_partitioned RENAME CONSTRAINT fk_attempts_endpoint_id_endpoints'
        ' TO fk_attempts_new_endpoint'
    )
    for name, _ in INDEXES:
        op.execute(f'ALTER INDEX {name} RENAME TO {name}_new')
    op.execute('ALTER SEQUENCE attempts_id_seq RENAME TO attempts_id_seq_new')
    op.execute(
        'CREATE TABLE attempts ('
        ' id bigint GENERATED BY DEFAULT AS IDENTITY NOT NULL,'
        ' delivery_id bigint NOT NULL, endpoint_id uuid NOT NULL,'
        ' started_at timestamp with time zone NOT NULL, latency_ms double precision NOT NULL,'
        ' status_code smallint, outcome varchar(32) NOT NULL, error text, response_body text,'
        " trigger varchar(16) NOT NULL DEFAULT 'scheduled',"
        ' CONSTRAINT pk_attempts PRIMARY KEY (id),'
        ' CONSTRAINT fk_attempts_delivery_id_deliveries FOREIGN KEY (delivery_id)'
        ' REFERENCES deliveries (id) ON DELETE CASCADE,'
        ' CONSTRAINT fk_attempts_endpoint_id_endpoints FOREIGN KEY (endpoint_id)'
        ' REFERENCES endpoints (id) ON DELETE CASCADE)'
    )
    for statement in COMMENTS:
        op.execute(statement)
    op.execute(
        'INSERT INTO attempts (id, delivery_id, endpoint_id, started_at, latency_ms, status_code,'
        ' outcome, error, response_body, trigger) SELECT id, delivery_id, endpoint_id,'
        ' started_at, latency_ms, status_code, outcome, error, response_body, trigger'
        ' FROM attempts_partitioned'
    )
    op.execute(
        "SELECT setval(pg_get_serial_sequence('attempts', 'id'), last_value, is_called)"
        " FROM attempts_id_seq_new"
    )
    for name, columns in INDEXES:
        op.execute(f'CREATE INDEX {name} ON attempts ({columns})')
    op.execute('DROP TABLE attempts_partitioned')
