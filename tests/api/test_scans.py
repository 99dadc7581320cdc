"""QR issuance and scans: every refusal has its own code; one use; masked identity facts."""
from __future__ import annotations

import base64
import datetime as dt
import io

import pytest

from tests.helpers import problem_code, redis_round_trips


@pytest.mark.parametrize("value,ok", [("14", False), ("15", True), ("300", True), ("301", False)])
def test_code_lifetime_is_configurable_from_15_to_300_seconds(value, ok):
    """SPEC §3: 60 s by default, configurable 15–300 s; outside that the service will not start."""
    from app.config import Config
    if ok:
        assert Config.from_env({"TOKEN_LIFETIME": value}).token_lifetime == int(value)
    else:
        with pytest.raises(ValueError, match="TOKEN_LIFETIME must be between 15 and 300"):
            Config.from_env({"TOKEN_LIFETIME": value})
    assert Config.from_env({}).token_lifetime == 60


@pytest.mark.parametrize("lifetime", [15, 300])
def test_refresh_in_comes_before_expiry_at_both_lifetime_bounds(make_world, lifetime):
    """SPEC §3: the answer says when to refresh, before the code expires, at every lifetime."""
    world = make_world(token_lifetime=lifetime)
    holder = world.holder("张丽")
    body = world.client.post("/v1/me/qr-tokens", json={}, headers=holder["headers"]).get_json()
    assert body["expires_in"] == lifetime and 0 < body["refresh_in"] < lifetime
    expires = dt.datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00")).timestamp()
    assert expires == int(world.rt.clock.now()) + lifetime
    world.rt.clock.advance(lifetime + world.rt.config.clock_skew + 1)
    assert problem_code(world.scan("H110000001", body["token"])) == "token_expired"


def test_issue_and_scan_once(world):
    holder = world.holder("张丽")
    resp = world.client.post("/v1/me/qr-tokens", json={}, headers=holder["headers"])
    body = resp.get_json()
    assert resp.status_code == 201 and body["format"] == "ev1" and body["token"].startswith("EV1:")
    assert 0 < body["refresh_in"] < body["expires_in"] == 60
    scan = world.scan("H110000001", body["token"])
    assert scan.status_code == 200, scan.get_json()
    out = scan.get_json()
    assert out["ec_token"].startswith("110000ec") and len(out["ec_token"]) == 38
    assert out["ec_token_expires_in"] == 1800
    assert out["person"]["name_masked"] != "张丽" and "丽" in out["person"]["name_masked"]
    assert "*" in out["person"]["id_number_masked"] and out["person"]["gender"] == "female"
    assert out["insurance"] == {"region_code": "110000", "insurance_type": "employee"}
    assert out["voucher_status"] == "active" and out["presented_by"] is None
    again = world.scan("H110000001", body["token"])
    assert again.status_code == 409 and problem_code(again) == "token_already_used"
    other = world.scan("P110000001", body["token"], purpose="query")  # another institution, same token
    assert problem_code(other) == "token_already_used"


def test_jwt_format_scans_too(world):
    holder = world.holder("张丽")
    token = world.qr(holder, format="jwt")
    assert token.count(".") == 2
    assert world.scan("H110000001", token).status_code == 200


def test_svg_and_png_images_decode_to_the_token(world):
    import resvg_py
    import zxingcpp
    from PIL import Image
    holder = world.holder("张丽")
    svg = world.client.post("/v1/me/qr-tokens", json={"image": "svg"}, headers=holder["headers"]).get_json()
    assert svg["qr_svg"].startswith("<svg") and len(svg["qr_svg"]) < 5000
    # Rendered by an independent SVG renderer (resvg) at the sizes phones use, whole and
    # fractional pixels per module, with and without anti-aliasing.
    for width, shape in [(212, "crisp_edges"), (150, "crisp_edges"), (333, "geometric_precision")]:
        rendered = resvg_py.svg_to_bytes(svg_string=svg["qr_svg"], width=width, height=width,
                                         shape_rendering=shape)
        result = zxingcpp.read_barcode(Image.open(io.BytesIO(rendered)).convert("L"))
        assert result is not None and result.text == svg["token"], (width, shape)
    png = world.client.post("/v1/me/qr-tokens", json={"image": "png"}, headers=holder["headers"]).get_json()
    image = Image.open(io.BytesIO(base64.b64decode(png["qr_png_base64"])))
    result = zxingcpp.read_barcode(image)
    assert result is not None and result.text == png["token"]
    assert result.ec_level == "M"


