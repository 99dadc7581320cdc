"""A channel partner's activation page (one small Flask app per channel), mobile-first, in
Chinese, in the partner's colours. It runs the stand-in real-name and face check, activates
through the real service, opens a holder session and sends the browser to the holder page.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from urllib.parse import quote

from flask import Flask, redirect, render_template, request

from app.channels import channel_kind

from . import identity
from .client import ChannelClient, ChannelError


@dataclass(frozen=True)
class Brand:
    name: str  # shown in the title bar
    color: str
    color_dark: str


BANK_NAMES = {"icbc": "工商银行", "cmb": "招商银行", "ccb": "建设银行", "abc": "农业银行",
              "boc": "中国银行", "bocom": "交通银行", "psbc": "邮储银行"}

# Problem codes as a person should read them.
MESSAGES = {
    "person_not_enrolled": "未查询到参保信息，请确认已参保或信息已同步",
    "invalid_id_number": "身份证号码有误",
    "unsupported_id_type": "仅支持居民身份证激活",
    "name_mismatch": "姓名与身份证号码不一致",
    "face_verification_required": "人脸识别未通过",
    "pin_too_weak": "支付密码过于简单，请勿使用初始密码、连续或重复数字、生日",
    "voucher_suspended": "医保电子凭证已挂失，请先解除挂失",
    "voucher_cancelled": "医保电子凭证已注销",
    "voucher_not_found": "尚未激活医保电子凭证，请先激活",
    "channel_not_bound": "尚未在本渠道激活医保电子凭证，请先激活",
    "channel_unknown": "本渠道暂未开通医保电子凭证服务",
    "channel_signature_invalid": "渠道签名校验未通过，请联系渠道客服",
    "channel_request_replayed": "请求已失效，请重新提交",
    "rate_limited": "操作过于频繁，请稍后再试",
    "service_unavailable": "服务繁忙，请稍后再试",
    "service_unreachable": "无法连接医保电子凭证服务，请稍后再试",
    "invalid_request": "提交的信息有误，请检查后重试",
    "payload_too_large": "提交的信息过长，请检查后重试",
}
_PHONE = re.compile(r"1[3-9][0-9]{9}")
_PIN = re.compile(r"[0-9]{6}")


def brand_for(channel_id: str) -> Brand:
    kind = channel_kind(channel_id)
    if kind == "wechat":
        return Brand("微信", "#07C160", "#06A050")
    if kind == "alipay":
        return Brand("支付宝", "#1677FF", "#0E5FD8")
    code = channel_id.split("-", 1)[1]
    return Brand(BANK_NAMES.get(code, code.upper() + " 银行") + " 手机银行", "#C7000B", "#A30009")


def refusal_message(code: str | None) -> str:
    """Plain Chinese words for a problem code."""
    return MESSAGES.get(code or "", f"办理失败，请稍后再试（错误码：{code or '未知'}）")


def _form_error(form: dict) -> str | None:
    if not form["name"]:
        return "请填写姓名"
    if not form["id_number"]:
        return "请填写身份证号"
    if not _PHONE.fullmatch(form["phone"]):
        return "请填写正确的 11 位手机号"
    if form["pin"] and not _PIN.fullmatch(form["pin"]):
        return "支付密码须为 6 位数字"
    return None


def create_app(channel_id: str, base_url: str, instance_dir, *, send=None, app_id: str | None = None,
               public_url: str | None = None, clock=time.time) -> Flask:
    """The channel's page; `public_url` is the service as the browser reaches it (default base_url);
    `clock` dates the signed calls (the service's clock, in tests that move it)."""
    app = Flask(__name__)
    client = ChannelClient(channel_id, base_url, instance_dir, send=send, app_id=app_id, clock=clock)
    holder_page = (public_url or base_url).rstrip("/") + "/m/"
    cookie = f"{channel_id}_user"  # ports share cookies, so name it per channel
    brand = brand_for(channel_id)

    def page(form=None, error=None, status=200):
        return render_template("activate.html", brand=brand, form=form or {}, error=error,
                               returning=request.cookies.get(cookie)), status

    def to_holder_page(channel_user_id: str):
        session = client.session(channel_user_id)
        resp = redirect(f"{holder_page}#access_token={quote(session['access_token'], safe='')}", 303)
        resp.set_cookie(cookie, channel_user_id, max_age=30 * 86400, httponly=True, samesite="Lax")
        return resp

    @app.get("/")
    def index():
        return page()

    @app.post("/activate")
    def activate():
        form = {name: request.form.get(name, "").strip() for name in ("name", "id_number", "phone", "pin")}
        form["id_number"] = form["id_number"].upper()
        error = _form_error(form)
        if error:
            return page(form, error, 400)
        check = identity.real_name_check(form["id_number"], form["name"])
        if not check.ok:
            return page(form, refusal_message(check.code), 422)
        face_ok = identity.face_check(form["name"], force_fail=request.form.get("face") != "on")
        try:
            result = client.activate(form["id_number"], form["name"], form["phone"],
                                     pin=form["pin"] or None, face_verified=face_ok)
            return to_holder_page(result["channel_user_id"])
        except ChannelError as exc:
            return page(form, refusal_message(exc.code), 422)

    @app.post("/open")
    def open_voucher():
        channel_user_id = request.cookies.get(cookie)
        if not channel_user_id:
            return redirect("/", 303)
        try:
            return to_holder_page(channel_user_id)
        except ChannelError as exc:
            body, status = page(error=refusal_message(exc.code), status=422)
            resp = app.make_response((body, status))
            if exc.code in ("voucher_not_found", "channel_not_bound"):
                resp.delete_cookie(cookie)
            return resp

    return app
