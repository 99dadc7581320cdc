"""Signing keys: sizes, kids (RFC 7638), JWKs, signatures, sealing at rest, the keyring."""

import base64
import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc.jwk import ECKey, OKPKey

from crypto import keyring, sm2
from crypto.keyring import Keyring, KeyringError

PUBLIC_LEN = {"Ed25519": 32, "ES256": 65, "SM2": 64}


@pytest.mark.parametrize("alg", keyring.ALGORITHMS)
def test_generated_key_shapes(keys, alg):
    key = keys[alg]
    assert key.alg == alg and len(key.public) == PUBLIC_LEN[alg] and len(key.private) == 32
    assert len(key.kid) == 8 and int(key.kid, 16) >= 0 and key.kid == key.kid.lower()
    assert key.private.hex() not in repr(key)


@pytest.mark.parametrize("alg", ["Ed25519", "ES256"])
def test_kid_is_rfc7638_thumbprint_prefix_per_joserfc(keys, alg):
    jwk = keyring.to_jwk(keys[alg])
    cls = OKPKey if alg == "Ed25519" else ECKey
    thumb = cls.import_key({k: jwk[k] for k in ("kty", "crv", "x", "y") if k in jwk}).thumbprint()
    assert base64.urlsafe_b64decode(thumb + "=")[:4].hex() == keys[alg].kid


def test_sm2_kid_is_thumbprint_prefix(keys):
    jwk = keyring.to_jwk(keys["SM2"])
    canonical = '{"crv":"SM2","kty":"EC","x":"%s","y":"%s"}' % (jwk["x"], jwk["y"])
    assert hashlib.sha256(canonical.encode()).digest()[:4].hex() == keys["SM2"].kid


def test_jwk_shapes(keys):
    ed, es, sm = (keyring.to_jwk(keys[a]) for a in keyring.ALGORITHMS)
    assert set(ed) == {"kty", "crv", "x", "kid", "alg", "use"}
    assert (ed["kty"], ed["crv"], ed["alg"], ed["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")
    assert (es["kty"], es["crv"], es["alg"]) == ("EC", "P-256", "ES256")
    assert (sm["kty"], sm["crv"], sm["alg"]) == ("EC", "SM2", "SM2SM3")
    assert base64.urlsafe_b64decode(sm["x"] + "=") + base64.urlsafe_b64decode(sm["y"] + "=") == keys["SM2"].public
    assert all("d" not in j for j in (ed, es, sm))


@pytest.mark.parametrize("alg", keyring.ALGORITHMS)
def test_sign_and_verify(keys, alg):
    key = keys[alg]
    sig = key.sign(b"payload")
    assert len(sig) == 64 and key.verify(b"payload", sig)
    assert not key.verify(b"payload!", sig)
    assert not key.verify(b"payload", sig[:-1] + bytes([sig[-1] ^ 1]))
    for junk in (b"", sig + b"\x00", None, "text"):
        assert key.verify(b"payload", junk) is False
    assert dataclasses.replace(key, private=None).verify(b"payload", sig)
    with pytest.raises(ValueError):
        dataclasses.replace(key, private=None).sign(b"payload")


def test_es256_signature_is_raw_r_s(keys):
    key = keys["ES256"]
    sig = key.sign(b"m")
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key.public)
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pub.verify(der, b"m", ec.ECDSA(hashes.SHA256()))  # raises if not a valid r||s


def test_ed25519_signatures_are_openssls_and_non_canonical_s_is_refused(keys):
    """The raw path (libsodium) signs exactly as OpenSSL does, and OpenSSL verifies it."""
    from cryptography.hazmat.primitives.asymmetric import ed25519
    key = keys["Ed25519"]
    msg = b"EV1 token body"
    sig = key.sign(msg)
    assert ed25519.Ed25519PrivateKey.from_private_bytes(key.private).sign(msg) == sig
    ed25519.Ed25519PublicKey.from_public_bytes(key.public).verify(sig, msg)
    assert key.verify(msg, sig)
    order = 2**252 + 27742317777372353535851937790883648493
    s = int.from_bytes(sig[32:], "little") + order  # the same point equation, a non-canonical S
    assert s < 2**256 and not key.verify(msg, sig[:32] + s.to_bytes(32, "little"))
    assert not key.verify(msg + b"!", sig) and not key.verify(msg, sig[:-1])


