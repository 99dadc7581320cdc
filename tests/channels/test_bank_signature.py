"""Bank SM2 scheme: canonical string, signature and freshness checks."""
from __future__ import annotations

import base64
import json
import time

import pytest

from app.channels import ChannelInfo, verify_call
from app.channels.common import NONCE_TTL_SECONDS
from app.channels.bank import canonical_string
from app.errors import DomainError
from crypto import sm2

APP_ID = "icbc-evoucher-01"
BODY = {"request_id": "0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a", "channel_user_id": "icbc_7f3a9c2e1b4d",
        "id_type": "01", "id_number": "11010519491231002X", "name": "王五", "phone": "13800000002",
        "face_verified": True}


def test_canonical_string_known_answer():
    fields = {"b": "x y&", "a": 1, "c": True, "d": None, "e": 1.5, "f": {"k": "值", "n": [1, False]},
              "B": "upper", "g": "", "h": False, "i": [], "app_id": "A", "nonce": "n1", "timestamp": "1700000000"}
    assert canonical_string(fields) == (
        'B=upper&a=1&app_id=A&b=x y&&c=true&d=null&e=1.5&f={"k":"值","n":[1,false]}&g=&h=false&i=[]'
        "&nonce=n1&timestamp=1700000000")


@pytest.fixture
def channel(sm2_keys):
    return ChannelInfo(id="bank-icbc", app_id=APP_ID, kind="bank",
                       keys={"SERIALA000000000": sm2_keys[0][3], "SERIALB000000000": sm2_keys[1][3]})


def signed(priv, body=None, *, app_id=APP_ID, timestamp=None, nonce=None, serial=None):
    """Headers and body signed as a bank partner would: SM2/SM3 over the canonical string."""
    body = BODY if body is None else body
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or base64.b32encode(sm2.generate_keypair()[0][:10]).decode()
    fields = {**body, "app_id": app_id, "timestamp": timestamp, "nonce": nonce}
    signature = sm2.sign_der(priv, canonical_string(fields).encode("utf-8"))
    headers = {"X-Bank-App-Id": app_id, "X-Bank-Timestamp": timestamp, "X-Bank-Nonce": nonce,
               "X-Bank-Signature": base64.b64encode(signature).decode(), "Content-Type": "application/json"}
    if serial:
        headers["X-Bank-Serial"] = serial
    return headers, json.dumps(body, ensure_ascii=False).encode("utf-8")


def verify(channel, headers, body, nonces, *, call="activations", now=None):
    return verify_call(channel, call=call, method="POST", path_and_query=f"/v1/channels/{channel and channel.id}/{call}",
                       headers=headers, body=body, now=int(time.time()) if now is None else now, nonces=nonces)


@pytest.mark.parametrize("call,body", [("activations", BODY),
                                       ("sessions", {"request_id": "r1", "channel_user_id": "icbc_1"})])
def test_signed_request_passes(channel, sm2_keys, nonces, call, body):
    headers, raw = signed(sm2_keys[0][0], body)
    call_ = verify(channel, headers, raw, nonces, call=call)
    assert call_.channel == "bank-icbc"
    assert call_.payload == body
    assert call_.nonce == headers["X-Bank-Nonce"]
    assert nonces.calls == [("bank-icbc", headers["X-Bank-Nonce"], NONCE_TTL_SECONDS)]


def test_without_serial_every_key_is_tried(channel, sm2_keys, nonces):
    headers, raw = signed(sm2_keys[1][0])
    assert verify(channel, headers, raw, nonces).payload == BODY


def test_serial_picks_the_key(channel, sm2_keys, nonces):
    headers, raw = signed(sm2_keys[1][0], serial="SERIALB000000000")
    assert verify(channel, headers, raw, nonces).payload == BODY
    headers, raw = signed(sm2_keys[1][0], serial="SERIALA000000000")
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, raw, nonces)
    assert exc.value.code == "channel_signature_invalid"


def test_unknown_serial_is_refused(channel, sm2_keys, nonces):
    headers, raw = signed(sm2_keys[0][0], serial="FFFFFFFFFFFFFFFF")
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, raw, nonces)
    assert exc.value.code == "channel_signature_invalid"
    assert "Serial" in exc.value.detail


