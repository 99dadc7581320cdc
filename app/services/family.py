"""Family accounts (亲情账户): a guardian links up to 5 members and may act for them."""
from __future__ import annotations

import datetime as dt
import secrets
from types import SimpleNamespace

from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import Session

from crypto import idcard
from crypto.masking import mask_name

from .. import metrics
from ..errors import DomainError
from ..store import rowlock
from ..store.ephemeral import StoreUnavailable
from ..store.models import FamilyLink, Person, Voucher
from ..store.prepared import Prepared
from . import limits, records, registry, revocations, vouchers
from .vouchers import aware, china_date, person_of, utc

MAX_MEMBERS = 5
MINOR_MAX_AGE = 16
PENDING_DAYS = 7
RELATIONS = ("parent", "child", "spouse", "grandparent", "grandchild", "sibling", "guardian", "other")
LIVE = ("active", "pending")


def _expire(link: FamilyLink, now: dt.datetime) -> None:
    if link.status == "pending" and link.expires_at and aware(link.expires_at) < now:
        link.status = "expired"


def links_of(session: Session, rt, voucher: Voucher) -> list[FamilyLink]:
    """Links where the voucher's person is guardian or member, pending ones expired lazily."""
    now = utc(rt.clock.now())
    links = session.scalars(select(FamilyLink).where(or_(FamilyLink.guardian_voucher_id == voucher.id,
                                                         FamilyLink.member_person_id == voucher.person_id))
                            .order_by(FamilyLink.id)).all()
    for link in links:
        _expire(link, now)
    return links


def _link_json(session: Session, link: FamilyLink, me: Voucher) -> dict:
    member = session.get(Person, link.member_person_id)
    member_voucher = vouchers.of_person(session, member.id)
    guardian = session.get(Voucher, link.guardian_voucher_id)
    guardian_person = session.get(Person, guardian.person_id)
    return {"link_id": link.link_id, "role": "guardian" if link.guardian_voucher_id == me.id else "member",
            "relation": link.relation, "status": link.status,
            "member": {"name_masked": mask_name(member.name),
                       # shown once the member has accepted (or was linked as a minor)
                       "voucher_id": member_voucher.voucher_id if member_voucher and link.status == "active"
                       else None},
            "guardian": {"name_masked": mask_name(guardian_person.name), "voucher_id": guardian.voucher_id},
            "document_ref_recorded": bool(link.document_ref),
            "created_at": aware(link.created_at).isoformat(),
            "expires_at": aware(link.expires_at).isoformat() if link.expires_at else None}


def links_view(session: Session, rt, voucher: Voucher) -> list[dict]:
    return [_link_json(session, link, voucher) for link in links_of(session, rt, voucher)]


def create(session: Session, rt, guardian: Voucher, p: dict) -> dict:
    """Link a member: a minor (≤ 16) at once with a declared relation and document; others on acceptance."""
    now = utc(rt.clock.now())
    limits.enforce(rt, "family", guardian.voucher_id, rt.config.family_rate_per_minute,
                   "Too many family link requests; wait a minute")
    try:
        member = registry.identify(session, rt, p["id_number"], p["name"])
    except DomainError as exc:
        if exc.code not in ("name_mismatch", "person_not_enrolled"):
            raise
        # One answer for "nobody with this number" and "someone, another name": a holder must
        # not learn from this form who is insured, nor test names against a number.
        raise DomainError("person_not_enrolled", "No insured person with this ID number and name") from None
    number = p["id_number"].upper()
    if member.id == guardian.person_id:
        raise DomainError("invalid_request", "You cannot link yourself")
    # One link change per guardian at a time (the limit holds), and none after a loss report or
    # a cancellation of the guardian's voucher.
    vouchers.hold_usable(session, guardian)
    live = [lk for lk in links_of(session, rt, guardian) if lk.guardian_voucher_id == guardian.id and lk.status in LIVE]
    if any(lk.member_person_id == member.id for lk in live):
        raise DomainError("family_link_exists", "This member is already linked or invited")
    if len(live) >= MAX_MEMBERS:
        raise DomainError("family_limit_reached", f"A guardian can link at most {MAX_MEMBERS} members")
    minor = idcard.age(number, china_date(now.timestamp())) <= MINOR_MAX_AGE
    if minor and not p.get("document_ref"):
        raise DomainError("invalid_request", "A minor's link needs a birth certificate or household register number",
                          field="document_ref")
    link = FamilyLink(link_id="fam_" + secrets.token_hex(8), guardian_voucher_id=guardian.id,
                      member_person_id=member.id, relation=p["relation"], document_ref=p.get("document_ref"),
                      status="active" if minor else "pending", created_at=now,
                      accepted_at=now if minor else None,
                      expires_at=None if minor else now + dt.timedelta(days=PENDING_DAYS))
    session.add(link)
    member_voucher = vouchers.of_person(session, member.id)
    if minor and member_voucher is None:
        member_voucher = _activate_minor(session, member, guardian)
    session.flush()
    records.record(session, guardian, "family_link", link_id=link.link_id, role="guardian", status=link.status)
    if member_voucher is not None:
        records.record(session, member_voucher, "family_link", link_id=link.link_id, role="member",
                       status=link.status, actor=guardian.voucher_id)
    session.commit()
    return _link_json(session, link, guardian)


