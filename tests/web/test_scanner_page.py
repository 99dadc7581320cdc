"""The scanner page (/scanner/) in Chromium, as a hospital or pharmacy desk clerk uses it.

Each test uses demo persons no other browser test uses: the service (the `live` fixture) is
shared by the whole session."""
from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from tests.web.browser import assert_accessible, assert_fits, expect, font_size, is_call, problem_code, qr_picture

RUGAO = "H320682001"  # 如皋市人民示范医院, where the persons below are insured

pytestmark = pytest.mark.browser


def test_an_institution_signs_in_and_a_typed_code_shows_the_person(live, desk):
    world = live.world
    inst = world.inst(RUGAO)
    scanner = desk().open()
    page = scanner.page
    assert_accessible(page, "the sign-in form")

    page.get_by_role("button", name="登录", exact=True).click()  # nothing filled in
    expect(page.locator("#sign-in-error")).to_have_text("请输入客户端ID和密钥")
    assert_accessible(page, "the sign-in form with an error")
    assert "POST /v1/oauth/token" not in scanner.watch.calls
    answer = scanner.sign_in(inst["client_id"], inst["client_secret"] + "x")
    assert answer.status == 401 and problem_code(answer) == "unauthorized"
    expect(page.locator("#sign-in-error")).to_have_text("客户端ID或密钥不正确")
    expect(page.locator("#desk")).to_be_hidden()

    assert scanner.sign_in(inst["client_id"], inst["client_secret"]).status == 200
    expect(page.locator("#desk")).to_be_visible()
    expect(page.get_by_role("radio", name="挂号")).to_be_checked()
    expect(page.locator("#token-text")).to_be_focused()  # ready for a keyboard-wedge scanner
    assert_accessible(page, "the desk")

    holder = world.holder("杨帆")
    token = world.qr(holder)
    answer = scanner.type_code(token)
    assert answer.status == 200
    scan = answer.json()
    card = page.locator("#result")
    expect(card.locator(".result-head")).to_have_text("核验通过挂号")
    # The focus stays in the code field for the next patient; a screen reader hears the outcome.
    expect(page.locator("#token-text")).to_be_focused()
    expect(page.get_by_role("status")).to_have_text("核验通过：*帆，挂号")
    expect(page.get_by_role("region", name="核验通过")).to_be_visible()
    facts = dict(zip(card.locator("dt").all_inner_texts(), card.locator("dd").all_inner_texts()))
    assert facts == {"姓名": "*帆", "证件号码": scan["person"]["id_number_masked"], "性别": "男",
                     "年龄": f"{scan['person']['age']} 岁", "参保地": "如皋市（320682）", "险种": "职工医保",
                     "出示方式": "本人出示", "异地就医备案": "无（本地参保或急诊）"}
    assert scan["person"]["id_number_masked"].count("*") == 11
    expect(card.locator(".ec-value")).to_have_text(scan["ec_token"])
    assert scan["ec_token"].startswith("320682ec")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    card.get_by_role("button", name="复制").click()  # into the hospital system's visit form
    expect(card.get_by_role("button", name="已复制")).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("已复制就医凭证令牌")
    assert page.evaluate("navigator.clipboard.readText()") == scan["ec_token"]
    expect(card).to_contain_text("就医凭证令牌 ec_token（30 分钟内有效，仅限本机构）")
    expect(card).to_contain_text("核验编号 " + scan["scan_id"])
    expect(page.locator("#token-text")).to_have_value("")  # a one-use code is not left on the desk
    assert_accessible(page, "an accepted code's card")
    scanner.watch.assert_never_shown(token)

    page.get_by_role("button", name="退出登录").click()
    expect(page.locator("#sign-in")).to_be_visible()
    expect(page.locator("#result")).to_be_hidden()
    expect(page.locator("#client-id")).to_have_value(inst["client_id"])
    expect(page.locator("#client-secret")).to_have_value("")


