"""What a state change leaves behind: credentials and facts from before it are refused after it,
and what should keep working does."""
from __future__ import annotations

import datetime as dt
import io
import json

from tests.helpers import problem_code

CHINA = dt.timezone(dt.timedelta(hours=8))


def _bearer(session: dict) -> dict:
    return {"Authorization": f"Bearer {session['access_token']}"}


def test_a_session_from_before_a_loss_report_does_not_come_back_with_the_reinstatement(world):
    """A lost phone's open holder session must not issue codes again once the owner is reinstated."""
    holder = world.holder("张丽")
    lost_phone = holder["headers"]
    assert world.client.post("/v1/me/loss-report", json={}, headers=lost_phone).status_code == 200
    # while suspended the session still shows the state and the records (the holder page does)
    assert world.client.get("/v1/me", headers=lost_phone).get_json()["status"] == "suspended"
    assert world.client.get("/v1/me/records", headers=lost_phone).status_code == 200
    world.rt.clock.advance(30)
    during = _bearer(world.channel("wechat").session(holder["channel_user_id"]))  # opened while suspended
    world.rt.clock.advance(30)
    world.channel("wechat").reverify(holder["channel_user_id"], "reinstate")
    for headers in (lost_phone, during):
        resp = world.client.post("/v1/me/qr-tokens", json={}, headers=headers)
        assert resp.status_code == 401 and problem_code(resp) == "unauthorized"
        assert problem_code(world.client.get("/v1/me/records", headers=headers)) == "unauthorized"
    fresh = _bearer(world.channel("wechat").session(holder["channel_user_id"]))
    code = world.client.post("/v1/me/qr-tokens", json={}, headers=fresh)
    assert code.status_code == 201
    assert world.scan("H110000001", code.get_json()["token"]).status_code == 200


def test_a_reinstatement_ends_the_sessions_of_every_channel_and_later_ones_work(world):
    """The reinstatement may come through another channel than the one the lost phone used."""
    holder = world.holder("张丽")
    other = world.holder("张丽", channel="alipay")
    assert world.client.post("/v1/me/loss-report", json={}, headers=holder["headers"]).status_code == 200
    world.channel("alipay").reverify(other["channel_user_id"], "reinstate")  # in the same second
    assert problem_code(world.client.get("/v1/me", headers=holder["headers"])) == "unauthorized"
    assert problem_code(world.client.get("/v1/me", headers=other["headers"])) == "unauthorized"
    for channel, user in (("wechat", holder["channel_user_id"]), ("alipay", other["channel_user_id"])):
        fresh = _bearer(world.channel(channel).session(user))
        assert world.client.get("/v1/me", headers=fresh).get_json()["status"] == "active"
        assert world.scan("H110000001", world.qr({"headers": fresh})).status_code == 200


def _set_institution(world, code: str, **values) -> None:
    from app.services import institutions
    with world.app.app_context():
        s = world.rt.session()
        inst = institutions.by_code(s, code)
        for name, value in values.items():
            setattr(inst, name, value)
        s.commit()


def test_a_deactivated_institution_reads_nothing_with_the_token_it_still_holds(world):
    """Deactivated institutions get no token (oauth/token); the one they hold stops at once too,
    for reading scans and the feed and decoding photos as for scanning, not only when it expires."""
    holder = world.holder("张丽")
    scan_id = world.scan("H110000001", world.qr(holder)).get_json()["scan_id"]
    headers = world.inst_headers("H110000001")
    _set_institution(world, "H110000001", status="inactive")
    world.rt.clock.advance(6)  # past the per-worker institution cache (5 s)
    photo = {"image": (io.BytesIO(b"not a photo"), "code.png")}
    for resp in (world.client.get(f"/v1/scans/{scan_id}", headers=headers),
                 world.client.get("/v1/revocations", headers=headers),
                 world.client.post("/scanner/decode", data=photo, headers=headers)):
        assert resp.status_code == 403 and problem_code(resp) == "institution_inactive"
    _set_institution(world, "H110000001", status="active")
    world.rt.clock.advance(6)
    assert world.client.get(f"/v1/scans/{scan_id}", headers=headers).status_code == 200


