"""A year in one family's life, every step through the API (issue: holder features, point 7)."""
from __future__ import annotations

import datetime as dt

from tests.helpers import problem_code

DAY = 86400


def test_a_family_year(world):
    clock = world.rt.clock

    def today():
        return dt.datetime.fromtimestamp(clock.now(), dt.timezone.utc).date()

    # January: the father activates in WeChat and in his bank app, with one PIN.
    dad = world.holder("王建国", "wechat", pin="258013")
    bank = world.holder("王建国", "bank-icbc", pin="258013")
    assert bank["voucher_id"] == dad["voucher_id"]
    me = world.client.get("/v1/me", headers=dad["headers"]).get_json()
    assert me["channels"] == ["bank-icbc", "wechat"]
    assert sorted(e["region_code"] for e in me["enrolments"]) == ["110000", "320682"]

    # He links his son (8) with the birth certificate; the son's voucher is activated for him.
    son_no = world.person("王小明")
    link = world.client.post("/v1/me/family", headers=dad["headers"], json={
        "id_number": son_no["id_number"], "name": "王小明", "relation": "parent",
        "document_ref": "出生医学证明 O110456789"}).get_json()
    assert link["status"] == "active"
    son_vid = link["member"]["voucher_id"]

    # February: the son sees a doctor in Beijing; the father shows the son's code.
    scan = world.scan("H110000001", world.qr(dad, voucher_id=son_vid), purpose="registration")
    assert scan.status_code == 200 and scan.get_json()["presented_by"]["relation"] == "parent"

    # March: the father moves work to Rugao's pool and switches his active region.
    clock.advance(40 * DAY)
    dad = world.holder("王建国", "wechat", pin=None)  # a new session: the old one has expired
    assert world.client.put("/v1/me/active-region", json={"region_code": "320682"},
                            headers=dad["headers"]).status_code == 200
    ok = world.scan("H320682001", world.qr(dad), purpose="outpatient_settlement")
    assert ok.status_code == 200 and ok.get_json()["insurance"]["region_code"] == "320682"

    # April: a trip to Xinxiang needs a remote-care filing first.
    clock.advance(30 * DAY)
    dad = world.holder("王建国", "wechat", pin=None)
    refused = world.scan("H410700001", world.qr(dad), purpose="outpatient_settlement")
    assert problem_code(refused) == "remote_care_filing_required"
    filing = world.client.post("/v1/me/remote-care-filings", headers=dad["headers"], json={
        "care_region_code": "410700", "valid_from": today().isoformat(),
        "valid_until": (today() + dt.timedelta(days=30)).isoformat()}).get_json()
    scan = world.scan("H410700001", world.qr(dad), purpose="outpatient_settlement")
    assert scan.get_json()["remote_care_filing_id"] == filing["filing_id"]
    # an emergency needs no filing, even after it lapses
    clock.advance(45 * DAY)
    dad = world.holder("王建国", "wechat", pin=None)
    assert problem_code(world.scan("H410700001", world.qr(dad))) == "remote_care_filing_required"
    assert world.scan("H410700001", world.qr(dad), purpose="emergency").status_code == 200

    # July: the phone is lost. Loss report: every outstanding code stops at once, in every channel.
    clock.advance(60 * DAY)
    dad = world.holder("王建国", "wechat", pin=None)
    pending = world.qr(dad)
    pending_son = world.qr(dad, voucher_id=son_vid)
    feed_start = world.client.get("/v1/revocations", headers=world.inst_headers("H320682001")).get_json()["next"]
    assert world.client.post("/v1/me/loss-report", json={}, headers=dad["headers"]).get_json()["status"] == "suspended"
    assert problem_code(world.scan("H320682001", pending)) == "voucher_suspended"
    assert problem_code(world.scan("H110000001", pending_son)) == "token_revoked"
    bank_sess = world.channel("bank-icbc").session(bank["channel_user_id"])
    bank_headers = {"Authorization": f"Bearer {bank_sess['access_token']}"}
    assert problem_code(world.client.post("/v1/me/qr-tokens", json={}, headers=bank_headers)) == "voucher_suspended"
    feed = world.client.get(f"/v1/revocations?since={feed_start}", headers=world.inst_headers("H320682001")).get_json()
    assert ("voucher", dad["voucher_id"]) in [(i["kind"], i["id"]) for i in feed["items"]]

    # Minutes later, with a new phone: a face re-verification in the bank app reinstates it.
    clock.advance(20)
    world.channel("bank-icbc").reverify(bank["channel_user_id"], "reinstate")
    assert problem_code(world.scan("H320682001", pending)) == "token_revoked"  # old codes stay dead
    # so do the sessions opened before the reinstatement, the lost phone's among them: the bank
    # app opens a new one
    assert problem_code(world.client.post("/v1/me/qr-tokens", json={}, headers=bank_headers)) == "unauthorized"
    assert problem_code(world.client.get("/v1/me", headers=dad["headers"])) == "unauthorized"
    bank_sess = world.channel("bank-icbc").session(bank["channel_user_id"])
    bank_headers = {"Authorization": f"Bearer {bank_sess['access_token']}"}
    assert world.scan("H320682001", world.qr({"headers": bank_headers})).status_code == 200

    # December: the son's link is ended; the father's codes for him stop, his records are closed to him.
    clock.advance(150 * DAY)
    dad = world.holder("王建国", "wechat", pin=None)
    last = world.qr(dad, voucher_id=son_vid)
    assert world.client.delete(f"/v1/me/family/{link['link_id']}", headers=dad["headers"]).status_code == 200
    assert problem_code(world.scan("H110000001", last)) == "token_revoked"
    assert problem_code(world.client.get(f"/v1/me/records?voucher_id={son_vid}",
                                         headers=dad["headers"])) == "forbidden"

    # The year's record, newest first, nothing lost, nothing deletable.
    kinds = []
    cursor = None
    while True:
        url = "/v1/me/records" + (f"?cursor={cursor}" if cursor else "")
        page = world.client.get(url, headers=dad["headers"]).get_json()
        kinds += [r["kind"] for r in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    for kind in ("activation", "bind", "family_link", "region_switch", "filing_create", "scan",
                 "loss_report", "reverification", "reinstate", "family_end"):
        assert kind in kinds, kind
    assert kinds[0] == "family_end" and kinds[-1] == "activation"
    assert world.client.delete("/v1/me/records", headers=dad["headers"]).status_code == 405
