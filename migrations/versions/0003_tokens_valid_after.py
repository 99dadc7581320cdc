"""vouchers.tokens_valid_after: the time a voucher's codes must be issued after

A loss report sets it to the suspension time, as `suspended_at`; a reinstatement moves it on to
the reinstatement time, so a code issued while a loss report was committing (dated after the
suspension, never shown while suspended) stays dead after the voucher is active again
(docs/decisions.md, "Codes issued while a loss report commits"). Existing suspensions carry over.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('vouchers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tokens_valid_after', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE vouchers SET tokens_valid_after = suspended_at")


def downgrade() -> None:
    with op.batch_alter_table('vouchers', schema=None) as batch_op:
        batch_op.drop_column('tokens_valid_after')
