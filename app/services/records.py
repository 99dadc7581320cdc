"""Append-only usage records: every scan and every state change of a voucher."""
from __future__ import annotations

from sqlalchemy import bindparam, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ..store.models import UsageRecord, Voucher, utcnow
from ..store.prepared import Prepared
from .vouchers import stored_time

KINDS = ("activation", "bind", "unbind", "session", "reverification", "scan", "region_switch",
         "family_link", "family_accept", "family_end", "loss_report", "reinstate", "pin_set",
         "pin_change", "pin_reset", "pin_locked", "pin_free_limit", "phone_change", "filing_create",
         "filing_cancel", "qr_issued_for_member", "cancellation")


COLUMNS = ("voucher_id", "kind", "actor", "channel_id", "institution_code", "detail", "created_at")
_INSERT = Prepared(insert(UsageRecord).values({c: bindparam(c) for c in COLUMNS}))


def record(session: Session, voucher: Voucher | None, kind: str, *, actor: str | None = None,
           channel: str | None = None, institution: str | None = None, **detail) -> None:
    """Append one record in the session's transaction; details never hold an ID number, phone, PIN or token."""
    append(session.connection(), voucher.id if voucher else None, kind, actor=actor, channel=channel,
           institution=institution, **detail)


def append(conn: Connection, voucher_pk: int | None, kind: str, *, actor: str | None = None,
           channel: str | None = None, institution: str | None = None, **detail) -> None:
    """Append one record in `conn`'s transaction (a prepared insert: this is on the scan path)."""
    insert_row(conn, row(voucher_pk, kind, actor=actor, channel=channel, institution=institution, **detail))


def insert_row(conn: Connection, values: dict) -> None:
    _INSERT.run(conn, values)


def row(voucher_pk: int | None, kind: str, *, actor: str | None = None, channel: str | None = None,
        institution: str | None = None, **detail) -> dict:
    """A record's column values (COLUMNS), for `append` or a statement that inserts it itself."""
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind}")
    return {"voucher_id": voucher_pk, "kind": kind, "actor": actor, "channel_id": channel,
            "institution_code": institution, "detail": detail, "created_at": utcnow()}


def page(session: Session, voucher: Voucher, cursor: int | None, limit: int = 20) -> tuple[list, int | None]:
    """Records newest first; the cursor is the id of the last record of the previous page."""
    q = select(UsageRecord).where(UsageRecord.voucher_id == voucher.id)
    if cursor is not None:
        q = q.where(UsageRecord.id < cursor)
    rows = session.scalars(q.order_by(UsageRecord.id.desc()).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


def as_json(rec: UsageRecord) -> dict:
    return {"id": rec.id, "kind": rec.kind, "at": stored_time(rec.created_at), "actor": rec.actor,
            "channel": rec.channel_id, "institution_code": rec.institution_code, "detail": rec.detail}
