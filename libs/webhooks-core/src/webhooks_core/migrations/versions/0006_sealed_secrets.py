"""secrets sealed at rest; auth settings; Ed25519 (v1a) signing keys

Revision ID: 0006
Revises: 0005_lease_expiries
Create Date: 2026-12-01 13:30:00

* ``endpoint_secrets.secret`` holds sealed values (``webhooks_core.endpoints.sealing``):
  longer than the plain ``whsec_`` secrets, so ``text``.  Every existing row is sealed under
  the first key of ``WEBHOOKS_SEALING_KEYS`` (needed only when there are rows to convert).
* ``endpoint_secrets.scheme``: ``v1`` (a ``whsec_`` HMAC secret) or ``v1a`` (a ``whsk_``
  Ed25519 secret key); existing rows are ``v1``.
* ``endpoints.signature_schemes``: which schemes an endpoint signs with (``{v1}`` by default).
* ``endpoints.auth``: the sealed basic or bearer auth setting.
* ``endpoints.sealed_headers``: custom headers that carry credentials
  (``webhooks_core.endpoints.credentials.is_sensitive_header``), sealed; existing ones move
  out of ``endpoints.headers`` into it.

The downgrade unseals everything back (the keys are needed for it too).
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005_lease_expiries'
branch_labels = None
depends_on = None


def _ring():  # type: ignore[no-untyped-def]
    from webhooks_core.endpoints.sealing import key_ring

    return key_ring()


def _seal_secrets(conn: sa.Connection) -> None:
    rows = conn.execute(
        sa.text("SELECT id, secret FROM endpoint_secrets WHERE secret NOT LIKE 'sealed:%'")
    ).all()
    if not rows:
        return
    ring = _ring()
    conn.execute(
        sa.text("UPDATE endpoint_secrets SET secret = :sealed WHERE id = :id"),
        [{"id": row.id, "sealed": ring.seal(row.secret)} for row in rows],
    )


def _seal_headers(conn: sa.Connection) -> None:
    from webhooks_core.endpoints.credentials import split_headers

    rows = conn.execute(sa.text("SELECT id, headers FROM endpoints WHERE headers <> '{}'")).all()
    moved = []
    for row in rows:
        plain, sensitive = split_headers(row.headers)
        if sensitive:
            sealed = _ring().seal(json.dumps(sensitive, separators=(",", ":")))
            moved.append({"id": row.id, "plain": json.dumps(plain), "sealed": sealed})
    if moved:
        conn.execute(
            sa.text(
                "UPDATE endpoints SET headers = CAST(:plain AS jsonb), sealed_headers = :sealed "
                "WHERE id = :id"
            ),
            moved,
        )


def upgrade() -> None:
    op.alter_column('endpoint_secrets', 'secret', type_=sa.Text(), existing_nullable=False)
    op.add_column(
        'endpoint_secrets',
        sa.Column('scheme', sa.String(8), server_default=sa.text("'v1'"), nullable=False),
    )
    op.create_check_constraint(op.f('ck_endpoint_secrets_scheme'), 'endpoint_secrets', "scheme IN ('v1', 'v1a')")
    op.add_column(
        'endpoints',
        sa.Column(
            'signature_schemes', postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{v1}'"), nullable=False,
        ),
    )
    op.add_column('endpoints', sa.Column('auth', sa.Text(), nullable=True))
    op.add_column('endpoints', sa.Column('sealed_headers', sa.Text(), nullable=True))
    conn = op.get_bind()
    _seal_secrets(conn)
    _seal_headers(conn)


def downgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, secret FROM endpoint_secrets WHERE scheme = 'v1'"))
    plain = [{"id": r.id, "plain": _ring().unseal(r.secret)} for r in rows]
    if plain:
        conn.execute(sa.text("UPDATE endpoint_secrets SET secret = :plain WHERE id = :id"), plain)
    # v1a keys and auth settings have no home before this revision.
    conn.execute(sa.text("DELETE FROM endpoint_secrets WHERE scheme <> 'v1'"))
    rows = conn.execute(
        sa.text("SELECT id, headers, sealed_headers FROM endpoints WHERE sealed_headers IS NOT NULL")
    ).all()
    for row in rows:
        headers = {**row.headers, **json.loads(_ring().unseal(row.sealed_headers))}
        conn.execute(
            sa.text("UPDATE endpoints SET headers = CAST(:h AS jsonb) WHERE id = :id"),
            {"id": row.id, "h": json.dumps(headers)},
        )
    op.drop_column('endpoints', 'sealed_headers')
    op.drop_column('endpoints', 'auth')
    op.drop_column('endpoints', 'signature_schemes')
    op.drop_constraint(op.f('ck_endpoint_secrets_scheme'), 'endpoint_secrets', type_='check')
    op.drop_column('endpoint_secrets', 'scheme')
    op.alter_column('endpoint_secrets', 'secret', type_=sa.String(128), existing_nullable=False)
