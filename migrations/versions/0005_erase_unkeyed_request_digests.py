"""channel_requests: erase the unkeyed digests of activation bodies

An activation's idempotency record kept a plain SHA-256 of its body, which holds the PIN and the
ID number: whoever could read the table could find the PIN in a million tries. New records keep
a keyed digest (HMAC under the master key, docs/decisions.md "Activation and channels"). The old
digests are overwritten with a marker that no digest equals (it is not hex), so a late retry of
such a request is refused as a different body instead of matching. There is nothing to restore
on the way down.

Revision ID: 0005
Revises: 0004
"""
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

ERASED = 'erased: unkeyed digest (0005)'


def upgrade() -> None:
    op.execute(f"UPDATE channel_requests SET fingerprint = '{ERASED}' WHERE fingerprint <> '{ERASED}'")


def downgrade() -> None:
    """Nothing to restore: the unkeyed digests are gone for good, and no keyed one equals the marker."""
