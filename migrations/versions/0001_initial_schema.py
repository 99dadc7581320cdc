"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 09:39:20.808519
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('channels',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('app_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_channels'))
    )
    op.create_table('ephemeral_entries',
    sa.Column('scope', sa.String(length=32), nullable=False),
    sa.Column('key', sa.String(length=160), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('scope', 'key', name=op.f('pk_ephemeral_entries'))
    )
    with op.batch_alter_table('ephemeral_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ephemeral_entries_expires_at'), ['expires_at'], unique=False)

    op.create_table('institutions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('region_code', sa.String(length=6), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('secret_hash', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_institutions')),
    sa.UniqueConstraint('client_id', name=op.f('uq_institutions_client_id')),
    sa.UniqueConstraint('code', name=op.f('uq_institutions_code'))
    )
    op.create_table('persons',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('person_no', sa.String(length=30), nullable=False),
    sa.Column('id_type', sa.String(length=2), nullable=False),
    sa.Column('id_number_enc', sa.LargeBinary(), nullable=False),
    sa.Column('id_index', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('phone_enc', sa.LargeBinary(), nullable=True),
    sa.Column('phone_index', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_persons')),
    sa.UniqueConstraint('id_index', name=op.f('uq_persons_id_index')),
    sa.UniqueConstraint('person_no', name=op.f('uq_persons_person_no'))
    )
    with op.batch_alter_table('persons', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_persons_phone_index'), ['phone_index'], unique=False)

    op.create_table('rate_counters',
    sa.Column('key', sa.String(length=160), nullable=False),
    sa.Column('window', sa.BigInteger(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('key', 'window', name=op.f('pk_rate_counters'))
    )
    with op.batch_alter_table('rate_counters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rate_counters_expires_at'), ['expires_at'], unique=False)

    op.create_table('revocations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('subject', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_revocations'))
    )
    op.create_table('signing_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kid', sa.String(length=16), nullable=False),
    sa.Column('alg', sa.String(length=16), nullable=False),
    sa.Column('public_key', sa.LargeBinary(), nullable=False),
    sa.Column('private_sealed', sa.LargeBinary(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('publish_until', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signing_keys')),
    sa.UniqueConstraint('kid', name=op.f('uq_signing_keys_kid'))
    )
    op.create_table('channel_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('channel_id', sa.String(length=32), nullable=False),
    sa.Column('serial', sa.String(length=64), nullable=False),
    sa.Column('public_key_pem', sa.LargeBinary(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['channel_id'], ['channels.id'], name=op.f('fk_channel_keys_channel_id_channels')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_channel_keys')),
    sa.UniqueConstraint('channel_id', 'serial', name=op.f('uq_channel_keys_channel_id'))
    )
    with op.batch_alter_table('channel_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_channel_keys_channel_id'), ['channel_id'], unique=False)

    op.create_table('channel_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('channel_id', sa.String(length=32), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('response', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['channel_id'], ['channels.id'], name=op.f('fk_channel_requests_channel_id_channels')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_channel_requests')),
    sa.UniqueConstraint('channel_id', 'request_id', name=op.f('uq_channel_requests_channel_id'))
    )
    op.create_table('enrolments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.Column('region_code', sa.String(length=6), nullable=False),
    sa.Column('insurance_type', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('since', sa.Date(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_enrolments_person_id_persons')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_enrolments')),
    sa.UniqueConstraint('person_id', 'region_code', name=op.f('uq_enrolments_person_id'))
    )
    with op.batch_alter_table('enrolments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_enrolments_person_id'), ['person_id'], unique=False)

    op.create_table('remote_care_filings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('filing_id', sa.String(length=32), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.Column('care_region_code', sa.String(length=6), nullable=False),
    sa.Column('valid_from', sa.Date(), nullable=False),
    sa.Column('valid_until', sa.Date(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_remote_care_filings_person_id_persons')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_remote_care_filings')),
    sa.UniqueConstraint('filing_id', name=op.f('uq_remote_care_filings_filing_id'))
    )
    with op.batch_alter_table('remote_care_filings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_remote_care_filings_person_id'), ['person_id'], unique=False)

    op.create_table('vouchers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('voucher_id', sa.String(length=32), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('active_region', sa.String(length=6), nullable=False),
    sa.Column('pin_hash', sa.String(length=255), nullable=True),
    sa.Column('pin_initial', sa.Boolean(), nullable=False),
    sa.Column('pin_failures', sa.Integer(), nullable=False),
    sa.Column('pin_locked_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('pin_free_limit_fen', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('suspended_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_vouchers_person_id_persons')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_vouchers')),
    sa.UniqueConstraint('person_id', name=op.f('uq_vouchers_person_id')),
    sa.UniqueConstraint('voucher_id', name=op.f('uq_vouchers_voucher_id'))
    )
    op.create_table('channel_bindings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('voucher_id', sa.Integer(), nullable=False),
    sa.Column('channel_id', sa.String(length=32), nullable=False),
    sa.Column('channel_user_id', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('session_epoch', sa.Integer(), nullable=False),
    sa.Column('bound_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('unbound_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['channel_id'], ['channels.id'], name=op.f('fk_channel_bindings_channel_id_channels')),
    sa.ForeignKeyConstraint(['voucher_id'], ['vouchers.id'], name=op.f('fk_channel_bindings_voucher_id_vouchers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_channel_bindings')),
    sa.UniqueConstraint('channel_id', 'channel_user_id', name=op.f('uq_channel_bindings_channel_id'))
    )
    with op.batch_alter_table('channel_bindings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_channel_bindings_voucher_id'), ['voucher_id'], unique=False)

    op.create_table('family_links',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('link_id', sa.String(length=32), nullable=False),
    sa.Column('guardian_voucher_id', sa.Integer(), nullable=False),
    sa.Column('member_person_id', sa.Integer(), nullable=False),
    sa.Column('relation', sa.String(length=32), nullable=False),
    sa.Column('document_ref', sa.String(length=128), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('accepted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_by', sa.String(length=16), nullable=True),
    sa.ForeignKeyConstraint(['guardian_voucher_id'], ['vouchers.id'], name=op.f('fk_family_links_guardian_voucher_id_vouchers')),
    sa.ForeignKeyConstraint(['member_person_id'], ['persons.id'], name=op.f('fk_family_links_member_person_id_persons')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_family_links')),
    sa.UniqueConstraint('link_id', name=op.f('uq_family_links_link_id'))
    )
    with op.batch_alter_table('family_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_family_links_guardian_voucher_id'), ['guardian_voucher_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_family_links_member_person_id'), ['member_person_id'], unique=False)

    op.create_table('reverifications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('voucher_id', sa.Integer(), nullable=False),
    sa.Column('channel_id', sa.String(length=32), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('subject', sa.String(length=64), nullable=True),
    sa.Column('verified_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['channel_id'], ['channels.id'], name=op.f('fk_reverifications_channel_id_channels')),
    sa.ForeignKeyConstraint(['voucher_id'], ['vouchers.id'], name=op.f('fk_reverifications_voucher_id_vouchers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reverifications'))
    )
    with op.batch_alter_table('reverifications', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reverifications_voucher_id'), ['voucher_id'], unique=False)

    op.create_table('scans',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scan_id', sa.String(length=32), nullable=False),
    sa.Column('institution_id', sa.Integer(), nullable=False),
    sa.Column('voucher_id', sa.Integer(), nullable=False),
    sa.Column('token_id', sa.String(length=32), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('ec_token', sa.String(length=64), nullable=False),
    sa.Column('ec_expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['institution_id'], ['institutions.id'], name=op.f('fk_scans_institution_id_institutions')),
    sa.ForeignKeyConstraint(['voucher_id'], ['vouchers.id'], name=op.f('fk_scans_voucher_id_vouchers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scans')),
    sa.UniqueConstraint('ec_token', name=op.f('uq_scans_ec_token')),
    sa.UniqueConstraint('scan_id', name=op.f('uq_scans_scan_id')),
    sa.UniqueConstraint('token_id', name=op.f('uq_scans_token_id'))
    )
    with op.batch_alter_table('scans', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scans_institution_id'), ['institution_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_scans_voucher_id'), ['voucher_id'], unique=False)

    op.create_table('usage_records',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('voucher_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=True),
    sa.Column('channel_id', sa.String(length=32), nullable=True),
    sa.Column('institution_code', sa.String(length=32), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['voucher_id'], ['vouchers.id'], name=op.f('fk_usage_records_voucher_id_vouchers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_usage_records'))
    )
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.create_index('ix_usage_records_voucher_id_id', ['voucher_id', 'id'], unique=False)

    _append_only_triggers()


APPEND_ONLY = ("usage_records", "revocations")


def _append_only_triggers() -> None:
    """Usage records (and the revocation feed) have no update or delete path, in any client."""
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("""
            CREATE FUNCTION evoucher_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
            END $$""")
        for table in APPEND_ONLY:
            op.execute(f"""CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
                           FOR EACH ROW EXECUTE FUNCTION evoucher_refuse_change()""")
            op.execute(f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
                           FOR EACH STATEMENT EXECUTE FUNCTION evoucher_refuse_change()""")
    elif dialect == "sqlite":
        for table in APPEND_ONLY:
            for action in ("UPDATE", "DELETE"):
                op.execute(f"""CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table}
                               BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END""")


def _drop_append_only_triggers() -> None:
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        elif dialect == "sqlite":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS evoucher_refuse_change()")



def downgrade() -> None:
    _drop_append_only_triggers()
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_records_voucher_id_id')

    op.drop_table('usage_records')
    with op.batch_alter_table('scans', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scans_voucher_id'))
        batch_op.drop_index(batch_op.f('ix_scans_institution_id'))

    op.drop_table('scans')
    with op.batch_alter_table('reverifications', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reverifications_voucher_id'))

    op.drop_table('reverifications')
    with op.batch_alter_table('family_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_family_links_member_person_id'))
        batch_op.drop_index(batch_op.f('ix_family_links_guardian_voucher_id'))

    op.drop_table('family_links')
    with op.batch_alter_table('channel_bindings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_channel_bindings_voucher_id'))

    op.drop_table('channel_bindings')
    op.drop_table('vouchers')
    with op.batch_alter_table('remote_care_filings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_remote_care_filings_person_id'))

    op.drop_table('remote_care_filings')
    with op.batch_alter_table('enrolments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_enrolments_person_id'))

    op.drop_table('enrolments')
    op.drop_table('channel_requests')
    with op.batch_alter_table('channel_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_channel_keys_channel_id'))

    op.drop_table('channel_keys')
    op.drop_table('signing_keys')
    op.drop_table('revocations')
    with op.batch_alter_table('rate_counters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rate_counters_expires_at'))

    op.drop_table('rate_counters')
    with op.batch_alter_table('persons', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_persons_phone_index'))

    op.drop_table('persons')
    op.drop_table('institutions')
    with op.batch_alter_table('ephemeral_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ephemeral_entries_expires_at'))

    op.drop_table('ephemeral_entries')
    op.drop_table('channels')
