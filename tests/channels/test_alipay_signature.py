"""Alipay RSA2 scheme: forms signed by the public python-alipay-sdk verify; forgeries don't."""
from __future__ import annotations

import datetime as dt
import time
from urllib.parse import parse_qsl, urlencode

import pytest
from alipay import AliPay, DCAliPay
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from app.channels import ChannelInfo, verify_call
from app.channels.common import NONCE_TTL_SECONDS
from app.channels.alipay import parse_timestamp, signing_strings
from app.errors import DomainError

APP_ID = "2021000000000001"
CST = dt.timezone(dt.timedelta(hours=8))
BIZ = {"request_id": "5d1c9a0e2b8f4c7a9e3d6b1f0a2c4e68", "channel_user_id": "2088000000000001",
       "id_type": "01", "id_number": "11010519491231002X", "name": "李四", "phone": "13800000001",
       "face_verified": True}
METHOD = {"activations": "evoucher.activation.create", "sessions": "evoucher.session.create",
          "reverifications": "evoucher.reverification.create", "unbindings": "evoucher.unbinding.create"}


def cst(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, CST).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture(scope="module")
def sdk(rsa_keys):
    """The SDK configured with key 0 (the channel's current key) and key 1 (any other key)."""
    made = {}

    def make(index, appid=APP_ID):
        if (index, appid) not in made:  # pycryptodome's key import is slow: build each once
            made[index, appid] = AliPay(appid=appid, app_notify_url=None,
                                        app_private_key_string=rsa_keys[index][1].decode(),
                                        alipay_public_key_string=rsa_keys[1][2].decode(), sign_type="RSA2")
        return made[index, appid]
    return make


@pytest.fixture
def channel(rsa_keys):
    # Two registered keys: the verifier has no serial to go by and must try both.
    return ChannelInfo(id="alipay", app_id=APP_ID, kind="alipay",
                       keys={"OLDKEY0000000000": rsa_keys[1][2], "CURRENT000000000": rsa_keys[0][2]})


@pytest.fixture
def one_key_channel(rsa_keys):
    return ChannelInfo(id="alipay", app_id=APP_ID, kind="alipay", keys={"CURRENT000000000": rsa_keys[0][2]})


def signed_form(alipay, call="activations", biz=None, *, at=None, method=None, **extra) -> bytes:
    """What the SDK puts on the wire: build_body + sign_data (already URL-encoded)."""
    # The SDK stamps datetime.now() in the machine's zone; Alipay's clock is UTC+8, so pass it.
    data = alipay.build_body(method or METHOD[call], dict(BIZ if biz is None else biz),
                             timestamp=cst(time.time() if at is None else at), **extra)
    return alipay.sign_data(data).encode("ascii")


def verify(channel, body, nonces, *, call="activations", now=None):
    return verify_call(channel, call=call, method="POST", path_and_query=f"/v1/channels/alipay/{call}",
                       headers={"Content-Type": "application/x-www-form-urlencoded"}, body=body,
                       now=int(time.time()) if now is None else now, nonces=nonces)


def resign(alipay, body: bytes, **changes) -> bytes:
    """Change form parameters and sign again with the SDK (keeps the form otherwise intact)."""
    params = dict(parse_qsl(body.decode(), keep_blank_values=True))
    params.pop("sign")
    params.update(changes)
    return alipay.sign_data(params).encode("ascii")


def edit(body: bytes, **changes) -> bytes:
    """Change form parameters without signing again."""
    params = dict(parse_qsl(body.decode(), keep_blank_values=True))
    params.update(changes)
    return urlencode(params).encode("ascii")


@pytest.mark.parametrize("call,biz", [("activations", BIZ),
                                      ("sessions", {"request_id": "r-1", "channel_user_id": "2088000000000001"})])
def test_sdk_signed_form_passes(sdk, channel, nonces, call, biz):
    signed = verify(channel, signed_form(sdk(0), call, biz), nonces, call=call)
    assert signed.channel == "alipay"
    assert signed.payload == biz
    assert signed.nonce == biz["request_id"]
    assert nonces.calls == [("alipay", biz["request_id"], NONCE_TTL_SECONDS)]


def test_signed_content_is_what_the_sdk_signs(sdk, one_key_channel):
    body = signed_form(sdk(0))
    params = dict(parse_qsl(body.decode()))
    raw = signing_strings(params)[0]
    assert raw.startswith(f"app_id={APP_ID}&biz_content={{")
    assert "&sign_type=RSA2&" in raw and "sign=" not in raw.replace("sign_type", "")
    assert sdk(0)._sign(raw) == params["sign"]


