"""The mock partners' signers produce requests the service's verifiers accept, per scheme."""
from __future__ import annotations

import base64
import json
import time
from urllib.parse import parse_qsl

import pytest

from app.channels import CALLS, ChannelInfo, channel_kind, verify_call
from app.channels.keys import default_serial
from app.errors import DomainError
from mock_channels.alipay import AlipaySigner, beijing_time
from mock_channels.bank import BankSigner
from mock_channels.client import make_signer
from mock_channels.keys import ensure_keys
from mock_channels.wechat import WechatPaySigner

PAYLOAD = {"request_id": "c0ffee00c0ffee00c0ffee00c0ffee00", "channel_user_id": "u_1", "name": "赵六",
           "face_verified": True, "purpose": "pin_reset", "extra": {"n": 1}}


def setup_channel(instance_dir, channel_id):
    private, public, serial = ensure_keys(instance_dir, channel_id)
    info = ChannelInfo(id=channel_id, app_id=f"{channel_id}-app", kind=channel_kind(channel_id),
                       keys={serial: public.read_bytes()})
    return make_signer(channel_id, info.app_id, private.read_bytes(), serial), info


def check(info, req, nonces, call, now=None):
    path = req.url.split("://", 1)[1].split("/", 1)[1]
    return verify_call(info, call=call, method=req.method, path_and_query="/" + path, headers=req.headers,
                       body=req.body, now=int(time.time()) if now is None else now, nonces=nonces)


@pytest.mark.parametrize("channel_id", ["wechat", "alipay", "bank-icbc"])
@pytest.mark.parametrize("call", CALLS)
def test_round_trip(instance_dir, nonces, channel_id, call):
    signer, info = setup_channel(instance_dir, channel_id)
    payload = {**PAYLOAD, "request_id": f"{channel_id}-{call}"}
    req = signer.sign(call, f"http://127.0.0.1:8000/v1/channels/{channel_id}/{call}", payload)
    signed = check(info, req, nonces, call)
    assert signed.payload == payload
    assert signed.channel == channel_id
    with pytest.raises(DomainError) as exc:  # the same request again is a replay
        check(info, req, nonces, call)
    assert exc.value.code == "channel_request_replayed"


@pytest.mark.parametrize("channel_id", ["wechat", "alipay", "bank-icbc"])
def test_mock_request_for_another_app_id_is_refused(instance_dir, nonces, channel_id):
    signer, info = setup_channel(instance_dir, channel_id)
    other = ChannelInfo(id=info.id, app_id="someone-else", kind=info.kind, keys=info.keys)
    req = signer.sign("sessions", f"http://h/v1/channels/{channel_id}/sessions", PAYLOAD)
    with pytest.raises(DomainError) as exc:
        check(other, req, nonces, "sessions")
    assert exc.value.code == "channel_signature_invalid"


@pytest.mark.parametrize("channel_id", ["wechat", "alipay", "bank-icbc"])
def test_mock_signer_clock_is_used(instance_dir, nonces, channel_id):
    signer, info = setup_channel(instance_dir, channel_id)
    then = int(time.time()) - 3600
    req = signer.sign("sessions", f"http://h/v1/channels/{channel_id}/sessions", PAYLOAD, now=then)
    assert check(info, req, nonces, "sessions", now=then + 10).timestamp == then
    with pytest.raises(DomainError) as exc:
        check(info, req, nonces, "sessions")
    assert exc.value.code == "channel_request_replayed"


def test_wechat_wire_format(instance_dir):
    signer, info = setup_channel(instance_dir, "wechat")
    assert isinstance(signer, WechatPaySigner)
    req = signer.sign("sessions", "http://h:8000/v1/channels/wechat/sessions?x=1", PAYLOAD, now=1700000000,
                      nonce="N0NCE")
    auth = req.headers["Authorization"]
    assert auth.startswith('WECHATPAY2-SHA256-RSA2048 mchid="wechat-app",nonce_str="N0NCE",signature="')
    assert auth.endswith(f'timestamp="1700000000",serial_no="{next(iter(info.keys))}"')
    assert json.loads(req.body) == PAYLOAD and "赵六".encode() in req.body


def test_wechat_query_is_signed(instance_dir, nonces):
    signer, info = setup_channel(instance_dir, "wechat")
    req = signer.sign("sessions", "http://h:8000/v1/channels/wechat/sessions?x=1", PAYLOAD)
    assert check(info, req, nonces, "sessions").payload == PAYLOAD
    with pytest.raises(DomainError):
        verify_call(info, call="sessions", method="POST", path_and_query="/v1/channels/wechat/sessions",
                    headers=req.headers, body=req.body, now=int(time.time()), nonces=nonces)


def test_alipay_wire_format(instance_dir):
    signer, _ = setup_channel(instance_dir, "alipay")
    assert isinstance(signer, AlipaySigner)
    req = signer.sign("reverifications", "http://h/v1/channels/alipay/reverifications", PAYLOAD, now=1700000000)
    assert req.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    params = dict(parse_qsl(req.body.decode("ascii"), strict_parsing=True))
    assert params["method"] == "evoucher.reverification.create"
    assert params["timestamp"] == "2023-11-15 06:13:20" == beijing_time(1700000000)
    assert (params["charset"], params["sign_type"], params["version"], params["format"]) == ("utf-8", "RSA2", "1.0", "JSON")
    assert json.loads(params["biz_content"]) == PAYLOAD
    assert len(base64.b64decode(params["sign"])) == 256


def test_alipay_signer_needs_request_id(instance_dir):
    signer, _ = setup_channel(instance_dir, "alipay")
    with pytest.raises(ValueError, match="request_id"):
        signer.sign("sessions", "http://h/x", {"channel_user_id": "u"})


def test_bank_wire_format(instance_dir):
    signer, info = setup_channel(instance_dir, "bank-icbc")
    assert isinstance(signer, BankSigner)
    req = signer.sign("sessions", "http://h/v1/channels/bank-icbc/sessions", PAYLOAD, now=1700000000, nonce="n1")
    assert req.headers["X-Bank-App-Id"] == "bank-icbc-app"
    assert req.headers["X-Bank-Timestamp"] == "1700000000"
    assert req.headers["X-Bank-Nonce"] == "n1"
    assert req.headers["X-Bank-Serial"] == next(iter(info.keys)) == default_serial(info.keys[req.headers["X-Bank-Serial"]])
    assert base64.b64decode(req.headers["X-Bank-Signature"])[0] == 0x30  # DER SEQUENCE
    assert json.loads(req.body) == PAYLOAD


def test_bank_signer_refuses_envelope_names(instance_dir):
    signer, _ = setup_channel(instance_dir, "bank-icbc")
    with pytest.raises(ValueError):
        signer.sign("sessions", "http://h/x", {**PAYLOAD, "nonce": "x"})