def test_a_photo_of_the_phone_screen_is_read_and_verified(live, phone, desk):
    holder = phone().open(live.world.holder("孙浩")["access_token"])
    holder.wait_for_code()
    photo = holder.page.screenshot()  # the whole phone screen, as a clerk photographs it
    scanner = desk().open_signed_in(live.world.inst(RUGAO))
    scanner.choose("药店购药")

    with scanner.page.expect_response(is_call("/v1/scans")) as scanned:
        decoded = scanner.upload(photo)
    assert decoded.status == 200
    assert scanned.value.status == 200 and scanned.value.json()["person"]["name_masked"] == "*浩"
    card = scanner.result_shown()
    assert "核验通过" in card and "药店购药" in card and "*浩" in card
    scanner.watch.assert_never_shown(decoded.json()["text"])


def test_a_photo_without_a_code_is_refused_in_words(live, desk):
    blank = io.BytesIO()
    Image.new("RGB", (640, 480), (235, 235, 235)).save(blank, format="JPEG")
    scanner = desk().open_signed_in(live.world.inst(RUGAO))
    answer = scanner.upload(blank.getvalue(), "photo.jpg", "image/jpeg")
    assert answer.status == 400 and problem_code(answer) == "token_malformed"
    card = scanner.result_shown()
    assert "核验未通过" in card and "这不是有效的医保电子凭证二维码，请让参保人重新出示" in card
    assert "错误代码 token_malformed" in card


def _used_twice(world):
    token = world.qr(world.holder("何军"))
    assert world.scan(RUGAO, token).status_code == 200
    return token


def _expired(world):
    token = world.qr(world.holder("李秀英"))
    world.rt.clock.advance(world.rt.config.token_lifetime + world.rt.config.clock_skew + 1)
    return token


def _suspended(world):
    holder = world.holder("赵敏")
    token = world.qr(holder)
    resp = world.client.post("/v1/me/loss-report", json={}, headers=holder["headers"])
    assert resp.status_code == 200, resp.get_json()
    return token


def _from_elsewhere(world):
    return world.qr(world.holder("陈静"))  # insured in 新乡, no remote-care filing


def _no_pin(world):
    return world.qr(world.holder("朱伟", pin=None))


@pytest.mark.parametrize("make_token,purpose,status,code,message", [
    (_used_twice, "挂号", 409, "token_already_used", "该二维码已被使用过，请让参保人刷新后重新出示"),
    (_expired, "挂号", 401, "token_expired", "二维码已过期，请让参保人刷新后重新出示"),
    (_suspended, "挂号", 403, "voucher_suspended", "该电子凭证已挂失，请参保人通过渠道重新验证后恢复"),
    (lambda world: "EV1:NOT-A-CODE", "挂号", 400, "token_malformed",
     "这不是有效的医保电子凭证二维码，请让参保人重新出示"),
    (_from_elsewhere, "门诊结算", 403, "remote_care_filing_required",
     "参保人不在本地参保且未办理异地就医备案，请先办理备案（急诊除外）"),
    (_no_pin, "门诊结算", 403, "pin_required", "参保人尚未设置医保支付密码，请先设置后再结算"),
], ids=["used-twice", "expired", "suspended", "malformed", "remote-no-filing", "no-pin"])
def test_a_refused_code_is_explained_in_chinese(live, desk, make_token, purpose, status, code, message):
    scanner = desk().open_signed_in(live.world.inst(RUGAO))
    token = make_token(live.world)
    scanner.choose(purpose)
    answer = scanner.type_code(token)
    assert answer.status == status and problem_code(answer) == code
    assert answer.request.post_data_json["purpose"] == {"挂号": "registration", "门诊结算": "outpatient_settlement"}[purpose]
    card = scanner.page.locator("#result")
    expect(card.locator(".result-head")).to_have_text("核验未通过" + purpose)
    expect(card.locator(".refusal")).to_have_text(message)
    expect(card).to_contain_text("错误代码 " + code)
    expect(scanner.page.locator("#token-text")).to_have_value("")
    expect(scanner.page.locator("#token-text")).to_be_focused()
    expect(scanner.page.get_by_role("status")).to_have_text("核验未通过：" + message)
    expect(card.get_by_role("heading", name="核验未通过")).to_be_visible()
    assert_accessible(scanner.page, f"a refusal's card ({code})")
    scanner.watch.assert_never_shown(token)