def test_every_code_decodes_with_the_fixed_data_mask():
    """The mask is fixed (not chosen per code): random tokens of both sizes still read back,
    at 2 pixels per module, from both renderings."""
    import resvg_py
    import zxingcpp
    from PIL import Image

    from app.services import qr
    from crypto import tokens
    from crypto.keyring import generate
    key = generate("Ed25519")
    for n in range(40):
        text = tokens.issue(key, voucher_id=tokens.new_voucher_id(), region="110000", iat=1_790_000_000 + n,
                            lifetime=60, token_id=tokens.new_token_id(), fmt="ev1", issuer="evoucher",
                            actor=tokens.new_voucher_id() if n % 2 else None)
        png = zxingcpp.read_barcode(Image.open(io.BytesIO(qr.render_png(text, scale=2))))
        svg = zxingcpp.read_barcode(Image.open(io.BytesIO(resvg_py.svg_to_bytes(
            svg_string=qr.render_svg(text), zoom=2))).convert("L"))
        assert png.text == svg.text == text and png.extra["DataMask"] == qr.DATA_MASK


def test_expired_token(world):
    holder = world.holder("张丽")
    token = world.qr(holder)
    world.rt.clock.advance(60 + 5 + 1)
    resp = world.scan("H110000001", token)
    assert resp.status_code == 401 and problem_code(resp) == "token_expired"


def test_within_clock_skew_still_verifies(world):
    holder = world.holder("张丽")
    token = world.qr(holder)
    world.rt.clock.advance(60 + 4)
    assert world.scan("H110000001", token).status_code == 200


@pytest.mark.parametrize("text,code", [
    ("hello", "token_malformed"), ("EV1:", "token_malformed"), ("EV1:%%%%", "token_malformed"),
    ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "token_malformed"),
])
def test_garbage_tokens(world, text, code):
    resp = world.scan("H110000001", text)
    assert resp.status_code in (400, 401) and problem_code(resp) == code


def test_flipped_character_is_refused(world):
    holder = world.holder("张丽")
    token = world.qr(holder)
    i = len(token) // 2
    bad = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]
    resp = world.scan("H110000001", bad)
    assert problem_code(resp) in ("token_signature_invalid", "token_malformed")


def test_unknown_key(world):
    from crypto import keyring, tokens
    stranger = keyring.generate("Ed25519")
    now = int(world.rt.clock.now())
    holder = world.holder("张丽")
    text = tokens.issue(stranger, voucher_id=holder["voucher_id"], region="110000", iat=now, lifetime=60,
                        token_id=tokens.new_token_id())
    resp = world.scan("H110000001", text)
    assert resp.status_code == 401 and problem_code(resp) == "token_unknown_key"


def test_suspended_voucher_and_revoked_token(world):
    holder = world.holder("张丽")
    token = world.qr(holder)
    assert world.client.post("/v1/me/loss-report", json={}, headers=holder["headers"]).status_code == 200
    resp = world.scan("H110000001", token)
    assert resp.status_code == 403 and problem_code(resp) == "voucher_suspended"
    resp = world.client.post("/v1/me/qr-tokens", json={}, headers=holder["headers"])
    assert problem_code(resp) == "voucher_suspended"
    # reinstated through the channel: the old token stays dead, a new one works
    world.rt.clock.advance(2)
    world.reinstate(holder)
    resp = world.scan("H110000001", token)
    assert problem_code(resp) == "token_revoked"
    assert world.scan("H110000001", world.qr(holder)).status_code == 200


def test_the_first_code_after_a_reinstatement_is_dated_after_it(world):
    """Codes issued at or before the reinstatement's second are refused; one asked for within
    that second is dated at the next whole second (not rounded down into the refused one), and
    scans at once."""
    holder = world.holder("张丽")
    assert world.client.post("/v1/me/loss-report", json={}, headers=holder["headers"]).status_code == 200
    world.rt.clock.advance(2.25)  # the reinstatement lands a quarter into a second
    world.reinstate(holder)
    reinstated = world.rt.clock.now()
    resp = world.client.post("/v1/me/qr-tokens", json={}, headers=holder["headers"])
    assert resp.status_code == 201
    assert _iat(world, resp.get_json()["token"]) == int(reinstated) + 1
    assert world.scan("H110000001", resp.get_json()["token"]).status_code == 200
    world.rt.clock.advance(1.5)  # later codes carry their own second
    assert _iat(world, world.qr(holder)) == int(world.rt.clock.now())


