"""The payment PIN (医保支付密码): one PIN for all channels, argon2id, lock after 5 misses;
and the holder settings it guards (password-free limit, phone number)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import func, or_, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from crypto import idcard
from crypto.masking import mask_phone
from crypto.pins import is_weak_pin

from ..errors import DomainError
from ..store.models import Person, Voucher
from . import limits, records, registry
from .vouchers import aware, hold_usable, person_of, require_usable, utc

MAX_FAILURES = 5
LOCK_HOURS = 24
INITIAL_PINS = ("000000", "123456")
MAX_FREE_LIMIT_FEN = 500_000  # 5,000 yuan


def _birth_date(rt, person: Person) -> dt.date | None:
    try:
        return idcard.birth_date(registry.id_number(rt, person))
    except ValueError:
        return None


def set_new(session: Session, rt, voucher: Voucher, person: Person, pin: str, *, kind: str,
            allow_initial: bool = True) -> None:
    """Store a new PIN. A card's initial PIN passed through at activation is kept but flagged."""
    if allow_initial and pin in INITIAL_PINS:
        voucher.pin_hash, voucher.pin_initial = rt.pins.hash(pin), True
    else:
        reason = is_weak_pin(pin, _birth_date(rt, person))
        if reason:
            raise DomainError("pin_too_weak", f"The PIN is too easy to guess: {reason}")
        voucher.pin_hash, voucher.pin_initial = rt.pins.hash(pin), False
    voucher.pin_failures, voucher.pin_locked_until = 0, None
    records.record(session, voucher, kind)


def _unlocked(now: dt.datetime):
    return or_(Voucher.pin_locked_until.is_(None), Voucher.pin_locked_until <= now)


def _reload_lock(session: Session, voucher: Voucher) -> None:
    """Read the lock state back: the counting updates bypass the ORM object."""
    session.refresh(voucher, ["pin_failures", "pin_locked_until"])


def refuse_locked(voucher, now: dt.datetime,
                  detail: str = "The PIN is locked after 5 wrong tries; reset it through a channel") -> None:
    """`pin_locked` with the time it opens again, while the voucher's PIN is locked at `now`."""
    locked = aware(voucher.pin_locked_until)
    if locked and locked > now:
        raise DomainError("pin_locked", detail, locked_until=locked.isoformat())


def check(session: Session, rt, voucher: Voucher, pin: str | None) -> None:
    """Verify the PIN; five misses in a row lock it for 24 hours.

    Each try is counted as a miss, atomically and committed, *before* the hash is checked, and
    a try is admitted only while fewer than five are counted: parallel tries cannot outrun the
    lock (at most five hashes are ever checked between two right PINs). A right PIN then clears
    the count, unless a parallel miss locked the PIN meanwhile. The session is committed, so call
    this before changing anything else in it (with a hash re-made under the configured argon2
    cost if it was made under another)."""
    if voucher.pin_hash is None:
        raise DomainError("pin_required", "Set a payment PIN first")
    if not pin:
        raise DomainError("pin_required", "The payment PIN is required")
    now = utc(rt.clock.now())
    refuse_locked(voucher, now)
    limits.enforce(rt, "pin", voucher.voucher_id, rt.config.pin_rate_per_minute,
                   "Too many PIN attempts; wait a minute")  # the durable 5-strikes lock holds regardless
    tries = session.execute(
        update(Voucher).where(Voucher.id == voucher.id, _unlocked(now),
                              func.coalesce(Voucher.pin_failures, 0) < MAX_FAILURES)
        .values(pin_failures=func.coalesce(Voucher.pin_failures, 0) + 1).returning(Voucher.pin_failures)
        .execution_options(synchronize_session=False)).scalar()
    session.commit()
    if tries is None:
        _reload_lock(session, voucher)
        refuse_locked(voucher, now)
        # Five tries counted and none has cleared them: still being checked in parallel, or
        # their workers died. Either way that is five misses' worth: lock (never a stuck count).
        _lock(session, voucher, now)
    set_committed_value(voucher, "pin_failures", tries)  # the object matches the row, without a read
    if rt.pins.check(voucher.pin_hash, pin):
        cleared = session.execute(update(Voucher).where(Voucher.id == voucher.id, _unlocked(now))
                                  .values(pin_failures=0, pin_locked_until=None)
                                  .execution_options(synchronize_session=False)).rowcount
        if not cleared:  # a parallel miss locked it while this try was checked
            session.rollback()
            _reload_lock(session, voucher)
            refuse_locked(voucher, now)
            raise DomainError("pin_locked", "The PIN was locked by other tries meanwhile")
        if rt.pins.needs_rehash(voucher.pin_hash):
            # The operator changed PIN_HASH_TIME_COST / PIN_HASH_MEMORY_KIB: the hash moves to
            # the new cost on the holder's next right PIN.
            voucher.pin_hash = rt.pins.hash(pin)
        session.commit()
        set_committed_value(voucher, "pin_failures", 0)  # what the update above wrote
        set_committed_value(voucher, "pin_locked_until", None)
        return
    left = MAX_FAILURES - tries
    if left <= 0:
        _lock(session, voucher, now)
    raise DomainError("pin_invalid", "Wrong PIN", remaining_attempts=left)


