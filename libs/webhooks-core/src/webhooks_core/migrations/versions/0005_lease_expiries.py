"""poison deliveries and fair share: lease expiries counted, leases by application

Revision ID: 0005_lease_expiries
Revises: 0004_event_ids_per_application
Create Date: 2026-12-01 10:30:00

* ``deliveries.lease_expiries``: how many times in a row the delivery's lease ran out with
  nothing recorded.  The scheduler dead-letters it at ``WEBHOOKS_MAX_LEASE_EXPIRIES`` (a
  poison delivery that kills or wedges every worker that takes it would otherwise loop for
  ever).  A constant default: PostgreSQL 11+ adds the column without rewriting the table.
* A row trigger resets the count when an attempt is recorded (``attempt_count`` changes) or
  the delivery leaves a terminal state (resend, redrive), so only consecutive expiries count.
  Its WHEN clause is evaluated without calling the function, and is false unless the row has
  expired before: the hot path of recording attempts pays one comparison.
* ``delivery_leases.application_id``: the scheduler counts an application's batches in
  flight to give each application a fair share of the workers.  Rows in flight at upgrade
  time are filled from their endpoints.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005_lease_expiries'
down_revision = '0004_event_ids_per_application'
branch_labels = None
depends_on = None

RESET_FUNCTION = """
CREATE FUNCTION webhooks_reset_lease_expiries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.lease_expiries := 0;
    RETURN NEW;
END;
$$;
"""
RESET_TRIGGER = """
CREATE TRIGGER deliveries_reset_lease_expiries BEFORE UPDATE ON deliveries
FOR EACH ROW
WHEN (OLD.lease_expiries > 0 AND NEW.lease_expiries = OLD.lease_expiries
      AND (NEW.attempt_count <> OLD.attempt_count
           OR (OLD.state IN ('delivered', 'dead', 'cancelled')
               AND NEW.state IN ('pending', 'retrying'))))
EXECUTE FUNCTION webhooks_reset_lease_expiries()
"""


def upgrade() -> None:
    op.add_column(
        'deliveries',
        sa.Column('lease_expiries', sa.SmallInteger(), server_default=sa.text('0'), nullable=False),
    )
    op.execute(RESET_FUNCTION)
    op.execute(RESET_TRIGGER)
    op.add_column('delivery_leases', sa.Column('application_id', sa.UUID(), nullable=True))
    op.execute(
        'UPDATE delivery_leases l SET application_id = e.application_id '
        'FROM endpoints e WHERE e.id = l.endpoint_id'
    )
    op.alter_column('delivery_leases', 'application_id', nullable=False)
    op.create_foreign_key(
        op.f('fk_delivery_leases_application_id_applications'), 'delivery_leases',
        'applications', ['application_id'], ['id'], ondelete='CASCADE',
    )
    op.create_index(
        op.f('ix_delivery_leases_application_id'), 'delivery_leases', ['application_id'],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f('ix_delivery_leases_application_id'), table_name='delivery_leases')
    op.drop_constraint(
        op.f('fk_delivery_leases_application_id_applications'), 'delivery_leases',
        type_='foreignkey',
    )
    op.drop_column('delivery_leases', 'application_id')
    op.execute('DROP TRIGGER deliveries_reset_lease_expiries ON deliveries')
    op.execute('DROP FUNCTION webhooks_reset_lease_expiries()')
    op.drop_column('deliveries', 'lease_expiries')
