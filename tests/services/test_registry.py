"""Enrolment import: validation with line numbers and codes, upsert without duplicates, encryption."""
from __future__ import annotations

import json

import pytest

from sqlalchemy import delete, func, select, text

from app.demo import make_id_number
from app.services import enrolment_import, registry
from app.store.models import Enrolment, Person

HEADER = "person_no,id_type,id_number,name,phone,region_code,insurance_type,status,since\n"
ID1 = make_id_number("110105", "1980-01-02", 7, 1)
ID2 = make_id_number("320682", "1990-05-06", 8, 0)


def _import(app, text_, fmt="csv"):
    rt = app.extensions["evoucher"]
    with app.app_context():
        return enrolment_import.import_text(rt.session(), rt, text_, fmt)


def test_csv_import_reports_bad_rows_and_applies_good(app):
    bad_check = ID1[:-1] + ("0" if ID1[-1] != "0" else "1")
    csv = HEADER + "\n".join([
        f"P1,01,{ID1},张三,13800001111,110000,employee,active,2020-01-01",
        f"P1,01,{ID1},张三,13800001111,320682,resident,active,2021-01-01",
        f"P2,01,{bad_check},李四,13800002222,110000,employee,active,2020-01-01",
        f"P3,01,{ID2},王五,13800003333,11000,employee,active,2020-01-01",
        f"P4,01,{ID2},王五,13800003333,110000,civil,active,2020-01-01",
        f"P5,01,{ID2},王五,13800003333,110000,employee,active,2020-13-01",
        f"P6,01,{ID2},王五,13800003333,110000,employee,active",
    ]) + "\n"
    report = _import(app, csv)
    assert report.applied == 2 and report.persons_created == 1
    assert [(e["line"], e["code"]) for e in report.errors] == [
        (4, "invalid_id_number"), (5, "invalid_request"), (6, "invalid_request"), (7, "invalid_request"),
        (8, "invalid_request")]


def test_reimport_updates_and_never_duplicates(app):
    csv = HEADER + f"P1,01,{ID1},张三,13800001111,110000,employee,active,2020-01-01\n"
    _import(app, csv)
    _import(app, csv.replace("active", "suspended").replace("13800001111", "13900009999"))
    rt = app.extensions["evoucher"]
    with app.app_context():
        s = rt.session()
        assert s.scalar(select(func.count()).select_from(Person)) == 1
        enrol = s.scalars(select(Enrolment)).all()
        assert len(enrol) == 1 and enrol[0].status == "suspended"
        person = s.scalars(select(Person)).one()
        assert registry.phone(rt, person) == "13900009999"
        assert registry.find_by_id_number(s, rt, ID1).person_no == "P1"


def test_json_lines_import(app):
    rows = [{"person_no": "J1", "id_type": "01", "id_number": ID2, "name": "王五", "phone": "13800003333",
             "region_code": "410700", "insurance_type": "resident", "status": "active", "since": "2019-01-01"},
            {"person_no": "J2", "unexpected": 1}]
    text_ = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\nnot json\n"
    report = _import(app, text_, "jsonl")
    assert report.applied == 1
    assert [(e["line"], e["code"]) for e in report.errors] == [(2, "invalid_request"), (3, "invalid_request")]


def test_bad_header_is_reported(app):
    report = _import(app, "a,b,c\n1,2,3\n")
    assert report.applied == 0 and report.errors[0]["line"] == 1 and report.errors[0]["code"] == "invalid_request"


def test_raw_database_holds_no_plaintext_id_or_phone(app, backend):
    _import(app, HEADER + f"P1,01,{ID1},张三,13800001111,110000,employee,active,2020-01-01\n")
    rt = app.extensions["evoucher"]
    with rt.engine.connect() as conn:
        dump = []
        for table in ("persons", "enrolments"):
            for row in conn.execute(text(f"SELECT * FROM {table}")):
                dump.extend(v.hex() if isinstance(v, (bytes, memoryview)) else str(v) for v in row)
    blob = " ".join(dump)
    assert ID1 not in blob and ID1.encode().hex() not in blob
    assert "13800001111" not in blob and b"13800001111".hex() not in blob
    assert "张三" in blob  # the name itself is stored in clear (see docs/operations.md)