def _activate_minor(session: Session, member: Person, guardian: Voucher) -> Voucher:
    """A guardian activates a minor's voucher (the minor has no phone of their own)."""
    registry.require_id_card(member.id_type)
    voucher = vouchers.create(session, member)
    records.record(session, voucher, "activation", actor=guardian.voucher_id, by="guardian")
    return voucher


def _find(session: Session, rt, voucher: Voucher, link_id: str) -> FamilyLink:
    for link in links_of(session, rt, voucher):
        if link.link_id == link_id:
            return link
    raise DomainError("family_link_not_found", "No such family link for this voucher")


def _find_held(session: Session, rt, voucher: Voucher, link_id: str) -> FamilyLink:
    """As _find, for a step that changes the link: changes of one link are serialised and the
    link is read again under that hold, so an accept or an end that found it live cannot
    overwrite an end committed meanwhile. The caller's own voucher is held and read again too
    (`vouchers.hold_usable`): no change of it commits after its loss report or cancellation.

    The rows are held in the order a scan of a guardian's code share-locks them
    (app/services/scans.py): the member's voucher, the link, the guardian's voucher. Another
    order could deadlock with such a scan."""
    link = _find(session, rt, voucher, link_id)
    if link.guardian_voucher_id == voucher.id:
        rowlock.held(session, link)
        vouchers.hold_usable(session, voucher)
    else:
        vouchers.hold_usable(session, voucher)
        rowlock.held(session, link)
    _expire(link, utc(rt.clock.now()))
    return link


def accept(session: Session, rt, member_voucher: Voucher, link_id: str, *, binding_id: int) -> dict:
    """The member (over 16) accepts from their own voucher after a face check made in the
    channel binding (channel and channel user) the member's session was opened through."""
    from .activation import take_reverification
    link = _find_held(session, rt, member_voucher, link_id)
    if link.member_person_id != member_voucher.person_id or link.status != "pending":
        session.commit()  # keep a lazily expired status
        raise DomainError("family_link_not_found", "No pending invitation with this id for you")
    def confirmed(subject):
        return take_reverification(session, rt, member_voucher, "family_accept", subject, binding_id=binding_id)

    # A face check that names an invitation confirms that one only; one that names none, any.
    if confirmed(link_id) is None and confirmed(None) is None:
        raise DomainError("reverification_required", "Confirm with a face check in your channel app first")
    link.status, link.accepted_at, link.expires_at = "active", utc(rt.clock.now()), None
    guardian = session.get(Voucher, link.guardian_voucher_id)
    records.record(session, member_voucher, "family_accept", link_id=link_id)
    records.record(session, guardian, "family_accept", link_id=link_id)
    session.commit()
    return _link_json(session, link, member_voucher)


def end(session: Session, rt, voucher: Voucher, link_id: str) -> dict:
    """Either side ends the link at once; tokens the guardian issued for the member are revoked."""
    link = _find_held(session, rt, voucher, link_id)
    if link.status not in LIVE:
        raise DomainError("family_link_not_found", "The link has already ended")
    now = utc(rt.clock.now())
    link.status, link.ended_at = "ended", now
    link.ended_by = "guardian" if link.guardian_voucher_id == voucher.id else "member"
    guardian = session.get(Voucher, link.guardian_voucher_id)
    member_voucher = vouchers.of_person(session, link.member_person_id)
    if member_voucher is not None:
        for token_id in rt.store.members(issued_group(link)):
            revocations.add(session, kind="token", subject=token_id, reason="family_link_ended", created_at=now)
        records.record(session, member_voucher, "family_end", link_id=link_id, by=link.ended_by)
    records.record(session, guardian, "family_end", link_id=link_id, by=link.ended_by)
    session.commit()
    return _link_json(session, link, voucher)


def linked_member(session: Session, guardian: Voucher, voucher_id: str, refusal: str) -> tuple[Voucher, FamilyLink]:
    """The voucher `voucher_id` and the guardian's active link to its person; without such a
    link `forbidden` with `refusal` as its detail (`voucher_not_found` for an unknown id)."""
    member = vouchers.by_public_id(session, voucher_id)
    link = active_link(session, guardian, member)
    if link is None:
        raise DomainError("forbidden", refusal)
    return member, link