def _lock(session: Session, voucher: Voucher, now: dt.datetime) -> None:
    """Lock the PIN for 24 hours (once: a parallel caller finds it locked) and refuse."""
    until = now + dt.timedelta(hours=LOCK_HOURS)
    locked = session.execute(update(Voucher).where(Voucher.id == voucher.id, _unlocked(now))
                             .values(pin_failures=0, pin_locked_until=until)
                             .execution_options(synchronize_session=False)).rowcount
    if locked:
        records.record(session, voucher, "pin_locked")
    session.commit()
    _reload_lock(session, voucher)  # this lock, or a parallel caller's
    raise DomainError("pin_locked", "The PIN is locked for 24 hours after 5 wrong tries",
                      locked_until=aware(voucher.pin_locked_until).isoformat())


def change(session: Session, rt, voucher: Voucher, old_pin: str | None, new_pin: str, *,
           binding_id: int) -> dict:
    """Set a first PIN, change it with the old one, or reset it after a face check made in the
    channel binding (channel and channel user) the holder's session was opened through."""
    from .activation import take_reverification
    checked = voucher.pin_hash is not None and old_pin is not None
    if checked:
        check(session, rt, voucher, old_pin)  # it commits: before the hold
    hold_usable(session, voucher)
    person = person_of(session, voucher)
    kind = "pin_set"
    if voucher.pin_hash is not None:  # read under the hold: a PIN set meanwhile is not overwritten
        if checked:
            kind = "pin_change"
        elif take_reverification(session, rt, voucher, "pin_reset", binding_id=binding_id) is not None:
            kind = "pin_reset"
        else:
            raise DomainError("pin_required", "Give the old PIN, or reset it after a channel face check")
    if old_pin is not None and old_pin == new_pin:
        raise DomainError("pin_too_weak", "The new PIN must differ from the old one")
    set_new(session, rt, voucher, person, new_pin, kind=kind, allow_initial=False)
    session.commit()
    return {"pin_set": True, "initial": False}


def set_free_limit(session: Session, rt, voucher: Voucher, amount_fen: int, pin: str) -> dict:
    """Password-free limit (限额免密), 0-5,000 yuan in fen; needs the PIN."""
    check(session, rt, voucher, pin)
    hold_usable(session, voucher)  # after the check, which commits
    if voucher.pin_initial:
        raise DomainError("pin_change_required", "Change the initial PIN first")
    voucher.pin_free_limit_fen = amount_fen
    records.record(session, voucher, "pin_free_limit", amount_fen=amount_fen)
    session.commit()
    return {"free_limit_fen": amount_fen}


def change_phone(session: Session, rt, voucher: Voucher, phone: str, pin: str) -> dict:
    """A new phone number for the voucher's person; needs the PIN."""
    check(session, rt, voucher, pin)
    hold_usable(session, voucher)  # after the check, which commits
    registry.set_phone(rt, person_of(session, voucher), phone)
    records.record(session, voucher, "phone_change")
    session.commit()
    return {"phone_masked": mask_phone(phone)}


def unbind_channel(session: Session, rt, voucher: Voucher, channel_id: str, pin: str) -> dict:
    """The holder ends the voucher's bindings in one channel; needs the PIN. Allowed while the
    voucher is reported lost (it only takes access away), not once it is cancelled."""
    from .activation import unbind
    require_usable(voucher, lost_ok=True)  # before a PIN try is counted
    check(session, rt, voucher, pin)
    hold_usable(session, voucher, lost_ok=True)  # after the check, which commits
    return unbind(session, rt, voucher, channel_id, by="holder")