def test_a_pharmacy_desk_is_offered_only_the_purposes_a_pharmacy_may_scan_for(live, desk):
    """A retail pharmacy scans for 药店购药 and 查询 only (docs/decisions.md, "Scan purposes by
    institution kind"): its sign-in says so and the desk offers no other. A sign-in kept from a
    page that did not yet know offers every purpose: another is refused in words, and the code,
    not used up, is accepted once the clerk picks the right one. A hospital signed in after it on
    the same desk is offered every purpose again."""
    world = live.world
    world.enrol("蒋萍", "1966-05-05", [("110000", "employee")])
    scanner = desk().open_signed_in(world.inst("P110000001"))
    page = scanner.page
    radios = page.locator("#purposes").get_by_role("radio")
    expect(radios).to_have_count(2)
    assert page.locator("#purposes label").all_inner_texts() == ["药店购药", "查询"]
    expect(page.get_by_role("radio", name="药店购药")).to_be_checked()
    assert_accessible(page, "a pharmacy's desk")

    page.evaluate("sessionStorage.removeItem('evoucher.scanner.scan_purposes')")
    page.reload()
    expect(page.locator("#desk")).to_be_visible()
    expect(radios).to_have_count(6)
    token = world.qr(world.holder("蒋萍"))
    scanner.choose("住院结算")
    answer = scanner.type_code(token)
    assert answer.status == 403 and problem_code(answer) == "forbidden"
    message = "本机构不能办理该用途的业务（定点零售药店仅限药店购药和查询），请改选用途后重新扫码核验"
    card = page.locator("#result")
    expect(card.locator(".result-head")).to_have_text("核验未通过住院结算")
    expect(card.locator(".refusal")).to_have_text(message)
    expect(card).to_contain_text("错误代码 forbidden")
    expect(page.get_by_role("status")).to_have_text("核验未通过：" + message)
    assert_accessible(page, "a purpose refused to a pharmacy")
    scanner.choose("药店购药")
    answer = scanner.type_code(token)
    assert answer.status == 200 and answer.request.post_data_json["purpose"] == "pharmacy"
    expect(card.locator(".result-head")).to_have_text("核验通过药店购药")
    scanner.watch.assert_never_shown(token)

    page.get_by_role("button", name="退出登录").click()
    hospital = world.inst("H110000001")
    assert scanner.sign_in(hospital["client_id"], hospital["client_secret"]).status == 200
    expect(radios).to_have_count(6)
    assert page.locator("#purposes label").all_inner_texts() == ["挂号", "门诊结算", "住院结算", "药店购药", "查询", "急诊"]
    expect(page.get_by_role("radio", name="药店购药")).to_be_checked()  # the clerk's last choice, offered here


def test_an_expired_sign_in_asks_to_sign_in_again_and_keeps_the_code(live, desk):
    world = live.world
    inst = world.inst("H410700001")
    scanner = desk().open_signed_in(inst)
    page = scanner.page
    live.clock.advance(world.rt.config.institution_token_ttl + 1)

    token = world.qr(world.holder("徐梅"))
    answer = scanner.type_code(token)
    assert answer.status == 401 and problem_code(answer) == "unauthorized"
    expect(page.locator("#sign-in")).to_be_visible()
    expect(page.locator("#sign-in-error")).to_have_text("机构登录已过期，请重新登录后再核验")
    expect(page.locator("#client-id")).to_have_value(inst["client_id"])

    # Signed in again, the code the patient showed is still there, unused.
    assert scanner.sign_in(inst["client_id"], inst["client_secret"]).status == 200
    expect(page.locator("#token-text")).to_have_value(token)
    with page.expect_response(is_call("/v1/scans")) as scanned:
        page.get_by_role("button", name="核验", exact=True).click()
    assert scanned.value.status == 200
    expect(page.locator("#result")).to_contain_text("核验通过")


