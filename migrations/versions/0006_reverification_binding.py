"""reverifications.binding_id: the channel binding (channel user) that made the face check

A `pin_reset` or `family_accept` face check serves only sessions of the channel binding that made
it, not a session the same voucher has in another channel or through another account
(docs/decisions.md, "Activation and channels"). Face checks recorded before this revision name no
binding and serve nobody: they are valid ten minutes, and the holder asks the channel again.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('reverifications', schema=None) as batch_op:
        batch_op.add_column(sa.Column('binding_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_reverifications_binding_id_channel_bindings'),
                                    'channel_bindings', ['binding_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('reverifications', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_reverifications_binding_id_channel_bindings'), type_='foreignkey')
        batch_op.drop_column('binding_id')
