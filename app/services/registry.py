"""The enrolment registry (参保登记): find persons by ID number, read their protected fields."""
from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from crypto import idcard

from ..errors import DomainError
from ..store.models import Enrolment, Person

ID_CONTEXT, PHONE_CONTEXT = "id_number", "phone"


def find_by_id_number(session: Session, rt, id_number: str) -> Person | None:
    # Both profiles' indexes: a person imported before a CRYPTO_PROFILE change is still found.
    # Should both exist (a re-import before lookups knew both), the one this profile indexed wins:
    # it is the one later imports update.
    own, other = rt.fields.indexes(id_number.upper(), ID_CONTEXT)
    found = session.scalars(select(Person).where(Person.id_index.in_((own, other)))).all()
    return next((p for p in found if p.id_index == own), found[0] if found else None)


def identify(session: Session, rt, id_number_text: str, name: str) -> Person:
    """The registry's person for an ID number and name, or the refusal's code."""
    number = id_number_text.upper()
    if not idcard.validate_id_number(number):
        raise DomainError("invalid_id_number", "The ID number is not valid (GB 11643 check digit)")
    person = find_by_id_number(session, rt, number)
    if person is None:
        raise DomainError("person_not_enrolled", "Insured person not found; insured info may not be synced yet")
    if person.name != name.strip():
        raise DomainError("name_mismatch", "The name does not match the enrolment registry")
    return person


ID_CARD = "01"  # 居民身份证: the only document a voucher is activated with (SPEC §2)


def require_id_card(id_type: str) -> None:
    """Refuse a document other than the resident ID card: the type a channel claims, and the one
    the registry holds the person under (a residence permit's or a foreigner's permanent
    residence card's number can pass the GB 11643 check too)."""
    if id_type != ID_CARD:
        raise DomainError("unsupported_id_type", "Only resident ID cards (居民身份证, type 01) can activate")


def current_region(session: Session, person: Person) -> str:
    """The most recent active enrolment is where the person is insured now."""
    active = [e for e in enrolments(session, person) if e.status == "active"]
    if not active:
        raise DomainError("person_not_enrolled", "The person has no active enrolment")
    return max(active, key=lambda e: (e.since, e.region_code)).region_code


def id_number(rt, person: Person) -> str:
    return rt.fields.decrypt(person.id_number_enc, ID_CONTEXT)


def phone(rt, person: Person) -> str | None:
    return rt.fields.decrypt(person.phone_enc, PHONE_CONTEXT) if person.phone_enc else None


def enrolments(session: Session, person: Person) -> list[Enrolment]:
    return list(session.scalars(select(Enrolment).where(Enrolment.person_id == person.id)
                                .order_by(Enrolment.region_code)))


_ACTIVE_ENROLMENT = select(Enrolment).where(Enrolment.person_id == bindparam("pid"),
                                            Enrolment.region_code == bindparam("region"),
                                            Enrolment.status == "active")


def active_enrolment(session: Session, person: Person, region: str) -> Enrolment | None:
    return session.scalars(_ACTIVE_ENROLMENT, {"pid": person.id, "region": region}).first()


def set_phone(rt, person: Person, phone: str) -> None:
    person.phone_enc = rt.fields.encrypt(phone, PHONE_CONTEXT)
    person.phone_index = rt.fields.index(phone, PHONE_CONTEXT)
