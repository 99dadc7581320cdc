"""The enrolment registry (参保登记): persons and their enrolments, imported by operators."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from crypto import idcard

from ..errors import DomainError
from ..store.models import Enrolment, Person

COLUMNS = ("person_no", "id_type", "id_number", "name", "phone", "region_code", "insurance_type",
           "status", "since")
INSURANCE_TYPES = ("employee", "resident")
STATUSES = ("active", "suspended")
ID_CONTEXT, PHONE_CONTEXT = "id_number", "phone"


@dataclass
class ImportReport:
    applied: int = 0
    persons_created: int = 0
    errors: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"applied": self.applied, "persons_created": self.persons_created,
                "rejected": len(self.errors), "errors": self.errors}


class RowError(Exception):
    def __init__(self, code: str, detail: str):
        self.code, self.detail = code, detail


def validate_row(row: dict) -> dict:
    """Normalise one import row or raise RowError(code) for the first problem found."""
    missing = [c for c in COLUMNS if c != "phone" and not str(row.get(c) or "").strip()]
    if missing:
        raise RowError("invalid_request", f"missing {missing[0]}")
    out = {c: str(row.get(c) or "").strip() for c in COLUMNS}
    if len(out["person_no"]) > 30:
        raise RowError("invalid_request", "person_no longer than 30 characters")
    if not re.fullmatch(r"\d{2}", out["id_type"]):
        raise RowError("invalid_request", "id_type must be 2 digits")
    out["id_number"] = out["id_number"].upper()
    if out["id_type"] == "01" and not idcard.validate_id_number(out["id_number"]):
        raise RowError("invalid_id_number", "ID number fails the GB 11643 check")
    if len(out["id_number"]) > 32:
        raise RowError("invalid_id_number", "ID number too long")
    if len(out["name"]) > 64:
        raise RowError("invalid_request", "name longer than 64 characters")
    if out["phone"] and not re.fullmatch(r"1\d{10}", out["phone"]):
        raise RowError("invalid_request", "phone must be 11 digits starting with 1")
    if not re.fullmatch(r"\d{6}", out["region_code"]):
        raise RowError("invalid_request", "region_code must be 6 digits")
    if out["insurance_type"] not in INSURANCE_TYPES:
        raise RowError("invalid_request", "insurance_type must be employee or resident")
    if out["status"] not in STATUSES:
        raise RowError("invalid_request", "status must be active or suspended")
    try:
        out["since"] = dt.date.fromisoformat(out["since"])
    except ValueError:
        raise RowError("invalid_request", "since must be a date YYYY-MM-DD") from None
    return out


def _rows(text: str, fmt: str):
    """Yield (line_number, dict or None, parse_error) from CSV or JSON lines."""
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        header = [h.strip() for h in (reader.fieldnames or [])]
        if sorted(header) != sorted(COLUMNS):
            yield 1, None, "header must be: " + ",".join(COLUMNS)
            return
        reader.fieldnames = header
        for row in reader:
            if None in row:  # more cells than header columns
                yield reader.line_num, None, "too many columns"
                continue
            yield reader.line_num, row, None
        return
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            yield n, None, "not valid JSON"
            continue
        if not isinstance(row, dict):
            yield n, None, "not a JSON object"
        elif set(row) - set(COLUMNS):
            yield n, None, "unknown key " + sorted(set(row) - set(COLUMNS))[0]
        else:
            yield n, row, None


def detect_format(filename: str, text: str) -> str:
    if filename.lower().endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    return "jsonl" if text.lstrip().startswith("{") else "csv"


def import_text(session: Session, rt, text: str, fmt: str, batch: int = 2000) -> ImportReport:
    """Apply good rows (insert or update, never duplicate); report bad ones by line and code."""
    report = ImportReport()
    pending: list[tuple[int, dict]] = []
    for line, row, error in _rows(text.lstrip("\ufeff"), fmt):
        if error:
            report.errors.append({"line": line, "code": "invalid_request", "detail": error})
            continue
        try:
            pending.append((line, validate_row(row)))
        except RowError as exc:
            report.errors.append({"line": line, "code": exc.code, "detail": exc.detail})
        if len(pending) >= batch:
            _apply(session, rt, pending, report)
            pending = []
    if pending:
        _apply(session, rt, pending, report)
    return report


def _apply(session: Session, rt, rows: list[tuple[int, dict]], report: ImportReport) -> None:
    """Upsert one batch: persons first (one flush), then their enrolments."""
    fields = rt.fields
    person_nos = {r["person_no"] for _, r in rows}
    for _, r in rows:
        r["_idx"] = fields.index(r["id_number"], ID_CONTEXT)
    by_no = {p.person_no: p for p in session.scalars(select(Person).where(Person.person_no.in_(person_nos)))}
    by_index = {p.id_index: p for p in session.scalars(
        select(Person).where(Person.id_index.in_({r["_idx"] for _, r in rows})))}
    accepted: list[tuple[Person, dict]] = []
    for line, r in rows:
        idx = r["_idx"]
        person, other = by_no.get(r["person_no"]), by_index.get(idx)
        if other is not None and other is not person:
            report.errors.append({"line": line, "code": "invalid_request",
                                  "detail": "ID number already belongs to another person_no"})
            continue
        if person is None:
            person = Person(person_no=r["person_no"], id_index=idx)
            session.add(person)
            by_no[r["person_no"]] = by_index[idx] = person
            report.persons_created += 1
        elif person.id_index != idx:
            by_index.pop(person.id_index, None)
            person.id_index = idx
            by_index[idx] = person
        person.id_type, person.name = r["id_type"], r["name"]
        person.id_number_enc = fields.encrypt(r["id_number"], ID_CONTEXT)
        if r["phone"]:
            person.phone_enc = fields.encrypt(r["phone"], PHONE_CONTEXT)
            person.phone_index = fields.index(r["phone"], PHONE_CONTEXT)
        accepted.append((person, r))
    session.flush()
    existing: dict[tuple[int, str], Enrolment] = {
        (e.person_id, e.region_code): e for e in session.scalars(
            select(Enrolment).where(Enrolment.person_id.in_({p.id for p, _ in accepted})))}
    for person, r in accepted:
        enrol = existing.get((person.id, r["region_code"]))
        if enrol is None:
            enrol = existing[(person.id, r["region_code"])] = Enrolment(
                person_id=person.id, region_code=r["region_code"])
            session.add(enrol)
        enrol.insurance_type, enrol.status, enrol.since = r["insurance_type"], r["status"], r["since"]
        report.applied += 1
    session.commit()


def find_by_id_number(session: Session, rt, id_number: str) -> Person | None:
    idx = rt.fields.index(id_number.upper(), ID_CONTEXT)
    return session.scalars(select(Person).where(Person.id_index == idx)).first()


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


def active_enrolment(session: Session, person: Person, region: str) -> Enrolment | None:
    return session.scalars(select(Enrolment).where(Enrolment.person_id == person.id,
                                                   Enrolment.region_code == region,
                                                   Enrolment.status == "active")).first()


def set_phone(rt, person: Person, phone: str) -> None:
    person.phone_enc = rt.fields.encrypt(phone, PHONE_CONTEXT)
    person.phone_index = rt.fields.index(phone, PHONE_CONTEXT)