def _claims(world, token: str):
    from app.services import keys
    from crypto import tokens
    with world.app.app_context():
        return tokens.verify(token, keys.keyring(world.rt), int(world.rt.clock.now()))


def _iat(world, token: str) -> int:
    return _claims(world, token).iat


def test_a_threshold_ahead_of_this_nodes_clock_asks_the_app_to_retry(world):
    """Another node's clock more than a second ahead of this one: rather than date a code
    seconds into the future, issuance answers 503 with the wait in Retry-After."""
    import datetime as dt

    from sqlalchemy import update

    from app.store.models import Voucher
    holder = world.holder("张丽")
    ahead = dt.datetime.fromtimestamp(world.rt.clock.now() + 2.5, dt.timezone.utc)
    with world.rt.engine.begin() as conn:
        conn.execute(update(Voucher).where(Voucher.voucher_id == holder["voucher_id"]).values(tokens_valid_after=ahead))
    resp = world.client.post("/v1/me/qr-tokens", json={}, headers=holder["headers"])
    assert resp.status_code == 503 and problem_code(resp) == "service_unavailable"
    assert resp.headers["Retry-After"] == "3"


def test_voucher_not_found_for_a_cancelled_record(world):
    from crypto import tokens
    from app.services import keys
    with world.app.app_context():
        ring = keys.keyring(world.rt, world.rt.session())
    text = tokens.issue(ring.current, voucher_id=tokens.new_voucher_id(), region="110000",
                        iat=int(world.rt.clock.now()), lifetime=60, token_id=tokens.new_token_id())
    resp = world.scan("H110000001", text)
    assert resp.status_code == 404 and problem_code(resp) == "voucher_not_found"


def test_cancelled_voucher(world):
    from app.services import vouchers
    holder = world.holder("张丽")
    token = world.qr(holder)
    with world.app.app_context():
        s = world.rt.session()
        vouchers.by_public_id(s, holder["voucher_id"]).status = "cancelled"
        s.commit()
    assert problem_code(world.scan("H110000001", token)) == "voucher_cancelled"


def test_inactive_institution_cannot_scan(world):
    from app.services import institutions
    holder = world.holder("张丽")
    token = world.qr(holder)
    headers = world.inst_headers("H110000001")
    with world.app.app_context():
        s = world.rt.session()
        institutions.by_code(s, "H110000001").status = "inactive"
        s.commit()
    resp = world.client.post("/v1/scans", json={"token": token, "purpose": "query"}, headers=headers)
    assert resp.status_code == 403 and problem_code(resp) == "institution_inactive"


def test_remote_care_rules(world):
    holder = world.holder("张丽")  # insured in Beijing only
    resp = world.scan("H320682001", world.qr(holder))
    assert resp.status_code == 403 and problem_code(resp) == "remote_care_filing_required"
    assert world.scan("H320682001", world.qr(holder), purpose="emergency").status_code == 200
    today = world.rt.clock.now()
    import datetime as dt
    d = dt.datetime.fromtimestamp(today, dt.timezone.utc).date()
    filing = world.client.post("/v1/me/remote-care-filings", headers=holder["headers"], json={
        "care_region_code": "320682", "valid_from": d.isoformat(),
        "valid_until": (d + dt.timedelta(days=90)).isoformat()}).get_json()
    ok = world.scan("H320682001", world.qr(holder))
    assert ok.status_code == 200 and ok.get_json()["remote_care_filing_id"] == filing["filing_id"]
    # a district pharmacy in the same municipality needs no filing
    assert world.scan("P110000001", world.qr(holder), purpose="pharmacy").status_code == 200


def test_a_filing_covers_its_prefecture_not_its_province(world):
    """SPEC §2: a filing covers the institution's region on the first 4 digits."""
    import datetime as dt
    holder = world.holder("张丽")  # insured in Beijing only
    d = dt.datetime.fromtimestamp(world.rt.clock.now(), dt.timezone.utc).date()
    window = {"valid_from": d.isoformat(), "valid_until": (d + dt.timedelta(days=90)).isoformat()}
    resp = world.client.post("/v1/me/remote-care-filings", headers=holder["headers"],
                             json={"care_region_code": "410000", **window})
    assert problem_code(resp) == "invalid_request" and resp.get_json()["field"] == "care_region_code"
    filed = world.client.post("/v1/me/remote-care-filings", headers=holder["headers"],
                              json={"care_region_code": "320600", **window})
    assert filed.status_code == 201
    assert world.scan("H320682001", world.qr(holder)).status_code == 200  # Rugao, in prefecture 3206
    resp = world.scan("H410700001", world.qr(holder))  # Xinxiang: another prefecture, another province
    assert problem_code(resp) == "remote_care_filing_required"


