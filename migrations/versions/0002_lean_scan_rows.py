"""lean scan rows: drop indexes no query uses

Every index is one more B-tree page written (and, on SQLite, one more WAL frame) per scan.
No query looks scans up by institution, voucher or ec_token: institutions read a scan by
scan_id, and the holder's history is in usage_records. ec_token carries 150 random bits and
is never a lookup key, so its unique index guarded nothing. scan_id and token_id stay unique:
the first is the lookup key, the second is the one-use guarantee (docs/decisions.md).

Revision ID: 0002
Revises: 0001
"""
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('scans', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scans_institution_id'))
        batch_op.drop_index(batch_op.f('ix_scans_voucher_id'))
        batch_op.drop_constraint(batch_op.f('uq_scans_ec_token'), type_='unique')


def downgrade() -> None:
    with op.batch_alter_table('scans', schema=None) as batch_op:
        batch_op.create_unique_constraint(batch_op.f('uq_scans_ec_token'), ['ec_token'])
        batch_op.create_index(batch_op.f('ix_scans_voucher_id'), ['voucher_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_scans_institution_id'), ['institution_id'], unique=False)