def test_same_person_twice_in_one_batch_is_a_sequential_upsert(app):
    csv = HEADER + "\n".join([
        f"P1,01,{ID1},张三,13800001111,110000,employee,active,2020-01-01",
        f"P1,01,{ID1},张三丰,,110000,resident,suspended,2021-01-01",
        f"P1,01,{ID1},张三丰,,320682,resident,active,2022-01-01",
    ]) + "\n"
    report = _import(app, csv)
    assert (report.applied, report.persons_created, report.errors) == (3, 1, [])
    rt = app.extensions["evoucher"]
    with app.app_context():
        s = rt.session()
        person = s.scalars(select(Person)).one()
        assert person.name == "张三丰" and registry.phone(rt, person) == "13800001111"
        assert registry.id_number(rt, person) == ID1
        assert person.created_at is not None and person.updated_at is not None
        rows = [(e.region_code, e.insurance_type, e.status, str(e.since)) for e in registry.enrolments(s, person)]
        assert rows == [("110000", "resident", "suspended", "2021-01-01"),
                        ("320682", "resident", "active", "2022-01-01")]
        assert all(e.updated_at is not None for e in registry.enrolments(s, person))
    # Again in one batch on an existing person: last row wins, a blank phone keeps the stored one.
    report = _import(app, csv.replace("2021-01-01", "2019-01-01"))
    assert (report.applied, report.persons_created, report.errors) == (3, 0, [])
    with app.app_context():
        s = rt.session()
        person = s.scalars(select(Person)).one()
        assert registry.phone(rt, person) == "13800001111"
        assert s.scalar(select(func.count()).select_from(Enrolment)) == 2
        assert [str(e.since) for e in registry.enrolments(s, person)] == ["2019-01-01", "2022-01-01"]


def test_id_number_of_another_person_no_is_refused_for_that_line(app):
    _import(app, HEADER + f"P1,01,{ID1},张三,13800001111,110000,employee,active,2020-01-01\n")
    csv = HEADER + "\n".join([
        f"P2,01,{ID1},张三,13800001111,110000,employee,active,2020-01-01",  # owned by P1 in the database
        f"P3,01,{ID2},王五,,410700,resident,active,2020-01-01",
        f"P4,01,{ID2},王五,,410700,resident,active,2020-01-01",  # owned by P3 earlier in this batch
    ]) + "\n"
    report = _import(app, csv)
    assert (report.applied, report.persons_created) == (1, 1)
    assert [(e["line"], e["code"]) for e in report.errors] == [(2, "invalid_request"), (4, "invalid_request")]
    rt = app.extensions["evoucher"]
    with app.app_context():
        s = rt.session()
        assert sorted(s.scalars(select(Person.person_no))) == ["P1", "P3"]
        assert s.scalar(select(func.count()).select_from(Enrolment)) == 2
        assert registry.find_by_id_number(s, rt, ID1).person_no == "P1"


def test_id_number_moves_between_persons_within_one_batch(app):
    id3 = make_id_number("410702", "1975-03-04", 9, 1)
    _import(app, HEADER + "\n".join([
        f"P1,01,{ID1},张三,,110000,employee,active,2020-01-01",
        f"P2,01,{ID2},王五,,320682,employee,active,2020-01-01"]) + "\n")
    csv = HEADER + "\n".join([
        f"P2,01,{ID1},王五,,320682,employee,active,2020-01-01",  # still P1's: refused
        f"P1,01,{id3},张三,,110000,employee,active,2020-01-01",  # P1 corrects its ID number ...
        f"P2,01,{ID1},王五,,320682,employee,active,2020-01-01",  # ... so P2 may now take the old one
        f"P3,01,{ID2},赵六,,410700,resident,active,2020-01-01",  # and P3 the one P2 gave up
    ]) + "\n"
    report = _import(app, csv)
    assert (report.applied, report.persons_created) == (3, 1)
    assert [(e["line"], e["code"]) for e in report.errors] == [(2, "invalid_request")]
    rt = app.extensions["evoucher"]
    with app.app_context():
        s = rt.session()
        owners = {n: registry.find_by_id_number(s, rt, n).person_no for n in (ID1, ID2, id3)}
        assert owners == {ID1: "P2", ID2: "P3", id3: "P1"}


