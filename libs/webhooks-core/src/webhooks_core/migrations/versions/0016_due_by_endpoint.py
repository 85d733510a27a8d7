"""the due deliveries by endpoint: one endpoint's backlog no longer hides its siblings'

Revision ID: 0016_due_by_endpoint
Revises: 0015_statistics_day_rows
Create Date: 2026-12-02 00:30:00

``ix_deliveries_due_endpoint``: the due deliveries that have a time, by endpoint, then time
(the rows of ``ix_deliveries_due_application``, keyed by endpoint).  When an endpoint's
backlog fills the rows the claim reads of its application and the endpoint can take only
part of them (its rate, its free slots), the claim reads each other endpoint's oldest rows
of that application by this index (delivery.scheduling), instead of leaving them due behind
the backlog until it drains.

Building the index reads the due deliveries (the backlog), not the history; writes to
``deliveries`` wait while it is built.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0016_due_by_endpoint'
down_revision = '0015_statistics_day_rows'
branch_labels = None
depends_on = None

DUE_WITH_A_TIME = "state IN ('pending', 'retrying') AND next_attempt_at IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        'ix_deliveries_due_endpoint', 'deliveries', ['endpoint_id', 'next_attempt_at'],
        unique=False, postgresql_where=sa.text(DUE_WITH_A_TIME),
    )


def downgrade() -> None:
    op.drop_index(
        'ix_deliveries_due_endpoint', table_name='deliveries',
        postgresql_where=sa.text(DUE_WITH_A_TIME),
    )
