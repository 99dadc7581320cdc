"""Channel ids, key registration rules and the default serial."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from app.channels import ChannelInfo, channel_kind, verify_call
from app.channels.keys import default_serial, load_public_key, public_key_type
from app.errors import DomainError
from crypto import sm2


@pytest.mark.parametrize("channel_id,kind", [
    ("wechat", "wechat"), ("alipay", "alipay"), ("bank-icbc", "bank"), ("bank-cmb", "bank"),
    ("bank-ab", "bank"), ("bank-" + "a" * 16, "bank"), ("bank-a", None), ("bank-" + "a" * 17, None),
    ("bank-ICBC", None), ("bank-", None), ("bank_icbc", None), ("WECHAT", None), ("unionpay", None),
    ("", None), ("bank-icbc\n", None),
])
def test_channel_kind(channel_id, kind):
    assert channel_kind(channel_id) == kind


def test_channel_record_whose_kind_does_not_fit_its_id_is_unknown(rsa_keys, nonces):
    info = ChannelInfo(id="alipay", app_id="a", kind="wechat", keys={"S": rsa_keys[0][2]})
    with pytest.raises(DomainError) as exc:
        verify_call(info, call="sessions", method="POST", path_and_query="/v1/channels/alipay/sessions",
                    headers={}, body=b"{}", now=int(time.time()), nonces=nonces)
    assert exc.value.code == "channel_unknown"


def test_unknown_call_is_not_found(rsa_keys, nonces):
    info = ChannelInfo(id="wechat", app_id="a", kind="wechat", keys={"S": rsa_keys[0][2]})
    with pytest.raises(DomainError) as exc:
        verify_call(info, call="payments", method="POST", path_and_query="/v1/channels/wechat/payments",
                    headers={}, body=b"{}", now=int(time.time()), nonces=nonces)
    assert exc.value.code == "not_found"


def test_default_serial_is_sha256_of_der_public_key(rsa_keys):
    pem = rsa_keys[0][2]
    der = serialization.load_pem_public_key(pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    serial = default_serial(pem)
    assert serial == hashlib.sha256(der).hexdigest()[:16].upper()
    assert len(serial) == 16 and serial == serial.upper()


def test_default_serial_ignores_the_pem_flavour(rsa_keys):
    pkcs1 = rsa_keys[0][0].public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.PKCS1)
    assert b"BEGIN RSA PUBLIC KEY" in pkcs1
    assert default_serial(pkcs1) == default_serial(rsa_keys[0][2])
    assert default_serial(rsa_keys[0][2]) != default_serial(rsa_keys[1][2])


def test_default_serial_of_sm2_key(sm2_keys):
    pem = sm2_keys[0][3]
    der_b64 = b"".join(line for line in pem.splitlines() if not line.startswith(b"-----"))
    assert default_serial(pem) == hashlib.sha256(base64.b64decode(der_b64)).hexdigest()[:16].upper()
    assert sm2.public_key_from_pem(pem) == sm2_keys[0][1]


@pytest.mark.parametrize("kind", ["wechat", "alipay"])
def test_rsa_key_accepted_for_wechat_and_alipay(rsa_keys, kind):
    pem = load_public_key(rsa_keys[0][2], kind)
    assert pem == rsa_keys[0][2]
    assert public_key_type(pem) == "rsa"


def test_certificate_gives_its_public_key(rsa_keys):
    key = rsa_keys[0][0]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "1900000109")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    assert load_public_key(cert.public_bytes(serialization.Encoding.PEM), "wechat") == rsa_keys[0][2]


def test_sm2_key_accepted_for_banks(sm2_keys):
    assert load_public_key(sm2_keys[0][3], "bank") == sm2_keys[0][3]
    assert public_key_type(sm2_keys[0][3]) == "sm2"


def test_short_rsa_key_refused():
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    pem = small.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ValueError, match="1024 bits"):
        load_public_key(pem, "wechat")


def test_wrong_key_type_for_the_channel(rsa_keys, sm2_keys):
    with pytest.raises(ValueError, match="SM2"):
        load_public_key(rsa_keys[0][2], "bank")
    with pytest.raises(ValueError, match="RSA"):
        load_public_key(sm2_keys[0][3], "alipay")


@pytest.mark.parametrize("make", [
    lambda r, s: ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    lambda r, s: ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    lambda r, s: b"not a key",
    lambda r, s: b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
], ids=["p256", "ed25519", "junk", "empty-pem"])
def test_other_keys_refused(rsa_keys, sm2_keys, make):
    pem = make(rsa_keys, sm2_keys)
    for kind in ("wechat", "bank"):
        with pytest.raises(ValueError):
            load_public_key(pem, kind)
    with pytest.raises(ValueError):
        default_serial(pem)


def test_private_key_is_refused_with_a_hint(rsa_keys, sm2_keys):
    with pytest.raises(ValueError, match="private key"):
        load_public_key(rsa_keys[0][1], "wechat")
    with pytest.raises(ValueError, match="private key"):
        load_public_key(sm2_keys[0][2], "bank")


def test_unknown_kind_refused(rsa_keys):
    with pytest.raises(ValueError, match="kind"):
        load_public_key(rsa_keys[0][2], "unionpay")
