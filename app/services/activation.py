"""Activation through a channel partner, holder sessions, re-verifications and unbinding."""
from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from crypto import tokens
from crypto.tokens import new_voucher_id

from .. import metrics
from ..errors import DomainError
from ..store import rowlock
from ..store.models import ChannelBinding, ChannelRequest, Reverification, Voucher
from ..store.prepared import Prepared
from . import keys, pins, records, registry, vouchers
from .vouchers import aware, iso_z, utc

HOLDER_AUD = "evoucher:holder"
REVERIFICATION_SECONDS = 600
PURPOSES = ("pin_reset", "reinstate", "family_accept")
FINGERPRINT_CONTEXT = "channel_request"


def _fingerprints(rt, payload: dict) -> tuple[str, str]:
    """Keyed digests of a request (this profile's, then the other's): it holds the PIN and the
    ID number, so a plain hash in the table would let its reader try every PIN offline."""
    return rt.fields.indexes(json.dumps(payload, sort_keys=True, ensure_ascii=False), FINGERPRINT_CONTEXT)


def activate(session: Session, rt, channel_id: str, p: dict, *, retried: bool = False) -> dict:
    """Create (once per person) and bind a voucher; idempotent on the channel's request_id.

    A concurrent call that wrote the same person's voucher, the same channel user's binding or
    the same request_id first makes this one's insert fail on a unique key: it is run once more,
    and then finds those rows."""
    fingerprints = _fingerprints(rt, p)
    done = session.scalars(select(ChannelRequest).where(ChannelRequest.channel_id == channel_id,
                                                        ChannelRequest.request_id == p["request_id"])).first()
    if done is not None:
        if done.fingerprint not in fingerprints:
            raise DomainError("invalid_request", "request_id was already used for a different request")
        return done.response
    try:
        result = _activate(session, rt, channel_id, p)
        session.add(ChannelRequest(channel_id=channel_id, request_id=p["request_id"],
                                   fingerprint=fingerprints[0], response=result))
        session.commit()
    except DomainError as exc:
        metrics.ACTIVATIONS.labels(channel_id, exc.code).inc()
        raise
    except IntegrityError:
        session.rollback()
        if retried:
            raise
        return activate(session, rt, channel_id, p, retried=True)
    metrics.ACTIVATIONS.labels(channel_id, "ok").inc()
    return result


def _activate(session: Session, rt, channel_id: str, p: dict) -> dict:
    registry.require_id_card(p["id_type"])  # the channel's claim
    if p["face_verified"] is not True:
        raise DomainError("face_verification_required", "The channel's face verification must pass first")
    person = registry.identify(session, rt, p["id_number"], p["name"])
    registry.require_id_card(person.id_type)  # the registry's document, not only the channel's claim
    region = registry.current_region(session, person)  # refuses a person with no active enrolment
    voucher = vouchers.of_person(session, person.id)
    if voucher is not None and voucher.status == "suspended":
        raise DomainError("voucher_suspended", "The voucher is reported lost; reinstate it with a re-verification")
    if voucher is not None and p.get("pin") is not None and voucher.pin_hash is not None:
        # One PIN across all channels, checked before anything changes (pins.check commits).
        pins.check(session, rt, voucher, p["pin"])
    created = False
    if voucher is None:
        voucher = vouchers.create(session, person)
        created = True
        records.record(session, voucher, "activation", channel=channel_id)
    elif voucher.status == "cancelled":
        voucher.voucher_id, voucher.status = new_voucher_id(), "active"  # card replaced: a new voucher id
        voucher.active_region = region
        records.record(session, voucher, "activation", channel=channel_id, reactivated=True)
    if registry.active_enrolment(session, person, voucher.active_region) is None:
        old, voucher.active_region = voucher.active_region, region
        if not created:  # a state change of a voucher that had one: recorded like every other
            records.record(session, voucher, "region_switch", old=old, new=region, by="activation")
    _bind(session, voucher, channel_id, p["channel_user_id"])
    if p.get("pin") is not None and voucher.pin_hash is None:
        pins.set_new(session, rt, voucher, person, p["pin"], kind="pin_set")
    return {"voucher_id": voucher.voucher_id, "status": voucher.status, "created": created,
            "active_region": voucher.active_region, "channel": channel_id,
            "channel_user_id": p["channel_user_id"], "pin_set": voucher.pin_hash is not None}


