"""The holder page (/m/) in Chromium, as an insured person uses it on a phone.

Each test uses demo persons no other browser test uses: the service (the `live` fixture) is
shared by the whole session."""
from __future__ import annotations

import re

import pytest

from tests.web.browser import assert_accessible, assert_fits, expect, font_size, is_call, problem_code
from tests.web.live import LiveServer

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def wechat_page(live):
    """The mock WeChat partner's activation page, calling the service over HTTP."""
    from mock_channels.web import create_app
    app = create_app("wechat", live.url, live.world.instance, clock=live.clock.now)
    with LiveServer(app) as server:
        yield server.url


def test_activating_on_a_channel_page_opens_a_code_the_desk_accepts(live, phone, wechat_page):
    person = live.world.person("马丽")
    holder = phone()
    page = holder.page
    page.goto(wechat_page)
    page.get_by_placeholder("请输入真实姓名").fill(person["name"])
    page.get_by_placeholder("18 位居民身份证号码").fill(person["id_number"])
    page.get_by_placeholder("11 位手机号").fill(person["phone"])
    page.get_by_placeholder("6 位数字（选填，可稍后设置）").fill("258013")
    with page.expect_response(is_call("/v1/me/qr-tokens")):
        page.get_by_role("button", name="同意协议并激活").click()

    # The channel handed the session over in the fragment; the page keeps it out of the address bar.
    assert page.url == live.url + "/m/"
    session = page.evaluate("sessionStorage.getItem('evoucher.holder.access_token')")
    assert session
    expect(page.locator("#who-name")).to_have_text("*丽")
    expect(page.locator("#who-tag")).to_have_text("本人")
    expect(page.locator("#region-name")).to_have_text("北京市")
    expect(page.locator("#insurance-type")).to_have_text("职工医保")
    expect(page.locator("#countdown")).to_have_text("二维码 60 秒后失效，到期前自动刷新")
    expect(page.locator("#records .record-kind")).to_have_text(["设置支付密码", "绑定渠道", "激活电子凭证"])
    assert_accessible(page, "the holder's code and records")

    token = holder.code()  # read from the screen, as a desk scanner reads it
    resp = live.world.scan("H110000001", token)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["person"]["name_masked"] == "*丽"
    holder.watch.assert_never_shown(token)
    holder.watch.assert_never_shown(session)


def test_without_a_session_the_page_says_where_to_open_it(phone):
    holder = phone()
    holder.page.goto("/m/")
    expect(holder.page.locator("#entry")).to_contain_text("请从微信、支付宝或银行App进入医保电子凭证")
    expect(holder.page.locator("#app")).to_be_hidden()
    assert_accessible(holder.page, "the page opened without a session")


def test_the_code_is_replaced_before_it_expires(live, phone):
    holder = phone(clock=True)
    holder.open(live.world.holder("林娜")["access_token"])
    first = holder.code()
    page = holder.page
    expect(page.locator("#countdown")).to_have_text("二维码 60 秒后失效，到期前自动刷新")
    # A screen reader hears whose code is shown (the token is only ever in the image), and later
    # that it was replaced; the countdown is in no live region, or it would be read every second.
    expect(page.get_by_role("img", name="*娜的医保电子凭证二维码，请出示给医院、药店扫码")).to_be_visible()
    status = page.get_by_role("status")
    expect(status).to_have_text("已显示*娜的二维码，60 秒内有效")
    assert page.locator("#countdown").evaluate("e => e.closest('[aria-live], [role=status], [role=alert]')") is None

    page.clock.fast_forward(49_000)
    expect(page.locator("#countdown")).to_have_text("二维码 11 秒后失效，到期前自动刷新")
    expect(status).to_have_text("已显示*娜的二维码，60 秒内有效")  # 49 ticks, nothing new said
    assert holder.watch.calls.count("POST /v1/me/qr-tokens") == 1  # the first code's only
    # At 50 s (refresh_in for a 60 s code) the page asks for a new code by itself.
    live.clock.advance(50)
    second, answer = holder.next_code(lambda: page.clock.fast_forward(1_000))
    assert answer.status == 201 and second != first
    expect(page.locator("#countdown")).to_have_text("二维码 60 秒后失效，到期前自动刷新")
    expect(status).to_have_text("二维码已刷新，60 秒内有效")
    # Both codes are good: the old one was replaced while it could still be used.
    for token in (first, second):
        resp = live.world.scan("H110000001", token)
        assert resp.status_code == 200, resp.get_json()


