"""The mock partners' client against a Flask route running the real verifiers."""
from __future__ import annotations

import re
import socket

import pytest

from mock_channels.client import (ChannelClient, ChannelError, derive_channel_user_id, flask_sender,
                                  http_sender)

ID = "11010519491231002X"
CHANNELS = ("wechat", "alipay", "bank-icbc")


@pytest.fixture
def clients(service, instance_dir):
    send = flask_sender(service.test_client())
    return {c: ChannelClient(c, "http://evoucher.test", instance_dir, send=send) for c in CHANNELS}


@pytest.mark.parametrize("channel_id", CHANNELS)
def test_full_journey(clients, service, channel_id):
    client = clients[channel_id]
    activated = client.activate(ID, "张三", "13800000000", pin="258036")
    assert activated["voucher_id"].startswith("v")
    cuid = activated["channel_user_id"]
    assert cuid == derive_channel_user_id(channel_id, ID)
    session = client.session(cuid)
    assert session["access_token"] == f"tok.{cuid}" and session["voucher_id"] == activated["voucher_id"]
    assert client.reverify(cuid, "pin_reset")["echo"]["purpose"] == "pin_reset"
    assert client.unbind(cuid)["call"] == "unbindings"
    calls = [(c, call) for c, call, _ in service.calls]
    assert calls == [(channel_id, call) for call in ("activations", "sessions", "reverifications", "unbindings")]
    first = {name: value for name, value in service.calls[0][2].items() if name != "method"}
    assert first == {"request_id": first["request_id"], "channel_user_id": cuid, "id_type": "01",
                     "id_number": ID, "name": "张三", "phone": "13800000000", "face_verified": True,
                     "pin": "258036"}
    # A bank client names every call in its body: the bank signature does not cover the path.
    assert [body.get("method") for _, _, body in service.calls] == (
        ["evoucher.activation.create", "evoucher.session.create", "evoucher.reverification.create",
         "evoucher.unbinding.create"] if channel_id == "bank-icbc" else [None] * 4)
    request_ids = {body["request_id"] for _, _, body in service.calls}
    assert len(request_ids) == 4 and all(re.fullmatch(r"[0-9a-f]{32}", r) for r in request_ids)


def test_face_check_result_is_sent(clients, service):
    with pytest.raises(ChannelError) as exc:
        clients["wechat"].activate(ID, "失败张三", "13800000000")
    assert exc.value.code == "face_verification_required"
    assert exc.value.status == 422
    assert service.calls[-1][2]["face_verified"] is False


def test_explicit_face_result_and_user_id(clients, service):
    result = clients["alipay"].activate(ID, "张三", "13800000000", channel_user_id="2088123", face_verified=True)
    assert result["channel_user_id"] == "2088123"
    assert "pin" not in service.calls[-1][2]


def test_refusal_carries_the_problem_code(clients):
    with pytest.raises(ChannelError) as exc:
        clients["bank-icbc"].activate(ID, "未参保人", "13800000000")
    assert exc.value.code == "person_not_enrolled"
    assert exc.value.problem["status"] == 422
    assert "person_not_enrolled" in str(exc.value)


def test_key_not_registered_is_a_signature_refusal(service, tmp_path):
    # A fresh instance folder: new keys the fake service has never seen.
    client = ChannelClient("wechat", "http://evoucher.test", tmp_path, send=flask_sender(service.test_client()))
    with pytest.raises(ChannelError) as exc:
        client.session("wx_1")
    assert exc.value.code == "channel_signature_invalid"


def test_reverify_extra_fields(clients, service):
    clients["wechat"].reverify("wx_1", "family_accept", face_verified=False, link_id="L1")
    body = service.calls[-1][2]
    assert (body["purpose"], body["face_verified"], body["link_id"]) == ("family_accept", False, "L1")


def test_channel_user_id_shapes():
    assert re.fullmatch(r"wx_[0-9a-f]{12}", derive_channel_user_id("wechat", ID))
    assert re.fullmatch(r"2088[0-9]{12}", derive_channel_user_id("alipay", ID))
    assert re.fullmatch(r"icbc_[0-9a-f]{12}", derive_channel_user_id("bank-icbc", ID))
    assert derive_channel_user_id("wechat", ID) == derive_channel_user_id("wechat", ID.lower())
    assert derive_channel_user_id("bank-icbc", ID)[5:] != derive_channel_user_id("bank-cmb", ID)[4:]


def test_unknown_channel(instance_dir):
    with pytest.raises(ValueError, match="unknown channel"):
        ChannelClient("unionpay", "http://x", instance_dir)


def test_unreachable_service_is_a_clear_error(instance_dir):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ChannelClient("wechat", f"http://127.0.0.1:{port}", instance_dir, send=http_sender(timeout=2))
    with pytest.raises(ChannelError) as exc:
        client.session("wx_1")
    assert exc.value.code == "service_unreachable"


def test_base_url_from_environment(monkeypatch, instance_dir):
    monkeypatch.setenv("EVOUCHER_URL", "http://127.0.0.2:9000/")
    assert ChannelClient("wechat", None, instance_dir).base_url == "http://127.0.0.2:9000"
