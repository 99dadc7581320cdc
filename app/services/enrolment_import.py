"""Enrolment import (`evoucher enrolments import`): CSV or JSON lines, validated row by row,
applied in batches with Core bulk statements; a re-import updates and never duplicates."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from dataclasses import dataclass, field

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from crypto import idcard

from ..errors import DomainError
from ..store.models import Enrolment, Person, Voucher, utcnow
from ..text import plain_text
from . import records, registry
from .registry import ID_CONTEXT, PHONE_CONTEXT

COLUMNS = ("person_no", "id_type", "id_number", "name", "phone", "region_code", "insurance_type",
           "status", "since")
INSURANCE_TYPES = ("employee", "resident")
STATUSES = ("active", "suspended")


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
    # JSON lines may carry any JSON type: text, or an integer read as its digits; a list, an
    # object, a boolean or a fraction would otherwise be stored as Python's text of it.
    odd = next((c for c in COLUMNS if row.get(c) is not None
                and (isinstance(row[c], bool) or not isinstance(row[c], (str, int)))), None)
    if odd:
        raise RowError("invalid_request", f"{odd} must be text")
    missing = [c for c in COLUMNS if c != "phone" and not str(row.get(c) or "").strip()]
    if missing:
        raise RowError("invalid_request", f"missing {missing[0]}")
    out = {c: str(row.get(c) or "").strip() for c in COLUMNS}
    unsafe = next((c for c in COLUMNS if not plain_text(out[c])), None)
    if unsafe:
        raise RowError("invalid_request", f"{unsafe} contains control characters or invalid text")
    if len(out["person_no"]) > 30:
        raise RowError("invalid_request", "person_no longer than 30 characters")
    if not re.fullmatch(r"\d{2}", out["id_type"], re.ASCII):
        raise RowError("invalid_request", "id_type must be 2 digits")
    out["id_number"] = out["id_number"].upper()
    if out["id_type"] == registry.ID_CARD and not idcard.validate_id_number(out["id_number"]):
        raise RowError("invalid_id_number", "ID number fails the GB 11643 check")
    if len(out["id_number"]) > 32:
        raise RowError("invalid_id_number", "ID number too long")
    if len(out["name"]) > 64:
        raise RowError("invalid_request", "name longer than 64 characters")
    if out["phone"] and not re.fullmatch(r"1\d{10}", out["phone"], re.ASCII):
        raise RowError("invalid_request", "phone must be 11 digits starting with 1")
    if not re.fullmatch(r"\d{6}", out["region_code"], re.ASCII):
        raise RowError("invalid_request", "region_code must be 6 digits")
    if out["insurance_type"] not in INSURANCE_TYPES:
        raise RowError("invalid_request", "insurance_type must be employee or resident")
    if out["status"] not in STATUSES:
        raise RowError("invalid_request", "status must be active or suspended")
    # fromisoformat alone also takes 20200101 and ISO week dates (2020-W01-1 is 2019-12-30).
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", out["since"], re.ASCII):
            raise ValueError
        out["since"] = dt.date.fromisoformat(out["since"])
    except ValueError:
        raise RowError("invalid_request", "since must be a date YYYY-MM-DD") from None
    return out


def _rows(text: str, fmt: str):
    """Yield (line_number, dict or None, parse_error) from CSV or JSON lines.

    Lines are counted at "\n" only (as editors and `wc -l` count them), and a bad record is
    reported at the line it starts on."""
    if fmt == "csv":
        yield from _csv_rows(text)
        return
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):  # also integers past 4,300 digits, deep nesting
            yield n, None, "not valid JSON"
            continue
        if not isinstance(row, dict):
            yield n, None, "not a JSON object"
        elif set(row) - set(COLUMNS):
            yield n, None, "unknown key " + sorted(set(row) - set(COLUMNS))[0]
        else:
            yield n, row, None


def _csv_rows(text: str):
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    end = 0
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field past the csv module's 128 KiB limit
            if reader.line_num <= end:  # no progress: never loop, never drop lines unsaid
                yield start, None, f"not valid CSV: {exc}; the lines from here on were not read"
                return
            end = reader.line_num
            yield start, None, f"not valid CSV: {exc}"
            continue
        end = reader.line_num
        if not cells:  # a blank line
            continue
        if header is None:
            header = [h.strip() for h in cells]
            if sorted(header) != sorted(COLUMNS):
                yield start, None, "header must be: " + ",".join(COLUMNS)
                return
            continue
        if end > start:
            # No column may hold a line break, so a record over several lines is a quote left
            # open: name every line it swallowed rather than report one and lose the rest.
            yield start, None, f"a quoted field runs from line {start} to line {end} (a quote left open?)"
            continue
        if len(cells) > len(header):
            yield start, None, "too many columns"
            continue
        yield start, dict(zip(header, cells)), None


def detect_format(filename: str, text: str) -> str:
    if filename.lower().endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    return "jsonl" if text.lstrip("\ufeff").lstrip().startswith("{") else "csv"


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


class _Person:
    """One person as the batch sees it: as stored (id set) or new; the batch's last values."""
    __slots__ = ("id", "person_no", "id_index", "new", "id_type", "name", "id_number", "phone")

    def __init__(self, id_: int | None, person_no: str, id_index: str, new: bool = False):
        self.id, self.person_no, self.id_index, self.new = id_, person_no, id_index, new
        self.id_type = self.name = self.id_number = self.phone = None


