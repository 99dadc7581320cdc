"""The mock channels' activation pages: Chinese labels, partner colours, activation journey."""
from __future__ import annotations

from urllib.parse import quote

import pytest

from mock_channels.client import derive_channel_user_id, flask_sender
from mock_channels.web import create_app, refusal_message

ID = "11010519491231002X"
FORM = {"name": "张三", "id_number": ID, "phone": "13800000000", "pin": "", "face": "on"}


@pytest.fixture
def page(service, instance_dir):
    def make(channel_id="wechat", **kw):
        app = create_app(channel_id, "http://127.0.0.1:8000", instance_dir,
                         send=flask_sender(service.test_client()), **kw)
        return app.test_client()
    return make


@pytest.mark.parametrize("channel_id,brand,color", [("wechat", "微信", "#07C160"), ("alipay", "支付宝", "#1677FF"),
                                                    ("bank-icbc", "工商银行", "#C7000B")])
def test_page_renders_in_chinese_with_partner_colours(page, channel_id, brand, color):
    resp = page(channel_id).get("/")
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    for label in ("激活医保电子凭证", "姓名", "身份证号", "手机号", "支付密码", "人脸识别", brand):
        assert label in html
    assert color in html
    assert 'name="viewport"' in html and 'lang="zh-CN"' in html
    assert "已激活" not in html


def test_activation_redirects_to_the_holder_page(page, service):
    client = page("alipay")
    resp = client.post("/activate", data={**FORM, "pin": "258036"})
    cuid = derive_channel_user_id("alipay", ID)
    assert resp.status_code == 303
    assert resp.headers["Location"] == f"http://127.0.0.1:8000/m/#access_token={quote('tok.' + cuid, safe='')}"
    assert [call for _, call, _ in service.calls] == ["activations", "sessions"]
    assert service.calls[0][2]["pin"] == "258036" and service.calls[0][2]["face_verified"] is True
    assert "已激活，直接出示医保码" in client.get("/").get_data(as_text=True)
    again = client.post("/open")
    assert again.status_code == 303 and again.headers["Location"].endswith(quote("tok." + cuid, safe=""))


def test_public_url_is_used_for_the_browser(page):
    resp = page("wechat", public_url="https://evoucher.example/").post("/activate", data=FORM)
    assert resp.headers["Location"].startswith("https://evoucher.example/m/#access_token=")


@pytest.mark.parametrize("form,message", [
    ({**FORM, "name": "未参保张三"}, "未查询到参保信息，请确认已参保或信息已同步"),
    ({k: v for k, v in FORM.items() if k != "face"}, "人脸识别未通过"),
    ({**FORM, "name": "失败张三"}, "人脸识别未通过"),
])
def test_service_refusals_in_plain_chinese(page, form, message):
    resp = page("bank-icbc").post("/activate", data=form)
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert message in html
    assert form["name"] in html  # the form keeps what was typed


@pytest.mark.parametrize("form,message", [
    ({**FORM, "id_number": "110105194912310021"}, "身份证号码有误"),
    ({**FORM, "phone": "12345"}, "请填写正确的 11 位手机号"),
    ({**FORM, "name": ""}, "请填写姓名"),
    ({**FORM, "pin": "12ab"}, "支付密码须为 6 位数字"),
])
def test_input_refused_before_calling_the_service(page, service, form, message):
    resp = page().post("/activate", data=form)
    assert resp.status_code in (400, 422)
    assert message in resp.get_data(as_text=True)
    assert service.calls == []


def test_open_without_activation_goes_back_to_the_form(page):
    resp = page().post("/open")
    assert resp.status_code == 303 and resp.headers["Location"] == "/"


def test_open_for_an_unbound_user_clears_the_cookie(page):
    client = page("wechat")
    client.set_cookie("wechat_user", "wx_unknown")
    resp = client.post("/open")
    assert resp.status_code == 422
    assert "尚未在本渠道激活医保电子凭证" in resp.get_data(as_text=True)
    assert "wechat_user=;" in resp.headers["Set-Cookie"]


def test_unknown_codes_still_read_as_chinese():
    assert refusal_message("person_not_enrolled") == "未查询到参保信息，请确认已参保或信息已同步"
    assert refusal_message("invalid_id_number") == "身份证号码有误"
    assert refusal_message("face_verification_required") == "人脸识别未通过"
    assert refusal_message("something_new") == "办理失败，请稍后再试（错误码：something_new）"