# --- the camera without BarcodeDetector: frames read by /scanner/decode -----------------------
# Headless Chromium on Linux has no BarcodeDetector, as desktop Chrome on Windows and Linux,
# Firefox and desktop Safari have none: what runs here is what a desk PC with a webcam runs.

def _decoded(calls) -> list:
    return [c for c in calls if c == "POST /scanner/decode"]


def _no_detector(page) -> None:
    assert page.evaluate("'BarcodeDetector' in window") is False


def test_the_camera_reads_a_code_held_up_to_it(live, camera_desk):
    world = live.world
    inst = world.inst("P110000001")
    token = world.qr(world.holder("张丽"))
    scanner = camera_desk(qr_picture(token)).open_signed_in(inst)
    page = scanner.page
    _no_detector(page)
    scanner.choose("药店购药")
    frames = []
    page.on("request", lambda r: frames.append(r) if r.url.endswith("/scanner/decode") else None)

    with page.expect_response(is_call("/v1/scans")) as scanned:
        page.get_by_role("button", name="摄像头扫码").click()
    assert scanned.value.status == 200
    assert scanned.value.request.post_data_json == {"token": token, "purpose": "pharmacy"}
    scan = scanned.value.json()
    card = page.locator("#result")
    expect(card.locator(".result-head")).to_have_text("核验通过药店购药")
    expect(card).to_contain_text("*丽")
    expect(card).to_contain_text("核验编号 " + scan["scan_id"])
    # The code was read: the camera is off, ready for the next patient.
    expect(page.locator("#camera")).to_be_hidden()
    expect(page.get_by_role("button", name="摄像头扫码")).to_be_visible()
    assert page.evaluate("document.getElementById('camera-video').srcObject") is None
    # A frame went to the decoder (Chromium does not show Playwright an uploaded blob: that the
    # decoder read the code is what says the frame was sent as the multipart field `image`).
    assert frames and all(f.headers["content-type"].startswith("multipart/form-data") for f in frames)
    assert frames[-1].response().json() == {"text": token}
    assert len(_decoded(scanner.watch.calls)) == len(frames)

    got = world.client.get(f"/v1/scans/{scan['scan_id']}", headers=world.inst_headers("P110000001"))
    assert got.status_code == 200, got.get_json()
    assert got.get_json()["person"]["name_masked"] == "*丽"
    scanner.watch.assert_never_shown(token)


def test_frames_without_a_code_are_no_error_and_the_camera_keeps_looking(live, camera_desk):
    blank = Image.new("RGB", (640, 480), (235, 235, 235))
    scanner = camera_desk(blank).open_signed_in(live.world.inst("P320682001"))
    page = scanner.page
    _no_detector(page)
    started, in_flight = [], []
    page.on("request", lambda r: (started.append(r), in_flight.append(r)) if r.url.endswith("/scanner/decode") else None)
    page.on("requestfinished", lambda r: in_flight.remove(r) if r in in_flight else None)
    most = []
    page.on("request", lambda r: most.append(len(in_flight)))

    page.get_by_role("button", name="摄像头扫码").click()
    for _ in range(3):
        with page.expect_response(is_call("/scanner/decode")) as answer:
            pass
        assert answer.value.status == 400 and problem_code(answer.value) == "token_malformed"
    expect(page.locator("#camera")).to_be_visible()
    expect(page.locator("#notice")).to_be_hidden()
    expect(page.locator("#result")).to_be_hidden()
    assert_accessible(page, "the camera looking for a code")
    assert max(most) == 1, "more than one frame on its way at once"
    starts = [r.timing["startTime"] for r in started[:3]]
    assert all(b - a >= 450 for a, b in zip(starts, starts[1:])), f"frames sent too often: {starts}"

    # Stopped by the clerk, the camera sends nothing more. (By keyboard: the focus went from the
    # button that started the camera, now hidden, to the one that stops it, and comes back.)
    stop = page.get_by_role("button", name="停止扫码")
    expect(stop).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#camera")).to_be_hidden()
    expect(page.get_by_role("button", name="摄像头扫码")).to_be_focused()
    sent = len(_decoded(scanner.watch.calls))
    page.wait_for_timeout(1500)
    assert len(_decoded(scanner.watch.calls)) == sent
    # Signing out stops it too.
    page.get_by_role("button", name="摄像头扫码").click()
    with page.expect_response(is_call("/scanner/decode")):
        pass
    page.get_by_role("button", name="退出登录").click()
    expect(page.locator("#sign-in")).to_be_visible()
    sent = len(_decoded(scanner.watch.calls))
    page.wait_for_timeout(1500)
    assert len(_decoded(scanner.watch.calls)) == sent
    expect(page.locator("#sign-in-error")).to_be_hidden()