def test_tampered_body_is_refused(channel, sm2_keys, nonces):
    headers, _ = signed(sm2_keys[0][0])
    tampered = json.dumps({**BODY, "phone": "13900000000"}, ensure_ascii=False).encode()
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, tampered, nonces)
    assert exc.value.code == "channel_signature_invalid"


def test_body_formatting_does_not_matter(channel, sm2_keys, nonces):
    headers, _ = signed(sm2_keys[0][0])
    reformatted = json.dumps(dict(reversed(list(BODY.items()))), indent=2).encode()
    assert verify(channel, headers, reformatted, nonces).payload == BODY


@pytest.mark.parametrize("header", ["X-Bank-Timestamp", "X-Bank-Nonce"])
def test_envelope_headers_are_signed(channel, sm2_keys, nonces, header):
    headers, raw = signed(sm2_keys[0][0])
    headers[header] = str(int(headers["X-Bank-Timestamp"]) + 1) if header == "X-Bank-Timestamp" else "othernonce"
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, raw, nonces)
    assert exc.value.code == "channel_signature_invalid"


def test_wrong_key_is_refused(sm2_keys, nonces):
    info = ChannelInfo(id="bank-icbc", app_id=APP_ID, kind="bank", keys={"SERIALA000000000": sm2_keys[0][3]})
    headers, raw = signed(sm2_keys[1][0])
    with pytest.raises(DomainError) as exc:
        verify(info, headers, raw, nonces)
    assert exc.value.code == "channel_signature_invalid"


def test_wrong_app_id_is_refused(channel, sm2_keys, nonces):
    headers, raw = signed(sm2_keys[0][0], app_id="cmb-evoucher-01")
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, raw, nonces)
    assert exc.value.code == "channel_signature_invalid"
    assert "App-Id" in exc.value.detail


@pytest.mark.parametrize("skew", [301, 86400, -301, -86400])
def test_stale_and_future_timestamps_are_replays(channel, sm2_keys, nonces, skew):
    now = int(time.time())
    headers, raw = signed(sm2_keys[0][0], timestamp=now - skew)
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, raw, nonces, now=now)
    assert exc.value.code == "channel_request_replayed"
    assert nonces.calls == []


def test_reused_nonce_is_a_replay(channel, sm2_keys, nonces):
    headers, raw = signed(sm2_keys[0][0], nonce="n-0001")
    verify(channel, headers, raw, nonces)
    headers, raw = signed(sm2_keys[0][0], nonce="n-0001", body={**BODY, "request_id": "another"})
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, raw, nonces)
    assert exc.value.code == "channel_request_replayed"


def test_nonces_are_scoped_per_channel(channel, sm2_keys, nonces):
    other = ChannelInfo(id="bank-cmb", app_id=APP_ID, kind="bank", keys=channel.keys)
    headers, raw = signed(sm2_keys[0][0], nonce="shared-nonce")
    verify(channel, headers, raw, nonces)
    assert verify(other, headers, raw, nonces).channel == "bank-cmb"


def test_forgery_does_not_burn_the_nonce(sm2_keys, nonces):
    info = ChannelInfo(id="bank-icbc", app_id=APP_ID, kind="bank", keys={"SERIALA000000000": sm2_keys[0][3]})
    forged, raw = signed(sm2_keys[1][0], nonce="n-0002")
    with pytest.raises(DomainError):
        verify(info, forged, raw, nonces)
    headers, raw = signed(sm2_keys[0][0], nonce="n-0002")
    assert verify(info, headers, raw, nonces).nonce == "n-0002"


def test_nonce_store_outage_propagates(channel, sm2_keys, down_nonces):
    headers, raw = signed(sm2_keys[0][0])
    with pytest.raises(type(down_nonces).Outage):
        verify(channel, headers, raw, down_nonces)


@pytest.mark.parametrize("status", [None, "disabled"])
def test_unknown_or_inactive_channel(channel, sm2_keys, nonces, status):
    info = None if status is None else ChannelInfo(id="bank-icbc", app_id=APP_ID, kind="bank",
                                                   keys=channel.keys, status=status)
    headers, raw = signed(sm2_keys[0][0])
    with pytest.raises(DomainError) as exc:
        verify(info, headers, raw, nonces)
    assert exc.value.code == "channel_unknown"


