"""delivery engine: leases, replay triggers, due-delivery notifications

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 19:30:00

* ``deliveries.lease_token``: the claim a scheduler hands to one worker task; a task only
  touches rows that still carry its token, so a task that runs twice or late is harmless.
* ``delivery_leases``: one row per batch in flight (token, endpoint, expiry), so counting an
  endpoint's batches in flight on every claim cycle reads a handful of rows.
* ``deliveries.next_trigger``: why the next attempt happens (``replay``), copied to the attempt.
* ``ix_deliveries_open_created`` replaces ``ix_deliveries_state_created``: only open
  deliveries, so finishing a delivery writes one index entry less and the index stays small.
* ``ix_endpoints_circuit_open``: the scheduler skips endpoints whose breaker is open.
* A statement-level trigger NOTIFYs ``webhooks_deliveries`` when a statement makes deliveries
  due or frees an endpoint's in-flight slot, so the scheduler wakes at once instead of polling.
* The operational event type ``endpoint.disabled`` exists, so endpoints can subscribe to it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

NOTIFY_FUNCTION = """
CREATE FUNCTION webhooks_notify_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- At most one notification of each kind per statement (PostgreSQL also folds repeats
    -- within a transaction).  'due': deliveries became due now.  'free': a lease ended, so
    -- an endpoint has a free in-flight slot for its next batch.
    IF EXISTS (SELECT 1 FROM new_rows WHERE state IN ('pending', 'retrying')
               AND next_attempt_at <= now()) THEN
        PERFORM pg_notify('webhooks_deliveries', 'due');
    END IF;
    -- Nested: an INSERT trigger has no old_rows to plan the query against.
    IF TG_OP = 'UPDATE' THEN
        IF EXISTS (SELECT 1 FROM old_rows o JOIN new_rows n ON n.id = o.id
                   WHERE o.state = 'sending' AND n.state <> 'sending') THEN
            PERFORM pg_notify('webhooks_deliveries', 'free');
        END IF;
    END IF;
    RETURN NULL;
END;
$$;
"""


def upgrade() -> None:
    op.add_column('deliveries', sa.Column('lease_token', sa.UUID(), nullable=True))
    op.create_table('delivery_leases',
    sa.Column('token', sa.UUID(), nullable=False),
    sa.Column('endpoint_id', sa.UUID(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['endpoint_id'], ['endpoints.id'], name=op.f('fk_delivery_leases_endpoint_id_endpoints'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('token', 'endpoint_id', name=op.f('pk_delivery_leases'))
    )
    op.create_index(op.f('ix_delivery_leases_endpoint_id'), 'delivery_leases', ['endpoint_id'], unique=False)
    op.create_index(op.f('ix_delivery_leases_expires_at'), 'delivery_leases', ['expires_at'], unique=False)
    op.drop_index('ix_deliveries_state_created', table_name='deliveries')
    op.create_index(
        'ix_deliveries_open_created', 'deliveries', ['state', 'created_at'], unique=False,
        postgresql_where=sa.text("state IN ('pending', 'sending', 'retrying')"),
    )
    op.add_column('deliveries', sa.Column('next_trigger', sa.String(length=16), nullable=True))
    op.create_index(
        'ix_endpoints_circuit_open', 'endpoints', ['circuit_open_until'],
        unique=False, postgresql_where=sa.text('circuit_open_until IS NOT NULL'),
    )
    op.execute(NOTIFY_FUNCTION)
    op.execute(
        "CREATE TRIGGER deliveries_notify_insert AFTER INSERT ON deliveries "
        "REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION webhooks_notify_deliveries()"
    )
    op.execute(
        "CREATE TRIGGER deliveries_notify_update AFTER UPDATE ON deliveries "
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION webhooks_notify_deliveries()"
    )
    op.execute(
        "INSERT INTO event_types (id, name, description) VALUES (gen_random_uuid(), "
        "'endpoint.disabled', 'Operational: the platform disabled an endpoint "
        "(it answered 410 Gone, or kept failing past the auto-disable window).') "
        "ON CONFLICT (name) DO NOTHING"
    )


def downgrade() -> None:
    op.execute("DELETE FROM event_types WHERE name = 'endpoint.disabled'")
    op.execute("DROP TRIGGER deliveries_notify_update ON deliveries")
    op.execute("DROP TRIGGER deliveries_notify_insert ON deliveries")
    op.execute("DROP FUNCTION webhooks_notify_deliveries()")
    op.drop_index(
        'ix_endpoints_circuit_open', table_name='endpoints',
        postgresql_where=sa.text('circuit_open_until IS NOT NULL'),
    )
    op.drop_index(
        'ix_deliveries_open_created', table_name='deliveries',
        postgresql_where=sa.text("state IN ('pending', 'sending', 'retrying')"),
    )
    op.create_index('ix_deliveries_state_created', 'deliveries', ['state', 'created_at'])
    op.drop_column('deliveries', 'next_trigger')
    op.drop_index(op.f('ix_delivery_leases_expires_at'), table_name='delivery_leases')
    op.drop_index(op.f('ix_delivery_leases_endpoint_id'), table_name='delivery_leases')
    op.drop_table('delivery_leases')
    op.drop_column('deliveries', 'lease_token')
