"""Holder features: family accounts, regions, filings, PIN, loss report, records."""
from __future__ import annotations

import datetime as dt

import pytest

from tests.helpers import problem_code


def _today(world) -> dt.date:
    return dt.datetime.fromtimestamp(world.rt.clock.now(), dt.timezone.utc).date()


def _link(world, guardian, name, relation, document_ref=None):
    p = world.person(name)
    body = {"id_number": p["id_number"], "name": name, "relation": relation}
    if document_ref:
        body["document_ref"] = document_ref
    return world.client.post("/v1/me/family", json=body, headers=guardian["headers"])


def test_minor_is_linked_at_once_and_guardian_shows_their_code(world):
    g = world.holder("王建国")
    resp = _link(world, g, "王小明", "parent")
    assert resp.status_code == 400 and problem_code(resp) == "invalid_request"  # no document
    link = _link(world, g, "王小明", "parent", "出生医学证明 N110123456").get_json()
    assert link["status"] == "active" and link["member"]["voucher_id"]
    token = world.qr(g, voucher_id=link["member"]["voucher_id"])
    scan = world.scan("H110000001", token).get_json()
    assert scan["presented_by"]["relation"] == "parent" and "*" in scan["presented_by"]["name_masked"]
    records = world.client.get(f"/v1/me/records?voucher_id={link['member']['voucher_id']}",
                               headers=g["headers"]).get_json()["items"]
    assert records[0]["kind"] == "scan" and any(r["kind"] == "activation" for r in records)


def test_a_guardian_cannot_activate_a_minor_the_registry_holds_under_another_id_type(world):
    """SPEC §2: only a resident ID card (type 01) activates a voucher, the one a guardian
    activates for a minor too. The link is not made either, and the refusal is documented."""
    import json

    from app.demo import make_id_number
    from app.services import enrolment_import
    number = make_id_number("810000", "2018-06-01", 8, 1)  # a residence permit's form
    row = {"person_no": "TEST-MINOR02", "id_type": "02", "id_number": number, "name": "王小港",
           "phone": "", "region_code": "110000", "insurance_type": "resident", "status": "active",
           "since": "2018-07-01"}
    with world.app.app_context():
        assert enrolment_import.import_text(world.rt.session(), world.rt, json.dumps(row), "jsonl").applied == 1
    g = world.holder("王建国")
    resp = world.client.post("/v1/me/family", headers=g["headers"], json={
        "id_number": number, "name": "王小港", "relation": "parent", "document_ref": "出生医学证明 P810000001"})
    assert resp.status_code == 422 and problem_code(resp) == "unsupported_id_type"
    assert world.client.get("/v1/me/family", headers=g["headers"]).get_json()["items"] == []
    doc = world.client.get("/openapi.json").get_json()["paths"]["/v1/me/family"]["post"]["responses"]
    assert "unsupported_id_type" in doc["422"]["description"]


def test_linking_tells_nothing_about_who_is_insured_and_is_rate_limited(world):
    g = world.holder("吴强")
    stranger = world.person("周芳")
    wrong_name = world.client.post("/v1/me/family", headers=g["headers"], json={
        "id_number": stranger["id_number"], "name": "周方", "relation": "other"})
    from app.demo import make_id_number
    nobody = world.client.post("/v1/me/family", headers=g["headers"], json={
        "id_number": make_id_number("110105", "1990-01-01", 99, 1), "name": "周方", "relation": "other"})
    assert problem_code(wrong_name) == problem_code(nobody) == "person_not_enrolled"
    assert wrong_name.get_json()["detail"] == nobody.get_json()["detail"]
    # an adult's pending invitation does not reveal the invitee's voucher id
    invited = world.client.post("/v1/me/family", headers=g["headers"], json={
        "id_number": stranger["id_number"], "name": "周芳", "relation": "other"}).get_json()
    assert invited["status"] == "pending" and invited["member"]["voucher_id"] is None
    for _ in range(2):  # five requests a minute (RATE_FAMILY_PER_MINUTE)
        world.client.post("/v1/me/family", headers=g["headers"], json={
            "id_number": stranger["id_number"], "name": "周方", "relation": "other"})
    resp = world.client.post("/v1/me/family", headers=g["headers"], json={
        "id_number": stranger["id_number"], "name": "周方", "relation": "other"})
    assert resp.status_code == 429 and problem_code(resp) == "rate_limited"