def test_a_new_client_secret_ends_the_tokens_the_old_one_got(world):
    """Re-keying (institutions add again) is what an operator does when a secret leaks: the
    tokens already got with the leaked secret must stop too, not live out their 15 minutes."""
    import base64

    from app.services import institutions
    holder = world.holder("张丽")
    old = world.inst_headers("H110000001")
    with world.app.app_context():
        s = world.rt.session()
        inst, secret = institutions.add(s, code="H110000001", name="示范医院", kind="hospital", region_code="110000")
        client_id = inst.client_id
        s.commit()
    world.rt.clock.advance(6)  # past the per-worker institution cache (5 s)
    for resp in (world.client.post("/v1/scans", json={"token": world.qr(holder), "purpose": "query"}, headers=old),
                 world.client.get("/v1/revocations", headers=old),
                 world.client.post("/scanner/decode", data={"image": (io.BytesIO(b"x"), "code.png")}, headers=old)):
        assert resp.status_code == 401 and problem_code(resp) == "unauthorized"
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    got = world.client.post("/v1/oauth/token", data={"grant_type": "client_credentials"},
                            headers={"Authorization": f"Basic {basic}"}).get_json()
    new = {"Authorization": f"Bearer {got['access_token']}"}
    resp = world.client.post("/v1/scans", json={"token": world.qr(holder), "purpose": "query"}, headers=new)
    assert resp.status_code == 200


def _at_china_time(world, moment) -> None:
    """Move the clock forward to `moment` (an aware datetime)."""
    target = moment.timestamp()
    assert target > world.rt.clock.now()
    world.rt.clock.advance(target - world.rt.clock.now())


def test_a_filing_runs_by_china_dates(world):
    """A filing's window is in the dates its holder filed, China's (UTC+8): it covers the whole
    first day and ends with the last day, not 8 hours into the next one."""
    import datetime as dt
    holder = world.holder("张丽")  # insured in Beijing only
    today = dt.datetime.fromtimestamp(world.rt.clock.now(), CHINA).date()
    one_day = {"care_region_code": "320682", "valid_from": today.isoformat(), "valid_until": today.isoformat()}
    later = {"care_region_code": "410700", "valid_from": (today + dt.timedelta(days=2)).isoformat(),
             "valid_until": (today + dt.timedelta(days=3)).isoformat()}
    for body in (one_day, later):
        assert world.client.post("/v1/me/remote-care-filings", json=body, headers=holder["headers"]).status_code == 201
    # half past midnight after the last day, in China (still the last day in UTC)
    _at_china_time(world, dt.datetime.combine(today + dt.timedelta(days=1), dt.time(0, 30), CHINA))
    holder = world.holder("张丽")  # a fresh session: the first one has expired
    resp = world.scan("H320682001", world.qr(holder))
    assert resp.status_code == 403 and problem_code(resp) == "remote_care_filing_required"
    # seven in the morning of the later filing's first day, in China (the day before in UTC)
    _at_china_time(world, dt.datetime.combine(today + dt.timedelta(days=2), dt.time(7, 0), CHINA))
    holder = world.holder("张丽")
    assert world.scan("H410700001", world.qr(holder)).status_code == 200


def test_a_member_seventeen_today_in_china_must_accept(world):
    """SPEC §2: a member over 16 must accept the link. Their age is counted in China's days: on
    their 17th birthday, early in the morning, they are not linked at once as a minor."""
    from app.demo import make_id_number
    from app.services import enrolment_import
    guardian = world.holder("王建国")
    today = dt.datetime.fromtimestamp(world.rt.clock.now(), CHINA).date()
    birthday = today + dt.timedelta(days=1)
    born = birthday.replace(year=birthday.year - 17)
    number = make_id_number("110105", born.isoformat(), 77, 1)
    row = {"person_no": "T17", "id_type": "01", "id_number": number, "name": "王十七", "phone": "13800001777",
           "region_code": "110000", "insurance_type": "resident", "status": "active", "since": "2020-01-01"}
    with world.app.app_context():
        report = enrolment_import.import_text(world.rt.session(), world.rt, json.dumps(row), "jsonl")
        assert not report.errors
    _at_china_time(world, dt.datetime.combine(birthday, dt.time(1, 0), CHINA))
    guardian = world.holder("王建国")
    link = world.client.post("/v1/me/family", headers=guardian["headers"], json={
        "id_number": number, "name": "王十七", "relation": "parent", "document_ref": "出生证 T17"})
    assert link.status_code == 201 and link.get_json()["status"] == "pending"


