"""a per-endpoint switch for adaptive flow control

Revision ID: 0013_endpoint_adaptive_flow
Revises: 0012
Create Date: 2026-12-01 18:45:00

* ``endpoints.adaptive_flow``: false turns flow control off for the endpoint (only its
  configured limits; webhooks_core.endpoints.flow).  Every existing endpoint keeps it on.

The downgrade drops the column: every endpoint adapts again, an opted-out one from its
configured limits (its ``endpoint_flow`` row was deleted when it was turned off).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013_endpoint_adaptive_flow'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A constant default: PostgreSQL adds the column without rewriting the table.
    op.add_column(
        'endpoints',
        sa.Column(
            'adaptive_flow',
            sa.Boolean(),
            server_default=sa.text('true'),
            nullable=False,
            comment='false: flow control off, only the configured limits (endpoints.flow)',
        ),
    )


def downgrade() -> None:
    op.drop_column('endpoints', 'adaptive_flow')