@pytest.mark.parametrize("mangle", [
    lambda h: h.pop("X-Bank-Signature"),
    lambda h: h.pop("X-Bank-App-Id"),
    lambda h: h.pop("X-Bank-Nonce"),
    lambda h: h.update({"X-Bank-Signature": "%%%"}),
    lambda h: h.update({"X-Bank-Signature": base64.b64encode(b"\x30\x02junk").decode()}),
    lambda h: h.update({"X-Bank-Timestamp": "soon"}),
    lambda h: h.update({"X-Bank-Nonce": "x" * 65}),
], ids=["no-signature", "no-app-id", "no-nonce", "signature-not-base64", "signature-not-der",
        "timestamp-garbled", "nonce-too-long"])
def test_garbled_headers_are_refused(channel, sm2_keys, nonces, mangle):
    headers, raw = signed(sm2_keys[0][0])
    mangle(headers)
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, raw, nonces)
    assert exc.value.code == "channel_signature_invalid"
    assert nonces.calls == []


def test_header_names_are_case_insensitive(channel, sm2_keys, nonces):
    headers, raw = signed(sm2_keys[0][0])
    assert verify(channel, {k.lower(): v for k, v in headers.items()}, raw, nonces).payload == BODY


@pytest.mark.parametrize("raw", [b"[]", b"not json", "{\"name\": \"\u0000\"".encode(), b"\xff"])
def test_body_that_is_not_a_json_object(channel, sm2_keys, nonces, raw):
    headers, _ = signed(sm2_keys[0][0])
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, raw, nonces)
    assert exc.value.code == "invalid_request"


@pytest.mark.parametrize("raw,detail", [
    (b'{"name": 1e400}', "a number out of JSON's range (such as 1e400) cannot be signed"),
    (b'{"name": {"n": [1e400]}}', "a number out of JSON's range (such as 1e400) cannot be signed"),
    (b'{"name": "\\ud800"}', "The body holds text that cannot be written as UTF-8 (a lone surrogate)"),
], ids=["number", "nested-number", "lone-surrogate"])
def test_a_value_that_cannot_be_signed_is_refused_in_our_words(channel, sm2_keys, nonces, raw, detail):
    """Before the signature is checked: json's and the codec's own wording would name Python."""
    headers, _ = signed(sm2_keys[0][0])
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, raw, nonces)
    assert exc.value.code == "invalid_request"
    assert exc.value.detail == detail


def test_body_may_not_redefine_the_envelope(channel, sm2_keys, nonces):
    headers, _ = signed(sm2_keys[0][0])
    raw = json.dumps({**BODY, "nonce": headers["X-Bank-Nonce"]}).encode()
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, raw, nonces)
    assert exc.value.code == "invalid_request"


def test_non_sm2_key_registered_for_a_bank_never_verifies(rsa_keys, sm2_keys, nonces):
    info = ChannelInfo(id="bank-icbc", app_id=APP_ID, kind="bank", keys={"RSA": rsa_keys[0][2]})
    headers, raw = signed(sm2_keys[0][0])
    with pytest.raises(DomainError) as exc:
        verify(info, headers, raw, nonces)
    assert exc.value.code == "channel_signature_invalid"


# Pairs of bodies whose signed strings are the same (the scheme escapes nothing): the first is
# what a partner signed, the second what an interceptor presents with its headers.
SIGN_ALIKE = {
    "amp-in-value": ({"channel_user_id": "u1", "face_verified": True, "purpose": "reinstate"},
                     {"channel_user_id": "u1&face_verified=true", "purpose": "reinstate"}, "channel_user_id"),
    "amp-in-name": ({"channel_user_id": "u1", "face_verified": True, "purpose": "reinstate"},
                    {"channel_user_id=u1&face_verified": True, "purpose": "reinstate"},
                    "channel_user_id=u1&face_verified"),
    "equals-in-name": ({"channel_user_id": "u1=x"}, {"channel_user_id=u1": "x"}, "channel_user_id=u1"),
}