PHARMACY = "P110000001"  # 北京市示范大药房 (110105), in the pooling area of 张丽 (110000): no filing needed
PHARMACY_PURPOSES = ("pharmacy", "query")


@pytest.mark.parametrize("purpose", ["registration", "outpatient_settlement", "inpatient_settlement", "pharmacy",
                                     "query", "emergency"])
def test_a_pharmacy_scans_only_for_pharmacy_and_query(world, purpose):
    """A retail pharmacy (定点零售药店) registers no patient, settles no visit or stay and runs no
    emergency room: any other purpose is refused with `forbidden`, after the code was verified
    (docs/decisions.md, "Scan purposes by institution kind"). The refusal is in the holder's
    records and leaves the code unused: the desk picks the right purpose and scans it again."""
    holder = world.holder("张丽")
    token = world.qr(holder)
    resp = world.scan(PHARMACY, token, purpose=purpose)
    if purpose in PHARMACY_PURPOSES:
        assert resp.status_code == 200, resp.get_json()
        assert resp.get_json()["purpose"] == purpose
        return
    assert resp.status_code == 403 and problem_code(resp) == "forbidden"
    assert resp.get_json()["detail"] == f"A pharmacy may not scan for {purpose} (it may for: pharmacy, query)"
    documented = world.client.get("/openapi.json").get_json()["paths"]["/v1/scans"]["post"]["responses"]
    assert "forbidden" in documented["403"]["description"].removeprefix("codes: ").split(", ")
    records = world.client.get("/v1/me/records", headers=holder["headers"]).get_json()["items"]
    refused = [r for r in records if r["kind"] == "scan"]
    assert len(refused) == 1 and refused[0]["institution_code"] == PHARMACY
    assert refused[0]["detail"] == {"result": "forbidden", "purpose": purpose,
                                    "token_id": _claims(world, token).token_id}
    again = world.scan(PHARMACY, token, purpose="pharmacy")  # the same code, not used up
    assert again.status_code == 200, again.get_json()
    assert problem_code(world.scan(PHARMACY, token, purpose="query")) == "token_already_used"


def test_a_hospital_scans_for_every_purpose(world):
    from app.services.scans import PURPOSES
    holder = world.holder("张丽")
    for purpose in PURPOSES:
        resp = world.scan("H110000001", world.qr(holder), purpose=purpose)
        assert resp.status_code == 200 and resp.get_json()["purpose"] == purpose, (purpose, resp.get_json())


def test_a_purpose_refused_to_the_kind_counts_against_the_limit(make_world):
    """Like every refusal of a well-signed code: one attempt against the institution's limit,
    and the code stays good for when the limit lifts."""
    world = make_world(scan_rate_per_minute=1, token_lifetime=300)
    holder = world.holder("张丽")
    token = world.qr(holder)
    assert problem_code(world.scan(PHARMACY, token, purpose="inpatient_settlement")) == "forbidden"
    resp = world.scan(PHARMACY, token, purpose="pharmacy")
    assert resp.status_code == 429 and problem_code(resp) == "rate_limited"
    world.rt.clock.advance(int(resp.headers["Retry-After"]))
    assert world.scan(PHARMACY, token, purpose="pharmacy").status_code == 200


