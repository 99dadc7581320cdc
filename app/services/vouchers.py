"""Vouchers (电子凭证): lookup, state rules and the holder's view."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from crypto import idcard
from crypto.tokens import VOUCHER_ID, new_voucher_id
from crypto.masking import mask_id_number, mask_name, mask_phone

from ..errors import DomainError
from ..extensions import cache_put
from ..store import rowlock
from ..store.models import ChannelBinding, Person, Voucher
from . import registry

MUNICIPALITIES = ("11", "12", "31", "50")  # Beijing, Tianjin, Shanghai, Chongqing pool city-wide
CHINA_TIME = dt.timezone(dt.timedelta(hours=8), "CST")  # China Standard Time, no daylight saving


def utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc)


def china_date(ts: float) -> dt.date:
    """The calendar date in China at Unix time `ts`: the dates filings are made in and ages count by."""
    return dt.datetime.fromtimestamp(ts, CHINA_TIME).date()


def iso_z(moment: dt.datetime) -> str:
    """An aware UTC datetime as RFC 3339 text with a Z."""
    return moment.isoformat().replace("+00:00", "Z")


def stored_time(value: dt.datetime) -> str:
    """A time read from the database as RFC 3339 UTC text with a Z, on every backend (SQLite
    returns naive UTC datetimes, PostgreSQL aware ones in its session's time zone)."""
    return iso_z(aware(value).astimezone(dt.timezone.utc))


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite returns naive datetimes; everything here is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def same_pooling_area(a: str, b: str) -> bool:
    """Same prefecture (first 4 digits); a municipality or a province-level code pools on 2."""
    if a[:2] != b[:2]:
        return False
    if a[:2] in MUNICIPALITIES or a.endswith("0000") or b.endswith("0000"):
        return True
    return a[:4] == b[:4]


def filing_covers(care_region: str, institution_region: str) -> bool:
    """A remote-care filing covers its prefecture (first 4 digits, SPEC §2), or the whole city
    for a municipality. Never a whole province: filings name a prefecture (regions.file)."""
    if care_region[:2] in MUNICIPALITIES:
        return care_region[:2] == institution_region[:2]
    return care_region[:4] == institution_region[:4]


def create(session: Session, person: Person) -> Voucher:
    """A new active voucher (一人一码) in the person's current insured region."""
    voucher = Voucher(voucher_id=new_voucher_id(), person_id=person.id, status="active",
                      active_region=registry.current_region(session, person), pin_initial=False,
                      pin_failures=0, pin_free_limit_fen=0)
    session.add(voucher)
    session.flush()
    return voucher


def by_public_id(session: Session, voucher_id: str) -> Voucher:
    # An id no voucher can have is not looked up (some text the database driver cannot even
    # encode, from an operator's command line).
    voucher = session.scalars(select(Voucher).where(Voucher.voucher_id == voucher_id)).first() \
        if VOUCHER_ID.fullmatch(voucher_id) else None
    if voucher is None:
        raise DomainError("voucher_not_found", "No such voucher")
    return voucher


def first_code_second(voucher) -> int | None:
    """The earliest `iat` (whole seconds) a code of this voucher may carry, or None: codes issued
    at or before its `tokens_valid_after` (the last loss report, then the reinstatement that ended
    it) are refused. Scans check it, for the code's voucher and for a guardian that showed it;
    issuance dates a code no earlier (app/services/qr.issue_time)."""
    after = voucher.tokens_valid_after
    return None if after is None else int(aware(after).timestamp()) + 1


def require_usable(voucher: Voucher, *, lost_ok: bool = False) -> None:
    """Refuse a cancelled voucher, and a suspended (reported lost) one unless `lost_ok` (a step
    that only takes access away, such as a loss report or an unbinding)."""
    if voucher.status == "suspended" and not lost_ok:
        raise DomainError("voucher_suspended", "The voucher is reported lost (挂失) and suspended")
    if voucher.status == "cancelled":
        raise DomainError("voucher_cancelled", "The voucher is cancelled")


def hold_usable(session: Session, voucher: Voucher, *, lost_ok: bool = False) -> Voucher:
    """Hold the voucher's row, read it again (`rowlock.held`) and refuse it as `require_usable`
    does. Every change of a voucher or of what hangs on it does this in the transaction that
    writes, after anything that commits (`pins.check`): a loss report, a reinstatement and a
    cancellation hold the same row, so a change that found the voucher usable before one of them
    committed waits for it and is refused, instead of committing after it."""
    rowlock.held(session, voucher)
    require_usable(voucher, lost_ok=lost_ok)
    return voucher


def of_person(session: Session, person_id: int) -> Voucher | None:
    """The person's voucher (one per person), if there is one yet."""
    return session.scalars(select(Voucher).where(Voucher.person_id == person_id)).first()


def person_of(session: Session, voucher: Voucher) -> Person:
    return session.get(Person, voucher.person_id)


_ID_FACTS_MAX = 50_000


def person_card(rt, person: Person, today: dt.date) -> dict:
    """Masked identity facts, as shown to institutions.

    Every scan shows them, so what is read off the ID number (its masked form, gender and
    birth date) is remembered per worker, keyed by the stored ciphertext: the number itself
    is decrypted once and never kept, and a changed number is a new ciphertext."""
    cache = rt.caches.setdefault("id_facts", {})
    facts = cache.get(person.id_number_enc)
    if facts is None:
        number = registry.id_number(rt, person)
        facts = (mask_id_number(number), idcard.gender(number), idcard.birth_date(number))
        cache_put(cache, person.id_number_enc, facts, _ID_FACTS_MAX)
    masked, gender, born = facts
    return {"name_masked": mask_name(person.name), "id_number_masked": masked,
            "gender": gender, "age": idcard.age_from_birth(born, today)}


def holder_view(session: Session, rt, voucher: Voucher) -> dict:
    """What `GET /v1/me` shows: status, enrolments, active region, channels, family links."""
    from . import family
    person = person_of(session, voucher)
    phone = registry.phone(rt, person)
    bindings = session.scalars(select(ChannelBinding).where(ChannelBinding.voucher_id == voucher.id,
                                                            ChannelBinding.status == "active"))
    today = china_date(rt.clock.now())
    return {
        "voucher_id": voucher.voucher_id,
        "status": voucher.status,
        "active_region": voucher.active_region,
        "person": {**person_card(rt, person, today), "phone_masked": mask_phone(phone) if phone else None},
        "enrolments": [{"region_code": e.region_code, "insurance_type": e.insurance_type,
                        "status": e.status, "since": e.since.isoformat()}
                       for e in registry.enrolments(session, person)],
        "channels": sorted(b.channel_id for b in bindings),
        "pin": {"set": voucher.pin_hash is not None, "initial": bool(voucher.pin_initial),
                "locked_until": aware(voucher.pin_locked_until).isoformat() if voucher.pin_locked_until else None,
                "free_limit_fen": voucher.pin_free_limit_fen},
        "family": family.links_view(session, rt, voucher),
    }
