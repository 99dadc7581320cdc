"""Scans at the institution: verify a QR token once and hand out the visit's ec_token."""
from __future__ import annotations

import base64
import datetime as dt
import logging
import secrets

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from crypto import tokens
from crypto.tokens import TokenError

from .. import metrics
from ..errors import DomainError
from ..store.ephemeral import StoreUnavailable
from ..store.models import Person, RemoteCareFiling, Scan, Voucher
from . import family, keys, limits, records, registry
from .vouchers import aware, iso_z, person_card, require_usable, same_pooling_area, utc

log = logging.getLogger(__name__)
PURPOSES = ("registration", "outpatient_settlement", "inpatient_settlement", "pharmacy", "query", "emergency")
PAYMENT_PURPOSES = ("outpatient_settlement", "inpatient_settlement", "pharmacy")
def ec_token(region: str) -> str:
    """National shape: 6-digit region + 'ec' + 30 random characters (A-Z, 2-7: 150 bits)."""
    return region + "ec" + base64.b32encode(secrets.token_bytes(20)).decode()[:30]


def _verify(session: Session, rt, text: str, now: int):
    try:
        return tokens.verify(text, keys.keyring(rt, session), now, skew=rt.config.clock_skew,
                             issuer=rt.config.issuer)
    except TokenError as exc:
        if exc.code != "token_unknown_key":
            raise DomainError(exc.code, _TOKEN_DETAIL[exc.code]) from None
    try:  # a key rotated by another process: reload once
        return tokens.verify(text, keys.keyring(rt, session, refresh=True), now,
                             skew=rt.config.clock_skew, issuer=rt.config.issuer)
    except TokenError as exc:
        raise DomainError(exc.code, _TOKEN_DETAIL[exc.code]) from None


_TOKEN_DETAIL = {
    "token_malformed": "This is not an e-voucher code",
    "token_signature_invalid": "The code's signature is not valid",
    "token_unknown_key": "The code was signed by a key this service does not know",
    "token_expired": "The code has expired; ask the holder to refresh it",
}


def scan(session: Session, rt, inst, text: str, purpose: str) -> dict:
    """Verify, check every rule, consume once, record; refusals carry their own code."""
    try:
        return _scan(session, rt, inst, text, purpose)
    except DomainError as exc:
        metrics.SCANS.labels(exc.code).inc()
        raise


# Built once: these run on every scan.
_VOUCHER_AND_PERSON = (select(Voucher, Person).join(Person, Person.id == Voucher.person_id)
                       .where(Voucher.voucher_id == bindparam("vid")))


_INSERT_SCAN = insert(Scan)


def _scan(session: Session, rt, inst, text: str, purpose: str) -> dict:
    if inst.status != "active":
        raise DomainError("institution_inactive", "This institution may not scan")
    limits.enforce(rt, "scan", inst.code, rt.config.scan_rate_per_minute,
                   "Too many scans from this institution")
    now = int(rt.clock.now())
    claims = _verify(session, rt, text.strip(), now)
    row = session.execute(_VOUCHER_AND_PERSON, {"vid": claims.voucher_id}).first()
    if row is None:
        raise DomainError("voucher_not_found", "No such voucher")
    voucher, person = row
    try:
        facts = _check(session, rt, inst, voucher, person, claims, purpose, now)
    except DomainError as exc:
        _refused(session, voucher, inst, claims, purpose, exc.code)
        raise
    ttl = max(claims.exp - now, 0) + rt.config.clock_skew + 1
    try:
        # The SQL store marks the token inside this transaction: the mark and the scan commit together.
        fresh = rt.store.consume(voucher.voucher_id, claims.token_id, ttl,
                                 conn=session.connection() if rt.store.name == "sql" else None)
    except StoreUnavailable:
        session.rollback()
        metrics.STORE_ERRORS.labels("consume").inc()
        raise DomainError("service_unavailable", "Cannot confirm the code is unused; try again",
                          headers={"Retry-After": "1"}) from None
    if not fresh:
        session.rollback()
        _refused(session, voucher, inst, claims, purpose, "token_already_used")
        raise DomainError("token_already_used", "This code was already used; ask for a fresh one")
    return _accept(session, rt, inst, voucher, person, claims, purpose, facts, now)


