"""SQLAlchemy models for the durable state."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (BigInteger, Boolean, Date, DateTime, ForeignKey, Index, Integer, JSON,
                        LargeBinary, MetaData, String, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {"ix": "ix_%(column_0_label)s", "uq": "uq_%(table_name)s_%(column_0_name)s",
          "ck": "ck_%(table_name)s_%(constraint_name)s",
          "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s", "pk": "pk_%(table_name)s"}

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for big tables.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: DateTime(timezone=True)}


class Person(Base):
    __tablename__ = "persons"
    id: Mapped[int] = mapped_column(primary_key=True)
    person_no: Mapped[str] = mapped_column(String(30), unique=True)
    id_type: Mapped[str] = mapped_column(String(2))
    id_number_enc: Mapped[bytes] = mapped_column(LargeBinary)
    id_index: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    phone_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    phone_index: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Enrolment(Base):
    __tablename__ = "enrolments"
    __table_args__ = (UniqueConstraint("person_id", "region_code"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id"), index=True)
    region_code: Mapped[str] = mapped_column(String(6))
    insurance_type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    since: Mapped[dt.date] = mapped_column(Date)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Voucher(Base):
    __tablename__ = "vouchers"
    id: Mapped[int] = mapped_column(primary_key=True)
    voucher_id: Mapped[str] = mapped_column(String(32), unique=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id"), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    active_region: Mapped[str] = mapped_column(String(6))
    pin_hash: Mapped[str | None] = mapped_column(String(255))
    pin_initial: Mapped[bool] = mapped_column(Boolean, default=False)
    pin_failures: Mapped[int] = mapped_column(Integer, default=0)
    pin_locked_until: Mapped[dt.datetime | None] = mapped_column()
    pin_free_limit_fen: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    suspended_at: Mapped[dt.datetime | None] = mapped_column()
    # Codes issued at or before this time are refused: the last suspension, then the
    # reinstatement that ended it (app/services/loss.py).
    tokens_valid_after: Mapped[dt.datetime | None] = mapped_column()


class Channel(Base):
    __tablename__ = "channels"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ChannelKey(Base):
    __tablename__ = "channel_keys"
    __table_args__ = (UniqueConstraint("channel_id", "serial"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    channel_id: Mapped[str] = mapped_column(ForeignKey("channels.id"), index=True)
    serial: Mapped[str] = mapped_column(String(64))
    public_key_pem: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ChannelBinding(Base):
    __tablename__ = "channel_bindings"
    __table_args__ = (UniqueConstraint("channel_id", "channel_user_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    voucher_id: Mapped[int] = mapped_column(ForeignKey("vouchers.id"), index=True)
    channel_id: Mapped[str] = mapped_column(ForeignKey("channels.id"))
    channel_user_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="active")
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    bound_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    unbound_at: Mapped[dt.datetime | None] = mapped_column()


class ChannelRequest(Base):
    """Idempotency record of channel activations, keyed by the partner's request id."""
    __tablename__ = "channel_requests"
    __table_args__ = (UniqueConstraint("channel_id", "request_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    channel_id: Mapped[str] = mapped_column(ForeignKey("channels.id"))
    request_id: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    response: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Reverification(Base):
    __tablename__ = "reverifications"
    id: Mapped[int] = mapped_column(primary_key=True)
    voucher_id: Mapped[int] = mapped_column(ForeignKey("vouchers.id"), index=True)
    channel_id: Mapped[str] = mapped_column(ForeignKey("channels.id"))
    # The channel binding (channel user) that made the face check: only its sessions may use it
    # (migration 0006; rows from before it name none and serve nobody).
    binding_id: Mapped[int | None] = mapped_column(ForeignKey("channel_bindings.id"))
    purpose: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str | None] = mapped_column(String(64))
    verified_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()
    used_at: Mapped[dt.datetime | None] = mapped_column()


class FamilyLink(Base):
    __tablename__ = "family_links"
    id: Mapped[int] = mapped_column(primary_key=True)
    link_id: Mapped[str] = mapped_column(String(32), unique=True)
    guardian_voucher_id: Mapped[int] = mapped_column(ForeignKey("vouchers.id"), index=True)
    member_person_id: Mapped[int] = mapped_column(ForeignKey("persons.id"), index=True)
    relation: Mapped[str] = mapped_column(String(32))
    document_ref: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column()
    accepted_at: Mapped[dt.datetime | None] = mapped_column()
    ended_at: Mapped[dt.datetime | None] = mapped_column()
    ended_by: Mapped[str | None] = mapped_column(String(16))


class RemoteCareFiling(Base):
    __tablename__ = "remote_care_filings"
    id: Mapped[int] = mapped_column(primary_key=True)
    filing_id: Mapped[str] = mapped_column(String(32), unique=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id"), index=True)
    care_region_code: Mapped[str] = mapped_column(String(6))
    valid_from: Mapped[dt.date] = mapped_column(Date)
    valid_until: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    cancelled_at: Mapped[dt.datetime | None] = mapped_column()


class Institution(Base):
    __tablename__ = "institutions"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    region_code: Mapped[str] = mapped_column(String(6))
    status: Mapped[str] = mapped_column(String(16), default="active")
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SigningKeyRow(Base):
    __tablename__ = "signing_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    kid: Mapped[str] = mapped_column(String(16), unique=True)
    alg: Mapped[str] = mapped_column(String(16))
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    private_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    # `current`: the newest key (signing, or waiting to sign); `retired`: superseded.
    status: Mapped[str] = mapped_column(String(16), default="current")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Signs from this instant (a rotation publishes a key a lead time before it signs) ...
    signs_from: Mapped[dt.datetime] = mapped_column()
    # ... until this one (the next key's signs_from; None while it is the newest; before
    # signs_from for a key retired while it waited, which never signs).
    retired_at: Mapped[dt.datetime | None] = mapped_column()
    # Published and verifying until this instant (retirement + longest token lifetime + skew).
    publish_until: Mapped[dt.datetime | None] = mapped_column()


class Scan(Base):
    __tablename__ = "scans"
    id: Mapped[int] = mapped_column(primary_key=True)
    scan_id: Mapped[str] = mapped_column(String(32), unique=True)
    # Only scan_id (the lookup key) and token_id (one use) are indexed: each index is one more
    # page written per scan (migration 0002).
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    voucher_id: Mapped[int] = mapped_column(ForeignKey("vouchers.id"))
    token_id: Mapped[str] = mapped_column(String(32), unique=True)
    purpose: Mapped[str] = mapped_column(String(32))
    ec_token: Mapped[str] = mapped_column(String(64))
    ec_expires_at: Mapped[dt.datetime] = mapped_column()
    result: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class UsageRecord(Base):
    """Append-only: no update or delete path; PostgreSQL and SQLite triggers refuse both."""
    __tablename__ = "usage_records"
    __table_args__ = (Index("ix_usage_records_voucher_id_id", "voucher_id", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    voucher_id: Mapped[int | None] = mapped_column(ForeignKey("vouchers.id"))
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(64))
    channel_id: Mapped[str | None] = mapped_column(String(32))
    institution_code: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Revocation(Base):
    """Feed of revoked voucher ids and token ids; the id is the cursor. A scan of a guardian's
    code looks its token id up by subject (migration 0004)."""
    __tablename__ = "revocations"
    __table_args__ = (Index("ix_revocations_subject", "subject"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class EphemeralEntry(Base):
    """SQL-backed ephemeral store: consumed tokens, nonces, issued-token sets (one table, by scope)."""
    __tablename__ = "ephemeral_entries"
    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)


class RateCounter(Base):
    __tablename__ = "rate_counters"
    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    window: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
