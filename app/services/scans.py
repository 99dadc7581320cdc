"""Scans at the institution: verify a QR token once and hand out the visit's ec_token."""
from __future__ import annotations

import datetime as dt
import functools
import logging
import secrets
from types import SimpleNamespace

import orjson
from sqlalchemy import JSON, Text, bindparam, cast, insert, select
from sqlalchemy.orm import Session, aliased

from crypto import tokens
from crypto.tokens import TokenError

from .. import logs, metrics
from ..errors import DomainError
from ..store.ephemeral import StoreUnavailable
from ..store.models import Enrolment, FamilyLink, Person, RemoteCareFiling, Scan, UsageRecord, Voucher
from ..store.prepared import Prepared, dialect_insert
from ..store.writelock import writes
from . import family, keys, limits, pins, records
from .vouchers import (china_date, filing_covers, first_code_second, iso_z, person_card, require_usable,
                       same_pooling_area, utc)

log = logging.getLogger(__name__)
# The scans counter's child for each result, looked up once (a label lookup validates and locks).
_counted = functools.cache(metrics.SCANS.labels)
PURPOSES = ("registration", "outpatient_settlement", "inpatient_settlement", "pharmacy", "query", "emergency")
PAYMENT_PURPOSES = ("outpatient_settlement", "inpatient_settlement", "pharmacy")
# What each institution kind (institutions.KINDS) may scan for (docs/decisions.md, "Scan purposes
# by institution kind"): a retail pharmacy (定点零售药店) sells medicines and looks a person up; it
# registers no patient, settles no visit or stay, and runs no emergency room (whose purpose skips
# the remote-care filing).
KIND_PURPOSES = {"hospital": PURPOSES, "pharmacy": ("pharmacy", "query")}


