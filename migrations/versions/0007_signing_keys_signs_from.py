"""signing_keys.signs_from: the time a key starts to sign

`evoucher keys rotate` publishes a new key in the JWKS at once and lets it sign only after a
lead time (KEY_ROTATION_LEAD_TIME), so that scanners verifying offline from a cached JWKS hold it
before the first code it signs; the key it replaces signs until then (`retired_at`, now also a
time that may lie ahead). Every worker switches on its own clock. An existing key has signed
since it was made: its `signs_from` is its `created_at`.

Going down drops the column: a key still waiting to sign would then sign at once.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('signs_from', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE signing_keys SET signs_from = created_at")
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.alter_column('signs_from', existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.drop_column('signs_from')