def _apply(session: Session, rt, rows: list[tuple[int, dict]], report: ImportReport) -> None:
    """Upsert one batch with Core executemany statements, then commit.

    Rows are decided one after another, exactly as sequential upserts would be (the same person
    or enrolment twice in a batch: the last row wins; an ID number held by another person_no,
    in the database or earlier in the batch, refuses that line). Only each person's and each
    enrolment's final values are then written: ID-number moves (rare) in row order, existing
    persons updated, new persons inserted, their ids read back by person_no, enrolments
    updated (only if changed) or inserted.
    """
    fields = rt.fields
    persons, enrols = Person.__table__, Enrolment.__table__
    # A person indexed under the other CRYPTO_PROFILE (before a profile change) is found by
    # that index, keyed here by this profile's, and moved to this profile's index when written.
    own_of: dict[str, str] = {}
    for _, r in rows:
        r["_idx"], other = fields.indexes(r["id_number"], ID_CONTEXT)
        own_of[r["_idx"]] = own_of[other] = r["_idx"]
    cols = (persons.c.id, persons.c.person_no, persons.c.id_index)
    by_no = {no: _Person(pid, no, idx) for pid, no, idx in session.execute(
        select(*cols).where(persons.c.person_no.in_({r["person_no"] for _, r in rows})))}
    by_index: dict[str, _Person] = {}
    for pid, no, idx in session.execute(select(*cols).where(persons.c.id_index.in_(set(own_of)))):
        by_index[own_of[idx]] = by_no.get(no) or _Person(pid, no, idx)
    moves: list[dict] = []  # ID-number changes of stored persons, in row order
    accepted: list[tuple[_Person, dict]] = []
    for line, r in rows:
        idx = r["_idx"]
        person, other = by_no.get(r["person_no"]), by_index.get(idx)
        if other is not None and other is not person:
            report.errors.append({"line": line, "code": "invalid_request",
                                  "detail": "ID number already belongs to another person_no"})
            continue
        if person is None:
            person = _Person(None, r["person_no"], idx, new=True)
            by_no[r["person_no"]] = by_index[idx] = person
            report.persons_created += 1
        elif person.id_index != idx:
            by_index.pop(person.id_index, None)
            person.id_index = idx
            by_index[idx] = person
            if not person.new:
                moves.append({"b_id": person.id, "id_index": idx})
        person.id_type, person.name, person.id_number = r["id_type"], r["name"], r["id_number"]
        if r["phone"]:
            person.phone = r["phone"]
        accepted.append((person, r))
    if not accepted:
        session.commit()
        return

    now = utcnow()
    touched = list({id(p): p for p, _ in accepted}.values())
    by_id = persons.c.id == bindparam("b_id")
    if moves:  # each step's target is free once the steps before it are done
        session.execute(update(persons).where(by_id).values(id_index=bindparam("id_index")), moves)
    updates: dict[bool, list[dict]] = {True: [], False: []}
    inserts: list[dict] = []
    for p in touched:
        values = {"id_type": p.id_type, "name": p.name,
                  "id_number_enc": fields.encrypt(p.id_number, ID_CONTEXT), "updated_at": now}
        if p.phone or p.new:
            values["phone_enc"] = fields.encrypt(p.phone, PHONE_CONTEXT) if p.phone else None
            values["phone_index"] = fields.index(p.phone, PHONE_CONTEXT) if p.phone else None
        if p.new:
            inserts.append({"person_no": p.person_no, "id_index": p.id_index, "created_at": now, **values})
        else:
            updates[bool(p.phone)].append({"b_id": p.id, **values})
    for group in updates.values():
        if group:
            session.execute(update(persons).where(by_id), group)
    if inserts:
        session.execute(insert(persons), inserts)
        new = {p.person_no: p for p in touched if p.new}
        for pid, no in session.execute(select(persons.c.id, persons.c.person_no)
                                       .where(persons.c.person_no.in_(list(new)))):
            new[no].id = pid

    final: dict[tuple[int, str], dict] = {}
    for p, r in accepted:
        final[(p.id, r["region_code"])] = r
    stored = {(pid, region): (eid, (itype, status, since)) for eid, pid, region, itype, status, since in
              session.execute(select(enrols.c.id, enrols.c.person_id, enrols.c.region_code,
                                     enrols.c.insurance_type, enrols.c.status, enrols.c.since)
                              .where(enrols.c.person_id.in_({p.id for p in touched})))}
    enrol_updates: list[dict] = []
    enrol_inserts: list[dict] = []
    for (pid, region), r in final.items():
        values = (r["insurance_type"], r["status"], r["since"])
        old = stored.get((pid, region))
        if old is None:
            enrol_inserts.append({"person_id": pid, "region_code": region, "insurance_type": values[0],
                                  "status": values[1], "since": values[2], "updated_at": now})
        elif old[1] != values:  # unchanged enrolments are not written (as the ORM did)
            enrol_updates.append({"b_id": old[0], "insurance_type": values[0], "status": values[1],
                                  "since": values[2], "updated_at": now})
    if enrol_updates:
        session.execute(update(enrols).where(enrols.c.id == bindparam("b_id")), enrol_updates)
    if enrol_inserts:
        session.execute(insert(enrols), enrol_inserts)
    # Core statements bypass the identity map: objects this session already holds are refreshed on next use.
    for obj in list(session.identity_map.values()):
        if isinstance(obj, (Person, Enrolment)):
            session.expire(obj)
    _keep_active_regions(session, {pid for pid, _ in final})
    session.commit()  # the batch's enrolments and the region moves they cause, together
    report.applied += len(accepted)


def _keep_active_regions(session: Session, person_ids: set[int]) -> None:
    """A voucher's active region is one of its person's active enrolments (SPEC §2). A voucher of
    a person this batch touched whose active region is not an active enrolment (the import just
    suspended it, or had suspended it before while there was nowhere to go, and now enrols the
    person actively elsewhere) moves to the person's current region (as activation picks it),
    recorded as a region switch by the registry: otherwise every code the holder showed would
    carry a region every scan refuses. With no active enrolment left it stays (scans refuse the
    region, activation the person). Codes already issued keep theirs."""
    if not person_ids:
        return
    enrols = Enrolment.__table__
    active_here = (select(enrols.c.id).where(enrols.c.person_id == Voucher.person_id,
                                             enrols.c.region_code == Voucher.active_region,
                                             enrols.c.status == "active").exists())
    for voucher in session.scalars(select(Voucher).where(Voucher.person_id.in_(person_ids), ~active_here)):
        try:
            region = registry.current_region(session, session.get(Person, voucher.person_id))
        except DomainError:  # no active enrolment left
            continue
        old, voucher.active_region = voucher.active_region, region
        records.record(session, voucher, "region_switch", old=old, new=region, by="registry")
