"""Channel activation rules, sessions, re-verification and unbinding, through real signatures."""
from __future__ import annotations

import pytest

from mock_channels.client import ChannelError
from tests.helpers import problem_code


def _activate_raw(world, channel, **overrides):
    p = world.person("张丽")
    payload = {"channel_user_id": "u-" + channel, "id_type": "01", "id_number": p["id_number"], "name": "张丽",
               "phone": p["phone"], "face_verified": True}
    payload.update(overrides)
    return world.channel(channel).call("activations", payload)


@pytest.mark.parametrize("overrides,code", [
    ({"id_type": "02"}, "unsupported_id_type"),
    ({"id_number": "BAD_CHECK"}, "invalid_id_number"),
    ({"face_verified": False}, "face_verification_required"),
    ({"name": "张立"}, "name_mismatch"),
    ({"id_number": "11010519491231002X", "name": "无名"}, "person_not_enrolled"),
    ({"pin": "123123"}, None),
])
def test_activation_refusals(world, overrides, code):
    if overrides.get("id_number") == "BAD_CHECK":
        good = world.person("张丽")["id_number"]
        overrides = {"id_number": good[:-1] + ("1" if good[-1] != "1" else "2")}
    if code is None:
        assert _activate_raw(world, "wechat", **overrides)["pin_set"] is True
        return
    with pytest.raises(ChannelError) as exc:
        _activate_raw(world, "wechat", **overrides)
    assert exc.value.code == code


_ODD_IDS = [
    ({"request_id": ""}, "request_id"),
    ({"request_id": "req 1"}, "request_id"),  # a request id is what Alipay's nonce must be
    ({"request_id": "请求1"}, "request_id"),
    ({"channel_user_id": ""}, "channel_user_id"),
    ({"channel_user_id": "   "}, "channel_user_id"),
    ({"channel_user_id": " u-1"}, "channel_user_id"),  # not a second user beside "u-1"
]


# The mock Alipay client itself will not send an empty request_id (its nonce).
@pytest.mark.parametrize("channel,overrides,field", [
    (channel, overrides, field) for channel in ("wechat", "alipay", "bank-icbc") for overrides, field in _ODD_IDS
    if not (channel == "alipay" and overrides.get("request_id") == "")])
def test_blank_or_odd_request_and_user_ids_are_refused(world, channel, overrides, field):
    """On every channel, before anything is looked up or bound (Alipay refuses a bad request_id
    as its nonce, before the body's fields are read, so it names no field)."""
    with pytest.raises(ChannelError) as exc:
        _activate_raw(world, channel, **overrides)
    assert exc.value.code == "invalid_request"
    if not (channel == "alipay" and field == "request_id"):
        assert exc.value.problem.get("field") == field
    # The refused call made no voucher: the next good call is the one that creates it.
    assert _activate_raw(world, channel, channel_user_id=f"u-{channel}-ok")["created"] is True


def test_person_without_active_enrolment_cannot_activate(world):
    p = world.person("罗敏")  # the demo's only enrolment for her is suspended
    with pytest.raises(ChannelError) as exc:
        world.channel("wechat").activate(p["id_number"], "罗敏", p["phone"])
    assert exc.value.code == "person_not_enrolled"


def test_a_person_the_registry_holds_under_another_id_type_cannot_activate(world):
    """SPEC §2: the person's `id_type` must be 01 (resident ID card) to activate. Another
    document's number can pass the GB 11643 check (a residence permit or a foreigner's permanent
    residence card has the same 18-character form); the channel claiming type 01 does not make it one."""
    import json

    from app.demo import make_id_number
    from app.services import enrolment_import
    number = make_id_number("810000", "1990-01-01", 7, 1)  # a Hong Kong residence permit's form
    row = {"person_no": "TEST-ID02", "id_type": "02", "id_number": number, "name": "陈港",
           "phone": "13900000001", "region_code": "110000", "insurance_type": "employee",
           "status": "active", "since": "2020-01-01"}
    with world.app.app_context():
        report = enrolment_import.import_text(world.rt.session(), world.rt, json.dumps(row), "jsonl")
        assert report.applied == 1 and not report.errors
    with pytest.raises(ChannelError) as exc:
        world.channel("wechat").activate(number, "陈港", "13900000001")
    assert (exc.value.status, exc.value.code) == (422, "unsupported_id_type")
    with world.app.app_context():
        from sqlalchemy import select

        from app.services import vouchers
        from app.store.models import Person
        s = world.rt.session()
        person = s.scalars(select(Person).where(Person.person_no == "TEST-ID02")).one()
        assert vouchers.of_person(s, person.id) is None