def test_optional_format_and_empty_values_are_signed_as_sent(sdk, channel, nonces):
    # The SDK keeps empty parameters in the signed string; Alipay's own SDKs drop them.
    body = signed_form(sdk(0), format="JSON", app_auth_token="")
    assert verify(channel, body, nonces).payload == BIZ


def test_official_form_without_empty_values_passes(sdk, channel, nonces, rsa_keys):
    params = dict(parse_qsl(signed_form(sdk(0)).decode(), keep_blank_values=True))
    params.pop("sign")
    params["app_auth_token"] = ""
    raw = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if v)
    params["sign"] = sdk(0)._sign(raw)
    assert verify(channel, urlencode(params).encode(), nonces).payload == BIZ


def test_wrong_method_for_the_path(sdk, channel, nonces):
    body = signed_form(sdk(0), "sessions")
    with pytest.raises(DomainError) as exc:
        verify(channel, body, nonces, call="unbindings")
    assert exc.value.code == "channel_signature_invalid"
    assert "evoucher.unbinding.create" in exc.value.detail


def test_tampered_biz_content_is_refused(sdk, channel, nonces):
    body = signed_form(sdk(0))
    params = dict(parse_qsl(body.decode()))
    with pytest.raises(DomainError) as exc:
        verify(channel, edit(body, biz_content=params["biz_content"].replace("13800000001", "13900000000")), nonces)
    assert exc.value.code == "channel_signature_invalid"


def test_wrong_key_is_refused(sdk, one_key_channel, nonces):
    with pytest.raises(DomainError) as exc:
        verify(one_key_channel, signed_form(sdk(1)), nonces)
    assert exc.value.code == "channel_signature_invalid"


def test_wrong_app_id_is_refused(sdk, channel, nonces):
    with pytest.raises(DomainError) as exc:
        verify(channel, signed_form(sdk(0, appid="2021000000000002")), nonces)
    assert exc.value.code == "channel_signature_invalid"
    assert "app_id" in exc.value.detail


@pytest.mark.parametrize("change,word", [({"sign_type": "RSA"}, "sign_type"), ({"charset": "gbk"}, "charset"),
                                         ({"version": "2.0"}, "version"), ({"format": "XML"}, "format")])
def test_envelope_rules_even_when_signed(sdk, channel, nonces, change, word):
    body = resign(sdk(0), signed_form(sdk(0)), **change)
    with pytest.raises(DomainError) as exc:
        verify(channel, body, nonces)
    assert exc.value.code == "channel_signature_invalid"
    assert word in exc.value.detail


def test_charset_case_is_ignored(sdk, channel, nonces):
    body = resign(sdk(0), signed_form(sdk(0)), charset="UTF-8")
    assert verify(channel, body, nonces).payload == BIZ


@pytest.mark.parametrize("skew", [301, 7200, -301, -7200])
def test_stale_and_future_timestamps_are_replays(sdk, channel, nonces, skew):
    now = int(time.time())
    with pytest.raises(DomainError) as exc:
        verify(channel, signed_form(sdk(0), at=now - skew), nonces, now=now)
    assert exc.value.code == "channel_request_replayed"
    assert nonces.calls == []


def test_sdk_local_time_on_a_utc_machine_is_eight_hours_off(sdk, channel, nonces):
    # Documented pitfall: the timestamp is China Standard Time, whatever the partner's zone.
    utc_text = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    body = sdk(0).sign_data(sdk(0).build_body(METHOD["activations"], dict(BIZ), timestamp=utc_text)).encode()
    with pytest.raises(DomainError) as exc:
        verify(channel, body, nonces)
    assert exc.value.code == "channel_request_replayed"


def test_timestamp_is_china_standard_time():
    assert parse_timestamp("2024-01-01 08:00:00") == 1704067200
    with pytest.raises(ValueError):
        parse_timestamp("2024-01-01T08:00:00")


def test_reused_request_id_is_a_replay(sdk, channel, nonces):
    body = signed_form(sdk(0))
    verify(channel, body, nonces)
    again = signed_form(sdk(0), at=time.time() + 1)  # a new signature, same request_id
    with pytest.raises(DomainError) as exc:
        verify(channel, again, nonces)
    assert exc.value.code == "channel_request_replayed"