def test_an_import_suspending_the_active_region_moves_it_to_another_active_enrolment(world):
    """SPEC §2: the active region is one of the person's active enrolments. When the registry
    suspends it, the holder's fresh codes carry their other active enrolment (as a re-activation
    would pick it), not a region every scan refuses; codes already issued keep theirs."""
    from app.services import enrolment_import
    holder = world.holder("刘洋")  # employee in 410700 since 2009 and in 110000 since 2019
    assert world.client.get("/v1/me", headers=holder["headers"]).get_json()["active_region"] == "110000"
    before = world.qr(holder)
    p = world.person("刘洋")
    row = {"person_no": None, "id_type": "01", "id_number": p["id_number"], "name": "刘洋",
           "phone": p["phone"], "region_code": "110000", "insurance_type": "employee", "status": "suspended",
           "since": "2019-03-01"}
    with world.app.app_context():
        s = world.rt.session()
        from sqlalchemy import select

        from app.store.models import Person
        row["person_no"] = s.scalars(select(Person.person_no).where(Person.name == "刘洋")).one()
        report = enrolment_import.import_text(s, world.rt, json.dumps(row), "jsonl")
        assert not report.errors and report.applied == 1
    me = world.client.get("/v1/me", headers=holder["headers"]).get_json()
    assert me["active_region"] == "410700"
    assert problem_code(world.scan("H110000001", before)) == "region_not_enrolled"
    fresh = world.scan("H410700001", world.qr(holder))
    assert fresh.status_code == 200 and fresh.get_json()["insurance"]["region_code"] == "410700"
    records = world.client.get("/v1/me/records", headers=holder["headers"]).get_json()["items"]
    assert [r["detail"] for r in records if r["kind"] == "region_switch"] == [
        {"old": "110000", "new": "410700", "by": "registry"}]


def test_an_import_enrolling_a_person_left_without_an_active_region_moves_the_voucher_there(world):
    """SPEC §2: the active region is one of the person's active enrolments. A person whose only
    enrolment the registry suspended keeps that region (there is no other); when a later import
    enrols them actively elsewhere, the voucher moves there, recorded like the move above,
    rather than keep a region every scan refuses until the holder finds the switcher."""
    from sqlalchemy import select

    from app.services import enrolment_import
    from app.store.models import Person
    holder = world.holder("张丽")  # employee in 110000 only
    p = world.person("张丽")
    with world.app.app_context():
        person_no = world.rt.session().scalars(select(Person.person_no).where(Person.name == "张丽")).one()
    row = {"person_no": person_no, "id_type": "01", "id_number": p["id_number"], "name": "张丽",
           "phone": p["phone"], "region_code": "110000", "insurance_type": "employee", "status": "suspended",
           "since": "2013-08-01"}

    def load(*rows):
        with world.app.app_context():
            report = enrolment_import.import_text(world.rt.session(), world.rt,
                                                  "\n".join(json.dumps(r) for r in rows), "jsonl")
            assert not report.errors and report.applied == len(rows)

    load(row)  # her only enrolment: nowhere to move
    assert world.client.get("/v1/me", headers=holder["headers"]).get_json()["active_region"] == "110000"
    load({**row, "region_code": "320682", "insurance_type": "resident", "status": "active", "since": "2024-01-01"})
    assert world.client.get("/v1/me", headers=holder["headers"]).get_json()["active_region"] == "320682"
    fresh = world.scan("H320682001", world.qr(holder))
    assert fresh.status_code == 200 and fresh.get_json()["insurance"]["region_code"] == "320682"
    records = world.client.get("/v1/me/records", headers=holder["headers"]).get_json()["items"]
    assert [r["detail"] for r in records if r["kind"] == "region_switch"] == [
        {"old": "110000", "new": "320682", "by": "registry"}]


def test_a_suspended_guardian_links_nobody_and_the_document_says_so(world):
    """The refusal a suspended voucher meets when linking is one the OpenAPI document lists."""
    holder = world.holder("王建国")
    assert world.client.post("/v1/me/loss-report", json={}, headers=holder["headers"]).status_code == 200
    p = world.person("王小明")
    resp = world.client.post("/v1/me/family", headers=holder["headers"], json={
        "id_number": p["id_number"], "name": "王小明", "relation": "parent", "document_ref": "出生证 1"})
    assert resp.status_code == 403 and problem_code(resp) == "voucher_suspended"
    doc = world.client.get("/openapi.json").get_json()
    listed = doc["paths"]["/v1/me/family"]["post"]["responses"]["403"]
    assert "voucher_suspended" in json.dumps(listed)


