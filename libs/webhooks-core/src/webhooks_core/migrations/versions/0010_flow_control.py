"""adaptive flow control per endpoint, global rate buckets

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 15:50:00

* ``endpoint_flow``: an endpoint's adaptive limits (batches in flight, deliveries per
  second), the end of a ``Retry-After`` that holds it, and its latency baseline; written by
  the workers as they record batches (webhooks_core.endpoints.flow).
* ``endpoint_rate_buckets``: the token bucket of an endpoint's rate, read and spent by the
  claim in its transaction, so a rate limit holds across schedulers.

Both start empty: an endpoint without a row runs at its configured limits, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'endpoint_flow',
        sa.Column('endpoint_id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column(
            'max_in_flight', sa.Double(), nullable=True,
            comment='adaptive batches in flight; null: the configured maximum',
        ),
        sa.Column(
            'rate_limit', sa.Double(), nullable=True,
            comment='adaptive deliveries per second; null: the configured rate (or none)',
        ),
        sa.Column(
            'rate_step', sa.Double(), nullable=True,
            comment='deliveries per second the rate regains per second',
        ),
        sa.Column(
            'throttled_until', sa.DateTime(timezone=True), nullable=True,
            comment='a Retry-After holds the whole endpoint until then',
        ),
        sa.Column('reason', sa.Text(), nullable=True, comment='what lowered the limits last'),
        sa.Column('latency_ms', sa.Double(), nullable=True, comment='latency baseline'),
        sa.Column('decreased_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            'changed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ['endpoint_id'], ['endpoints.id'],
            name=op.f('fk_endpoint_flow_endpoint_id_endpoints'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('endpoint_id', name=op.f('pk_endpoint_flow')),
    )
    op.create_index(
        'ix_endpoint_flow_throttled_until', 'endpoint_flow', ['throttled_until'],
        postgresql_where=sa.text('throttled_until IS NOT NULL'),
    )
    op.create_table(
        'endpoint_rate_buckets',
        sa.Column('endpoint_id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('tokens', sa.Double(), nullable=False),
        sa.Column('stamp', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ['endpoint_id'], ['endpoints.id'],
            name=op.f('fk_endpoint_rate_buckets_endpoint_id_endpoints'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('endpoint_id', name=op.f('pk_endpoint_rate_buckets')),
    )


def downgrade() -> None:
    op.drop_table('endpoint_rate_buckets')
    op.drop_index('ix_endpoint_flow_throttled_until', table_name='endpoint_flow')
    op.drop_table('endpoint_flow')