def test_activation_moving_the_active_region_off_a_lapsed_enrolment_records_it(world):
    """An activation in another channel moves a voucher whose active region is no longer an
    active enrolment (SPEC §2); like every state change, the move is in the usage records."""
    from app.services import registry, vouchers
    holder = world.holder("刘洋")  # 410700 and, more recently, 110000
    with world.app.app_context():
        s = world.rt.session()
        v = vouchers.by_public_id(s, holder["voucher_id"])
        assert v.active_region == "110000"
        for e in registry.enrolments(s, vouchers.person_of(s, v)):
            if e.region_code == "110000":
                e.status = "suspended"  # as the registry's database may say before any import moves it
        s.commit()
    assert world.activate("刘洋", "alipay")["active_region"] == "410700"
    records = world.client.get("/v1/me/records", headers=holder["headers"]).get_json()["items"]
    assert [(r["kind"], r["detail"]) for r in records[:2]] == [
        ("bind", {}), ("region_switch", {"old": "110000", "new": "410700", "by": "activation"})]


def test_weak_pin_at_activation(world):
    with pytest.raises(ChannelError) as exc:
        _activate_raw(world, "wechat", pin="111111")
    assert exc.value.code == "pin_too_weak"


def test_activation_is_idempotent_on_request_id(world):
    c = world.channel("wechat")
    p = world.person("张丽")
    body = {"request_id": "req-1", "channel_user_id": "u1", "id_type": "01", "id_number": p["id_number"],
            "name": "张丽", "phone": p["phone"], "face_verified": True}
    first = c.call("activations", body)
    second = c.call("activations", body)
    assert first == second and first["created"] is True
    with pytest.raises(ChannelError) as exc:
        c.call("activations", {**body, "channel_user_id": "u2"})
    assert exc.value.code == "invalid_request"


def test_idempotency_record_cannot_be_searched_for_the_pin(world):
    """The stored fingerprint of an activation covers its PIN and ID number; an unkeyed hash of
    them would let anyone who reads the table try the million PINs (and the ID numbers) offline,
    which the slow PIN hash is there to prevent."""
    import hashlib
    import json

    from sqlalchemy import select

    from app.store.models import ChannelRequest

    p = world.person("张丽")
    body = {"request_id": "req-fp", "channel_user_id": "u1", "id_type": "01", "id_number": p["id_number"],
            "name": "张丽", "phone": p["phone"], "face_verified": True, "pin": "258013"}
    world.channel("wechat").call("activations", body)
    with world.app.app_context():
        stored = world.rt.session().scalars(select(ChannelRequest).where(
            ChannelRequest.request_id == "req-fp")).one().fingerprint
    guesses = {hashlib.sha256(json.dumps({**body, "pin": f"{pin:06d}"}, sort_keys=True,
                                         ensure_ascii=False).encode()).hexdigest()
               for pin in range(258000, 258100)}
    assert stored not in guesses


def test_one_voucher_many_channels_one_pin(world):
    wx = world.holder("张丽", "wechat", pin="258013")
    ali = world.activate("张丽", "alipay")
    bank = world.activate("张丽", "bank-icbc", pin="258013")
    assert wx["voucher_id"] == ali["voucher_id"] == bank["voucher_id"]
    assert ali["created"] is False
    with pytest.raises(ChannelError) as exc:
        world.activate("张丽", "bank-cmb", pin="999888")
    assert exc.value.code == "pin_invalid"
    me = world.client.get("/v1/me", headers=wx["headers"]).get_json()
    assert me["channels"] == ["alipay", "bank-icbc", "wechat"]
    assert me["person"]["id_number_masked"].count("*") == 11


def _documented(world, path: str, status: int) -> list[str]:
    responses = world.client.get("/openapi.json").get_json()["paths"][path]["post"]["responses"]
    return responses.get(str(status), {}).get("description", "").removeprefix("codes: ").split(", ")


