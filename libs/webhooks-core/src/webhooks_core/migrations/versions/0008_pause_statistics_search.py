"""pause, statistics summaries, search indexes

Revision ID: 0008_pause_statistics_search
Revises: 0007
Create Date: 2026-12-01 13:10:00

* ``endpoints.paused_at``: a paused endpoint keeps receiving deliveries and holds them; the
  scheduler leaves its due rows alone until it is resumed.
* ``attempt_stats``: attempts counted per endpoint, event type, outcome, status class and
  final state in minute and hour buckets, with a latency histogram (upserted by the delivery
  engine as it records a batch).
* ``message_stats``: messages counted per application and event type per bucket, by a
  statement-level trigger on ``messages`` (one aggregated upsert per INSERT statement).
  Existing messages and attempts are counted into both tables once, here.
* Search indexes: an endpoint's attempts by status code in time order, and a GIN index on the
  messages' payload (jsonb_path_ops, for containment ``@>``).  Both tables are insert-only:
  neither index is touched again by the engine's updates of deliveries.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0008_pause_statistics_search'
down_revision = '0007'
branch_labels = None
depends_on = None

# Kept here as text (a migration does not change when the code does): buckets and shards as
# webhooks_core.statistics (WIDTHS, SHARDS) at the time of writing.
COUNT_MESSAGES = """
CREATE FUNCTION webhooks_count_messages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_stats AS s (application_id, width, bucket, event_type, shard, messages)
    SELECT m.application_id, w.width,
           date_bin(make_interval(secs => w.width), m.created_at, TIMESTAMPTZ '2000-01-01'),
           m.event_type, pg_backend_pid() % 8, count(*)
    FROM new_messages m CROSS JOIN (VALUES (60), (3600)) AS w(width)
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (application_id, width, bucket, event_type, shard)
    DO UPDATE SET messages = s.messages + EXCLUDED.messages;
    RETURN NULL;
END;
$$;
"""
COUNT_TRIGGER = """
CREATE TRIGGER messages_count AFTER INSERT ON messages
REFERENCING NEW TABLE AS new_messages
FOR EACH STATEMENT EXECUTE FUNCTION webhooks_count_messages()
"""
BOUNDS = "ARRAY[5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]::float8[]"
BACKFILL_MESSAGES = """
INSERT INTO message_stats (application_id, width, bucket, event_type, shard, messages)
SELECT m.application_id, w.width,
       date_bin(make_interval(secs => w.width), m.created_at, TIMESTAMPTZ '2000-01-01'),
       m.event_type, 0, count(*)
FROM messages m CROSS JOIN (VALUES (60), (3600)) AS w(width)
GROUP BY 1, 2, 3, 4
"""
HISTOGRAM = "ARRAY[" + ", ".join(
    f"count(*) FILTER (WHERE width_bucket(a.latency_ms, {BOUNDS}) = {i})::int" for i in range(13)
) + "]"
BACKFILL_ATTEMPTS = f"""
INSERT INTO attempt_stats (endpoint_id, width, bucket, event_type, outcome, status_class,
                           final_state, shard, application_id, attempts, latency_sum_ms,
                           latency_histogram)
SELECT d.endpoint_id, w.width,
       date_bin(make_interval(secs => w.width), a.started_at, TIMESTAMPTZ '2000-01-01'),
       d.event_type, a.outcome,
       CASE WHEN a.status_code IS NULL THEN 'none' ELSE (a.status_code / 100)::text || 'xx' END,
       d.state, 0, d.application_id, count(*), sum(a.latency_ms),
       {HISTOGRAM}
FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
     CROSS JOIN (VALUES (60), (3600)) AS w(width)
