"""The revocation feed for scanners that cache: revoked voucher ids and token ids by cursor."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..store.models import Revocation

PAGE = 500


def feed(session: Session, cursor: int) -> dict:
    """Up to PAGE entries after `cursor` (0: from the start)."""
    rows = session.scalars(select(Revocation).where(Revocation.id > cursor)
                           .order_by(Revocation.id).limit(PAGE)).all()
    items = [{"cursor": str(r.id), "kind": r.kind, "id": r.subject, "reason": r.reason,
              "at": r.created_at.isoformat()} for r in rows]
    return {"items": items, "next": str(rows[-1].id) if rows else str(cursor), "more": len(rows) == PAGE}