@pytest.mark.parametrize("case", SIGN_ALIKE.values(), ids=SIGN_ALIKE.keys())
def test_a_body_that_signs_like_another_is_refused(channel, sm2_keys, nonces, case):
    """The signed string must split back on `&` (each piece on its first `=`) into exactly the
    fields that were signed; otherwise the one signature would serve both bodies."""
    signed_body, presented, field = case
    envelope = {"app_id": APP_ID, "timestamp": "1700000000", "nonce": "n1"}
    assert canonical_string({**signed_body, **envelope}) == canonical_string({**presented, **envelope})
    headers, raw = signed(sm2_keys[0][0], signed_body)
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, json.dumps(presented).encode(), nonces, call="reverifications")
    assert exc.value.code == "invalid_request"
    assert exc.value.extra == {"field": field}
    assert "'&'" in exc.value.detail and "would sign exactly as a different one" in exc.value.detail


@pytest.mark.parametrize("body", [
    {"channel_user_id": "u1&face_verified=true", "purpose": "reinstate"},
    {"channel_user_id": "u1", "link": {"note": "a&b"}},  # a nested value's compact JSON
    {"channel_user_id": "u1", "name": "张&三"},
], ids=["top-level-string", "nested-value", "chinese-text"])
def test_a_partner_request_holding_an_ampersand_is_refused(channel, sm2_keys, nonces, body):
    headers, raw = signed(sm2_keys[0][0], body)
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, raw, nonces, call="reverifications")
    assert exc.value.code == "invalid_request"
    assert exc.value.extra == {"field": next(key for key in body if "&" in json.dumps(body[key]))}
    assert nonces.calls == [("bank-icbc", headers["X-Bank-Nonce"], NONCE_TTL_SECONDS)]


def test_the_other_reading_of_a_refused_request_cannot_follow_it(channel, sm2_keys, nonces):
    """The refusal comes after the nonce is spent: the body its signed string also reads as,
    which verifies under the same signature, is then a replay rather than a reinstatement
    without a face check."""
    sent = {"channel_user_id": "u1&face_verified=true", "purpose": "reinstate"}
    other_reading = {"channel_user_id": "u1", "face_verified": True, "purpose": "reinstate"}
    headers, raw = signed(sm2_keys[0][0], sent)
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, raw, nonces, call="reverifications")
    assert exc.value.code == "invalid_request"
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, json.dumps(other_reading).encode(), nonces, call="reverifications")
    assert exc.value.code == "channel_request_replayed"


def test_an_unsigned_body_with_an_ampersand_is_a_bad_signature_and_burns_no_nonce(sm2_keys, nonces):
    info = ChannelInfo(id="bank-icbc", app_id=APP_ID, kind="bank", keys={"SERIALA000000000": sm2_keys[0][3]})
    headers, raw = signed(sm2_keys[1][0], {"channel_user_id": "u1&x=1"})
    with pytest.raises(DomainError) as exc:
        verify(info, headers, raw, nonces, call="sessions")
    assert exc.value.code == "channel_signature_invalid"
    assert nonces.calls == []


def test_ordinary_values_pass(channel, sm2_keys, nonces):
    """Chinese names, digits, ids, and `=`, `%`, `+` or spaces inside a value split back unchanged."""
    body = {**BODY, "name": "欧阳·娜娜", "channel_user_id": "icbc=7f3a+9c2e%1b 4d", "pin": "135790"}
    headers, raw = signed(sm2_keys[0][0], body)
    assert verify(channel, headers, raw, nonces).payload == body


def test_a_bank_nonce_serves_one_call_in_the_channel_whatever_the_endpoint(channel, sm2_keys, nonces):
    """The path is not signed: a session request presented at /unbindings after it reached
    /sessions is a replay, because the nonce is spent for the channel, not for the path."""
    headers, raw = signed(sm2_keys[0][0], {"channel_user_id": "icbc_1"})
    assert verify(channel, headers, raw, nonces, call="sessions").payload == {"channel_user_id": "icbc_1"}
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, raw, nonces, call="unbindings")
    assert exc.value.code == "channel_request_replayed"
