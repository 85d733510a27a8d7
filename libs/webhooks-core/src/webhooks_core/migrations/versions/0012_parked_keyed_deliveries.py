"""parked keyed deliveries: an index of the deliveries waiting behind their key's head

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 18:50:00

A keyed delivery created behind an open delivery of its endpoint and key now waits
*parked*, with no ``next_attempt_at``, out of the claim's due index, until its key's head
ends (webhooks_core.deliveries.ordering).  ``ix_deliveries_parked`` is what wakes them: the
first parked delivery of a key, and the keys that have any.

Deliveries created before it stay due; the claim's head rule holds them back as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

PARKED = (
    "ordering_key IS NOT NULL AND state IN ('pending', 'retrying') AND next_attempt_at IS NULL"
)


def upgrade() -> None:
    op.create_index(
        'ix_deliveries_parked', 'deliveries', ['endpoint_id', 'ordering_key', 'id'],
        unique=False, postgresql_where=sa.text(PARKED),
    )


def downgrade() -> None:
    # Parked deliveries become due: without the sweep nothing would wake them, and the
    # claim's head rule keeps their order.
    op.execute(f"UPDATE deliveries SET next_attempt_at = now() WHERE {PARKED}")
    op.drop_index(
        'ix_deliveries_parked', table_name='deliveries', postgresql_where=sa.text(PARKED)
    )
