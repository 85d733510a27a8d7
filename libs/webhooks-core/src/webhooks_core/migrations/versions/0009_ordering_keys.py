"""ordering keys

Revision ID: 0009
Revises: 0008_pause_statistics_search
Create Date: 2026-12-01 15:50:00

* ``messages.ordering_key`` and ``deliveries.ordering_key`` (copied at fan-out): for one
  endpoint, deliveries with the same key go one at a time in id order
  (webhooks_core.deliveries.ordering).  Null for every existing row: they keep their
  unordered behaviour.
* ``endpoints.key_failure_policy``: ``skip`` (a dead-lettered delivery lets its key move on)
  or ``block`` (the key waits until it is redriven); existing endpoints get ``skip``.
* Two partial indexes on the keyed deliveries, open and dead, in (endpoint, key, id) order:
  the claim probes them for an earlier delivery of the same key.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008_pause_statistics_search'
branch_labels = None
depends_on = None

OPEN = "state IN ('pending', 'sending', 'retrying')"


def upgrade() -> None:
    op.add_column('messages', sa.Column('ordering_key', sa.String(length=256), nullable=True))
    op.add_column('deliveries', sa.Column('ordering_key', sa.String(length=256), nullable=True))
    op.add_column(
        'endpoints',
        sa.Column(
            'key_failure_policy', sa.String(length=8), server_default='skip', nullable=False
        ),
    )
    op.create_check_constraint(
        op.f('ck_endpoints_key_failure_policy'), 'endpoints', "key_failure_policy IN ('skip', 'block')"
    )
    op.create_index(
        'ix_deliveries_ordering_open',
        'deliveries',
        ['endpoint_id', 'ordering_key', 'id'],
        postgresql_where=sa.text(f"ordering_key IS NOT NULL AND {OPEN}"),
    )
    op.create_index(
        'ix_deliveries_ordering_dead',
        'deliveries',
        ['endpoint_id', 'ordering_key', 'id'],
        postgresql_where=sa.text("ordering_key IS NOT NULL AND state = 'dead'"),
    )


def downgrade() -> None:
    op.drop_index('ix_deliveries_ordering_dead', table_name='deliveries')
    op.drop_index('ix_deliveries_ordering_open', table_name='deliveries')
    op.drop_constraint(op.f('ck_endpoints_key_failure_policy'), 'endpoints', type_='check')
    op.drop_column('endpoints', 'key_failure_policy')
    op.drop_column('deliveries', 'ordering_key')
    op.drop_column('messages', 'ordering_key')