def _refused(session: Session, voucher: Voucher, inst, claims, purpose: str, code: str) -> None:
    """Refusals of a code that named a voucher are part of that voucher's record too."""
    records.record(session, voucher, "scan", institution=inst.code, result=code,
                   token_id=claims.token_id, purpose=purpose)
    session.commit()
    log.info("scan refused", extra={"token_id": claims.token_id, "code": code, "institution": inst.code})


def _check(session, rt, inst, voucher, person, claims, purpose, now) -> dict:
    """Every rule that can refuse a well-signed token; returns the presenting guardian, if any."""
    require_usable(voucher)
    if voucher.suspended_at and claims.iat <= aware(voucher.suspended_at).timestamp():
        raise DomainError("token_revoked", "The code was issued before the voucher was reported lost")
    presenter = None
    if claims.actor:
        presenter = family.presenter(session, rt, voucher, claims.actor, claims.iat)
        if presenter is None:
            raise DomainError("token_revoked", "The family link this code was shown under has ended")
    enrolment = registry.active_enrolment(session, person, claims.region)
    if enrolment is None:
        raise DomainError("region_not_enrolled", "The person is not actively insured in the code's region")
    filing = None
    if not same_pooling_area(claims.region, inst.region_code) and purpose != "emergency":
        filing = covering_filing(session, person.id, inst.region_code, utc(now).date())
        if filing is None:
            raise DomainError("remote_care_filing_required",
                              "Care outside the insured area needs a remote-care filing (异地就医备案)")
    if purpose in PAYMENT_PURPOSES:
        if voucher.pin_hash is None:
            raise DomainError("pin_required", "The holder must set a payment PIN before paying")
        if voucher.pin_initial:
            raise DomainError("pin_change_required", "The holder must change the initial PIN before paying")
    return {"presenter": presenter, "enrolment": enrolment, "filing": filing}


def covering_filing(session: Session, person_id: int, region: str, today: dt.date) -> RemoteCareFiling | None:
    for f in session.scalars(select(RemoteCareFiling).where(RemoteCareFiling.person_id == person_id,
                                                           RemoteCareFiling.status == "active")
                             .order_by(RemoteCareFiling.valid_until.desc())):
        if f.valid_from <= today <= f.valid_until and same_pooling_area(f.care_region_code, region):
            return f
    return None


def _accept(session, rt, inst, voucher, person, claims, purpose, facts, now) -> dict:
    scan_id = "scn_" + secrets.token_hex(12)
    ec = ec_token(claims.region)
    ec_ttl = rt.config.ec_token_ttl
    filing = facts["filing"]
    body = {
        "scan_id": scan_id,
        "ec_token": ec,
        "ec_token_expires_in": ec_ttl,
        "person": person_card(rt, person, utc(now).date()),
        "insurance": {"region_code": claims.region, "insurance_type": facts["enrolment"].insurance_type},
        "voucher_status": voucher.status,
        "presented_by": facts["presenter"],
        "remote_care_filing_id": filing.filing_id if filing else None,
        "purpose": purpose,
        "token_id": claims.token_id,
        "scanned_at": iso_z(utc(now)),
    }
    session.connection().execute(_INSERT_SCAN, {"scan_id": scan_id, "institution_id": inst.id, "voucher_id": voucher.id,
                                   "token_id": claims.token_id, "purpose": purpose, "ec_token": ec,
                                   "ec_expires_at": utc(now + ec_ttl), "result": body, "created_at": utc(now)})
    records.record(session, voucher, "scan", institution=inst.code, result="ok", purpose=purpose,
                   token_id=claims.token_id, scan_id=scan_id, actor_guardian=bool(claims.actor))
    session.commit()
    metrics.SCANS.labels("ok").inc()
    log.info("scan accepted", extra={"token_id": claims.token_id, "scan_id": scan_id, "institution": inst.code})
    return body


def get(session: Session, inst, scan_id: str) -> dict:
    """An institution's own scan; another's looks exactly like a missing one."""
    row = session.scalars(select(Scan).where(Scan.scan_id == scan_id)).first()
    if row is None or row.institution_id != inst.id:
        raise DomainError("not_found", "No such scan for this institution")
    return row.result