def test_adult_member_must_accept_after_face_check(world):
    g = world.holder("王建国")
    link = _link(world, g, "李秀英", "child").get_json()
    assert link["status"] == "pending" and link["expires_at"]
    m = world.holder("李秀英")
    resp = world.client.post(f"/v1/me/family/{link['link_id']}/accept", json={}, headers=m["headers"])
    assert resp.status_code == 403 and problem_code(resp) == "reverification_required"
    world.channel("wechat").reverify(m["channel_user_id"], "family_accept", link_id=link["link_id"])
    resp = world.client.post(f"/v1/me/family/{link['link_id']}/accept", json={}, headers=m["headers"])
    assert resp.status_code == 200 and resp.get_json()["status"] == "active"
    token = world.qr(g, voucher_id=m["voucher_id"])
    assert world.scan("H320682001", token).get_json()["presented_by"]["relation"] == "child"


def test_a_face_check_that_names_one_invitation_accepts_no_other(world):
    """The member confirmed one invitation (the channel named its link): a second guardian's
    invitation needs its own confirmation; one that names no link serves any."""
    a, b = world.holder("王建国"), world.holder("张丽")
    first = _link(world, a, "李秀英", "child").get_json()
    second = _link(world, b, "李秀英", "child").get_json()
    m = world.holder("李秀英")
    world.channel("wechat").reverify(m["channel_user_id"], "family_accept", link_id=first["link_id"])
    resp = world.client.post(f"/v1/me/family/{second['link_id']}/accept", json={}, headers=m["headers"])
    assert resp.status_code == 403 and problem_code(resp) == "reverification_required"
    resp = world.client.post(f"/v1/me/family/{first['link_id']}/accept", json={}, headers=m["headers"])
    assert resp.status_code == 200 and resp.get_json()["status"] == "active"
    world.channel("wechat").reverify(m["channel_user_id"], "family_accept")
    resp = world.client.post(f"/v1/me/family/{second['link_id']}/accept", json={}, headers=m["headers"])
    assert resp.status_code == 200 and resp.get_json()["status"] == "active"


def test_pending_invitation_expires_after_seven_days(world):
    g = world.holder("王建国")
    link = _link(world, g, "李秀英", "child").get_json()
    m = world.holder("李秀英")
    world.rt.clock.advance(7 * 86400 + 1)
    m = world.holder("李秀英")
    world.channel("wechat").reverify(m["channel_user_id"], "family_accept")
    resp = world.client.post(f"/v1/me/family/{link['link_id']}/accept", json={}, headers=m["headers"])
    assert resp.status_code == 404 and problem_code(resp) == "family_link_not_found"


def test_family_limit_and_duplicates(world):
    g = world.holder("吴强")
    names = ["王小明", "高翔", "李秀英", "陈静", "杨帆"]
    for n in names:
        resp = _link(world, g, n, "guardian", "户口簿 0001")
        assert resp.status_code == 201, resp.get_json()
    world.rt.clock.advance(60)  # past the per-minute limit on link requests
    assert problem_code(_link(world, g, "王小明", "guardian", "x")) == "family_link_exists"
    resp = _link(world, g, "赵敏", "guardian", "x")
    assert resp.status_code == 409 and problem_code(resp) == "family_limit_reached"


def test_member_may_have_several_guardians(world):
    a, b = world.holder("王建国"), world.holder("张丽")
    assert _link(world, a, "王小明", "parent", "出生证 1").status_code == 201
    assert _link(world, b, "王小明", "guardian", "出生证 1").status_code == 201