def test_activation_in_another_channel_with_a_locked_pin(world):
    world.activate("张丽", "wechat", pin="258013")
    codes = []
    for _ in range(5):
        with pytest.raises(ChannelError) as exc:
            world.activate("张丽", "alipay", pin="999888")
        codes.append(exc.value.code)
    assert codes == ["pin_invalid"] * 4 + ["pin_locked"]  # the fifth miss locks it
    with pytest.raises(ChannelError) as exc:
        world.activate("张丽", "alipay", pin="258013")
    assert (exc.value.status, exc.value.code) == (423, "pin_locked")
    assert "pin_locked" in _documented(world, "/v1/channels/{channel_id}/activations", 423)


def test_cancelled_voucher_opens_no_session_and_is_not_reinstated(world):
    from app.services import vouchers
    holder = world.holder("张丽")
    with world.app.app_context():
        s = world.rt.session()
        vouchers.by_public_id(s, holder["voucher_id"]).status = "cancelled"
        s.commit()
    c = world.channel("wechat")
    for call, path in ((lambda: c.session(holder["channel_user_id"]), "sessions"),
                       (lambda: c.reverify(holder["channel_user_id"], "reinstate"), "reverifications")):
        with pytest.raises(ChannelError) as exc:
            call()
        assert (exc.value.status, exc.value.code) == (403, "voucher_cancelled")
        assert "voucher_cancelled" in _documented(world, f"/v1/channels/{{channel_id}}/{path}", 403)


def test_unbinding_ends_sessions_and_reactivation_works(world):
    wx = world.holder("张丽", "wechat")
    ali = world.holder("张丽", "alipay")
    world.channel("wechat").unbind(wx["channel_user_id"])
    resp = world.client.get("/v1/me", headers=wx["headers"])
    assert resp.status_code == 401 and problem_code(resp) == "unauthorized"
    assert world.client.get("/v1/me", headers=ali["headers"]).status_code == 200
    with pytest.raises(ChannelError) as exc:
        world.channel("wechat").session(wx["channel_user_id"])
    assert exc.value.code == "channel_not_bound"
    again = world.holder("张丽", "wechat")
    assert again["voucher_id"] == wx["voucher_id"]
    assert world.client.get("/v1/me", headers=again["headers"]).status_code == 200


def _two_wechat_users(world) -> tuple[dict, dict]:
    """One person bound through two WeChat accounts, each with an open holder session."""
    c, p = world.channel("wechat"), world.person("张丽")
    headers = {}
    for user, pin in (("wx_a", "258013"), ("wx_b", None)):
        c.activate(p["id_number"], "张丽", p["phone"], pin=pin, channel_user_id=user)
        headers[user] = {"Authorization": f"Bearer {c.session(user)['access_token']}"}
    return headers["wx_a"], headers["wx_b"]


def test_channel_unbinds_the_user_it_names_not_another_of_the_same_person(world):
    a, b = _two_wechat_users(world)
    world.channel("wechat").unbind("wx_b")
    resp = world.client.get("/v1/me", headers=b)
    assert resp.status_code == 401 and problem_code(resp) == "unauthorized"
    assert world.client.get("/v1/me", headers=a).status_code == 200
    with pytest.raises(ChannelError) as exc:
        world.channel("wechat").unbind("wx_b")
    assert exc.value.code == "channel_not_bound"
    assert world.channel("wechat").session("wx_a")["access_token"]


def test_holder_unbinding_a_channel_ends_every_binding_in_it(world):
    a, b = _two_wechat_users(world)
    resp = world.client.delete("/v1/me/channels/wechat", json={"pin": "258013"}, headers=a)
    assert resp.status_code == 200
    for headers in (a, b):
        assert problem_code(world.client.get("/v1/me", headers=headers)) == "unauthorized"
    with pytest.raises(ChannelError) as exc:
        world.channel("wechat").session("wx_b")
    assert exc.value.code == "channel_not_bound"