def _signed_out(live, monkeypatch):
    live.clock.advance(live.world.rt.config.institution_token_ttl + 1)  # the server ends the sign-in
    return 401, "unauthorized"


def _over_the_limit(live, monkeypatch):
    monkeypatch.setattr(live.world.rt.config, "decode_rate_per_minute", 1)
    return 429, "rate_limited"


@pytest.mark.parametrize("cause", [_signed_out, _over_the_limit], ids=["signed-out", "rate-limited"])
def test_a_refused_frame_stops_the_camera_and_says_why(live, camera_desk, monkeypatch, cause):
    blank = Image.new("RGB", (640, 480), (235, 235, 235))
    inst = live.world.inst("P410700001")
    scanner = camera_desk(blank).open_signed_in(inst)
    page = scanner.page
    page.get_by_role("button", name="摄像头扫码").click()
    with page.expect_response(is_call("/scanner/decode")):
        pass
    status, code = cause(live, monkeypatch)
    with page.expect_response(lambda r: is_call("/scanner/decode")(r) and r.status != 400) as refused:
        pass
    assert refused.value.status == status and problem_code(refused.value) == code
    expect(page.locator("#camera")).to_be_hidden()
    if code == "unauthorized":
        expect(page.locator("#sign-in")).to_be_visible()
        expect(page.locator("#sign-in-error")).to_have_text("机构登录已过期，请重新登录后再核验")
        expect(page.locator("#client-id")).to_have_value(inst["client_id"])
    else:
        card = page.locator("#result")
        expect(card.locator(".refusal")).to_have_text("扫码太频繁，请稍后再试")
        expect(card).to_contain_text("错误代码 rate_limited")
        expect(page.get_by_role("button", name="摄像头扫码")).to_be_visible()
    sent = len(_decoded(scanner.watch.calls))
    page.wait_for_timeout(1200)
    assert len(_decoded(scanner.watch.calls)) == sent