def test_a_code_that_could_not_be_replaced_is_shown_as_expired(live, phone):
    holder = phone(clock=True)
    holder.open(live.world.holder("郭峰")["access_token"])
    holder.code()
    page = holder.page
    holder.watch.allow(r"net::ERR_FAILED")  # the refreshes this test makes fail
    page.route("**/v1/me/qr-tokens", lambda route: route.abort("failed"))

    page.clock.fast_forward(50_000)
    expect(page.locator("#notice")).to_have_text("网络连接失败，请检查网络后重试")
    expect(page.locator("#qr-img")).not_to_have_class("qr-img qr-stale")  # 10 s left: still shown
    assert_accessible(page, "a failed refresh's notice")
    page.clock.fast_forward(10_000)
    expect(page.locator("#countdown")).to_have_text("二维码已失效")
    expect(page.locator("#qr-img")).to_have_class("qr-img qr-stale")
    expect(page.locator("#qr-img")).to_have_attribute("alt", "已失效的医保电子凭证二维码")
    expect(page.get_by_role("status")).to_have_text("二维码已失效，请点击刷新")
    retry = page.get_by_role("button", name="二维码已失效，点击刷新")
    expect(retry).to_be_visible()
    assert_accessible(page, "an expired code")

    page.unroute("**/v1/me/qr-tokens")
    token, answer = holder.next_code(retry.click)
    assert answer.status == 201
    # The button pressed is gone: the focus is on the new code, whose alt text is read.
    expect(page.locator("#qr-img")).to_be_focused()
    expect(page.locator("#qr-img")).to_have_attribute("alt", "*峰的医保电子凭证二维码，请出示给医院、药店扫码")
    expect(page.get_by_role("status")).to_have_text("二维码已刷新，60 秒内有效")
    expect(page.locator("#notice")).to_be_hidden()
    expect(page.locator("#countdown")).to_have_text("二维码 60 秒后失效，到期前自动刷新")
    assert live.world.scan("H310000001", token).status_code == 200


def link_minor(world, guardian: dict, child: dict, relation: str, document_ref: str) -> None:
    """Link a minor to a guardian through the API (linked at once, as SPEC §2 says)."""
    resp = world.client.post("/v1/me/family", headers=guardian["headers"], json={
        "id_number": child["id_number"], "name": child["name"], "relation": relation,
        "document_ref": document_ref})
    assert resp.status_code == 201, resp.get_json()


