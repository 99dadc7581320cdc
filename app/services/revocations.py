"""The revocation feed for scanners that cache: revoked voucher ids and token ids by cursor."""
from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from ..store.models import Revocation
from .vouchers import stored_time

PAGE = 500
FEED_LOCK = 0x65766676  # PostgreSQL advisory lock key of the feed's writers ("evfv")


def add(session: Session, **fields) -> None:
    """Append an item to the feed, in the session's transaction.

    The feed's cursor is the row id, so ids must become visible in id order: otherwise a
    reader could see id N+1 committed, move past it, and never see N committed a moment later.
    On PostgreSQL (where sequence values are handed out before commit) feed writers therefore
    take one transaction-level advisory lock before their insert; the next writer's id is drawn
    only after this transaction ends. SQLite admits one writer at a time anyway."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FEED_LOCK})
    session.add(Revocation(**fields))


def feed(session: Session, cursor: int) -> dict:
    """Up to PAGE entries after `cursor` (0: from the start)."""
    rows = session.scalars(select(Revocation).where(Revocation.id > cursor)
                           .order_by(Revocation.id).limit(PAGE)).all()
    items = [{"cursor": str(r.id), "kind": r.kind, "id": r.subject, "reason": r.reason,
              "at": stored_time(r.created_at)} for r in rows]
    return {"items": items, "next": str(rows[-1].id) if rows else str(cursor), "more": len(rows) == PAGE}