def test_the_kind_check_follows_the_codes_own_and_precedes_the_vouchers_rules(world):
    """A code that is no code, or expired, is refused as such wherever it is scanned; a
    well-signed one for a purpose the kind may not use is refused `forbidden` whatever the state
    of its voucher, so the refusal tells that institution nothing of the holder. `emergency`,
    which needs no remote-care filing, is no way round the filing at a pharmacy."""
    assert problem_code(world.scan(PHARMACY, "EV1:NOT-A-CODE", purpose="registration")) == "token_malformed"
    holder = world.holder("张丽")
    expired = world.qr(holder)
    world.rt.clock.advance(world.rt.config.token_lifetime + world.rt.config.clock_skew + 1)
    assert problem_code(world.scan(PHARMACY, expired, purpose="registration")) == "token_expired"
    elsewhere = world.qr(world.holder("陈静"))  # insured in 新乡, no remote-care filing for Beijing
    assert problem_code(world.scan(PHARMACY, elsewhere, purpose="emergency")) == "forbidden"
    assert problem_code(world.scan(PHARMACY, elsewhere, purpose="query")) == "remote_care_filing_required"
    token = world.qr(holder)
    assert world.client.post("/v1/me/loss-report", json={}, headers=holder["headers"]).status_code == 200
    assert problem_code(world.scan(PHARMACY, token, purpose="registration")) == "forbidden"
    assert problem_code(world.scan(PHARMACY, token, purpose="query")) == "voucher_suspended"


def test_payment_needs_a_pin_that_is_not_initial(world):
    no_pin = world.holder("马丽", pin=None)
    resp = world.scan("H110000001", world.qr(no_pin), purpose="outpatient_settlement")
    assert resp.status_code == 403 and problem_code(resp) == "pin_required"
    initial = world.holder("林娜", pin="000000")
    resp = world.scan("H110000001", world.qr(initial), purpose="pharmacy")
    assert problem_code(resp) == "pin_change_required"
    assert world.scan("H110000001", world.qr(initial), purpose="registration").status_code == 200


def test_payment_is_refused_while_the_pin_is_locked(world):
    """Five wrong PINs lock it for 24 hours: a payment scan is refused with pin_locked and the
    time it opens again (the desk learns it before the till asks for the PIN), a registration
    still passes, and payment works again once the lock lapses."""
    holder = world.holder("王建国", pin="258013")
    for i in range(5):
        world.client.put("/v1/me/pin-free-limit", json={"amount_fen": 1, "pin": f"90000{i}"}, headers=holder["headers"])
    resp = world.scan("H110000001", world.qr(holder), purpose="outpatient_settlement")
    assert resp.status_code == 423 and problem_code(resp) == "pin_locked"
    until = dt.datetime.fromisoformat(resp.get_json()["locked_until"])
    assert until.timestamp() == pytest.approx(world.rt.clock.now() + 24 * 3600, abs=2)
    assert world.scan("H110000001", world.qr(holder), purpose="registration").status_code == 200
    world.rt.clock.advance(24 * 3600 + 1)
    holder = world.holder("王建国", pin=None)  # a new session: the old one has expired
    assert world.scan("H110000001", world.qr(holder), purpose="pharmacy").status_code == 200


def test_region_not_enrolled_after_enrolment_suspended(world):
    from app.services import registry, vouchers
    holder = world.holder("刘洋")  # 410700 and 110000
    token = world.qr(holder)
    with world.app.app_context():
        s = world.rt.session()
        v = vouchers.by_public_id(s, holder["voucher_id"])
        person = vouchers.person_of(s, v)
        for e in registry.enrolments(s, person):
            if e.region_code == v.active_region:
                e.status = "suspended"
        s.commit()
    resp = world.scan("H410700001", token)
    assert problem_code(resp) == "region_not_enrolled"


