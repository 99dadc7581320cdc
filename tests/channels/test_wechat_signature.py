"""WeChat Pay v3 scheme: requests signed by the public wechatpayv3 SDK verify; forgeries don't."""
from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from wechatpayv3.utils import build_authorization

from app.channels import ChannelInfo, SignedCall, verify_call
from app.channels.common import NONCE_TTL_SECONDS
from app.channels.wechat import parse_authorization
from app.errors import DomainError

MCHID = "1900000109"
SERIAL_A = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
SERIAL_B = "0A1B2C3D4E5F6071"
BODY = {"request_id": "9f1c0e6b1f7a4d7e8b1c2d3e4f5a6b7c", "channel_user_id": "wx_0a1b2c3d4e5f",
        "id_type": "01", "id_number": "11010519491231002X", "name": "张三", "phone": "13800000000",
        "face_verified": True}


@pytest.fixture
def channel(rsa_keys):
    return ChannelInfo(id="wechat", app_id=MCHID, kind="wechat",
                       keys={SERIAL_A: rsa_keys[0][2], SERIAL_B: rsa_keys[1][2]})


def sdk_request(key, call="activations", data=None, *, mchid=MCHID, serial=SERIAL_A, nonce=None,
                path=None):
    """Headers and body as the wechatpayv3 SDK's request() builds them (json.dumps body)."""
    data = BODY if data is None else data
    path = path or f"/v1/channels/wechat/{call}"
    auth = build_authorization(path, "POST", mchid, serial, key, data=data, nonce_str=nonce)
    body = data.encode("utf-8") if isinstance(data, str) else json.dumps(data).encode("utf-8")
    return {"Authorization": auth, "Content-Type": "application/json"}, body, path


def verify(channel, headers, body, nonces, *, call="activations", path=None, now=None):
    return verify_call(channel, call=call, method="POST", path_and_query=path or f"/v1/channels/wechat/{call}",
                       headers=headers, body=body, now=int(time.time()) if now is None else now,
                       nonces=nonces)


def code_of(excinfo) -> str:
    return excinfo.value.code


@pytest.mark.parametrize("call,data", [("activations", BODY),
                                       ("sessions", {"request_id": "abc123", "channel_user_id": "wx_1"})])
def test_sdk_signed_request_passes(channel, rsa_keys, nonces, call, data):
    headers, body, path = sdk_request(rsa_keys[0][0], call, data)
    signed = verify(channel, headers, body, nonces, call=call)
    assert isinstance(signed, SignedCall)
    assert signed.channel == "wechat"
    assert signed.payload == data
    assert abs(signed.timestamp - time.time()) < 5
    assert nonces.calls == [("wechat", signed.nonce, NONCE_TTL_SECONDS)]


def test_raw_body_with_chinese_text_is_verified_as_sent(channel, rsa_keys, nonces):
    text = json.dumps(BODY, ensure_ascii=False, indent=1)
    headers, body, _ = sdk_request(rsa_keys[0][0], data=text)
    assert verify(channel, headers, body, nonces).payload["name"] == "张三"


def test_second_key_selected_by_serial(channel, rsa_keys, nonces):
    headers, body, _ = sdk_request(rsa_keys[1][0], serial=SERIAL_B)
    assert verify(channel, headers, body, nonces).payload == BODY


def test_key_registered_as_a_certificate(rsa_keys, nonces):
    key = rsa_keys[0][0]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, MCHID)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(int(SERIAL_A, 16)).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    info = ChannelInfo(id="wechat", app_id=MCHID, kind="wechat",
                       keys={SERIAL_A: cert.public_bytes(serialization.Encoding.PEM)})
    headers, body, _ = sdk_request(key)
    assert verify(info, headers, body, nonces).payload == BODY


def test_serial_matches_case_insensitively(channel, rsa_keys, nonces):
    headers, body, _ = sdk_request(rsa_keys[0][0], serial=SERIAL_A.lower())
    assert verify(channel, headers, body, nonces).payload == BODY