def test_ending_a_link_revokes_the_guardians_tokens(world):
    g = world.holder("王建国")
    link = _link(world, g, "王小明", "parent", "出生证 1").get_json()
    member_vid = link["member"]["voucher_id"]
    tokens = [world.qr(g, voucher_id=member_vid) for _ in range(2)]
    feed = world.client.get("/v1/revocations", headers=world.inst_headers("H110000001")).get_json()
    resp = world.client.delete(f"/v1/me/family/{link['link_id']}", headers=g["headers"])
    assert resp.status_code == 200 and resp.get_json()["status"] == "ended"
    for t in tokens:
        r = world.scan("H110000001", t)
        assert r.status_code == 401 and problem_code(r) == "token_revoked"
    later = world.client.get(f"/v1/revocations?since={feed['next']}", headers=world.inst_headers("H110000001"))
    assert {i["kind"] for i in later.get_json()["items"]} == {"token"}
    assert len(later.get_json()["items"]) == 2
    ended = dt.datetime.fromtimestamp(world.rt.clock.now(), dt.timezone.utc)  # the service's clock, as every `at`
    assert {dt.datetime.fromisoformat(i["at"]) for i in later.get_json()["items"]} == {ended}
    resp = world.client.post("/v1/me/qr-tokens", json={"voucher_id": member_vid}, headers=g["headers"])
    assert problem_code(resp) == "forbidden"
    resp = world.client.get(f"/v1/me/records?voucher_id={member_vid}", headers=g["headers"])
    assert problem_code(resp) == "forbidden"


def test_a_code_of_an_ended_link_stays_dead_when_the_link_is_made_again_at_once(world):
    """Codes are dated in whole seconds, so the live link's acceptance time cannot tell an old
    link's code from the new link's within the same second; the link each was noted under can
    (tests/api/test_races.py has a code the feed could not list)."""
    g = world.holder("王建国")
    link = _link(world, g, "王小明", "parent", "出生证 1").get_json()
    member_vid = link["member"]["voucher_id"]
    old = world.qr(g, voucher_id=member_vid)
    assert world.client.delete(f"/v1/me/family/{link['link_id']}", headers=g["headers"]).status_code == 200
    again = _link(world, g, "王小明", "parent", "出生证 1")  # the same second on the service's clock
    assert again.status_code == 201 and again.get_json()["link_id"] != link["link_id"]
    refused = world.scan("H110000001", old)
    assert refused.status_code == 401 and problem_code(refused) == "token_revoked"
    assert "family link" in refused.get_json()["detail"]
    listed = world.client.get("/v1/revocations", headers=world.inst_headers("H110000001")).get_json()["items"]
    assert [i["kind"] for i in listed] == ["token"]  # the feed lists it, and the service agrees
    fresh = world.scan("H110000001", world.qr(g, voucher_id=member_vid))
    assert fresh.status_code == 200 and fresh.get_json()["presented_by"]["relation"] == "parent"


def test_a_guardians_code_is_refused_while_the_codes_noted_under_its_link_cannot_be_read(world):
    """Which link a guardian's code was issued under is kept in the ephemeral store: when that
    cannot be read the scan cannot tell, and fails closed without spending the code. (A SQL store
    on a database that cannot be opened fails only that read: the scan's own count and write go
    through the scan's connection.)"""
    from app.store.engine import make_engine
    from app.store.ephemeral import SqlStore
    g = world.holder("王建国")
    member_vid = _link(world, g, "王小明", "parent", "出生证 1").get_json()["member"]["voucher_id"]
    shown = world.qr(g, voucher_id=member_vid)
    store, world.rt.store = world.rt.store, SqlStore(make_engine("sqlite:////nonexistent/dir/store.db"))
    down = world.scan("H110000001", shown)
    assert down.status_code == 503 and problem_code(down) == "service_unavailable"
    assert down.headers["Retry-After"] == "1"
    world.rt.store = store
    assert world.scan("H110000001", shown).status_code == 200


def test_a_guardians_loss_report_revokes_the_codes_they_showed_for_members(world):
    """A lost guardian phone has shown the family's codes too: they stop with the guardian's loss
    report and stay dead after the guardian is reinstated; the member's own codes are untouched."""
    g = world.holder("王建国")
    member_vid = _link(world, g, "王小明", "parent", "出生证 1").get_json()["member"]["voucher_id"]
    shown = world.qr(g, voucher_id=member_vid)
    assert world.client.post("/v1/me/loss-report", json={}, headers=g["headers"]).status_code == 200
    refused = world.scan("H110000001", shown)
    assert refused.status_code == 401 and problem_code(refused) == "token_revoked"
    assert "guardian" in refused.get_json()["detail"]  # not the ended-link detail
    world.rt.clock.advance(5)
    world.reinstate(g)
    assert problem_code(world.scan("H110000001", shown)) == "token_revoked"
    fresh = world.scan("H110000001", world.qr(g, voucher_id=member_vid))
    assert fresh.status_code == 200 and fresh.get_json()["presented_by"]["relation"] == "parent"