def _bind(session: Session, voucher: Voucher, channel_id: str, channel_user_id: str) -> ChannelBinding:
    binding = session.scalars(select(ChannelBinding).where(ChannelBinding.channel_id == channel_id,
                                                           ChannelBinding.channel_user_id == channel_user_id)).first()
    if binding is not None and binding.voucher_id != voucher.id:
        raise DomainError("invalid_request", "This channel user is bound to another person's voucher")
    if binding is None:
        binding = ChannelBinding(voucher_id=voucher.id, channel_id=channel_id,
                                 channel_user_id=channel_user_id, status="active", session_epoch=0)
        session.add(binding)
        records.record(session, voucher, "bind", channel=channel_id)
    elif binding.status != "active":
        binding.status, binding.unbound_at = "active", None
        binding.session_epoch += 1
        records.record(session, voucher, "bind", channel=channel_id)
    session.flush()
    return binding


def binding_for(session: Session, channel_id: str, channel_user_id: str) -> ChannelBinding:
    binding = session.scalars(select(ChannelBinding).where(ChannelBinding.channel_id == channel_id,
                                                           ChannelBinding.channel_user_id == channel_user_id,
                                                           ChannelBinding.status == "active")).first()
    if binding is None:
        raise DomainError("channel_not_bound", "This channel user has no active voucher binding")
    return binding


def open_session(session: Session, rt, channel_id: str, channel_user_id: str) -> dict:
    """A 15-minute holder token tied to one voucher and to this channel binding."""
    binding = binding_for(session, channel_id, channel_user_id)
    voucher = session.get(Voucher, binding.voucher_id)
    if voucher.status == "cancelled":
        raise DomainError("voucher_cancelled", "The voucher is cancelled")
    now = int(rt.clock.now())
    ttl = rt.config.holder_token_ttl
    token = tokens.issue_access(keys.keyring(rt, session).current, subject=voucher.voucher_id,
                                audience=HOLDER_AUD, ttl=ttl, now=now, issuer=rt.config.issuer,
                                claims={"ch": channel_id, "bid": binding.id, "ep": binding.session_epoch})
    return {"access_token": token, "token_type": "Bearer", "expires_in": ttl, "voucher_id": voucher.voucher_id}


# Built once: this runs on every holder request.
_HOLDER = (select(ChannelBinding, Voucher).join(Voucher, Voucher.id == ChannelBinding.voucher_id)
           .where(ChannelBinding.id == bindparam("bid")))
_HOLDER_SNAPSHOT = Prepared(
    select(ChannelBinding.status.label("binding_status"), ChannelBinding.session_epoch, ChannelBinding.channel_id,
           Voucher.id, Voucher.voucher_id, Voucher.status, Voucher.active_region, Voucher.person_id,
           Voucher.tokens_valid_after)
    .join(Voucher, Voucher.id == ChannelBinding.voucher_id)
    .where(ChannelBinding.id == bindparam("bid")))


def _session_live(claims: dict, binding_status, epoch, channel_id, voucher_id) -> None:
    if binding_status != "active" or epoch != claims.get("ep") or channel_id != claims.get("ch") \
            or voucher_id != claims.get("sub"):
        raise DomainError("unauthorized", "The holder session has ended")


def holder_from_claims(session: Session, claims: dict) -> Voucher:
    """The voucher a holder token speaks for; the channel binding must still be live."""
    row = session.execute(_HOLDER, {"bid": claims.get("bid")}).first()
    if row is None:
        raise DomainError("unauthorized", "The holder session has ended")
    binding, voucher = row
    _session_live(claims, binding.status, binding.session_epoch, binding.channel_id, voucher.voucher_id)
    return voucher


def holder_snapshot(conn, claims: dict) -> SimpleNamespace:
    """As holder_from_claims, read-only and without the ORM (one prepared statement on `conn`):
    for issuing codes, which change nothing on the voucher."""
    row = _HOLDER_SNAPSHOT.one(conn, {"bid": claims.get("bid")})
    if row is None:
        raise DomainError("unauthorized", "The holder session has ended")
    _session_live(claims, row["binding_status"], row["session_epoch"], row["channel_id"], row["voucher_id"])
    return SimpleNamespace(id=row["id"], voucher_id=row["voucher_id"], status=row["status"],
                           active_region=row["active_region"], person_id=row["person_id"],
                           tokens_valid_after=row["tokens_valid_after"])