def test_query_string_is_signed(channel, rsa_keys, nonces):
    path = "/v1/channels/wechat/sessions?trace=1"
    headers, body, _ = sdk_request(rsa_keys[0][0], "sessions", path=path)
    assert verify(channel, headers, body, nonces, call="sessions", path=path).payload == BODY
    headers, body, _ = sdk_request(rsa_keys[0][0], "sessions", path=path)
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, body, nonces, call="sessions", path="/v1/channels/wechat/sessions?trace=2")
    assert code_of(exc) == "channel_signature_invalid"


def test_flask_full_path_trailing_question_mark_is_tolerated(channel, rsa_keys, nonces):
    headers, body, path = sdk_request(rsa_keys[0][0])
    assert verify(channel, headers, body, nonces, path=path + "?").payload == BODY


def test_tampered_body_is_refused(channel, rsa_keys, nonces):
    headers, body, _ = sdk_request(rsa_keys[0][0])
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, body.replace(b"13800000000", b"13900000000"), nonces)
    assert code_of(exc) == "channel_signature_invalid"


def test_signature_covers_the_path(channel, rsa_keys, nonces):
    headers, body, _ = sdk_request(rsa_keys[0][0], "sessions")
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, body, nonces, call="unbindings")
    assert code_of(exc) == "channel_signature_invalid"


def test_wrong_key_is_refused(channel, rsa_keys, nonces):
    headers, body, _ = sdk_request(rsa_keys[1][0], serial=SERIAL_A)
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, body, nonces)
    assert code_of(exc) == "channel_signature_invalid"


def test_unknown_serial_is_refused(channel, rsa_keys, nonces):
    headers, body, _ = sdk_request(rsa_keys[0][0], serial="FFFFFFFFFFFFFFFF")
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, body, nonces)
    assert code_of(exc) == "channel_signature_invalid"
    assert "serial" in exc.value.detail


def test_wrong_mchid_is_refused(channel, rsa_keys, nonces):
    headers, body, _ = sdk_request(rsa_keys[0][0], mchid="1900000110")
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, body, nonces)
    assert code_of(exc) == "channel_signature_invalid"
    assert "mchid" in exc.value.detail


@pytest.mark.parametrize("skew", [301, 3600, -301, -3600])
def test_stale_and_future_timestamps_are_replays(channel, rsa_keys, nonces, skew):
    headers, body, _ = sdk_request(rsa_keys[0][0])
    # The SDK stamps the current time, so move the verifier's clock instead.
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, body, nonces, now=int(time.time()) + skew)
    assert code_of(exc) == "channel_request_replayed"
    assert nonces.calls == []


def test_timestamp_at_edge_of_window_passes(channel, rsa_keys, nonces):
    headers, body, _ = sdk_request(rsa_keys[0][0])
    signed_at = int(parse_authorization(headers["Authorization"])["timestamp"])
    assert verify(channel, headers, body, nonces, now=signed_at + 300).payload == BODY


def test_reused_nonce_is_a_replay(channel, rsa_keys, nonces):
    headers, body, _ = sdk_request(rsa_keys[0][0])
    verify(channel, headers, body, nonces)
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, body, nonces)
    assert code_of(exc) == "channel_request_replayed"


class ExpiringNonces:
    """Nonces that expire as Redis keys do: `ttl` seconds after they were set, to the millisecond,
    while the verifier reads its clock in whole seconds."""

    def __init__(self):
        self.clock = 0.0
        self.expires: dict[tuple[str, str], float] = {}

    def use_nonce(self, scope: str, nonce: str, ttl_seconds: int) -> bool:
        if self.clock < self.expires.get((scope, nonce), float("-inf")):
            return False
        self.expires[(scope, nonce)] = self.clock + ttl_seconds
        return True


