"""revocations: an index on subject

A scan of a code a guardian showed for a family member refuses it when the revocation feed lists
its token id (the link it was shown under has ended), so that a link ended and made again within
the second the code is dated in does not bring the old link's codes back (docs/decisions.md,
"Family accounts"). Only guardian codes look the table up; the index keeps that one row away.

Revision ID: 0004
Revises: 0003
"""
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_revocations_subject', 'revocations', ['subject'])


def downgrade() -> None:
    op.drop_index('ix_revocations_subject', table_name='revocations')