def _run_clock_until(page, done, step_ms: int = 100, seconds: float = 15.0) -> None:
    """Move the page's held clock forward a step at a time until `done()`, for at most `seconds`
    of real time: the camera opens and its frames arrive in real time, which a busy machine
    stretches, while a step of the held clock takes almost none. Each step also waits 40 real
    ms, so the page's clock moves at most 37.5 s, well inside the camera's two idle minutes."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "not done after %.0f s" % seconds
        page.clock.run_for(step_ms)
        time.sleep(0.04)


def test_a_camera_left_on_with_no_code_stops_after_two_minutes(live, camera_desk):
    blank = Image.new("RGB", (640, 480), (235, 235, 235))
    scanner = camera_desk(blank, clock=True).open_signed_in(live.world.inst("P320682001"))
    page = scanner.page
    page.get_by_role("button", name="摄像头扫码").click()
    with page.expect_response(is_call("/scanner/decode")) as answer:
        _run_clock_until(page, lambda: _decoded(scanner.watch.calls))
    assert problem_code(answer.value) == "token_malformed"
    sent = len(_decoded(scanner.watch.calls))

    page.clock.fast_forward(2 * 60 * 1000)
    _run_clock_until(page, lambda: page.locator("#camera").is_hidden())
    notice = page.locator("#notice")
    expect(notice).to_have_text("摄像头已关闭（2 分钟内未识别到二维码），需要时请再次点击“摄像头扫码”")
    expect(notice).to_have_class("notice notice-info")  # word to the clerk, not an error
    assert_accessible(page, "the camera's notice")
    expect(page.get_by_role("button", name="摄像头扫码")).to_be_visible()
    expect(page.locator("#result")).to_be_hidden()
    assert len(_decoded(scanner.watch.calls)) == sent


def test_a_hidden_desk_page_sends_no_frames_until_it_is_shown_again(live, own_camera_desk):
    blank = Image.new("RGB", (640, 480), (235, 235, 235))
    scanner = own_camera_desk(blank).open_signed_in(live.world.inst("P320682001"))
    page = scanner.page
    _no_detector(page)
    page.get_by_role("button", name="摄像头扫码").click()
    with page.expect_response(is_call("/scanner/decode")):
        pass

    scanner.hide()  # the clerk puts the browser away, the camera still on
    page.wait_for_timeout(700)  # a frame on its way when the page was hidden comes back
    sent = len(_decoded(scanner.watch.calls))
    page.wait_for_timeout(1500)
    assert len(_decoded(scanner.watch.calls)) == sent

    with page.expect_response(is_call("/scanner/decode")) as answer:
        scanner.show()
    assert problem_code(answer.value) == "token_malformed"
    expect(page.locator("#camera")).to_be_visible()
    expect(page.locator("#notice")).to_be_hidden()


def test_a_desk_without_a_camera_is_told_what_to_use_instead(live, desk):
    scanner = desk().open_signed_in(live.world.inst("P110000001"))  # Chromium without a camera
    page = scanner.page
    page.get_by_role("button", name="摄像头扫码").click()
    expect(page.locator("#notice")).to_have_text("无法打开摄像头，请检查浏览器的摄像头权限，或改用上传图片、扫码枪录入")
    expect(page.locator("#camera")).to_be_hidden()
    expect(page.get_by_role("button", name="摄像头扫码")).to_be_visible()
    assert_accessible(page, "the notice of a camera that cannot be opened")


def _focused(page) -> str:
    """The focused element, as the keyboard test names it: its id, or a radio's name and value."""
    return page.evaluate("""() => { const e = document.activeElement;
        return e.type === 'radio' ? `${e.name}:${e.value}` : (e.id || e.tagName.toLowerCase()); }""")