@pytest.mark.parametrize("node_clock_gap", [0, 5])
def test_nonce_outlives_the_timestamp_window(channel, rsa_keys, node_clock_gap):
    """A request stamped 300 s ahead of the service's clock (the partner's clock is fast) is
    acceptable from its first second until 300 s after its stamp: a replay at any moment of that
    window is refused, also when the node it reaches runs a few seconds behind the first one."""
    headers, body, _ = sdk_request(rsa_keys[0][0])
    stamped = int(parse_authorization(headers["Authorization"])["timestamp"])
    nonces = ExpiringNonces()
    nonces.clock = stamped - 300 + 0.2  # the first second in which the stamp is acceptable
    verify(channel, headers, body, nonces, now=int(nonces.clock))
    nonces.clock = stamped + 300 + node_clock_gap + 0.5  # this node's clock reads stamped + 300
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, body, nonces, now=int(nonces.clock) - node_clock_gap)
    assert code_of(exc) == "channel_request_replayed"


def test_bad_signature_does_not_burn_the_nonce(channel, rsa_keys, nonces):
    nonce = "ABCDEF0123456789ABCDEF0123456789"
    forged, body, _ = sdk_request(rsa_keys[1][0], nonce=nonce)
    with pytest.raises(DomainError):
        verify(channel, forged, body, nonces)
    headers, body, _ = sdk_request(rsa_keys[0][0], nonce=nonce)
    assert verify(channel, headers, body, nonces).nonce == nonce


def test_nonce_store_outage_propagates(channel, rsa_keys, down_nonces):
    headers, body, _ = sdk_request(rsa_keys[0][0])
    with pytest.raises(type(down_nonces).Outage):
        verify(channel, headers, body, down_nonces)


@pytest.mark.parametrize("status", [None, "disabled"])
def test_unknown_or_inactive_channel(channel, rsa_keys, nonces, status):
    headers, body, _ = sdk_request(rsa_keys[0][0])
    info = None if status is None else ChannelInfo(id="wechat", app_id=MCHID, kind="wechat",
                                                   keys=channel.keys, status=status)
    with pytest.raises(DomainError) as exc:
        verify(info, headers, body, nonces)
    assert code_of(exc) == "channel_unknown"


@pytest.mark.parametrize("mangle", [
    lambda a: None,
    lambda a: "",
    lambda a: "Bearer abc",
    lambda a: a.replace("WECHATPAY2-SHA256-RSA2048", "WECHATPAY2-SHA256-RSA4096"),
    lambda a: a.replace('signature="', 'signature="!!'),
    lambda a: a.replace(',serial_no="', ',serial_number="'),
    lambda a: a + ',mchid="1900000109"',
    lambda a: a.replace('timestamp="', 'timestamp="x'),
    lambda a: a.replace('nonce_str="', 'nonce_str="a b'),
    lambda a: a.replace('",', '" ;'),
], ids=["missing", "empty", "other-schema", "other-algorithm", "signature-not-base64",
        "serial-missing", "duplicate-param", "timestamp-not-digits", "nonce-with-space", "bad-separator"])
def test_garbled_authorization_is_refused(channel, rsa_keys, nonces, mangle):
    headers, body, _ = sdk_request(rsa_keys[0][0])
    value = mangle(headers["Authorization"])
    headers = {} if value is None else {"Authorization": value}
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, body, nonces)
    assert code_of(exc) == "channel_signature_invalid"
    assert nonces.calls == []


def test_authorization_parsed_in_any_order_with_spaces(channel, rsa_keys, nonces):
    headers, body, _ = sdk_request(rsa_keys[0][0])
    params = parse_authorization(headers["Authorization"])
    shuffled = ", ".join(f'{k}="{params[k]}"' for k in sorted(params, reverse=True))
    lower = {"authorization": f"WECHATPAY2-SHA256-RSA2048  {shuffled}"}
    assert verify(channel, lower, body, nonces).payload == BODY


@pytest.mark.parametrize("data", ["[1, 2]", "not json", "{\"a\": NaN}"])
def test_signed_body_that_is_not_a_json_object(channel, rsa_keys, nonces, data):
    headers, body, _ = sdk_request(rsa_keys[0][0], data=data)
    with pytest.raises(DomainError) as exc:
        verify(channel, headers, body, nonces)
    assert code_of(exc) == "invalid_request"