def test_sm2_key_matches_sm2_module(keys):
    key = keys["SM2"]
    assert sm2.public_from_private(key.private) == key.public
    assert sm2.verify(key.public, b"m", key.sign(b"m"))


def test_invalid_key_fields_are_refused(keys):
    key = keys["Ed25519"]
    for over in ({"alg": "RS256"}, {"kid": "ABCDEF01"}, {"kid": "abc"}, {"public": key.public[:-1]}):
        with pytest.raises(ValueError):
            dataclasses.replace(key, **over)
    with pytest.raises(ValueError):
        keyring.generate("HS256")


@pytest.mark.parametrize("profile,cipher", [("default", 1), ("gm", 2)])
@pytest.mark.parametrize("alg", keyring.ALGORITHMS)
def test_seal_unseal_round_trip(keys, master_key, alg, profile, cipher):
    key = keys[alg]
    blob = keyring.seal_private(master_key, key, profile)
    assert blob[0] == cipher and key.private not in blob
    opened = keyring.unseal_private(master_key, blob, key.kid, alg, key.public)
    assert opened.private == key.private and opened.public == key.public and opened.kid == key.kid


def test_sealed_key_tamper_and_misuse(keys, master_key):
    key, other = keys["Ed25519"], keys["ES256"]
    blob = keyring.seal_private(master_key, key, "gm")
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(KeyringError):
            keyring.unseal_private(master_key, bytes(bad), key.kid, "Ed25519", key.public)
    with pytest.raises(KeyringError):  # kid is the associated data
        keyring.unseal_private(master_key, blob, other.kid, "Ed25519", key.public)
    with pytest.raises(KeyringError):
        keyring.unseal_private(bytes(32 * [7]), blob, key.kid, "Ed25519", key.public)
    with pytest.raises(KeyringError):  # right kid, wrong public key
        keyring.unseal_private(master_key, blob, key.kid, "Ed25519", keyring.generate("Ed25519").public)
    with pytest.raises(KeyringError):
        keyring.unseal_private(master_key, blob[:10], key.kid, "Ed25519", key.public)
    with pytest.raises(ValueError):
        keyring.seal_private(b"short", key)
    with pytest.raises(ValueError):
        keyring.seal_private(master_key, key, "fips")


def test_keyring(keys):
    ed, es, sm = (keys[a] for a in keyring.ALGORITHMS)
    retired = dataclasses.replace(es, private=None, not_after=1000)
    ring = Keyring([ed, retired, sm], ed.kid)
    assert ring.current is ed and ring.get(sm.kid) is sm and ring.get("00000000") is None
    assert [j["kid"] for j in ring.jwks()["keys"]] == [ed.kid, es.kid, sm.kid]
    assert [j["kid"] for j in ring.jwks(now=1001)["keys"]] == [ed.kid, sm.kid]
    json.dumps(ring.jwks())  # serialisable as published
    with pytest.raises(ValueError):
        Keyring([ed, ed], ed.kid)
    with pytest.raises(ValueError):
        Keyring([ed, retired], retired.kid)  # current must be able to sign
    with pytest.raises(ValueError):
        Keyring([ed], sm.kid)


def test_from_private_is_deterministic(keys):
    for alg in keyring.ALGORITHMS:
        again = keyring.from_private(alg, keys[alg].private)
        assert (again.kid, again.public) == (keys[alg].kid, keys[alg].public)


def test_crypto_package_has_no_flask_import():
    root = Path(__file__).resolve().parents[2] / "crypto"
    for path in root.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert "import flask" not in source and "from flask" not in source, path.name