def test_every_desk_action_can_be_done_by_keyboard_alone(live, desk):
    world = live.world
    inst = world.inst("H110000001")
    world.enrol("钱桂英", "1952-10-01", [("110000", "resident")])
    world.enrol("孔德明", "1949-02-02", [("110000", "employee")])
    scanner = desk().open()
    page, keys = scanner.page, scanner.page.keyboard
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])

    # Sign in: the page starts in the first field; a refused secret leaves the focus on 登录.
    expect(page.locator("#client-id")).to_be_focused()
    keys.type(inst["client_id"])
    keys.press("Tab")
    keys.type(inst["client_secret"] + "x")
    keys.press("Tab")
    assert _focused(page) == "button"
    with page.expect_response(is_call("/v1/oauth/token")) as answer:
        keys.press("Enter")
    assert answer.value.status == 401 and problem_code(answer.value) == "unauthorized"
    expect(page.locator("#sign-in-error")).to_have_text("客户端ID或密钥不正确")
    expect(page.get_by_role("button", name="登录", exact=True)).to_be_focused()
    keys.press("Shift+Tab")  # back in the secret field, its text selected
    keys.press("End")
    keys.press("Backspace")  # the secret without its stray "x"
    with page.expect_response(is_call("/v1/oauth/token")) as answer:
        keys.press("Enter")  # Enter in a field submits the form
    assert answer.value.status == 200
    expect(page.locator("#token-text")).to_be_focused()

    # Tab goes through the desk in reading order: sign out, purpose, camera, photo, code, verify.
    for _ in range(4):
        keys.press("Shift+Tab")
    assert _focused(page) == "sign-out"
    order = []
    for _ in range(6):
        keys.press("Tab")
        order.append(_focused(page))
    assert order == ["purpose:registration", "camera-btn", "photo-input", "token-text", "verify-btn", "body"]

    # The purpose with the arrow keys, then a photo of a code chosen from the file picker.
    for _ in range(5):
        keys.press("Shift+Tab")
    assert _focused(page) == "purpose:registration"
    keys.press("ArrowRight")
    expect(page.get_by_role("radio", name="门诊结算")).to_be_checked()
    keys.press("Tab")
    keys.press("Enter")  # 摄像头扫码: this desk has no camera, and says what to use instead
    expect(page.locator("#notice")).to_have_text("无法打开摄像头，请检查浏览器的摄像头权限，或改用上传图片、扫码枪录入")
    keys.press("Tab")
    assert _focused(page) == "photo-input"
    # The field itself is hidden: its label, which looks like a button, shows where the focus is.
    label = page.locator("label[for=photo-input]")
    assert label.evaluate("e => getComputedStyle(e).outlineStyle") == "solid"
    token = world.qr(world.holder("钱桂英"))
    photo = io.BytesIO()
    qr_picture(token).save(photo, format="PNG")
    with page.expect_file_chooser() as chooser:
        keys.press("Space")
    with page.expect_response(is_call("/v1/scans")) as scanned:
        chooser.value.set_files(files=[{"name": "code.png", "mimeType": "image/png", "buffer": photo.getvalue()}])
    assert scanned.value.status == 200
    expect(page.locator("#result .result-head")).to_have_text("核验通过门诊结算")
    expect(page.locator("#token-text")).to_be_focused()

    # A code typed into the field (as a keyboard-wedge scanner types it), verified with the button.
    token = world.qr(world.holder("孔德明"))
    keys.type(token)
    keys.press("Tab")
    assert _focused(page) == "verify-btn"
    with page.expect_response(is_call("/v1/scans")) as scanned:
        keys.press("Enter")
    assert scanned.value.status == 200 and scanned.value.request.post_data_json["purpose"] == "outpatient_settlement"
    expect(page.get_by_role("status")).to_have_text("核验通过：*德明，门诊结算")
    expect(page.locator("#token-text")).to_be_focused()

    # The visit's ec_token copied: the next stop after the verify button.
    keys.press("Tab")
    keys.press("Tab")
    assert _focused(page) == "button"
    keys.press("Enter")
    expect(page.locator("#result").get_by_role("button", name="已复制")).to_be_focused()
    assert page.evaluate("navigator.clipboard.readText()") == scanned.value.json()["ec_token"]

    # Signing out: the first stop on the page; the sign-in form then waits for the secret.
    for _ in range(8):
        if _focused(page) == "sign-out":
            break
        keys.press("Shift+Tab")
    keys.press("Enter")
    expect(page.locator("#sign-in")).to_be_visible()
    expect(page.locator("#client-secret")).to_be_focused()
    scanner.watch.assert_never_shown(token)


@pytest.mark.parametrize("viewport,name", [({"width": 360, "height": 640}, "冯玉珍"),
                                           ({"width": 1024, "height": 768}, "褚建华")], ids=["phone", "desk"])
def test_at_twice_the_text_size_the_desk_page_fits(live, desk, chinese_font, viewport, name):
    """A clerk with text at twice the default size, on a phone or a desk screen: every field,
    choice and button of the page, and the person card, stay whole, pressable and within the
    screen's width, with nothing to scroll sideways."""
    world = live.world
    world.enrol(name, "1958-06-06", [("110000", "employee")])
    scanner = desk(viewport, font_size=32).open()
    page = scanner.page
    assert font_size(page, "#client-id") == 32 and font_size(page, "#sign-in-form label") == 28
    assert_fits(page, ["h1", "#client-id", "#client-secret", "#sign-in-form button"],
                "the sign-in form at twice the text size")

    scanner.sign_in(world.inst("H110000001")["client_id"], world.inst("H110000001")["client_secret"])
    assert scanner.type_code(world.qr(world.holder(name))).status == 200
    expect(page.locator("#result .result-head")).to_have_text("核验通过挂号")
    assert_fits(page, ["#sign-out", ".purpose span", "label[for=photo-input]", "#token-text", "#verify-btn",
                       "#result-title", "#result dt", "#result dd", ".ec-value", "#result .small"],
                "the desk and a person card at twice the text size")
    assert_accessible(page, "the desk at twice the text size")