def reverify(session: Session, rt, channel_id: str, p: dict) -> dict:
    """Record a channel's fresh face check for a sensitive step (PIN reset, reinstatement, family accept)."""
    if p["face_verified"] is not True:
        raise DomainError("face_verification_required", "The channel's face verification must pass first")
    binding = binding_for(session, channel_id, p["channel_user_id"])
    voucher = session.get(Voucher, binding.voucher_id)
    now = utc(rt.clock.now())
    rv = Reverification(voucher_id=voucher.id, channel_id=channel_id, binding_id=binding.id,
                        purpose=p["purpose"], subject=p.get("link_id"), verified_at=now,
                        expires_at=now + dt.timedelta(seconds=REVERIFICATION_SECONDS))
    session.add(rv)
    records.record(session, voucher, "reverification", channel=channel_id, purpose=p["purpose"])
    if p["purpose"] == "reinstate":
        from . import loss
        loss.reinstate(session, rt, voucher, channel_id)
        rv.used_at = now
    session.commit()
    return {"purpose": p["purpose"], "voucher_id": voucher.voucher_id, "status": voucher.status,
            "channel": channel_id, "verified_at": iso_z(now),
            "expires_in": REVERIFICATION_SECONDS}


ANY_SUBJECT = object()


def take_reverification(session: Session, rt, voucher: Voucher, purpose: str, subject=ANY_SUBJECT, *,
                        binding_id: int) -> Reverification | None:
    """Use up a fresh, unused re-verification of this purpose, if there is one: one naming
    `subject` if given (None: one naming nothing), else any.

    Only one made through `binding_id`, the channel binding (channel and channel user) the
    holder's session was opened through: a face check vouches for the person in front of that
    channel's app, not for whoever holds a session of the voucher in another channel or account."""
    now = utc(rt.clock.now())
    q = select(Reverification).where(Reverification.voucher_id == voucher.id,
                                     Reverification.binding_id == binding_id,
                                     Reverification.purpose == purpose, Reverification.used_at.is_(None))
    if subject is None:
        q = q.where(Reverification.subject.is_(None))
    elif subject is not ANY_SUBJECT:
        q = q.where(Reverification.subject == subject)
    for rv in session.scalars(q.order_by(Reverification.id.desc())):
        if aware(rv.expires_at) < now:
            continue
        # Used once even by parallel requests: only the update that finds it unused takes it.
        taken = session.execute(update(Reverification.__table__)
                                .where(Reverification.__table__.c.id == rv.id,
                                       Reverification.__table__.c.used_at.is_(None))
                                .values(used_at=now)).rowcount
        if taken:
            set_committed_value(rv, "used_at", now)
            return rv
    return None


def unbind(session: Session, rt, voucher: Voucher, channel_id: str, *, by: str,
           channel_user_id: str | None = None) -> dict:
    """End the voucher's bindings in one channel and their sessions; other channels keep working.

    A person may be bound through several users of one channel (two WeChat accounts): the
    channel unbinds the one user it names, the holder every binding in that channel."""
    q = select(ChannelBinding).where(ChannelBinding.voucher_id == voucher.id,
                                     ChannelBinding.channel_id == channel_id,
                                     ChannelBinding.status == "active")
    if channel_user_id is not None:
        q = q.where(ChannelBinding.channel_user_id == channel_user_id)
    bindings = []
    for binding in session.scalars(q).all():
        # Held and read again: an unbinding committed since the read above has ended it.
        if rowlock.held(session, binding).status == "active":
            bindings.append(binding)
    if not bindings:
        session.rollback()
        raise DomainError("channel_not_bound", "The voucher is not bound in this channel")
    for binding in bindings:
        binding.status, binding.unbound_at = "unbound", utc(rt.clock.now())
        binding.session_epoch += 1
        records.record(session, voucher, "unbind", channel=channel_id, by=by)
    session.commit()
    return {"voucher_id": voucher.voucher_id, "channel": channel_id, "status": "unbound"}