def test_a_guardians_code_dated_after_a_reinstatement_passes_to_the_end_of_its_life(world):
    """In the second of the guardian's reinstatement a code is dated at the next whole second,
    ahead of now; the note of the link it was issued under lasts as long as a scan admits it."""
    g = world.holder("王建国")
    member_vid = _link(world, g, "王小明", "parent", "出生证 1").get_json()["member"]["voucher_id"]
    assert world.client.post("/v1/me/loss-report", json={}, headers=g["headers"]).status_code == 200
    world.rt.clock.advance(5.5)
    world.reinstate(g)
    resp = world.client.post("/v1/me/qr-tokens", json={"voucher_id": member_vid}, headers=g["headers"])
    expires = dt.datetime.fromisoformat(resp.get_json()["expires_at"].replace("Z", "+00:00")).timestamp()
    assert expires - world.rt.clock.now() == 60.5  # dated half a second ahead
    world.rt.clock.advance(expires + world.rt.config.clock_skew + 0.5 - world.rt.clock.now())
    last = world.scan("H110000001", resp.get_json()["token"])  # the last second a scan admits it
    assert last.status_code == 200, last.get_json()


def test_member_can_end_the_link_too(world):
    g = world.holder("王建国")
    link = _link(world, g, "李秀英", "child").get_json()
    m = world.holder("李秀英")
    world.channel("wechat").reverify(m["channel_user_id"], "family_accept")
    world.client.post(f"/v1/me/family/{link['link_id']}/accept", json={}, headers=m["headers"])
    token = world.qr(g, voucher_id=m["voucher_id"])
    assert world.client.delete(f"/v1/me/family/{link['link_id']}", headers=m["headers"]).status_code == 200
    assert problem_code(world.scan("H320682001", token)) == "token_revoked"
    assert problem_code(world.client.delete(f"/v1/me/family/{link['link_id']}", headers=g["headers"])) == \
        "family_link_not_found"


def test_region_switch(world):
    h = world.holder("刘洋")  # 410700 and 110000
    me = world.client.get("/v1/me", headers=h["headers"]).get_json()
    assert sorted(e["region_code"] for e in me["enrolments"]) == ["110000", "410700"]
    resp = world.client.put("/v1/me/active-region", json={"region_code": "320682"}, headers=h["headers"])
    assert resp.status_code == 422 and problem_code(resp) == "region_not_enrolled"
    other = "410700" if me["active_region"] == "110000" else "110000"
    assert world.client.put("/v1/me/active-region", json={"region_code": other},
                            headers=h["headers"]).get_json() == {"active_region": other}
    scan = world.scan(next(i["code"] for i in world.demo["institutions"] if i["region_code"] == other), world.qr(h))
    assert scan.get_json()["insurance"]["region_code"] == other


def test_no_switch_to_a_suspended_enrolment(world):
    """SPEC §4.2: only the person's *active* enrolments; one the registry holds suspended is refused."""
    from app.services import registry, vouchers
    h = world.holder("刘洋")  # 410700 and 110000, active in 110000
    with world.app.app_context():
        s = world.rt.session()
        person = vouchers.person_of(s, vouchers.by_public_id(s, h["voucher_id"]))
        next(e for e in registry.enrolments(s, person) if e.region_code == "410700").status = "suspended"
        s.commit()
    resp = world.client.put("/v1/me/active-region", json={"region_code": "410700"}, headers=h["headers"])
    assert resp.status_code == 422 and problem_code(resp) == "region_not_enrolled"
    assert world.client.get("/v1/me", headers=h["headers"]).get_json()["active_region"] == "110000"