def test_holder_unbinds_with_pin(world):
    wx = world.holder("张丽", "wechat", pin="258013")
    ali = world.holder("张丽", "alipay")
    resp = world.client.delete("/v1/me/channels/alipay", json={"pin": "000001"}, headers=wx["headers"])
    assert problem_code(resp) == "pin_invalid"
    resp = world.client.delete("/v1/me/channels/alipay", json={"pin": "258013"}, headers=wx["headers"])
    assert resp.status_code == 200
    assert problem_code(world.client.get("/v1/me", headers=ali["headers"])) == "unauthorized"


def test_holder_session_expires(world):
    wx = world.holder("张丽")
    world.rt.clock.advance(15 * 60 + 61)
    resp = world.client.get("/v1/me", headers=wx["headers"])
    assert resp.status_code == 401 and problem_code(resp) == "unauthorized"


def test_unknown_channel_and_unregistered_bank(world):
    resp = world.client.post("/v1/channels/bank-xyz/activations", json={})
    assert problem_code(resp) in ("channel_unknown",)
    resp = world.client.post("/v1/channels/telegram/sessions", json={})
    assert problem_code(resp) == "channel_unknown"


def test_end_to_end_wechat_then_alipay(world):
    """Mock WeChat activates a demo person, opens a session, issues a QR token, a demo hospital
    scans it; then the same person activates through Alipay too and both channels work."""
    p = world.person("刘洋")
    wx = world.channel("wechat")
    act = wx.activate(p["id_number"], p["name"], p["phone"], pin="369250")
    sess = wx.session(act["channel_user_id"])
    headers = {"Authorization": f"Bearer {sess['access_token']}"}
    token = world.client.post("/v1/me/qr-tokens", json={}, headers=headers).get_json()["token"]
    hospital = next(i for i in world.demo["institutions"] if i["region_code"] == act["active_region"]
                    and i["kind"] == "hospital")
    scan = world.scan(hospital["code"], token, purpose="outpatient_settlement")
    assert scan.status_code == 200, scan.get_json()
    ali = world.channel("alipay")
    act2 = ali.activate(p["id_number"], p["name"], p["phone"], pin="369250")
    assert act2["voucher_id"] == act["voucher_id"]
    sess2 = ali.session(act2["channel_user_id"])
    headers2 = {"Authorization": f"Bearer {sess2['access_token']}"}
    token2 = world.client.post("/v1/me/qr-tokens", json={}, headers=headers2).get_json()["token"]
    assert world.scan(hospital["code"], token2, purpose="outpatient_settlement").status_code == 200
    # one PIN for both: a PIN change in one channel is what the other channel's session sees
    assert world.client.put("/v1/me/pin", json={"old_pin": "369250", "new_pin": "471958"},
                            headers=headers).status_code == 200
    resp = world.client.put("/v1/me/pin-free-limit", json={"amount_fen": 20000, "pin": "471958"}, headers=headers2)
    assert resp.status_code == 200


def test_channel_calls_are_rate_limited(make_world):
    world = make_world(channel_rate_per_minute=3)
    holder = world.holder("张丽")  # activation + session: two calls
    world.channel("wechat").session(holder["channel_user_id"])
    with pytest.raises(ChannelError) as exc:
        world.channel("wechat").session(holder["channel_user_id"])
    assert exc.value.code == "rate_limited" and exc.value.status == 429
    assert world.channel("alipay").activate(world.person("黄磊")["id_number"], "黄磊",
                                            world.person("黄磊")["phone"])["voucher_id"]


def test_reverification_is_recorded_with_channel_and_time(world):
    h = world.holder("张丽", "alipay")
    out = world.channel("alipay").reverify(h["channel_user_id"], "pin_reset")
    assert out["purpose"] == "pin_reset" and out["channel"] == "alipay" and out["expires_in"] == 600
    assert out["verified_at"].endswith("Z")
    rec = world.client.get("/v1/me/records", headers=h["headers"]).get_json()["items"][0]
    assert rec["kind"] == "reverification" and rec["channel"] == "alipay" and rec["detail"]["purpose"] == "pin_reset"
    with pytest.raises(ChannelError) as exc:
        world.channel("alipay").reverify(h["channel_user_id"], "pin_reset", face_verified=False)
    assert exc.value.code == "face_verification_required"


