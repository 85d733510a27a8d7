"""endpoint credentials: OAuth 2.0 client credentials and mutual TLS

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 13:10:00

* ``endpoints.oauth_*``: token URL, client id, sealed client secret, scopes, audience and
  client authentication method of an endpoint that takes OAuth 2.0 bearer tokens
  (client credentials grant).
* ``endpoints.tls_*``: the client certificate (PEM), its sealed private key, a CA bundle to
  trust for the endpoint, and the certificate's expiry (for the metric and the alert).

Nullable columns without defaults: PostgreSQL adds them without rewriting the table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

COLUMNS = (
    ('oauth_token_url', sa.Text(), None),
    ('oauth_client_id', sa.Text(), None),
    ('oauth_client_secret', sa.Text(), 'sealed'),
    ('oauth_scopes', postgresql.ARRAY(sa.Text()), None),
    ('oauth_audience', sa.Text(), None),
    ('oauth_auth_method', sa.String(length=32), None),
    ('tls_client_certificate', sa.Text(), 'PEM'),
    ('tls_client_key', sa.Text(), 'PEM, sealed'),
    ('tls_ca_bundle', sa.Text(), 'PEM'),
    (
        'tls_certificate_expires_at',
        sa.DateTime(timezone=True),
        "the client certificate's notAfter (metrics and alerts)",
    ),
)


def upgrade() -> None:
    for name, type_, comment in COLUMNS:
        op.add_column('endpoints', sa.Column(name, type_, nullable=True, comment=comment))


def downgrade() -> None:
    for name, _type, _comment in reversed(COLUMNS):
        op.drop_column('endpoints', name)