# Every holder request that changes something, with a body that would succeed on an active voucher.
CHANGES = [
    ("put", "/v1/me/active-region", lambda ctx: {"region_code": ctx["other_region"]}),
    ("post", "/v1/me/remote-care-filings",
     lambda ctx: {"care_region_code": "320600", "valid_from": ctx["today"], "valid_until": ctx["today"]}),
    ("delete", "/v1/me/remote-care-filings/{filing_id}", lambda ctx: None),
    ("delete", "/v1/me/family/{link_id}", lambda ctx: None),
    ("put", "/v1/me/pin-free-limit", lambda ctx: {"amount_fen": 5000, "pin": "258013"}),
    ("put", "/v1/me/phone", lambda ctx: {"phone": "13900001111", "pin": "258013"}),
    ("put", "/v1/me/pin", lambda ctx: {"old_pin": "258013", "new_pin": "470136"}),  # last: the PIN the others use
]


def test_a_suspended_voucher_changes_nothing_until_reinstated(world):
    """A session on the lost phone (or any the channel still opens) keeps showing the voucher and
    its records while it is suspended, but changes nothing: no region switch, filing, link end,
    PIN, password-free limit or phone. Each is refused with voucher_suspended and leaves the
    voucher as it was; after the reinstatement the same requests work."""
    holder = world.holder("刘洋", pin="258013")  # insured in Beijing (110000) and Xinxiang (410700)
    today = dt.datetime.fromtimestamp(world.rt.clock.now(), CHINA).date().isoformat()
    filing = world.client.post("/v1/me/remote-care-filings", headers=holder["headers"], json={
        "care_region_code": "320600", "valid_from": today, "valid_until": today}).get_json()
    member = world.person("王小明")
    link = world.client.post("/v1/me/family", headers=holder["headers"], json={
        "id_number": member["id_number"], "name": "王小明", "relation": "parent",
        "document_ref": "出生证 1"}).get_json()
    before = world.client.get("/v1/me", headers=holder["headers"]).get_json()
    ctx = {"today": today, "filing_id": filing["filing_id"], "link_id": link["link_id"],
           "other_region": "410700" if before["active_region"] == "110000" else "110000"}
    assert world.client.post("/v1/me/loss-report", json={}, headers=holder["headers"]).status_code == 200

    def send(method, path, make):
        return getattr(world.client, method)(path.format(**ctx), json=make(ctx), headers=holder["headers"])
    document = world.client.get("/openapi.json").get_json()["paths"]
    for method, path, make in CHANGES:
        resp = send(method, path, make)
        assert resp.status_code == 403 and problem_code(resp) == "voucher_suspended", (path, resp.get_json())
        listed = document[path][method]["responses"]["403"]["description"]  # the OpenAPI path template
        assert "voucher_suspended" in listed.removeprefix("codes: ").split(", "), path
    after = world.client.get("/v1/me", headers=holder["headers"]).get_json()
    assert {**after, "status": "active"} == {**before, "status": "active"}
    kinds = [r["kind"] for r in world.client.get("/v1/me/records", headers=holder["headers"]).get_json()["items"]]
    assert kinds[0] == "loss_report"  # nothing recorded after it
    world.rt.clock.advance(5)
    world.reinstate(holder)
    for method, path, make in CHANGES:
        assert send(method, path, make).status_code < 300, path


def test_a_suspended_member_accepts_no_invitation(world):
    """Accepting a guardian's invitation lets the guardian show the member's codes: not from a
    voucher reported lost, even after the channel's face check."""
    g = world.holder("王建国")
    member = world.person("李秀英")
    link = world.client.post("/v1/me/family", headers=g["headers"], json={
        "id_number": member["id_number"], "name": "李秀英", "relation": "child"}).get_json()
    m = world.holder("李秀英")
    assert world.client.post("/v1/me/loss-report", json={}, headers=m["headers"]).status_code == 200
    world.channel("wechat").reverify(m["channel_user_id"], "family_accept")
    resp = world.client.post(f"/v1/me/family/{link['link_id']}/accept", json={}, headers=m["headers"])
    assert resp.status_code == 403 and problem_code(resp) == "voucher_suspended"
    mine = world.client.get("/v1/me/family", headers=m["headers"]).get_json()["items"]
    assert [i["status"] for i in mine if i["link_id"] == link["link_id"]] == ["pending"]


