"""The demo data set: persons in several regions, a family, institutions and every mock channel."""
from __future__ import annotations

import datetime as dt
import json
import os

from crypto import idcard

from .extensions import runtime
from .services import channel_registry, enrolment_import, institutions

CHANNELS = ("wechat", "alipay", "bank-icbc", "bank-cmb")

# (name, district prefix, birth date, sex digit parity, phone suffix, [(region, type, since)])
PERSONS = [
    ("王建国", "110105", "1988-03-14", 1, [("110000", "employee", "2010-07-01"), ("320682", "resident", "2006-01-01")]),
    ("李秀英", "320682", "1958-11-02", 0, [("320682", "resident", "2008-01-01")]),
    ("王小明", "110105", "2017-06-01", 1, [("110000", "resident", "2017-07-01")]),
    ("张丽", "110108", "1990-09-09", 0, [("110000", "employee", "2013-08-01")]),
    ("刘洋", "410702", "1985-01-20", 1, [("410700", "employee", "2009-05-01"), ("110000", "employee", "2019-03-01")]),
    ("陈静", "410703", "1992-04-18", 0, [("410700", "resident", "2012-01-01")]),
    ("杨帆", "320682", "1979-12-30", 1, [("320682", "employee", "2001-09-01")]),
    ("赵敏", "320682", "1995-02-28", 0, [("320682", "resident", "2015-01-01"), ("310000", "employee", "2020-06-01")]),
    ("黄磊", "440305", "1983-07-07", 1, [("440300", "employee", "2007-07-01")]),
    ("周芳", "310104", "1987-05-05", 0, [("310000", "employee", "2011-03-01")]),
    ("吴强", "110101", "1960-08-15", 1, [("110000", "employee", "1985-09-01")]),
    ("徐梅", "410711", "1970-10-10", 0, [("410700", "resident", "2004-01-01")]),
    ("孙浩", "320682", "2001-01-01", 1, [("320682", "resident", "2019-09-01")]),
    ("马丽", "110106", "1999-12-12", 0, [("110000", "employee", "2022-07-01")]),
    ("朱伟", "410702", "1965-03-03", 1, [("410700", "employee", "1990-01-01"), ("320682", "resident", "2018-01-01")]),
    ("胡晓", "440304", "1993-06-16", 0, [("440300", "employee", "2016-04-01")]),
    ("郭峰", "310115", "1975-09-21", 1, [("310000", "employee", "1998-10-01")]),
    ("林娜", "110105", "1989-11-11", 0, [("110000", "employee", "2012-02-01")]),
    ("何军", "320682", "1955-04-04", 1, [("320682", "resident", "2003-01-01")]),
    ("高翔", "410703", "2012-08-08", 1, [("410700", "resident", "2012-09-01")]),
    ("罗敏", "110108", "1984-02-14", 0, [("110000", "suspended-employee", "2010-01-01")]),
]
FAMILY = {"guardian": "王建国", "members": [("王小明", "child"), ("李秀英", "parent")]}

INSTITUTIONS = [
    ("H110000001", "北京市示范医院", "hospital", "110000"),
    ("P110000001", "北京市示范大药房", "pharmacy", "110105"),
    ("H320682001", "如皋市人民示范医院", "hospital", "320682"),
    ("P320682001", "如皋市示范药店", "pharmacy", "320682"),
    ("H410700001", "新乡市中心示范医院", "hospital", "410700"),
    ("P410700001", "新乡市示范大药房", "pharmacy", "410702"),
    ("H310000001", "上海市示范医院", "hospital", "310000"),
]


def make_id_number(prefix: str, birth: str, seq: int, sex_parity: int) -> str:
    """A valid 18-character ID number (the 17th digit is odd for men)."""
    order = seq * 2 + (1 if sex_parity else 0)
    body = prefix + birth.replace("-", "") + f"{order % 1000:03d}"
    return body + idcard.check_char(body)