def test_filings_create_list_cancel_and_overlap(world):
    h = world.holder("张丽")
    d = _today(world)
    body = {"care_region_code": "320682", "valid_from": d.isoformat(),
            "valid_until": (d + dt.timedelta(days=30)).isoformat()}
    first = world.client.post("/v1/me/remote-care-filings", json=body, headers=h["headers"]).get_json()
    second = world.client.post("/v1/me/remote-care-filings", json={**body, "valid_until": (
        d + dt.timedelta(days=60)).isoformat()}, headers=h["headers"]).get_json()
    items = world.client.get("/v1/me/remote-care-filings", headers=h["headers"]).get_json()["items"]
    assert {(i["filing_id"], i["status"]) for i in items} == {(first["filing_id"], "superseded"),
                                                              (second["filing_id"], "active")}
    bad = world.client.post("/v1/me/remote-care-filings", json={**body, "valid_until": "2000-01-01"},
                            headers=h["headers"])
    assert problem_code(bad) == "invalid_request"
    own = world.client.post("/v1/me/remote-care-filings", json={**body, "care_region_code": "110105"},
                            headers=h["headers"])
    assert problem_code(own) == "invalid_request"
    resp = world.client.delete(f"/v1/me/remote-care-filings/{second['filing_id']}", headers=h["headers"])
    assert resp.get_json()["status"] == "cancelled"
    assert problem_code(world.scan("H320682001", world.qr(h))) == "remote_care_filing_required"
    missing = world.client.delete("/v1/me/remote-care-filings/fil_nope", headers=h["headers"])
    assert missing.status_code == 404 and problem_code(missing) == "filing_not_found"


@pytest.mark.parametrize("pin", ["000000", "123456", "777777", "012345", "987654", "881214", "121488"])
def test_weak_pins_are_refused(world, pin):
    h = world.holder("杨帆", pin=None)  # born 1979-12-30: 791230 / 123079 are his dates
    p = world.person("黄磊")  # born 1983-07-07 → 830707
    resp = world.client.put("/v1/me/pin", json={"new_pin": pin}, headers=h["headers"])
    if pin in ("881214", "121488"):
        assert resp.status_code == 200  # another person's date is not weak for him
        return
    assert resp.status_code == 422 and problem_code(resp) == "pin_too_weak"
    assert p  # keep the demo lookup honest


def test_birth_date_pin_is_refused(world):
    h = world.holder("杨帆", pin=None)
    for pin in ("791230", "123079"):
        resp = world.client.put("/v1/me/pin", json={"new_pin": pin}, headers=h["headers"])
        assert problem_code(resp) == "pin_too_weak"


def test_pin_lock_after_five_misses_and_reset_through_channel(world):
    h = world.holder("张丽", pin="258013")
    for left in (4, 3, 2, 1):
        resp = world.client.put("/v1/me/pin", json={"old_pin": "111112", "new_pin": "470136"},
                                headers=h["headers"])
        assert problem_code(resp) == "pin_invalid" and resp.get_json()["remaining_attempts"] == left
    resp = world.client.put("/v1/me/pin", json={"old_pin": "111112", "new_pin": "470136"}, headers=h["headers"])
    assert resp.status_code == 423 and problem_code(resp) == "pin_locked"
    resp = world.client.put("/v1/me/pin", json={"old_pin": "258013", "new_pin": "470136"}, headers=h["headers"])
    assert problem_code(resp) == "pin_locked"  # even the right PIN, for 24 h
    resp = world.client.put("/v1/me/pin", json={"new_pin": "470136"}, headers=h["headers"])
    assert problem_code(resp) == "pin_required"
    world.channel("wechat").reverify(h["channel_user_id"], "pin_reset")
    assert world.client.put("/v1/me/pin", json={"new_pin": "470136"}, headers=h["headers"]).status_code == 200
    resp = world.client.put("/v1/me/pin-free-limit", json={"amount_fen": 100, "pin": "470136"}, headers=h["headers"])
    assert resp.status_code == 200


def test_pin_lock_lifts_after_24_hours(world):
    h = world.holder("张丽", pin="258013")
    for _ in range(5):
        world.client.put("/v1/me/pin-free-limit", json={"amount_fen": 1, "pin": "111112"}, headers=h["headers"])
    world.rt.clock.advance(24 * 3600 + 1)
    h = world.holder("张丽", pin=None)
    resp = world.client.put("/v1/me/pin-free-limit", json={"amount_fen": 1, "pin": "258013"}, headers=h["headers"])
    assert resp.status_code == 200


def test_free_limit_range_and_initial_pin(world):
    h = world.holder("张丽", pin="258013")
    resp = world.client.put("/v1/me/pin-free-limit", json={"amount_fen": 500001, "pin": "258013"},
                            headers=h["headers"])
    assert problem_code(resp) == "invalid_request"
    ok = world.client.put("/v1/me/pin-free-limit", json={"amount_fen": 500000, "pin": "258013"}, headers=h["headers"])
    assert ok.get_json() == {"free_limit_fen": 500000}
    i = world.holder("林娜", pin="123456")
    resp = world.client.put("/v1/me/pin-free-limit", json={"amount_fen": 100, "pin": "123456"}, headers=i["headers"])
    assert problem_code(resp) == "pin_change_required"