def test_a_lost_guardian_phone_shows_its_own_records_but_not_the_familys(world):
    """While the guardian's voucher is suspended, its sessions read its own records (the holder
    sees what was tried on the lost phone), not a linked member's: those are the family's."""
    g = world.holder("王建国")
    member_vid = world.client.post("/v1/me/family", headers=g["headers"], json={
        "id_number": world.person("王小明")["id_number"], "name": "王小明", "relation": "parent",
        "document_ref": "出生证 1"}).get_json()["member"]["voucher_id"]
    path = f"/v1/me/records?voucher_id={member_vid}"
    assert world.client.get(path, headers=g["headers"]).status_code == 200
    assert world.client.post("/v1/me/loss-report", json={}, headers=g["headers"]).status_code == 200
    resp = world.client.get(path, headers=g["headers"])
    assert resp.status_code == 403 and problem_code(resp) == "voucher_suspended"
    assert world.client.get("/v1/me/records", headers=g["headers"]).get_json()["items"][0]["kind"] == "loss_report"
    world.rt.clock.advance(5)
    world.reinstate(g)
    assert world.client.get(path, headers=g["headers"]).status_code == 200


def _cancel(world, voucher_id: str) -> dict:
    """What `evoucher vouchers cancel` does (tests/test_cli.py runs the command itself)."""
    from app.services import loss, vouchers
    with world.app.app_context():
        session = world.rt.session()
        return loss.cancel(session, world.rt, vouchers.by_public_id(session, voucher_id), by="operator")


def test_a_cancelled_voucher_stays_cancelled_and_the_person_starts_again_with_a_new_one(world):
    """Cancellation (注销) is terminal: the voucher's codes and the codes it showed for a member
    stop at once, caching scanners learn it from the feed, no reinstatement brings it back, and
    activating again gives the person a new voucher."""
    from mock_channels.client import ChannelError
    g = world.holder("王建国")
    member_vid = world.client.post("/v1/me/family", headers=g["headers"], json={
        "id_number": world.person("王小明")["id_number"], "name": "王小明", "relation": "parent",
        "document_ref": "出生证 1"}).get_json()["member"]["voucher_id"]
    own, shown = world.qr(g), world.qr(g, voucher_id=member_vid)
    feed = world.client.get("/v1/revocations", headers=world.inst_headers("H110000001")).get_json()
    assert _cancel(world, g["voucher_id"]) == {"voucher_id": g["voucher_id"], "status": "cancelled"}
    assert problem_code(world.scan("H110000001", own)) == "voucher_cancelled"
    assert problem_code(world.scan("H110000001", shown)) == "token_revoked"
    items = world.client.get(f"/v1/revocations?since={feed['next']}",
                             headers=world.inst_headers("H110000001")).get_json()["items"]
    assert [(i["kind"], i["id"], i["reason"]) for i in items] == [("voucher", g["voucher_id"], "cancelled")]
    refused = world.client.post("/v1/me/qr-tokens", json={}, headers=g["headers"])
    assert refused.status_code == 403 and problem_code(refused) == "voucher_cancelled"
    assert world.client.get("/v1/me", headers=g["headers"]).get_json()["status"] == "cancelled"
    kinds = [r["kind"] for r in world.client.get("/v1/me/records", headers=g["headers"]).get_json()["items"]]
    assert kinds[:2] == ["scan", "cancellation"]  # newest first: the refused scan came after it
    try:
        world.channel("wechat").reverify(g["channel_user_id"], "reinstate")
        raise AssertionError("a cancelled voucher was reinstated")
    except ChannelError as exc:
        assert exc.code == "voucher_cancelled"
    assert _cancel(world, g["voucher_id"])["status"] == "cancelled"  # again: nothing changes
    kinds = [r["kind"] for r in world.client.get("/v1/me/records", headers=g["headers"]).get_json()["items"]]
    assert kinds.count("cancellation") == 1
    again = world.holder("王建国")
    assert again["voucher_id"] != g["voucher_id"]
    assert world.scan("H110000001", world.qr(again)).status_code == 200