GROUP BY 1, 2, 3, 4, 5, 6, 7, 9
"""


def upgrade() -> None:
    op.add_column(
        'endpoints',
        sa.Column(
            'paused_at', sa.DateTime(timezone=True), nullable=True,
            comment='paused: deliveries accepted and held, none sent (endpoints.pause)',
        ),
    )
    op.create_index(
        'ix_endpoints_paused', 'endpoints', ['paused_at'], unique=False,
        postgresql_where=sa.text('paused_at IS NOT NULL'),
    )
    op.create_table(
        'attempt_stats',
        sa.Column('endpoint_id', sa.UUID(), nullable=False),
        sa.Column('width', sa.Integer(), nullable=False),
        sa.Column('bucket', sa.DateTime(timezone=True), nullable=False),
        sa.Column('event_type', sa.String(length=128), nullable=False),
        sa.Column('outcome', sa.String(length=32), nullable=False),
        sa.Column('status_class', sa.String(length=8), nullable=False),
        sa.Column('final_state', sa.String(length=16), nullable=False),
        sa.Column('shard', sa.SmallInteger(), nullable=False),
        sa.Column('application_id', sa.UUID(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('latency_sum_ms', sa.Float(), nullable=False),
        sa.Column('latency_histogram', postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.ForeignKeyConstraint(
            ['application_id'], ['applications.id'],
            name=op.f('fk_attempt_stats_application_id_applications'), ondelete='CASCADE',
        ),
        sa.ForeignKeyConstraint(
            ['endpoint_id'], ['endpoints.id'],
            name=op.f('fk_attempt_stats_endpoint_id_endpoints'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint(
            'endpoint_id', 'width', 'bucket', 'event_type', 'outcome', 'status_class',
            'final_state', 'shard', name=op.f('pk_attempt_stats'),
        ),
    )
    op.create_index(
        'ix_attempt_stats_application', 'attempt_stats',
        ['application_id', 'width', 'bucket'], unique=False,
    )
    op.create_index(
        'ix_attempt_stats_width_bucket', 'attempt_stats', ['width', 'bucket'], unique=False
    )
    op.create_table(
        'message_stats',
        sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column('application_id', sa.UUID(), nullable=True),
        sa.Column('width', sa.Integer(), nullable=False),
        sa.Column('bucket', sa.DateTime(timezone=True), nullable=False),
        sa.Column('event_type', sa.String(length=128), nullable=False),
        sa.Column('shard', sa.SmallInteger(), nullable=False),
        sa.Column('messages', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ['application_id'], ['applications.id'],
            name=op.f('fk_message_stats_application_id_applications'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_message_stats')),
    )
    op.create_index(
        'uq_message_stats_key', 'message_stats',
        ['application_id', 'width', 'bucket', 'event_type', 'shard'],
        unique=True, postgresql_nulls_not_distinct=True,
    )
    op.create_index(
        'ix_message_stats_width_bucket', 'message_stats', ['width', 'bucket'], unique=False
    )
    op.create_index(
        'ix_messages_payload', 'messages', ['payload'], unique=False,
        postgresql_using='gin', postgresql_ops={'payload': 'jsonb_path_ops'},
    )
    op.create_index(
        'ix_attempts_endpoint_status_started', 'attempts',
        ['endpoint_id', 'status_code', 'started_at'], unique=False,
    )
    op.execute(BACKFILL_MESSAGES)
    op.execute(BACKFILL_ATTEMPTS)
    op.execute(COUNT_MESSAGES)
    op.execute(COUNT_TRIGGER)


def downgrade() -> None:
    op.drop_index('ix_attempts_endpoint_status_started', table_name='attempts')
    op.drop_index('ix_messages_payload', table_name='messages')
    op.execute('DROP TRIGGER messages_count ON messages')
    op.execute('DROP FUNCTION webhooks_count_messages()')
    op.drop_index('ix_message_stats_width_bucket', table_name='message_stats')
    op.drop_index('uq_message_stats_key', table_name='message_stats')
    op.drop_table('message_stats')
    op.drop_index('ix_attempt_stats_width_bucket', table_name='attempt_stats')
    op.drop_index('ix_attempt_stats_application', table_name='attempt_stats')
    op.drop_table('attempt_stats')
    op.drop_index('ix_endpoints_paused', table_name='endpoints')
    op.drop_column('endpoints', 'paused_at')