def _pin_hash(world, voucher_id: str) -> str:
    from sqlalchemy import select

    from app.store.models import Voucher
    with world.rt.engine.connect() as conn:
        return conn.execute(select(Voucher.pin_hash).where(Voucher.voucher_id == voucher_id)).scalar_one()


def test_a_right_pin_moves_its_hash_to_the_configured_cost(world):
    """The operator raises PIN_HASH_TIME_COST: each PIN is re-hashed at its holder's next right
    try (argon2's check_needs_rehash), never on a wrong one, and keeps working."""
    from crypto.pins import PinHasher
    h = world.holder("张丽", pin="258013")
    old = _pin_hash(world, h["voucher_id"])
    assert "t=1," in old
    world.rt.pins = PinHasher(time_cost=2, memory_cost=8)
    resp = world.client.put("/v1/me/pin-free-limit", json={"amount_fen": 100, "pin": "111112"}, headers=h["headers"])
    assert problem_code(resp) == "pin_invalid"
    assert _pin_hash(world, h["voucher_id"]) == old
    resp = world.client.put("/v1/me/pin-free-limit", json={"amount_fen": 100, "pin": "258013"}, headers=h["headers"])
    assert resp.status_code == 200
    new = _pin_hash(world, h["voucher_id"])
    assert new != old and "t=2," in new and not world.rt.pins.needs_rehash(new)
    resp = world.client.put("/v1/me/pin-free-limit", json={"amount_fen": 200, "pin": "258013"}, headers=h["headers"])
    assert resp.status_code == 200
    assert _pin_hash(world, h["voucher_id"]) == new  # already at the configured cost: left alone


def test_phone_change_needs_pin(world):
    h = world.holder("张丽", pin="258013")
    resp = world.client.put("/v1/me/phone", json={"phone": "13912345678", "pin": "000111"}, headers=h["headers"])
    assert problem_code(resp) == "pin_invalid"
    resp = world.client.put("/v1/me/phone", json={"phone": "13912345678", "pin": "258013"}, headers=h["headers"])
    assert resp.get_json() == {"phone_masked": "139****5678"}
    assert world.client.get("/v1/me", headers=h["headers"]).get_json()["person"]["phone_masked"] == "139****5678"


def test_records_newest_first_with_cursor_and_no_delete(world):
    h = world.holder("张丽")
    for _ in range(25):
        world.scan("H110000001", world.qr(h))
    page1 = world.client.get("/v1/me/records", headers=h["headers"]).get_json()
    assert len(page1["items"]) == 20 and page1["next_cursor"]
    ids = [r["id"] for r in page1["items"]]
    assert ids == sorted(ids, reverse=True)
    page2 = world.client.get(f"/v1/me/records?cursor={page1['next_cursor']}", headers=h["headers"]).get_json()
    assert page2["items"] and max(r["id"] for r in page2["items"]) < min(ids)
    assert world.client.delete("/v1/me/records", headers=h["headers"]).status_code == 405
    stranger = world.holder("黄磊")
    resp = world.client.get(f"/v1/me/records?voucher_id={h['voucher_id']}", headers=stranger["headers"])
    assert problem_code(resp) == "forbidden"