def test_forged_form_does_not_burn_the_request_id(sdk, one_key_channel, nonces):
    with pytest.raises(DomainError):
        verify(one_key_channel, signed_form(sdk(1)), nonces)
    assert verify(one_key_channel, signed_form(sdk(0)), nonces).nonce == BIZ["request_id"]


@pytest.mark.parametrize("biz", [{"channel_user_id": "u"}, {"request_id": 7, "channel_user_id": "u"},
                                 {"request_id": "has space", "channel_user_id": "u"}])
def test_request_id_is_required(sdk, channel, nonces, biz):
    with pytest.raises(DomainError) as exc:
        verify(channel, signed_form(sdk(0), "sessions", biz), nonces, call="sessions")
    assert exc.value.code == "invalid_request"


def test_biz_content_must_be_a_json_object(sdk, channel, nonces):
    body = resign(sdk(0), signed_form(sdk(0)), biz_content="[1,2]")
    with pytest.raises(DomainError) as exc:
        verify(channel, body, nonces)
    assert exc.value.code == "invalid_request"


@pytest.mark.parametrize("body", [b"", b"\xff\xfe", b"app_id", b'{"app_id": "x"}'])
def test_body_that_is_not_a_form(channel, nonces, body):
    with pytest.raises(DomainError) as exc:
        verify(channel, body, nonces)
    assert exc.value.code == "invalid_request"


@pytest.mark.parametrize("mangle", [
    lambda b: edit(b, sign="not base64!"),
    lambda b: edit(b, sign=""),
    lambda b: edit(b, timestamp="yesterday"),
    lambda b: b + b"&app_id=" + APP_ID.encode(),
    lambda b: urlencode({k: v for k, v in parse_qsl(b.decode()) if k != "method"}).encode(),
], ids=["sign-not-base64", "sign-empty", "timestamp-garbled", "duplicate-param", "method-missing"])
def test_garbled_form_is_refused(sdk, channel, nonces, mangle):
    with pytest.raises(DomainError) as exc:
        verify(channel, mangle(signed_form(sdk(0))), nonces)
    assert exc.value.code == "channel_signature_invalid"
    assert nonces.calls == []


@pytest.mark.parametrize("status", [None, "disabled"])
def test_unknown_or_inactive_channel(sdk, channel, nonces, status):
    info = None if status is None else ChannelInfo(id="alipay", app_id=APP_ID, kind="alipay",
                                                   keys=channel.keys, status=status)
    with pytest.raises(DomainError) as exc:
        verify(info, signed_form(sdk(0)), nonces)
    assert exc.value.code == "channel_unknown"


# Certificate mode (公钥证书): DCAliPay adds app_cert_sn, which then names the key.

def _self_signed(key, common_name):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Test"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test"),
                      x509.NameAttribute(NameOID.COUNTRY_NAME, "CN")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


sdk_cert_warnings = pytest.mark.filterwarnings("ignore:X509.get_issuer is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def cert_sdk(rsa_keys):
    app_cert = _self_signed(rsa_keys[0][0], "app")
    other_cert = _self_signed(rsa_keys[1][0], "alipay")
    return DCAliPay(appid=APP_ID, app_private_key_string=rsa_keys[0][1].decode(),
                    app_public_key_cert_string=app_cert, alipay_public_key_cert_string=other_cert,
                    alipay_root_cert_string=other_cert)


@sdk_cert_warnings
def test_certificate_mode_picks_key_by_app_cert_sn(cert_sdk, rsa_keys, nonces):
    info = ChannelInfo(id="alipay", app_id=APP_ID, kind="alipay",
                       keys={"OLDKEY0000000000": rsa_keys[1][2], cert_sdk.app_cert_sn: rsa_keys[0][2]})
    assert verify(info, signed_form(cert_sdk), nonces).payload == BIZ


@sdk_cert_warnings
def test_certificate_mode_unknown_app_cert_sn(cert_sdk, rsa_keys, nonces):
    info = ChannelInfo(id="alipay", app_id=APP_ID, kind="alipay", keys={"CURRENT000000000": rsa_keys[0][2]})
    with pytest.raises(DomainError) as exc:
        verify(info, signed_form(cert_sdk), nonces)
    assert exc.value.code == "channel_signature_invalid"
    assert "app_cert_sn" in exc.value.detail