def test_scan_rate_limit_per_institution(make_world):
    world = make_world(scan_rate_per_minute=2)
    holder = world.holder("张丽")
    codes = [world.scan("H110000001", world.qr(holder)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    resp = world.scan("H110000001", world.qr(holder))
    assert problem_code(resp) == "rate_limited" and int(resp.headers["Retry-After"]) > 0
    # The window is on the service's clock (the one that dates tokens): held still, the limit
    # stays (the test cannot cross a minute by chance); moved past Retry-After, it lifts.
    world.rt.clock.advance(int(resp.headers["Retry-After"]) - 1)
    assert problem_code(world.scan("H110000001", world.qr(holder))) == "rate_limited"
    world.rt.clock.advance(1)
    assert world.scan("H110000001", world.qr(holder)).status_code == 200


@pytest.mark.parametrize("backend", ["pg-redis"])
def test_an_accepted_scan_makes_one_round_trip_to_redis(world, monkeypatch):
    """The attempt's count and the token's one-use mark travel together (a pipeline)."""
    holder = world.holder("张丽")
    assert world.scan("H110000001", world.qr(holder)).status_code == 200  # scripts loaded
    token = world.qr(holder)
    sent = redis_round_trips(monkeypatch)
    assert world.scan("H110000001", token).status_code == 200
    assert len(sent) == 1
    assert problem_code(world.scan("H110000001", token)) == "token_already_used"
    assert len(sent) == 2


@pytest.mark.parametrize("backend", ["pg-redis"])
def test_a_mark_that_cannot_be_taken_back_leaves_the_code_spent(make_world, monkeypatch):
    """Redis fails between the pipeline and the delete: the 429 still goes out, counted as a
    store error, and the code stays spent (never usable twice), so the holder shows a fresh one."""
    from app import metrics
    from app.store.ephemeral import StoreUnavailable
    world = make_world(scan_rate_per_minute=1, token_lifetime=300)
    holder = world.holder("张丽")
    assert world.scan("H110000001", world.qr(holder)).status_code == 200
    token = world.qr(holder)

    def unreachable(tag, token_id):
        raise StoreUnavailable("ConnectionError")
    monkeypatch.setattr(world.rt.store, "release", unreachable)
    before = metrics.STORE_ERRORS.labels("release")._value.get()
    resp = world.scan("H110000001", token)
    assert resp.status_code == 429 and problem_code(resp) == "rate_limited"
    assert metrics.STORE_ERRORS.labels("release")._value.get() == before + 1
    world.rt.clock.advance(int(resp.headers["Retry-After"]))
    assert problem_code(world.scan("H110000001", token)) == "token_already_used"


def test_a_scan_refused_at_the_limit_leaves_the_code_usable(make_world):
    """Redis counts the attempt and marks the token in one round trip: the refusal takes the
    mark back. The SQL store counts in the transaction that the refusal rolls back."""
    world = make_world(scan_rate_per_minute=1, token_lifetime=300)
    holder = world.holder("张丽")
    assert world.scan("H110000001", world.qr(holder)).status_code == 200
    token = world.qr(holder)
    resp = world.scan("H110000001", token)
    assert resp.status_code == 429 and problem_code(resp) == "rate_limited"
    world.rt.clock.advance(int(resp.headers["Retry-After"]))
    assert world.scan("H110000001", token).status_code == 200
    world.rt.clock.advance(60)
    assert problem_code(world.scan("H110000001", token)) == "token_already_used"


@pytest.mark.parametrize("store", [{}, {"redis_url": None}], ids=["backend-store", "sql-store"])
def test_every_scan_attempt_counts_once_against_the_limit(make_world, store):
    """Refused attempts count too (a bad code, a rule, a second use), each exactly once. With
    the SQL store on PostgreSQL the count and the one-statement scan write share a transaction
    (with Redis they are each their own); both are run here."""
    world = make_world(scan_rate_per_minute=4, **store)
    if store:
        assert world.rt.store.name == "sql"
    holder = world.holder("林娜", pin="000000")  # an initial PIN: payments are refused
    token = world.qr(holder)
    attempts = [world.scan("H110000001", "EV1:NOT-A-CODE"),
                world.scan("H110000001", world.qr(holder), purpose="pharmacy"),
                world.scan("H110000001", token),
                world.scan("H110000001", token),
                world.scan("H110000001", world.qr(holder))]
    codes = [r.status_code == 200 or problem_code(r) for r in attempts]
    assert codes == ["token_malformed", "pin_change_required", True, "token_already_used", "rate_limited"]
    records = world.client.get("/v1/me/records", headers=holder["headers"]).get_json()["items"]
    assert [r["detail"]["result"] for r in records if r["kind"] == "scan"] == [
        "token_already_used", "ok", "pin_change_required"]


def test_the_database_refuses_a_second_scan_even_if_the_token_store_forgets(world):
    """With Redis, a lost mark (failover, flush) still cannot admit a token twice: scan rows
    are unique by token id. Without Redis that row is the only mark."""
    holder = world.holder("张丽")
    token = world.qr(holder)
    first = world.scan("H110000001", token)
    assert first.status_code == 200
    if world.rt.store.name == "redis":
        store = world.rt.store
        for key in store.client.scan_iter(f"{store.prefix}:used:*"):
            store.client.delete(key)
    again = world.scan("H110000001", token)
    assert again.status_code == 409 and problem_code(again) == "token_already_used"
    records = world.client.get("/v1/me/records", headers=holder["headers"]).get_json()["items"]
    scans = [r["detail"]["result"] for r in records if r["kind"] == "scan"]
    assert scans == ["token_already_used", "ok"]
    # The accepted scan's record (on PostgreSQL written by the same statement as the scan row).
    ok = next(r for r in records if r["kind"] == "scan" and r["detail"]["result"] == "ok")
    assert ok["institution_code"] == "H110000001" and ok["at"]
    assert ok["detail"] == {"result": "ok", "purpose": "registration", "token_id": first.get_json()["token_id"],
                            "scan_id": first.get_json()["scan_id"], "actor_guardian": False}


def test_issue_rate_limit_per_voucher(make_world):
    world = make_world(issue_rate_per_minute=2)
    holder = world.holder("张丽")
    statuses = [world.client.post("/v1/me/qr-tokens", json={}, headers=holder["headers"]) for _ in range(3)]
    assert [r.status_code for r in statuses] == [201, 201, 429]
    assert problem_code(statuses[-1]) == "rate_limited"


def test_institution_reads_only_its_own_scans(world):
    holder = world.holder("张丽")
    scan = world.scan("H110000001", world.qr(holder)).get_json()
    own = world.client.get(f"/v1/scans/{scan['scan_id']}", headers=world.inst_headers("H110000001"))
    assert own.status_code == 200 and own.get_json()["ec_token"] == scan["ec_token"]
    other = world.client.get(f"/v1/scans/{scan['scan_id']}", headers=world.inst_headers("P110000001"))
    assert other.status_code == 404 and problem_code(other) == "not_found"


def test_holder_cannot_issue_for_a_stranger(world):
    a = world.holder("张丽")
    b = world.holder("黄磊")
    resp = world.client.post("/v1/me/qr-tokens", json={"voucher_id": b["voucher_id"]}, headers=a["headers"])
    assert resp.status_code == 403 and problem_code(resp) == "forbidden"


def test_revocation_feed(world):
    holder = world.holder("张丽")
    feed = world.client.get("/v1/revocations", headers=world.inst_headers("H110000001")).get_json()
    start = feed["next"]
    world.client.post("/v1/me/loss-report", json={}, headers=holder["headers"])
    feed = world.client.get(f"/v1/revocations?since={start}", headers=world.inst_headers("H110000001")).get_json()
    assert [(i["kind"], i["id"]) for i in feed["items"]] == [("voucher", holder["voucher_id"])]
    suspended_at = feed["items"][0]["at"]
    empty = world.client.get(f"/v1/revocations?since={feed['next']}", headers=world.inst_headers("H110000001"))
    assert empty.get_json()["items"] == []
    # reinstated: the feed says so (a caching scanner would refuse fresh codes otherwise)
    world.rt.clock.advance(5)
    world.channel("wechat").reverify(holder["channel_user_id"], "reinstate")
    back = world.client.get(f"/v1/revocations?since={feed['next']}", headers=world.inst_headers("H110000001"))
    assert [(i["kind"], i["id"]) for i in back.get_json()["items"]] == [("reinstated", holder["voucher_id"])]
    assert back.get_json()["items"][0]["at"] > suspended_at
    bad = world.client.get("/v1/revocations?since=abc", headers=world.inst_headers("H110000001"))
    assert problem_code(bad) == "invalid_request"


def test_store_outage_fails_scans_closed(world, make_config, clock):
    """With the token store down a scan is refused (never admitted twice), issuance still works."""
    from app.store.ephemeral import RedisStore
    holder = world.holder("张丽")
    token = world.qr(holder)
    world.rt.store = RedisStore("redis://127.0.0.1:1/0")
    resp = world.scan("H110000001", token)
    assert resp.status_code == 503 and problem_code(resp) == "service_unavailable"
    assert world.client.post("/v1/me/qr-tokens", json={}, headers=holder["headers"]).status_code == 201


def test_national_crypto_profile_end_to_end(make_world):
    """CRYPTO_PROFILE=gm: SM2-with-SM3 tokens, SM4-GCM at rest, scans verify."""
    from sqlalchemy import text as sql
    world = make_world(crypto_profile="gm")
    jwks = world.client.get("/.well-known/jwks.json").get_json()["keys"]
    assert [(k["kty"], k["crv"], k["alg"]) for k in jwks] == [("EC", "SM2", "SM2SM3")]
    holder = world.holder("张丽")
    for fmt in ("ev1", "jwt"):
        scan = world.scan("H110000001", world.qr(holder, format=fmt))
        assert scan.status_code == 200, scan.get_json()
    with world.rt.engine.connect() as conn:
        blob = conn.execute(sql("SELECT id_number_enc FROM persons LIMIT 1")).scalar()
    from crypto import fields
    assert fields.FieldCipher(world.rt.master_key, "gm").decrypt(bytes(blob), "id_number")
    assert bytes(blob)[0] != bytes(fields.FieldCipher(world.rt.master_key, "default").encrypt("x", "c"))[0]


def test_scan_ids_grow_with_time_and_ec_tokens_use_the_whole_alphabet(world):
    """Scan ids start with the time in milliseconds (so the scan_id index is appended to, not
    written at random pages); ec_tokens keep their 30 random base32 characters."""
    import re
    import string

    from app.services import scans
    holder = world.holder("张丽")
    ids = []
    for step in (0.0, 0.001, 2.5):
        world.rt.clock.advance(step)
        resp = world.scan("H110000001", world.qr(holder))
        ids.append(resp.get_json()["scan_id"])
    assert all(re.fullmatch(r"scn_[0-9a-f]{24}", i) for i in ids)
    assert [int(i[4:16], 16) for i in ids] == [int(world.rt.clock.now() * 1000) - d for d in (2501, 2500, 0)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    tokens = [scans.ec_token("110000") for _ in range(300)]
    assert all(re.fullmatch(r"110000ec[A-Z2-7]{30}", t) for t in tokens)
    assert set("".join(t[8:] for t in tokens)) == set(string.ascii_uppercase + "234567")


def test_scans_and_issuance_keep_their_connection_between_requests(world):
    """Scans and QR issuance use their thread's kept-open connection (app/store/hotconn.py),
    not a pool checkout per request; and leave it outside any transaction."""
    from sqlalchemy import event
    holder = world.holder("张丽")
    codes = [world.qr(holder)]
    world.inst_headers("H110000001")
    assert world.scan("H110000001", codes[0]).status_code == 200
    checkouts = []
    event.listen(world.rt.engine, "checkout", lambda *a: checkouts.append(1))
    codes += [world.qr(holder) for _ in range(2)]
    assert [world.scan("H110000001", c).status_code for c in codes[1:]] == [200, 200]
    refused = world.scan("H110000001", codes[1])
    assert problem_code(refused) == "token_already_used"
    assert checkouts == []
    with world.rt.hot_connection() as conn:
        assert not conn.in_transaction()
    from app.store.engine import POOL_RECYCLE_SECONDS
    pg = world.rt.engine.dialect.name == "postgresql"
    assert world.rt.hot_connection.recycle == (POOL_RECYCLE_SECONDS if pg else None)
    assert world.rt.hot_connection.options == ({"isolation_level": "AUTOCOMMIT"} if pg else {})


def test_the_answer_is_serialized_once_and_stored_as_sent(world):
    from sqlalchemy import text
    holder = world.holder("张丽")
    resp = world.scan("H110000001", world.qr(holder))
    sent = resp.get_data(as_text=True)
    assert resp.status_code == 200 and resp.mimetype == "application/json" and sent.endswith("}\n")
    with world.rt.engine.connect() as conn:
        stored = conn.execute(text("SELECT CAST(result AS TEXT) FROM scans WHERE scan_id = :s"),
                              {"s": resp.get_json()["scan_id"]}).scalar()
    assert stored == sent.rstrip("\n") and "丽" in stored and "张" not in stored  # masked, UTF-8 as sent
    again = world.client.get(f"/v1/scans/{resp.get_json()['scan_id']}", headers=world.inst_headers("H110000001"))
    assert again.get_json() == resp.get_json()


def test_feed_and_record_times_are_utc_with_a_z_on_every_backend(world):
    """docs/token-format.md has scanners compare a token's iat with a feed item's `at`: the time
    must say its zone (SQLite hands back naive datetimes, PostgreSQL its session's offset)."""
    import datetime as dt
    import re
    holder = world.holder("张丽")
    world.client.post("/v1/me/loss-report", json={}, headers=holder["headers"])
    feed = world.client.get("/v1/revocations", headers=world.inst_headers("H110000001")).get_json()
    record = world.client.get("/v1/me/records", headers=holder["headers"]).get_json()["items"][0]
    for at in (feed["items"][-1]["at"], record["at"]):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z", at), at
    reported = dt.datetime.fromisoformat(feed["items"][-1]["at"].replace("Z", "+00:00")).timestamp()
    assert abs(reported - world.rt.clock.now()) < 5  # the instant the service's clock gave it