def test_every_holder_state_change_leaves_a_usage_record(world):
    """SPEC §2: every state change of a voucher is an append-only record, not only those a
    family's year goes through (tests/api/test_family_year.py): PIN change, password-free limit,
    phone change, filing cancelled, a channel unbound by the holder, a member's code shown."""
    g = world.holder("王建国", pin="258013")
    world.holder("王建国", "alipay", pin=None)
    h = g["headers"]
    son = _link(world, g, "王小明", "parent", "出生医学证明 N110123457").get_json()["member"]["voucher_id"]
    d = _today(world)
    filing = world.client.post("/v1/me/remote-care-filings", headers=h, json={
        "care_region_code": "410700", "valid_from": d.isoformat(),
        "valid_until": (d + dt.timedelta(days=30)).isoformat()}).get_json()["filing_id"]
    steps = [("put", "/v1/me/pin", {"old_pin": "258013", "new_pin": "135792"}, "pin_change"),
             ("put", "/v1/me/pin-free-limit", {"amount_fen": 20000, "pin": "135792"}, "pin_free_limit"),
             ("put", "/v1/me/phone", {"phone": "13912345678", "pin": "135792"}, "phone_change"),
             ("delete", f"/v1/me/remote-care-filings/{filing}", None, "filing_cancel"),
             ("delete", "/v1/me/channels/alipay", {"pin": "135792"}, "unbind")]
    for method, path, payload, kind in steps:
        resp = getattr(world.client, method)(path, json=payload, headers=h)
        assert resp.status_code == 200, (path, resp.get_json())
        newest = world.client.get("/v1/me/records", headers=h).get_json()["items"][0]
        assert newest["kind"] == kind, path
    shown = world.client.post("/v1/me/qr-tokens", json={"voucher_id": son}, headers=h).get_json()
    member = world.client.get(f"/v1/me/records?voucher_id={son}", headers=h).get_json()["items"][0]
    assert (member["kind"], member["actor"], member["detail"]["token_id"]) == (
        "qr_issued_for_member", g["voucher_id"], shown["token_id"])


def test_pin_attempts_are_rate_limited(make_world):
    world = make_world(pin_rate_per_minute=2)
    h = world.holder("张丽", pin="258013")
    codes = [problem_code(world.client.put("/v1/me/pin-free-limit", json={"amount_fen": 1, "pin": "000111"},
                                           headers=h["headers"])) for _ in range(3)]
    assert codes == ["pin_invalid", "pin_invalid", "rate_limited"]


def test_a_suspended_guardian_cannot_link_and_the_document_says_so(world):
    """POST /v1/me/family refuses a voucher reported lost; /openapi.json lists that answer
    (schemathesis met it undocumented after fuzzing the loss report first)."""
    g = world.holder("王建国")
    assert world.client.post("/v1/me/loss-report", headers=g["headers"]).status_code == 200
    resp = _link(world, g, "王小明", "parent", "出生证 1")
    assert (resp.status_code, problem_code(resp)) == (403, "voucher_suspended")
    responses = world.client.get("/openapi.json").get_json()["paths"]["/v1/me/family"]["post"]["responses"]
    listed = responses["403"]["description"].removeprefix("codes: ").split(", ")
    assert {"voucher_suspended", "voucher_cancelled"} <= set(listed)


def _listed(world, path, method, status):
    responses = world.client.get("/openapi.json").get_json()["paths"][path][method]["responses"]
    return responses.get(status, {"description": ""})["description"].removeprefix("codes: ").split(", ")


def test_every_call_a_pin_guards_is_rate_limited_and_the_document_says_so(make_world):
    """The PIN's per-minute limit refuses each call that takes the PIN, not only PUT /v1/me/pin."""
    world = make_world(pin_rate_per_minute=1)
    h = world.holder("张丽", pin="258013")
    calls = [("put", "/v1/me/pin-free-limit", "/v1/me/pin-free-limit", {"amount_fen": 1, "pin": "000111"}),
             ("put", "/v1/me/phone", "/v1/me/phone", {"phone": "13912345678", "pin": "000111"}),
             ("delete", "/v1/me/channels/wechat", "/v1/me/channels/{channel_id}", {"pin": "000111"}),
             ("put", "/v1/me/pin", "/v1/me/pin", {"old_pin": "000111", "new_pin": "470136"})]
    for method, url, path, body in calls:
        world.rt.clock.advance(60)  # a fresh minute: the first try is counted, the second refused
        first = getattr(world.client, method)(url, json=body, headers=h["headers"])
        assert problem_code(first) == "pin_invalid", url
        resp = getattr(world.client, method)(url, json=body, headers=h["headers"])
        assert (resp.status_code, problem_code(resp)) == (429, "rate_limited"), url
        assert "rate_limited" in _listed(world, path, method, "429"), path


def test_unbinding_a_voucher_without_a_pin_needs_one_and_the_document_says_so(world):
    h = world.holder("张丽", pin=None)
    resp = world.client.delete("/v1/me/channels/wechat", json={"pin": "470136"}, headers=h["headers"])
    assert (resp.status_code, problem_code(resp)) == (403, "pin_required")
    assert "pin_required" in _listed(world, "/v1/me/channels/{channel_id}", "delete", "403")
