"""the due deliveries by application: the claim reads each application's oldest

Revision ID: 0014_due_by_application
Revises: 0013_endpoint_adaptive_flow
Create Date: 2026-12-01 21:50:00

``ix_deliveries_due_application`` replaces ``ix_deliveries_due``: the due deliveries that
have a time (parked ones, without, are left out) by application, then time, where it was by
time alone.  The scheduler's claim walks it for the applications with due work and their
earliest due time, then reads each one's oldest rows (delivery.scheduling): one
application's backlog no longer fills the rows a claim reads while another's deliveries
are due behind it.  The overdue gauge takes the earliest of the applications' first times.

Building the index reads the due deliveries (the backlog), not the history; writes to
``deliveries`` wait while it is built.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014_due_by_application'
down_revision = '0013_endpoint_adaptive_flow'
branch_labels = None
depends_on = None

DUE = "state IN ('pending', 'retrying')"
DUE_WITH_A_TIME = f"{DUE} AND next_attempt_at IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        'ix_deliveries_due_application', 'deliveries', ['application_id', 'next_attempt_at'],
        unique=False, postgresql_where=sa.text(DUE_WITH_A_TIME),
    )
    op.drop_index('ix_deliveries_due', table_name='deliveries', postgresql_where=sa.text(DUE))


def downgrade() -> None:
    op.create_index(
        'ix_deliveries_due', 'deliveries', ['next_attempt_at'], unique=False,
        postgresql_where=sa.text(DUE),
    )
    op.drop_index(
        'ix_deliveries_due_application', table_name='deliveries',
        postgresql_where=sa.text(DUE_WITH_A_TIME),
    )
