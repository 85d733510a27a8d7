"""event ids are unique per application, not across the platform

Revision ID: 0004_event_ids_per_application
Revises: 0003
Create Date: 2026-12-01 10:20:00

``uq_messages_event_id`` made an event id unique across every application, so one
application could take ids another would publish later and learn which ids others had used
(a 409 answered "taken").  ``uq_messages_event_id_application_id`` makes the pair unique
instead, as idempotency keys are.  ``NULLS NOT DISTINCT`` keeps broadcasts (messages with no
application, published by the operator's producers) unique among themselves, so redelivering a
broadcast from the broker is still a no-op.  ``event_id`` leads the index, so lookups by event
id alone (the admin's delivery filter) are served by it too.

Rows stored before satisfy the new constraint (a unique id is unique per application).  The
downgrade refuses while two applications share an event id, rather than delete messages.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004_event_ids_per_application'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_unique_constraint(
        'uq_messages_event_id_application_id',
        'messages',
        ['event_id', 'application_id'],
        postgresql_nulls_not_distinct=True,
    )
    op.drop_constraint('uq_messages_event_id', 'messages', type_='unique')


def downgrade() -> None:
    shared = op.get_bind().scalar(
        sa.text(
            'SELECT count(*) FROM (SELECT event_id FROM messages'
            ' GROUP BY event_id HAVING count(*) > 1) AS shared'
        )
    )
    if shared:
        raise RuntimeError(
            f'{shared} event ids are used by more than one application; an event id unique '
            'across applications cannot be restored without deleting messages'
        )
    op.create_unique_constraint('uq_messages_event_id', 'messages', ['event_id'])
    op.drop_constraint('uq_messages_event_id_application_id', 'messages', type_='unique')