def test_rows_with_control_characters_surrogates_or_other_digits_are_skipped_not_fatal(app):
    """One bad row is reported and skipped; the rows around it still go in (the batch is not lost)."""
    good = {"person_no": "J1", "id_type": "01", "id_number": ID1, "name": "张三", "phone": "13800001111",
            "region_code": "110000", "insurance_type": "employee", "status": "active", "since": "2020-01-01"}
    rows = [good,
            {**good, "person_no": "J2", "id_number": ID2, "name": "王\ud800五"},  # lone surrogate
            {**good, "person_no": "J3\u0000", "id_number": ID2},                 # NUL
            {**good, "person_no": "J4", "id_number": ID2, "region_code": "１１００００"},  # fullwidth digits
            {**good, "person_no": "J5", "id_number": ID2, "id_type": "０１"},
            {**good, "person_no": "J6", "id_number": ID2, "name": "王五"}]
    text_ = "\n".join(json.dumps(r) for r in rows) + "\n"  # \\u escapes, as a JSON-lines file may carry
    report = _import(app, text_, "jsonl")
    assert [(e["line"], e["code"]) for e in report.errors] == [(n, "invalid_request") for n in (2, 3, 4, 5)]
    assert report.applied == 2 and report.persons_created == 2


@pytest.mark.parametrize("before,after", [("default", "gm"), ("gm", "default")])
def test_import_after_a_crypto_profile_change_finds_persons_indexed_before_it(make_app, make_config, clock,
                                                                             before, after):
    """The blind index's hash depends on CRYPTO_PROFILE. After a change, re-importing a person
    updates them (and moves them to the new profile's index) rather than adding a second person
    with the same ID number, and another person_no claiming their ID number is still refused."""
    from app import create_app
    first = make_app(crypto_profile=before)
    _import(first, HEADER + f"P1,01,{ID1},张三,13800001111,110000,employee,active,2020-01-01\n")
    switched = create_app(make_config(crypto_profile=after), clock=clock)  # same database, not emptied
    try:
        report = _import(switched, HEADER + "\n".join([
            f"P2,01,{ID1},张三,13800001111,110000,employee,active,2020-01-01",
            f"P1,01,{ID1},张三,13900009999,110000,employee,suspended,2020-01-01",
        ]) + "\n")
        assert (report.applied, report.persons_created) == (1, 0)
        assert [(e["line"], e["code"]) for e in report.errors] == [(2, "invalid_request")]
        rt = switched.extensions["evoucher"]
        with switched.app_context():
            s = rt.session()
            person = s.scalars(select(Person)).one()
            assert person.person_no == "P1" and person.id_index == rt.fields.index(ID1, "id_number")
            assert registry.phone(rt, person) == "13900009999"
            assert s.scalars(select(Enrolment.status)).all() == ["suspended"]
            assert registry.find_by_id_number(s, rt, ID1).person_no == "P1"
    finally:
        switched.extensions["evoucher"].engine.dispose()


def test_a_person_duplicated_across_a_profile_change_is_found_by_this_profiles_index(make_app):
    """Before lookups knew both profiles' indexes, a re-import after a CRYPTO_PROFILE change added
    a second person with the same ID number. Lookups then take the one this profile indexed (the
    one imports keep up to date), though the other was written first."""
    app = make_app(crypto_profile="gm")
    rt = app.extensions["evoucher"]
    own, other = rt.fields.indexes(ID1, "id_number")
    with app.app_context():
        s = rt.session()
        for no, idx in (("P0", other), ("P1", own)):  # the older row under the other profile's index
            s.add(Person(person_no=no, id_type="01", id_number_enc=rt.fields.encrypt(ID1, "id_number"),
                         id_index=idx, name="张三"))
            s.commit()
        assert registry.find_by_id_number(s, rt, ID1).person_no == "P1"
        s.execute(delete(Person).where(Person.person_no == "P1"))
        s.commit()
        assert registry.find_by_id_number(s, rt, ID1).person_no == "P0"  # alone, still found