def _hold_first_scan(page) -> list:
    """Hold the page's first POST /v1/scans until the test continues it (a slow answer); let the
    others through. The held requests' list."""
    held = []

    def route(r):
        if held:
            r.continue_()
        else:
            held.append(r)
    page.route("**/v1/scans", route)
    return held


def _type_second_while_first_is_held(page, first: str, second: str) -> list:
    """The wedge scanner types `first` + Enter, whose scan is held on its way, then `second` +
    Enter; the field is empty again for the code after. Returns the held route."""
    box = page.locator("#token-text")
    held = _hold_first_scan(page)
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/v1/scans")):
        box.press_sequentially(first)
        box.press("Enter")
    box.press_sequentially(second)
    box.press("Enter")
    expect(box).to_have_value("")  # taken from the field, for the next code to be typed alone
    return held


def test_a_code_scanned_while_the_last_is_being_verified_is_verified_next(live, desk):
    """A keyboard-wedge scanner reads two patients' codes in quick succession: the second code,
    typed while the first is still being verified, is verified after it, not dropped (which left
    the first patient's 核验通过 on the screen for the second patient)."""
    world = live.world
    world.enrol("严华", "1970-03-03", [("110000", "employee")])
    world.enrol("魏东", "1972-04-04", [("110000", "employee")])
    first, second = world.qr(world.holder("严华")), world.qr(world.holder("魏东"))
    scanner = desk().open_signed_in(world.inst("H110000001"))
    page, box = scanner.page, scanner.page.locator("#token-text")
    held = _type_second_while_first_is_held(page, first, second)
    assert len(held) == 1

    with page.expect_response(lambda r: is_call("/v1/scans")(r) and r.request.post_data_json["token"] == second) \
            as answer:
        held[0].continue_()
    assert answer.value.status == 200
    expect(page.get_by_role("status")).to_have_text("核验通过：*东，挂号")
    expect(page.locator("#result")).to_contain_text("核验编号 " + answer.value.json()["scan_id"])
    assert scanner.watch.calls.count("POST /v1/scans") == 2
    expect(box).to_be_focused()
    scanner.watch.assert_never_shown(second)


def test_the_same_code_scanned_twice_keeps_its_accepted_card(live, desk):
    """A scanner that reads the code on a phone twice (at once, or a moment later): the patient
    was accepted once, and the card with the ec_token stays, with a word that the code is spent;
    it is not sent again to be refused as used in place of the card."""
    world = live.world
    world.enrol("潘洁", "1980-08-08", [("110000", "employee")])
    token = world.qr(world.holder("潘洁"))
    scanner = desk().open_signed_in(world.inst("H110000001"))
    page, box = scanner.page, scanner.page.locator("#token-text")
    held = _type_second_while_first_is_held(page, token, token)  # read again while the first is on its way
    with page.expect_response(is_call("/v1/scans")) as answer:
        held[0].continue_()
    assert answer.value.status == 200
    scan = answer.value.json()
    notice = page.locator("#notice")
    repeated = "该二维码已核验通过（见下方结果），不能再次使用；如需办理其他业务，请让参保人刷新后重新出示"
    expect(notice).to_have_text(repeated)
    card = page.locator("#result")
    expect(card.locator(".result-head")).to_have_text("核验通过挂号")
    expect(card.locator(".ec-value")).to_have_text(scan["ec_token"])
    expect(card).to_contain_text("核验编号 " + scan["scan_id"])
    assert scanner.watch.calls.count("POST /v1/scans") == 1
    assert_accessible(page, "a code scanned twice")

    box.press_sequentially(token)  # and once more, a moment later
    box.press("Enter")
    expect(box).to_have_value("")
    expect(notice).to_have_text(repeated)
    expect(card).to_contain_text("核验编号 " + scan["scan_id"])
    assert scanner.watch.calls.count("POST /v1/scans") == 1
    expect(box).to_be_focused()
    scanner.watch.assert_never_shown(token)
