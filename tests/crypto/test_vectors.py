"""docs/token-vectors.json, checked by a verifier written from docs/token-format.md only.

Nothing from crypto/ is used to verify: struct + the base45 package parse, cryptography checks
Ed25519/ES256, the pure-Python gmssl checks SM2, joserfc (not PyJWT) checks the JWTs.
"""

import base64
import json
import struct
from pathlib import Path

import base45
import pytest
import zxingcpp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from gmssl import sm2 as gmssl_sm2
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

DOC = Path(__file__).resolve().parents[2] / "docs"
VECTORS = json.loads((DOC / "token-vectors.json").read_text(encoding="utf-8"))
BASE45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
ALG_CODES = {1: "Ed25519", 2: "ES256", 3: "SM2"}
JOSE = {"Ed25519": "EdDSA", "ES256": "ES256", "SM2": "SM2SM3"}


def _b64(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _check_signature(jwk: dict, signed: bytes, sig: bytes) -> bool:
    if jwk["crv"] == "Ed25519":
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(_b64(jwk["x"])).verify(sig, signed)
            return True
        except Exception:
            return False
    if jwk["crv"] == "P-256":
        point = b"\x04" + _b64(jwk["x"]) + _b64(jwk["y"])
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point).verify(der, signed, ec.ECDSA(hashes.SHA256()))
            return True
        except Exception:
            return False
    gm = gmssl_sm2.CryptSM2(private_key=None, public_key="")
    gm.public_key = (_b64(jwk["x"]) + _b64(jwk["y"])).hex()  # set directly: gmssl lstrips "04"
    return bool(gm.verify_with_sm3(sig.hex(), signed))


def verify_ev1(text: str, jwks: dict, now: int, skew: int = 5) -> dict:
    """Independent ev1 verifier, straight from docs/token-format.md."""
    assert text.startswith("EV1:") and all(c in BASE45 for c in text[4:])
    raw = base45.b45decode(text[4:])
    head, flags, kid, iat, lifetime, region, voucher, token = struct.unpack_from(">BB4sIH3s10s8s", raw)
    assert head >> 4 == 1 and (head & 0x0F) in ALG_CODES and flags & ~0x01 == 0
    n = 43 if flags & 0x01 else 33
    assert len(raw) == n + 64 and lifetime > 0 and int.from_bytes(region, "big") <= 999999
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == kid.hex()]
    alg = ALG_CODES[head & 0x0F]
    assert jwk["alg"] == JOSE[alg]
    assert _check_signature(jwk, raw[:n], raw[n:])
    assert iat - skew <= now <= iat + lifetime + skew
    return {"alg": alg, "kid": kid.hex(), "voucher_id": base64.b32encode(voucher).decode(),
            "region": "%06d" % int.from_bytes(region, "big"), "iat": iat, "lifetime": lifetime,
            "exp": iat + lifetime, "token_id": token.hex(),
            "actor": base64.b32encode(raw[33:43]).decode() if flags & 0x01 else None}


def qr_version(text: str) -> int:
    """Encode at level M, read the symbol back, and return its version."""
    barcode = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
    (read,) = zxingcpp.read_barcodes(barcode.to_image(scale=4))
    assert read.text == text and read.extra["ECLevel"] == "M"
    return int(read.extra["Version"])


EV1 = [v for v in VECTORS["vectors"] if v["format"] == "ev1"]
JWT = [v for v in VECTORS["vectors"] if v["format"] == "jwt"]


def test_vector_set_is_complete():
    combos = {(v["format"], v["alg"], v["fields"]["actor"] is not None) for v in VECTORS["vectors"]}
    assert combos == {(f, a, act) for f in ("ev1", "jwt") for a in JOSE for act in (False, True)}
    assert {k["kid"] for k in VECTORS["jwks"]["keys"]} == {v["jwk"]["kid"] for v in VECTORS["vectors"]}


@pytest.mark.parametrize("vector", EV1, ids=lambda v: v["name"])
def test_ev1_vector_verifies_independently(vector):
    fields = verify_ev1(vector["token"], VECTORS["jwks"], vector["verify_at"])
    assert fields == vector["fields"]
    raw = base45.b45decode(vector["token"][4:])
    assert raw.hex() == vector["signed_hex"] + vector["signature_hex"]


@pytest.mark.parametrize("vector", EV1, ids=lambda v: v["name"])
def test_ev1_vector_tampered_fails_independently(vector):
    raw = bytearray(base45.b45decode(vector["token"][4:]))
    raw[20] ^= 0x01  # inside the voucher id
    with pytest.raises(AssertionError):
        verify_ev1("EV1:" + base45.b45encode(bytes(raw)).decode(), VECTORS["jwks"], vector["verify_at"])