def test_a_pin_reset_face_check_serves_only_the_channel_user_that_made_it(world):
    """A face check vouches for the person in front of one channel's app: a check made in WeChat
    does not let the voucher's Alipay session, nor its session through another WeChat account,
    set a PIN without the old one. Refused, it is not used up: the WeChat user's session resets."""
    c, p = world.channel("wechat"), world.person("张丽")
    c.activate(p["id_number"], "张丽", p["phone"], pin="258013", channel_user_id="wx_a")
    c.activate(p["id_number"], "张丽", p["phone"], channel_user_id="wx_b")
    own, other_account = ({"Authorization": f"Bearer {c.session(u)['access_token']}"} for u in ("wx_a", "wx_b"))
    ali = world.holder("张丽", "alipay", pin=None)
    other_channel = ali["headers"]
    c.reverify("wx_a", "pin_reset")
    for headers in (other_channel, other_account):
        resp = world.client.put("/v1/me/pin", json={"new_pin": "470136"}, headers=headers)
        assert resp.status_code == 403 and problem_code(resp) == "pin_required"
    assert world.client.put("/v1/me/pin", json={"new_pin": "470136"}, headers=own).status_code == 200
    world.channel("alipay").reverify(ali["channel_user_id"], "pin_reset")
    assert world.client.put("/v1/me/pin", json={"new_pin": "581247"}, headers=other_channel).status_code == 200
    kinds = [r["kind"] for r in world.client.get("/v1/me/records", headers=own).get_json()["items"]]
    assert kinds.count("pin_reset") == 2


def test_a_family_accept_face_check_serves_only_the_channel_user_that_made_it(world):
    """Likewise accepting an invitation: a face check made in WeChat does not let the member's
    Alipay session accept; the WeChat session does."""
    g = world.holder("王建国")
    link = world.client.post("/v1/me/family", headers=g["headers"], json={
        "id_number": world.person("李秀英")["id_number"], "name": "李秀英", "relation": "child"}).get_json()
    wx, ali = world.holder("李秀英"), world.holder("李秀英", "alipay", pin=None)
    world.channel("wechat").reverify(wx["channel_user_id"], "family_accept", link_id=link["link_id"])
    world.channel("wechat").reverify(wx["channel_user_id"], "family_accept")
    resp = world.client.post(f"/v1/me/family/{link['link_id']}/accept", json={}, headers=ali["headers"])
    assert resp.status_code == 403 and problem_code(resp) == "reverification_required"
    resp = world.client.post(f"/v1/me/family/{link['link_id']}/accept", json={}, headers=wx["headers"])
    assert resp.status_code == 200 and resp.get_json()["status"] == "active"


@pytest.mark.parametrize("before,after", [("default", "gm"), ("gm", "default")])
def test_persons_imported_before_a_crypto_profile_change_still_activate(make_world, make_config, clock,
                                                                         before, after):
    """docs/operations.md: changing CRYPTO_PROFILE keeps existing data usable. The registry is
    found by a keyed index whose hash depends on the profile (HMAC-SHA256 / HMAC-SM3): a person
    imported before the change must still activate after it, and get working codes."""
    from app import create_app
    from app.cli import upgrade_database
    from mock_channels.client import ChannelClient, flask_sender
    world = make_world(crypto_profile=before)
    switched = create_app(make_config(crypto_profile=after), clock=clock)  # same database, not emptied
    try:
        upgrade_database(switched)
        client = switched.test_client()
        p = world.person("张丽")
        channel = ChannelClient("wechat", "http://localhost", world.instance, send=flask_sender(client),
                                clock=clock.now)
        act = channel.activate(p["id_number"], "张丽", p["phone"], pin="258013")
        assert act["status"] == "active"
        sess = channel.session(act["channel_user_id"])
        issued = client.post("/v1/me/qr-tokens", json={},
                             headers={"Authorization": f"Bearer {sess['access_token']}"})
        assert issued.status_code == 201, issued.get_json()
        world.client = client
        scan = world.scan("H110000001", issued.get_json()["token"])
        assert scan.status_code == 200, scan.get_json()
        assert scan.get_json()["person"]["id_number_masked"].endswith(p["id_number"][-4:])
    finally:
        switched.extensions["evoucher"].engine.dispose()