def issued_group(link: FamilyLink) -> str:
    """The ephemeral set of the codes a guardian issued for a member under this link: the end
    lists them in the revocation feed, and a scan admits only a code noted under the link that
    is live now (`presenter`)."""
    return f"family_link:{link.link_id}"


def active_link(session: Session, guardian: Voucher, member: Voucher) -> FamilyLink | None:
    return session.scalars(select(FamilyLink).where(FamilyLink.guardian_voucher_id == guardian.id,
                                                    FamilyLink.member_person_id == member.person_id,
                                                    FamilyLink.status == "active")).first()


_GUARDIAN_GONE = "The guardian who showed this code has reported their voucher lost or had it cancelled since"
_LINK_ENDED = "The family link this code was shown under has ended"


def presenter(session: Session, rt, member: Voucher, guardian_voucher_id: str, iat: int,
              token_id: str) -> tuple[dict, tuple[int, int]]:
    """Who presented a member's code: the guardian, if their own voucher would admit a code of
    theirs issued at `iat` (a lost guardian phone showed the family's codes too: a guardian's
    loss report revokes them, and they stay dead after the guardian is reinstated), and if the
    link was live when the code was issued and still is. Otherwise `token_revoked`.

    A code belongs to the link it was issued under: issuance notes its token id in that link's
    set, and only a code noted under the link live now passes. Dates could not tell: codes are
    dated in whole seconds, and a link can be ended and made again within one. Nor could the
    feed alone: a code issued while the link was being ended is noted after the end listed the
    link's codes. An unreadable set refuses the code (`service_unavailable`).

    Returns the answer's `presented_by` and the (guardian voucher, link) primary keys, which
    the scan's write checks again (`shown_still`) against a report or an end committed since."""
    guardian = session.scalars(select(Voucher).where(Voucher.voucher_id == guardian_voucher_id)).first()
    if guardian is None or not _guardian_admits(guardian, iat):
        raise DomainError("token_revoked", _GUARDIAN_GONE)
    link = active_link(session, guardian, member)
    if link is None or not _noted(rt, link, token_id):
        raise DomainError("token_revoked", _LINK_ENDED)
    shown_by = {"relation": link.relation, "name_masked": mask_name(person_of(session, guardian).name)}
    return shown_by, (guardian.id, link.id)


def _noted(rt, link: FamilyLink, token_id: str) -> bool:
    try:
        return rt.store.has_member(issued_group(link), token_id)
    except StoreUnavailable:
        metrics.STORE_ERRORS.labels("family_codes").inc()
        raise DomainError("service_unavailable", "Cannot confirm the family link of this code; try again",
                          headers={"Retry-After": "1"}) from None


def _guardian_admits(guardian, iat: int) -> bool:
    """The guardian's voucher (anything with its `status` and `tokens_valid_after`) would admit
    a code of theirs issued at `iat`."""
    return guardian.status == "active" and iat >= (vouchers.first_code_second(guardian) or 0)


def shown_still(guardian, iat: int):
    """SQL conditions on `guardian` (an alias of Voucher, its row joined with the FamilyLink row
    the code was shown under) that hold while the guardian's voucher and that link still admit a
    code issued at the bind parameter `issued_at`: what `presenter` checked, for the scan row's
    insert to check again (app/services/scans.py)."""
    return (guardian.status == "active",
            guardian.tokens_valid_after.is_(None) | (guardian.tokens_valid_after < iat),
            FamilyLink.guardian_voucher_id == guardian.id, FamilyLink.status == "active")


_SHOWN_STATE = Prepared(select(Voucher.status, Voucher.tokens_valid_after, FamilyLink.status.label("link_status"))
                        .select_from(Voucher).join(FamilyLink, FamilyLink.guardian_voucher_id == Voucher.id)
                        .where(Voucher.id == bindparam("guardian_id"), FamilyLink.id == bindparam("link_id")))


def refuse_if_no_longer_shown(conn, guardian_pk: int, link_pk: int, iat: int) -> None:
    """After the scan row's insert found the guardian or the link gone: say which, as `presenter`
    would now (read in the scan's write transaction, on its connection)."""
    row = _SHOWN_STATE.one(conn, {"guardian_id": guardian_pk, "link_id": link_pk})
    if row is None or not _guardian_admits(SimpleNamespace(**row), iat):
        raise DomainError("token_revoked", _GUARDIAN_GONE)
    if row["link_status"] != "active":
        raise DomainError("token_revoked", _LINK_ENDED)
