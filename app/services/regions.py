"""Insured regions and remote-care filings (异地就医备案)."""
from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import DomainError
from ..store.models import RemoteCareFiling, Voucher
from . import records, registry
from .vouchers import MUNICIPALITIES, china_date, filing_covers, hold_usable, person_of, same_pooling_area, utc

MAX_FILING_DAYS = 366 * 2


def switch(session: Session, rt, voucher: Voucher, region_code: str) -> dict:
    """Switch the active region among the person's active enrolments only."""
    hold_usable(session, voucher)
    person = person_of(session, voucher)
    if registry.active_enrolment(session, person, region_code) is None:
        raise DomainError("region_not_enrolled", "You are not actively insured in that region")
    old = voucher.active_region
    if old != region_code:
        voucher.active_region = region_code
        records.record(session, voucher, "region_switch", old=old, new=region_code)
    session.commit()
    return {"active_region": voucher.active_region}


def _filing_json(f: RemoteCareFiling) -> dict:
    return {"filing_id": f.filing_id, "care_region_code": f.care_region_code,
            "valid_from": f.valid_from.isoformat(), "valid_until": f.valid_until.isoformat(),
            "status": f.status}


def filings(session: Session, voucher: Voucher) -> list[dict]:
    rows = session.scalars(select(RemoteCareFiling).where(RemoteCareFiling.person_id == voucher.person_id)
                           .order_by(RemoteCareFiling.id.desc()))
    return [_filing_json(f) for f in rows]


def file(session: Session, rt, voucher: Voucher, p: dict) -> dict:
    """File remote care; an overlapping active filing for the same area is replaced, not duplicated."""
    try:
        start = dt.date.fromisoformat(p["valid_from"])
        until = dt.date.fromisoformat(p["valid_until"])
    except ValueError:
        raise DomainError("invalid_request", "valid_from and valid_until must be dates YYYY-MM-DD") from None
    today = china_date(rt.clock.now())
    if until < start or until < today:
        raise DomainError("invalid_request", "The validity window must end after it starts and not in the past")
    if (until - start).days > MAX_FILING_DAYS:
        raise DomainError("invalid_request", "A filing may cover at most two years")
    region = p["care_region_code"]
    if region.endswith("0000") and region[:2] not in MUNICIPALITIES:
        raise DomainError("invalid_request", "File for a prefecture (such as 410700), not a whole province",
                          field="care_region_code")
    # Held before the active region is read: one filing change per person at a time (no two
    # overlap), none after a loss report or a cancellation, none against a region just switched.
    hold_usable(session, voucher)
    if same_pooling_area(region, voucher.active_region):
        raise DomainError("invalid_request", "Care in your own insured area needs no filing")
    for old in session.scalars(select(RemoteCareFiling).where(RemoteCareFiling.person_id == voucher.person_id,
                                                             RemoteCareFiling.status == "active")):
        if filing_covers(old.care_region_code, region) and old.valid_from <= until and start <= old.valid_until:
            old.status, old.cancelled_at = "superseded", utc(rt.clock.now())
            records.record(session, voucher, "filing_cancel", filing_id=old.filing_id, reason="superseded")
    filing = RemoteCareFiling(filing_id="fil_" + secrets.token_hex(8), person_id=voucher.person_id,
                              care_region_code=region, valid_from=start, valid_until=until, status="active")
    session.add(filing)
    records.record(session, voucher, "filing_create", filing_id=filing.filing_id, care_region_code=region)
    session.commit()
    return _filing_json(filing)


def cancel(session: Session, rt, voucher: Voucher, filing_id: str) -> dict:
    """Cancel one of the person's filings (a cancelled or superseded one stays as it is)."""
    hold_usable(session, voucher)
    f = session.scalars(select(RemoteCareFiling).where(RemoteCareFiling.filing_id == filing_id,
                                                      RemoteCareFiling.person_id == voucher.person_id)).first()
    if f is None:
        raise DomainError("filing_not_found", "No such filing")
    if f.status == "active":
        f.status, f.cancelled_at = "cancelled", utc(rt.clock.now())
        records.record(session, voucher, "filing_cancel", filing_id=filing_id)
    session.commit()
    return _filing_json(f)