@pytest.mark.parametrize("vector", EV1, ids=lambda v: v["name"])
def test_qr_version(vector):
    limit = 7 if vector["fields"]["actor"] else 6
    assert qr_version(vector["token"]) <= limit


# RFC 9864 deprecates "EdDSA" for "Ed25519"; we publish "EdDSA" because every JOSE library knows it.
@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
def test_jwt_vectors_verify_with_joserfc():
    # joserfc knows no SM2 curve: its keys and tokens are filtered out, not skipped.
    keys = KeySet.import_key_set({"keys": [k for k in VECTORS["jwks"]["keys"] if k["crv"] != "SM2"]})
    checked = 0
    for vector in JWT:
        if vector["alg"] == "SM2":
            continue
        token = jose_jwt.decode(vector["token"], keys, algorithms=[vector["jwk"]["alg"]])
        assert token.header == {"alg": vector["jwk"]["alg"], "kid": vector["jwk"]["kid"], "typ": "evoucher+jwt"}
        claims, fields = token.claims, vector["fields"]
        assert (claims["sub"], claims["rgn"], claims["iat"], claims["exp"], claims["jti"]) == (
            fields["voucher_id"], fields["region"], fields["iat"], fields["exp"], fields["token_id"])
        assert claims.get("act") == ({"sub": fields["actor"]} if fields["actor"] else None)
        checked += 1
    assert checked == 4


@pytest.mark.parametrize("vector", [v for v in JWT if v["alg"] == "SM2"], ids=lambda v: v["name"])
def test_sm2_jwt_vectors_verify_with_gmssl(vector):
    head, body, sig = vector["token"].split(".")
    assert json.loads(_b64(head))["alg"] == "SM2SM3"
    assert _check_signature(vector["jwk"], f"{head}.{body}".encode(), _b64(sig))
    assert json.loads(_b64(body))["sub"] == vector["fields"]["voucher_id"]


def test_vectors_verify_with_the_service_and_file_is_current():
    from crypto import keyring, tokens, vectors

    keys = [vectors.fixed_key(alg) for alg in keyring.ALGORITHMS]
    ring = keyring.Keyring(keys, keys[0].kid)
    assert ring.jwks() == VECTORS["jwks"]
    for vector in VECTORS["vectors"]:
        claims = tokens.verify(vector["token"], ring, vector["verify_at"])
        assert claims.format == vector["format"] and claims.actor == vector["fields"]["actor"]
    # A regenerated document differs only in the randomised ES256/SM2 signatures.
    fresh = vectors.build()
    strip = lambda doc: [{k: v for k, v in vec.items() if k not in ("token", "signature_hex")}  # noqa: E731
                         for vec in doc["vectors"]]
    assert strip(fresh) == strip(VECTORS) and fresh["jwks"] == VECTORS["jwks"]
    assert [v["token"] for v in fresh["vectors"] if v["alg"] == "Ed25519"] == \
        [v["token"] for v in VECTORS["vectors"] if v["alg"] == "Ed25519"]


def _page_parser():
    """parse_ev1 exactly as docs/token-format.md prints it."""
    import re

    page = (DOC / "token-format.md").read_text(encoding="utf-8")
    code = re.search(r"### Verifying \(Python, from this page alone\)\n\n```python\n(.*?)```", page, re.S).group(1)
    scope: dict = {}
    exec(code, scope)
    return scope["parse_ev1"]


def test_the_pages_parser_reads_every_vector_and_refuses_bad_bytes_with_value_error():
    """A vendor copies parse_ev1 and maps its ValueError to token_malformed: every malformed
    input must come out as ValueError, short ones included, and every vector must parse."""
    parse = _page_parser()
    for vector in EV1:
        signed, sig, kid, alg = parse(vector["token"])
        assert (signed.hex(), sig.hex(), kid, ALG_CODES[alg]) == \
            (vector["signed_hex"], vector["signature_hex"], vector["fields"]["kid"], vector["alg"])
    real = base45.b45decode(EV1[0]["token"][4:])
    bad = [b"", b"\x11", real[:32], real[:33], real[:-1], real + b"\x00", b"\x21" + real[1:],
           b"\x14" + real[1:], real[:1] + b"\x02" + real[2:], real[:10] + b"\x00\x00" + real[12:]]
    for raw in bad:
        with pytest.raises(ValueError):
            parse("EV1:" + base45.b45encode(raw).decode())
    for text in ("EV1:" + EV1[0]["token"][4:].lower(), "ev1:" + EV1[0]["token"][4:], "EV1:A"):
        with pytest.raises(ValueError):
            parse(text)