def test_a_guardian_shows_a_family_members_code(live, phone, desk):
    world = live.world
    guardian = world.holder("王建国")
    child = world.person("王小明")
    link_minor(world, guardian, child, "child", "出生医学证明 O110012345")

    holder = phone().open(guardian["access_token"])
    page = holder.page
    own = holder.code()
    chips = page.locator("#people .chip")
    expect(chips).to_have_text(["本人", "亲情账户: *小明"])
    member_code, answer = holder.next_code(lambda: chips.nth(1).click())
    assert answer.status == 201 and member_code != own
    # The chips are drawn anew: the focus stays on the one pressed, and the switch is said.
    expect(chips.nth(1)).to_be_focused()
    expect(chips.nth(1)).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_role("status")).to_have_text("已显示*小明的二维码，60 秒内有效")
    expect(page.get_by_role("img", name="*小明的医保电子凭证二维码，请出示给医院、药店扫码")).to_be_visible()
    expect(page.locator("#who-name")).to_have_text("*小明")
    expect(page.locator("#who-tag")).to_have_text("亲情账户 · 子女")
    expect(page.locator("#region-name")).to_have_text("北京市")
    # The member's records, the code just shown for them first.
    expect(page.locator("#records .record-kind")).to_have_text(["亲属代为出示二维码", "添加亲情账户", "激活电子凭证"])
    assert_accessible(page, "a family member's code, the person switcher showing")

    scanner = desk().open_signed_in(world.inst("H110000001"))
    assert scanner.type_code(member_code).status == 200
    card = scanner.result_shown()
    assert "核验通过" in card and "*小明" in card
    assert "代亲属出示（出示人 *建国，参保人是其子女）" in card

    # Back to the guardian's own code.
    _, answer = holder.next_code(lambda: chips.nth(0).click())
    assert answer.status == 201
    expect(page.locator("#who-name")).to_have_text("*建国")
    expect(page.locator("#who-tag")).to_have_text("本人")
    holder.watch.assert_never_shown(member_code)


def test_a_loss_report_stops_the_voucher_and_the_page_says_so(live, phone, desk):
    holder = phone().open(live.world.holder("周芳")["access_token"])
    page = holder.page
    shown = holder.code()
    loss = page.get_by_role("button", name="挂失本人电子凭证")
    dialog = page.locator("#loss-dialog")

    loss.click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("确认挂失？")
    assert_accessible(page, "the loss-report confirmation")
    dialog.get_by_role("button", name="取消").click()  # second thoughts: nothing changes
    expect(dialog).to_be_hidden()
    expect(page.locator("#qr-card")).to_be_visible()
    expect(loss).to_be_focused()

    loss.click()
    with page.expect_response(is_call("/v1/me/loss-report")) as answer:
        dialog.get_by_role("button", name="确认挂失").click()
    assert answer.value.status == 200 and answer.value.json()["status"] == "suspended"
    expect(page.locator("#notice")).to_have_text("已挂失，电子凭证已停止使用")
    expect(page.locator("#state-title")).to_have_text("电子凭证已挂失")
    expect(page.locator("#state-text")).to_contain_text("如需恢复，请通过微信、支付宝或银行App重新验证身份")
    expect(page.locator("#qr-card")).to_be_hidden()
    expect(page.locator("#loss-card")).to_be_hidden()
    expect(page.locator("#state-title")).to_be_focused()  # the button is gone with its card
    assert page.locator("#qr-img").get_attribute("src") is None
    expect(page.locator("#records .record-kind").first).to_have_text("挂失")
    assert_accessible(page, "a voucher reported lost")

    # Opened again later, the page still shows the stopped voucher and asks for no code.
    page.reload()
    expect(page.locator("#state-title")).to_have_text("电子凭证已挂失")
    expect(page.locator("#qr-card")).to_be_hidden()

    # The code shown before the report is refused at the desk, in the desk's words.
    scanner = desk().open_signed_in(live.world.inst("H310000001"))
    resp = scanner.type_code(shown)
    assert resp.status == 403 and problem_code(resp) == "voucher_suspended"
    card = scanner.result_shown()
    assert "核验未通过" in card and "该电子凭证已挂失，请参保人通过渠道重新验证后恢复" in card
    assert "错误代码 voucher_suspended" in card

    # The holder's records tell of the refusal in the holder's words, not the desk's instructions.
    page.reload()
    expect(page.locator("#records .record-kind").first).to_have_text("扫码使用")
    expect(page.locator("#records .record-sub").first).to_have_text(re.compile(r"机构 H310000001 · 未通过：电子凭证已挂失$"))