def persons_rows() -> list[dict]:
    rows = []
    for n, (name, prefix, birth, sex, enrolments) in enumerate(PERSONS, start=1):
        number = make_id_number(prefix, birth, 100 + n, sex)
        for region, itype, since in enrolments:
            status = "active"
            if itype.startswith("suspended-"):
                status, itype = "suspended", itype.split("-", 1)[1]
            rows.append({"person_no": f"DEMO{n:06d}", "id_type": "01", "id_number": number, "name": name,
                         "phone": f"1380000{n:04d}", "region_code": region, "insurance_type": itype,
                         "status": status, "since": since})
    return rows


def _reuse_secret(session, previous: dict, code: str) -> str | None:
    """Keep a working secret from the last demo.json so clients keep working across runs."""
    for item in previous.get("institutions", []):
        if isinstance(item, dict) and item.get("code") == code:
            try:
                institutions.authenticate(session, item["client_id"], item["client_secret"])
                return item["client_secret"]
            except Exception:  # stale or missing: a new secret is made below
                return None
    return None


def _previous(path: str) -> dict:
    """The last demo.json, whose working secrets are kept; ValueError if it is not one."""
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            previous = json.load(fh)
    except ValueError:  # not JSON, or not UTF-8
        previous = None
    if not isinstance(previous, dict) or not isinstance(previous.get("institutions", []), list):
        raise ValueError(f"{path} is not a demo.json this command wrote: move it away and run "
                         "again (the demo institutions then get new secrets)")
    return previous


def load_demo(app, base_url: str) -> str:
    """Load everything idempotently and write instance/demo.json; returns its path."""
    from mock_channels.keys import ensure_keys, key_dir
    with app.app_context():
        rt = runtime()
        session = rt.session()
        path = os.path.join(rt.config.instance_path, "demo.json")
        previous = _previous(path)
        rows = persons_rows()
        lines = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
        report = enrolment_import.import_text(session, rt, lines, "jsonl")
        if report.errors:
            raise RuntimeError(f"demo rows rejected: {report.errors}")
        insts = []
        for code, name, kind, region in INSTITUTIONS:
            secret = _reuse_secret(session, previous, code)
            if secret is None:
                inst, secret = institutions.add(session, code=code, name=name, kind=kind, region_code=region)
            else:
                inst = institutions.by_code(session, code)
            insts.append({"code": code, "name": name, "kind": kind, "region_code": region,
                          "client_id": inst.client_id, "client_secret": secret})
        channels = []
        for channel_id in CHANNELS:
            try:
                private_path, public_path, serial = ensure_keys(rt.config.instance_path, channel_id)
                with open(public_path, "rb") as fh:
                    channel_registry.add(session, channel_id, fh.read(), serial=serial)
            except (ValueError, OSError) as exc:
                folder = key_dir(rt.config.instance_path, channel_id)
                raise ValueError(f"the demo keys in {folder} are unusable ({exc}): delete that "
                                 "folder and they are made anew") from None
            channels.append({"id": channel_id, "serial": serial, "private_key": str(private_path)})
        session.commit()
        today = dt.date.today()
        persons = {}
        for r in rows:
            p = persons.setdefault(r["person_no"], {
                "person_no": r["person_no"], "id_number": r["id_number"], "name": r["name"], "phone": r["phone"],
                "region_codes": [], "age": idcard.age(r["id_number"], today), "active_region_codes": []})
            p["region_codes"].append(r["region_code"])
            if r["status"] == "active":
                p["active_region_codes"].append(r["region_code"])
        by_name = {p["name"]: p["person_no"] for p in persons.values()}
        family = {"guardian": by_name[FAMILY["guardian"]],
                  "members": [{"person_no": by_name[n], "relation": rel} for n, rel in FAMILY["members"]]}
        doc = {"base_url": base_url, "institutions": insts, "persons": list(persons.values()),
               "channels": list(CHANNELS), "channel_keys": channels, "family": family}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds client secrets
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, ensure_ascii=False, indent=2)
        return path