# Each random byte picks one of the 32 characters by its low 5 bits (256 is a multiple of 32, so
# every character is equally likely): the same 150 bits as base32 of 20 bytes, without its work.
_EC_CHARS = bytes.maketrans(bytes(range(256)), b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" * 8)


def ec_token(region: str) -> str:
    """National shape: 6-digit region + 'ec' + 30 random characters (A-Z, 2-7: 150 bits)."""
    return region + "ec" + secrets.token_bytes(30).translate(_EC_CHARS).decode()


def new_scan_id(now: float) -> str:
    """'scn_' + 24 hex digits: the time in milliseconds (12), then 48 random bits (12).

    Ids that grow with time are appended at the end of the scan_id index instead of landing on a
    random page of it: a scan dirties, and a checkpoint copies, one page fewer. They reveal only
    the time, which the scan's own answer states; GET /v1/scans/{id} is the scanning
    institution's alone either way."""
    return "scn_%012x%s" % (int(now * 1000), secrets.token_hex(6))


def _verify(rt, text: str, now: int):
    try:
        return tokens.verify(text, keys.keyring(rt), now, skew=rt.config.clock_skew,
                             issuer=rt.config.issuer)
    except TokenError as exc:
        if exc.code != "token_unknown_key":
            raise DomainError(exc.code, _TOKEN_DETAIL[exc.code]) from None
    try:  # a key rotated by another process: reload once
        return tokens.verify(text, keys.keyring(rt, refresh=True), now,
                             skew=rt.config.clock_skew, issuer=rt.config.issuer)
    except TokenError as exc:
        raise DomainError(exc.code, _TOKEN_DETAIL[exc.code]) from None


_TOKEN_DETAIL = {
    "token_malformed": "This is not an e-voucher code",
    "token_signature_invalid": "The code's signature is not valid",
    "token_unknown_key": "The code was signed by a key this service does not know",
    "token_expired": "The code has expired; ask the holder to refresh it",
}


def scan(rt, inst, text: str, purpose: str) -> str:
    """Verify, check every rule, consume once, record; refusals carry their own code. Returns
    the answer as JSON text: serialized once, the same text is stored with the scan and sent.

    The scan's writes go through a Core connection of its own (prepared statements, one
    commit), in autocommit on PostgreSQL with Redis (create_app); the request's ORM session is
    opened only for the rare reads (family links, remote-care filings)."""
    try:
        with rt.hot_connection() as conn:  # this thread's, kept open (app/store/hotconn.py)
            return _scan(conn, rt, inst, text, purpose)
    except DomainError as exc:
        _counted(exc.code).inc()
        raise


# Built once: this runs on every scan. The voucher, its person and the person's active
# enrolment in the code's region, in one statement.
_LOAD = Prepared(
    select(Voucher.id, Voucher.voucher_id, Voucher.status, Voucher.tokens_valid_after, Voucher.pin_hash,
           Voucher.pin_initial, Voucher.pin_locked_until, Voucher.person_id, Person.name.label("person_name"),
           Person.id_number_enc, Enrolment.insurance_type)
    .join(Person, Person.id == Voucher.person_id)
    .outerjoin(Enrolment, (Enrolment.person_id == Person.id) & (Enrolment.region_code == bindparam("region"))
               & (Enrolment.status == "active"))
    .where(Voucher.voucher_id == bindparam("vid")))
_SCAN_COLUMNS = ("scan_id", "institution_id", "voucher_id", "token_id", "purpose", "ec_token", "ec_expires_at",
                 "result", "created_at")


def _insert_scan_stmt(dialect, shown: bool = False):
    """The scan row, inserted only while the voucher still admits the code and only once per
    token; otherwise nothing is inserted and no id returned (instead of an error).

    One use: scan rows are unique by token_id. The voucher's state was checked when it was
    loaded, and is checked again by this insert because a loss report may have committed since:
    the row is selected from the voucher's own row (`voucher_id` and `issued_at` are
    parameters), share-locked on PostgreSQL, so the report's update waits for this scan's
    commit, or this insert waits for the report's and then sees it. SQLite has one writer at a
    time (docs/decisions.md, "Loss report and concurrent scans").

    `shown`: a code a guardian showed for the member. The guardian's voucher and the family link
    it was shown under (`guardian_id`, `link_id`) are joined, checked again and share-locked the
    same way, so the guardian's loss report and the link's end are ordered against the scan too."""
    table = Scan.__table__
    values = [Voucher.id if c == "voucher_id" else bindparam(c, type_=table.c[c].type) for c in _SCAN_COLUMNS]
    # `result` arrives as JSON text, the very text the answer sends (serialized once); the
    # column's JSON type would encode it a second time, as a string.
    text_param = bindparam("result", type_=Text)
    values[_SCAN_COLUMNS.index("result")] = cast(text_param, JSON) if dialect.name == "postgresql" else text_param
    issued_at = bindparam("issued_at", type_=Voucher.tokens_valid_after.type)
    admitted = select(*values).where(Voucher.id == bindparam("voucher_id"), Voucher.status == "active",
                                     Voucher.tokens_valid_after.is_(None) | (Voucher.tokens_valid_after < issued_at))
    if shown:
        guardian = aliased(Voucher, name="guardian")
        admitted = (admitted.join(FamilyLink, (FamilyLink.id == bindparam("link_id"))
                                  & (FamilyLink.member_person_id == Voucher.person_id))
                    .join(guardian, guardian.id == bindparam("guardian_id"))
                    .where(*family.shown_still(guardian, issued_at)))
    admitted = admitted.with_for_update(read=True)
    return (dialect_insert(dialect)(Scan).from_select(list(_SCAN_COLUMNS), admitted)
            .on_conflict_do_nothing(index_elements=["token_id"]).returning(Scan.id))


def _accept_stmt(dialect, shown: bool = False):
    """PostgreSQL: the scan row and, only if it went in, its usage record, in one statement
    (data-modifying CTEs). The record's parameters are the record's columns prefixed `record_`."""
    scan_row = _insert_scan_stmt(dialect, shown).cte("scan_row")
    table = UsageRecord.__table__
    values = select(*[bindparam("record_" + c, type_=table.c[c].type) for c in records.COLUMNS]
                    ).select_from(scan_row)
    return select(scan_row.c.id).add_cte(insert(table).from_select(list(records.COLUMNS), values).cte("record"))


_INSERT_SCAN = Prepared(_insert_scan_stmt)
_ACCEPT_PG = Prepared(_accept_stmt)
_INSERT_SHOWN_SCAN = Prepared(functools.partial(_insert_scan_stmt, shown=True))
_ACCEPT_SHOWN_PG = Prepared(functools.partial(_accept_stmt, shown=True))


def _load(conn, claims):
    """(voucher, person, insurance type or None) as plain objects with the ORM's attribute names."""
    row = _LOAD.one(conn, {"vid": claims.voucher_id, "region": claims.region})
    if row is None:
        raise DomainError("voucher_not_found", "No such voucher")
    voucher = SimpleNamespace(id=row["id"], voucher_id=row["voucher_id"], status=row["status"],
                              tokens_valid_after=row["tokens_valid_after"], pin_hash=row["pin_hash"],
                              pin_initial=row["pin_initial"], pin_locked_until=row["pin_locked_until"],
                              person_id=row["person_id"])
    person = SimpleNamespace(id=row["person_id"], name=row["person_name"], id_number_enc=row["id_number_enc"])
    return voucher, person, row["insurance_type"]


_LIMIT_DETAIL = "Too many scans from this institution"


def _count(conn, rt, inst, mark=None) -> bool:
    """The start of a scan's one short write transaction, under the SQLite writer lock
    (app/store/writelock.py, taken by the caller): this attempt's count against the
    institution's limit. The SQL store counts inside `conn`'s transaction, and a refusal at the
    limit rolls it back; Redis counts on its own and, given `mark` (voucher, claims, now: the
    accepted path), also marks the token used in the same round trip. False when that mark
    found the token already used."""
    try:
        if mark is not None and rt.store.name != "sql":
            return _count_and_mark(rt, inst, *mark)
        limits.enforce(rt, "scan", inst.code, rt.config.scan_rate_per_minute, _LIMIT_DETAIL, conn=conn)
        return True
    except DomainError:
        conn.rollback()
        raise


def _scan(conn, rt, inst, text: str, purpose: str) -> dict:
    if inst.status != "active":
        raise DomainError("institution_inactive", "This institution may not scan")
    now = int(rt.clock.now())
    # Every attempt counts once against the institution's limit, in the write phase that
    # records its outcome when there is one; everything else is done before that phase.
    try:
        claims = _verify(rt, text.strip(), now)
        voucher, person, insurance_type = _load(conn, claims)
    except DomainError:
        conn.rollback()
        with writes(rt.engine):
            _count(conn, rt, inst)
            conn.commit()
        raise
    try:
        facts = _check(rt, inst, voucher, person, insurance_type, claims, purpose, now)
    except DomainError as exc:
        with writes(rt.engine):
            _count(conn, rt, inst)
            _refused(conn, voucher, inst, claims, purpose, exc.code)
        raise
    body = _body(rt, voucher, person, claims, purpose, facts, now)
    answer = orjson.dumps(body).decode()  # compact, non-ASCII kept: json.dumps's time / 8
    rows = _accepted_rows(inst, voucher, claims, purpose, body, answer, now, facts["shown"])  # before the lock
    with writes(rt.engine):
        if not (_count(conn, rt, inst, (voucher, claims, now)) and _write_accepted(conn, *rows)):
            # Nothing was written but the count, which stands: record the refusal with it.
            refusal = _not_written(conn, claims, facts["shown"])
            _refused(conn, voucher, inst, claims, purpose, refusal.code)
            raise refusal
        conn.commit()
    _counted("ok").inc()
    logs.event(log, "scan accepted", token_id=claims.token_id, scan_id=body["scan_id"], institution=inst.code)
    return answer


def _count_and_mark(rt, inst, voucher, claims, now) -> bool:
    """With Redis, count the attempt and mark the token used (SET NX) in one round trip, so
    that nodes turn a second use away before the database. The SQL store needs no mark of its
    own: the scan row, unique by token_id and written in the scan's transaction, is the mark.

    Both always run; a scan refused at the limit has not used the code, so its mark is taken
    back and the holder's code stays good. A mark that cannot be confirmed fails the scan closed."""
    ttl = max(claims.exp - now, 0) + rt.config.clock_skew + 1
    try:
        counted, fresh = rt.store.hit_and_consume(limits.key("scan", inst.code), rt.config.scan_rate_per_minute,
                                                  limits.WINDOW, voucher.voucher_id, claims.token_id, ttl)
    except StoreUnavailable:
        metrics.STORE_ERRORS.labels("consume").inc()
        raise DomainError("service_unavailable", "Cannot confirm the code is unused; try again",
                          headers={"Retry-After": "1"}) from None
    try:
        limits.judge("scan", counted, _LIMIT_DETAIL)
    except DomainError:
        if fresh:
            try:
                rt.store.release(voucher.voucher_id, claims.token_id)
            except StoreUnavailable:  # the code stays spent: the holder shows a fresh one
                metrics.STORE_ERRORS.labels("release").inc()
        raise
    return fresh


def _not_written(conn, claims, shown) -> DomainError:
    """Why an accepted code got no scan row: the voucher no longer admits it (reloaded, for a
    loss report that committed since it was loaded), or the guardian who showed it or their
    link to the member no longer does, or else the code was used already."""
    voucher, _person, _insurance_type = _load(conn, claims)
    try:
        _admits(voucher, claims)
        if shown is not None:
            family.refuse_if_no_longer_shown(conn, *shown, claims.iat)
    except DomainError as exc:
        return exc
    return DomainError("token_already_used", "This code was already used; ask for a fresh one")


def _accepted_rows(inst, voucher, claims, purpose, body, answer: str, now, shown) -> tuple[dict, dict]:
    """The scan row's parameters (its `result` is the answer's JSON text, stored as sent; with
    `issued_at`, the code's issue time the insert checks against a suspension, and for a code a
    guardian showed, `guardian_id` and `link_id`) and its "ok" record."""
    scan_row = {
        "scan_id": body["scan_id"], "institution_id": inst.id, "voucher_id": voucher.id,
        "token_id": claims.token_id, "purpose": purpose, "ec_token": body["ec_token"],
        "ec_expires_at": utc(now + body["ec_token_expires_in"]), "result": answer, "created_at": utc(now),
        "issued_at": utc(claims.iat)}
    if shown is not None:
        scan_row["guardian_id"], scan_row["link_id"] = shown
    record = records.row(voucher.id, "scan", institution=inst.code, result="ok", purpose=purpose,
                         token_id=claims.token_id, scan_id=body["scan_id"], actor_guardian=bool(claims.actor))
    return scan_row, record


def _write_accepted(conn, scan_row: dict, record: dict) -> bool:
    """Write the scan row and its "ok" usage record; False, with nothing written, when this
    token already has a scan row or the voucher no longer admits it."""
    shown = "guardian_id" in scan_row
    if conn.dialect.name == "postgresql":
        scan_row.update(("record_" + k, v) for k, v in record.items())
        return (_ACCEPT_SHOWN_PG if shown else _ACCEPT_PG).one(conn, scan_row) is not None
    if (_INSERT_SHOWN_SCAN if shown else _INSERT_SCAN).one(conn, scan_row) is None:
        return False
    records.insert_row(conn, record)
    return True


def _refused(conn, voucher, inst, claims, purpose: str, code: str) -> None:
    """Refusals of a code that named a voucher are part of that voucher's record too."""
    records.append(conn, voucher.id, "scan", institution=inst.code, result=code,
                   token_id=claims.token_id, purpose=purpose)
    conn.commit()
    logs.event(log, "scan refused", token_id=claims.token_id, code=code, institution=inst.code)


def _check(rt, inst, voucher, person, insurance_type, claims, purpose, now) -> dict:
    """Every rule that can refuse a well-signed token. Returns the facts the answer and the write
    need: the presenting guardian, if any (`presenter` for the answer, `shown` for the write)."""
    allowed = KIND_PURPOSES.get(inst.kind, ())
    if purpose not in allowed:  # first: the answer then tells nothing of the voucher
        raise DomainError("forbidden", f"A {inst.kind} may not scan for {purpose} "
                                       f"(it may for: {', '.join(allowed) or 'none'})")
    _admits(voucher, claims)
    presenter = shown = None
    if claims.actor:
        presenter, shown = family.presenter(rt.session(), rt, voucher, claims.actor, claims.iat, claims.token_id)
    if insurance_type is None:
        raise DomainError("region_not_enrolled", "The person is not actively insured in the code's region")
    filing = None
    if not same_pooling_area(claims.region, inst.region_code) and purpose != "emergency":
        filing = covering_filing(rt.session(), person.id, inst.region_code, china_date(now))
        if filing is None:
            raise DomainError("remote_care_filing_required",
                              "Care outside the insured area needs a remote-care filing (异地就医备案)")
    if purpose in PAYMENT_PURPOSES:
        if voucher.pin_hash is None:
            raise DomainError("pin_required", "The holder must set a payment PIN before paying")
        if voucher.pin_initial:
            raise DomainError("pin_change_required", "The holder must change the initial PIN before paying")
        pins.refuse_locked(voucher, utc(now), "The holder's PIN is locked after 5 wrong tries; no payment "
                                              "until it opens again or is reset through a channel")
    return {"presenter": presenter, "shown": shown, "insurance_type": insurance_type, "filing": filing}


def _admits(voucher, claims) -> None:
    """The voucher's own state lets the code through: active, and the code issued after any
    loss report and the reinstatement that ended it (the scan row's insert checks the same
    again, in SQL)."""
    require_usable(voucher)
    first = first_code_second(voucher)
    if first is not None and claims.iat < first:
        raise DomainError("token_revoked", "The code was issued before the voucher was reported lost or reinstated")


def covering_filing(session: Session, person_id: int, region: str, today: dt.date) -> RemoteCareFiling | None:
    for f in session.scalars(select(RemoteCareFiling).where(RemoteCareFiling.person_id == person_id,
                                                           RemoteCareFiling.status == "active")
                             .order_by(RemoteCareFiling.valid_until.desc())):
        if f.valid_from <= today <= f.valid_until and filing_covers(f.care_region_code, region):
            return f
    return None


def _body(rt, voucher, person, claims, purpose, facts, now) -> dict:
    filing = facts["filing"]
    return {
        "scan_id": new_scan_id(rt.clock.now()),
        "ec_token": ec_token(claims.region),
        "ec_token_expires_in": rt.config.ec_token_ttl,
        "person": person_card(rt, person, china_date(now)),
        "insurance": {"region_code": claims.region, "insurance_type": facts["insurance_type"]},
        "voucher_status": voucher.status,
        "presented_by": facts["presenter"],
        "remote_care_filing_id": filing.filing_id if filing else None,
        "purpose": purpose,
        "token_id": claims.token_id,
        "scanned_at": iso_z(utc(now)),
    }


def get(session: Session, inst, scan_id: str) -> dict:
    """An institution's own scan; another's looks exactly like a missing one."""
    row = session.scalars(select(Scan).where(Scan.scan_id == scan_id)).first()
    if row is None or row.institution_id != inst.id:
        raise DomainError("not_found", "No such scan for this institution")
    return row.result