def test_an_expired_session_asks_to_come_back_through_the_channel(live, phone):
    holder = phone().open(live.world.holder("吴强")["access_token"])
    holder.code()
    page = holder.page
    live.clock.advance(live.world.rt.config.holder_token_ttl + 1)

    answer = holder.refresh()
    assert answer.status == 401 and problem_code(answer) == "unauthorized"
    expect(page.locator("#notice")).to_have_text("登录已过期，请从渠道应用重新进入")
    expect(page.locator("#app")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('evoucher.holder.access_token')") is None
    assert_accessible(page, "an ended session")

    page.reload()  # the ended session is forgotten: the page says where to open it again
    expect(page.locator("#entry")).to_be_visible()


def test_switching_the_insured_region_shows_a_code_for_that_region(live, phone):
    holder = phone().open(live.world.holder("刘洋")["access_token"])
    page = holder.page
    holder.code()
    expect(page.locator("#region-name")).to_have_text("北京市")  # insured there most recently
    select = page.get_by_label("切换参保地")
    expect(select.locator("option")).to_have_text(["北京市（职工医保）", "新乡市（职工医保）"])
    assert_accessible(page, "the region switcher")

    select.focus()  # reached with Tab or a screen reader's cursor
    with page.expect_response(is_call("/v1/me/active-region", "PUT")) as switched:
        token, answer = holder.next_code(lambda: select.select_option("410700"))
    assert switched.value.status == 200 and answer.status == 201
    expect(page.locator("#notice")).to_have_text("参保地已切换为新乡市")
    expect(select).to_be_focused()  # disabled while switching, and given the focus back
    expect(page.locator("#region-name")).to_have_text("新乡市")
    expect(page.locator("#records .record-sub").first).to_have_text("北京市 → 新乡市")
    assert_accessible(page, "a switched region's notice")
    resp = live.world.scan("H410700001", token)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["insurance"]["region_code"] == "410700"


def test_a_code_that_expired_while_the_phone_slept_is_replaced_when_it_wakes(live, own_phone):
    world = live.world
    holder = own_phone()
    holder.open(world.holder("胡晓")["access_token"])
    first = holder.code()
    page = holder.page

    holder.hide()  # the screen goes dark: document.visibilityState is "hidden"
    # Past the code's expiry on both clocks, the service's and the page's: nobody can see the
    # code, so the page asks for none.
    live.clock.advance(world.rt.config.token_lifetime + world.rt.config.clock_skew + 1)
    page.clock.fast_forward(90_000)
    assert holder.watch.calls.count("POST /v1/me/qr-tokens") == 1

    second, answer = holder.next_code(holder.show)  # the phone wakes: a fresh code at once
    assert answer.status == 201 and second != first
    expect(page.locator("#countdown")).to_have_text("二维码 60 秒后失效，到期前自动刷新")
    expect(page.locator("#notice")).to_be_hidden()
    # 胡晓 is insured in Shenzhen: a Beijing desk scans the code as an emergency.
    resp = world.scan("H110000001", first, "emergency")
    assert resp.status_code == 401 and resp.get_json()["code"] == "token_expired"
    resp = world.scan("H110000001", second, "emergency")
    assert resp.status_code == 200, resp.get_json()
    holder.watch.assert_never_shown(second)


def test_loading_more_records_goes_on_reading_where_the_button_was(live, phone):
    world = live.world
    world.enrol("郑淑兰", "1948-05-01", [("110000", "resident")])
    session = world.holder("郑淑兰")  # activated, bound, a PIN set: three records
    for _ in range(18):  # and 18 scans: 21, one more than a page
        assert world.scan("H110000001", world.qr(session)).status_code == 200
    holder = phone().open(session["access_token"])
    page = holder.page
    records = page.locator("#records .record")
    expect(records).to_have_count(20)

    more = page.get_by_role("button", name="加载更多")
    more.focus()
    with page.expect_response(is_call("/v1/me/records", "GET")):
        page.keyboard.press("Enter")
    expect(records).to_have_count(21)
    expect(more).to_be_hidden()
    # The button is gone with the last page: the focus is on its first record, not the page top.
    expect(records.nth(20)).to_be_focused()
    expect(records.nth(20).locator(".record-kind")).to_have_text("激活电子凭证")
    assert_accessible(page, "the whole records list")


def test_at_twice_the_text_size_everything_fits_a_small_phone(live, phone, chinese_font):
    """An elderly holder whose phone shows text at twice the default size: the page's text follows
    that setting, and the code, its countdown, both switchers and every button stay on a 360 px
    screen, whole and pressable, with nothing to scroll sideways."""
    world = live.world
    world.enrol("黄秀兰", "1946-03-08", [("110000", "employee"), ("410700", "resident")])
    world.enrol("黄乐乐", "2018-09-09", [("110000", "resident")])
    grandmother = world.holder("黄秀兰")
    child = world.person("黄乐乐")
    link_minor(world, grandmother, child, "grandchild", "户口簿 110105")

    holder = phone(clock=True, font_size=32)
    page = holder.page
    holder.open(grandmother["access_token"])
    token = holder.code()
    # Twice the size indeed: the page sizes its text in rem, which follow the reader's setting.
    assert font_size(page, "#countdown") == 28 and font_size(page, "#who-name") == 36
    expect(page.locator("#people .chip")).to_have_text(["本人", "亲情账户: *乐乐"])
    expect(page.get_by_label("切换参保地").locator("option")).to_have_count(2)
    expect(page.locator("#records .record").first).to_be_visible()  # the records load after the code
    assert_fits(page, ["#who-name", "#qr-img", "#countdown", "#qr-refresh", "#people .chip", "#region-select",
                       "#records .record", "#loss-btn"], "the holder's code at twice the text size")
    # The code keeps the size a scanner needs, and reads.
    assert page.locator("#qr-img").bounding_box()["width"] >= 200
    assert world.scan("H110000001", token, "emergency").status_code == 200  # wherever she is insured
    assert_accessible(page, "the holder's code at twice the text size")

    page.get_by_role("button", name="挂失本人电子凭证").click()
    assert_fits(page, ["#loss-dialog-title", "#loss-dialog-text", "#loss-cancel", "#loss-confirm"],
                "the loss-report confirmation at twice the text size")
    page.get_by_role("button", name="取消").click()

    holder.watch.allow(r"net::ERR_FAILED")  # the refreshes that let the code expire
    page.route("**/v1/me/qr-tokens", lambda route: route.abort("failed"))
    page.clock.fast_forward(60_000)
    expect(page.get_by_role("button", name="二维码已失效，点击刷新")).to_be_visible()
    # The failed refresh's notice comes when the aborted request's failure is handled, which may
    # be after the code has turned stale: wait for it before measuring it.
    expect(page.locator("#notice")).to_have_text("网络连接失败，请检查网络后重试")
    assert_fits(page, ["#qr-expired", "#countdown", "#notice"], "an expired code at twice the text size")


def test_a_phone_waking_on_a_slow_network_does_not_show_the_expired_code_as_valid(live, own_phone):
    """The phone wakes after its code expired, and the network (reconnecting) is slow to answer:
    until a fresh code arrives, the old one is shown as expired, not as a code with seconds left."""
    world = live.world
    world.enrol("蒋琳", "1961-04-12", [("110000", "employee")])
    holder = own_phone()
    holder.open(world.holder("蒋琳")["access_token"])
    holder.code()
    page = holder.page
    expect(page.locator("#countdown")).to_have_text("二维码 60 秒后失效，到期前自动刷新")

    holder.hide()
    live.clock.advance(world.rt.config.token_lifetime + world.rt.config.clock_skew + 1)
    page.clock.fast_forward(90_000)
    held = []
    page.route("**/v1/me/qr-tokens", lambda route: held.append(route))  # answered when the test says
    holder.show()
    expect(page.locator("#qr-img")).to_have_class("qr-img qr-stale")
    assert len(held) == 1  # the page asked for a fresh code at once, and it is not answered yet
    expect(page.locator("#countdown")).to_have_text("二维码已失效")
    expect(page.get_by_role("status")).to_have_text("二维码已失效，请点击刷新")

    with page.expect_response(is_call("/v1/me/qr-tokens")) as answer:
        held[0].continue_()  # the network is back
    assert answer.value.status == 201
    page.unroute("**/v1/me/qr-tokens")
    holder.wait_for_code()
    expect(page.locator("#countdown")).to_have_text("二维码 60 秒后失效，到期前自动刷新")
    assert world.scan("H110000001", holder.code(), "emergency").status_code == 200


def test_a_network_that_comes_back_takes_its_failure_notice_away(live, phone):
    """A refresh fails while the network is down; the page tries again by itself and, once the
    network is back, shows a fresh code, and no longer the notice that the network failed."""
    world = live.world
    world.enrol("田雨", "1985-07-19", [("110000", "employee")])
    holder = phone(clock=True)
    holder.open(world.holder("田雨")["access_token"])
    first = holder.code()
    page = holder.page
    holder.watch.allow(r"net::ERR_FAILED")  # the refresh while the network is down
    page.route("**/v1/me/qr-tokens", lambda route: route.abort("failed"))
    page.clock.fast_forward(50_000)
    expect(page.locator("#notice")).to_have_text("网络连接失败，请检查网络后重试")

    page.unroute("**/v1/me/qr-tokens")  # the network is back: the retry 5 s later gets a code
    second, answer = holder.next_code(lambda: page.clock.fast_forward(5_000))
    assert answer.status == 201 and second != first
    expect(page.locator("#notice")).to_be_hidden()
    expect(page.locator("#countdown")).to_have_text("二维码 60 秒后失效，到期前自动刷新")


def test_a_family_link_ended_elsewhere_stops_the_members_code(live, phone):
    """A guardian's phone shows a child's code when the link is ended elsewhere (on the other side,
    or from another device): the codes issued under it stop verifying. At its next refresh the
    page says the link has ended, drops the child from the switcher and shows the guardian's own
    code, not a revoked one until it expires and then a refresh that is refused again and again."""
    world = live.world
    world.enrol("韩梅", "1975-01-01", [("110000", "employee")])
    world.enrol("韩小雪", "2016-05-05", [("110000", "resident")])
    guardian = world.holder("韩梅")
    link_minor(world, guardian, world.person("韩小雪"), "child", "出生医学证明 O110054321")
    link_id = world.client.get("/v1/me/family", headers=guardian["headers"]).get_json()["items"][0]["link_id"]

    holder = phone(clock=True)
    holder.open(guardian["access_token"])
    own = holder.code()
    page = holder.page
    chips = page.locator("#people .chip")
    member_code, _ = holder.next_code(lambda: chips.nth(1).click())
    expect(page.locator("#who-name")).to_have_text("*小雪")

    ended = world.client.delete(f"/v1/me/family/{link_id}", headers=guardian["headers"])
    assert ended.status_code == 200, ended.get_json()
    assert world.scan("H110000001", member_code).get_json()["code"] == "token_revoked"

    with page.expect_response(lambda r: is_call("/v1/me/qr-tokens")(r) and r.status == 403) as refused:
        page.clock.fast_forward(50_000)  # the refresh
    assert problem_code(refused.value) == "forbidden"
    expect(page.locator("#notice")).to_have_text("与*小雪的亲情账户已解除，不能再出示其二维码")
    expect(page.locator("#people")).to_be_hidden()
    expect(page.locator("#who-name")).to_have_text("*梅")
    expect(page.locator("#who-tag")).to_have_text("本人")
    holder.wait_for_code()
    expect(page.locator("#countdown")).to_have_text("二维码 60 秒后失效，到期前自动刷新")
    token = holder.code()
    assert token not in (own, member_code)
    assert world.scan("H110000001", token).status_code == 200
    expect(page.locator("#records .record-kind").first).to_have_text("解除亲情账户")
    assert_accessible(page, "a family link ended elsewhere")
