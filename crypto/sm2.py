"""SM2 signatures with SM3 (GB/T 32918.2): tongsuopy signs, a table-driven verifier checks.

Secrets only ever touch OpenSSL (Tongsuo) code: key generation, signing, PEM. Verification
needs no secret and runs on the fast engine in crypto/_sm2_verify.py.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from tongsuopy.crypto import hashes as _thashes
from tongsuopy.crypto import serialization as _ser
from tongsuopy.crypto.asymciphers import ec as _tec

from ._ec import Curve
from ._sm2_verify import CURVE, DEFAULT_UID, PublicKey, precompute, sm3, user_hash, verify_rs

__all__ = [
    "CURVE", "DEFAULT_UID", "generate_keypair", "precompute", "private_key_from_pem", "private_key_to_pem",
    "public_from_private", "public_key_from_pem", "public_key_to_pem", "raw_to_der", "sign", "sign_der",
    "user_hash", "verify", "verify_der",
]

# ---- signing (tongsuopy, constant-time OpenSSL code) ----

@lru_cache(maxsize=8)  # deriving the OpenSSL key costs as much as a signature
def _private_key(priv: bytes):
    d = int.from_bytes(priv, "big")
    if len(priv) != 32 or not 1 <= d <= CURVE.n - 2:  # d = n-1 makes (1+d) non-invertible
        raise ValueError("invalid SM2 private key")
    return _tec.derive_private_key(d, _tec.SM2())


def _pub_bytes(public_key) -> bytes:
    nums = public_key.public_numbers()
    return nums.x.to_bytes(32, "big") + nums.y.to_bytes(32, "big")


def generate_keypair() -> tuple[bytes, bytes]:
    """New (private 32 bytes, public 64 bytes x||y)."""
    key = _tec.generate_private_key(_tec.SM2())
    return key.private_numbers().private_value.to_bytes(32, "big"), _pub_bytes(key.public_key())


def public_from_private(priv: bytes) -> bytes:
    """Public key x||y for a private key."""
    return _pub_bytes(_private_key(bytes(priv)).public_key())


def sign_der(priv: bytes, msg: bytes, uid: bytes = DEFAULT_UID) -> bytes:
    """DER SEQUENCE{r, s} (GM/T 0009) signature over SM3(Z || msg)."""
    key = _private_key(bytes(priv))
    if uid == DEFAULT_UID:
        return key.sign(bytes(msg), _tec.ECDSA(_thashes.SM3()))
    return _sign_digest(key, sm3(user_hash(_pub_bytes(key.public_key()), uid), msg))


def _sign_digest(key, e: bytes) -> bytes:
    # tongsuopy's public API only signs with the default id; EVP_PKEY_sign on an SM2 key
    # signs a precomputed e = SM3(Z || M) with the same OpenSSL code.
    from tongsuopy.backends.tongsuo import backend

    lib, ffi = backend._lib, backend._ffi
    ctx = lib.EVP_PKEY_CTX_new(key._evp_pkey, ffi.NULL)
    try:
        buf, size = ffi.new("unsigned char[]", 80), ffi.new("size_t *", 80)
        if lib.EVP_PKEY_sign_init(ctx) != 1 or lib.EVP_PKEY_sign(ctx, buf, size, e, len(e)) != 1:
            backend._consume_errors()
            raise ValueError("SM2 signing failed")
        return bytes(ffi.buffer(buf)[: size[0]])
    finally:
        lib.EVP_PKEY_CTX_free(ctx)


def sign(priv: bytes, msg: bytes, uid: bytes = DEFAULT_UID) -> bytes:
    """Raw 64-byte r||s signature."""
    r, s = decode_dss_signature(sign_der(priv, msg, uid))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify(pub: bytes, msg: bytes, sig: bytes, uid: bytes = DEFAULT_UID, *, curve: Curve = CURVE) -> bool:
    """True if sig (raw r||s) is valid; False for any bad input, never raises."""
    try:
        pub, msg, sig, uid = bytes(pub), bytes(msg), bytes(sig), bytes(uid)
        size = curve.size
        if len(sig) != 2 * size:
            return False
        r, s = int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big")
        return verify_rs(pub, msg, r, s, uid, curve)
    except (TypeError, ValueError):
        return False


def verify_der(pub: bytes, msg: bytes, der_sig: bytes, uid: bytes = DEFAULT_UID, *, curve: Curve = CURVE) -> bool:
    """True if der_sig (DER SEQUENCE{r, s}) is valid; False for malformed DER or bad input."""
    try:
        r, s = decode_dss_signature(bytes(der_sig))
        return verify_rs(bytes(pub), bytes(msg), r, s, bytes(uid), curve)
    except (TypeError, ValueError):
        return False


# ---- PEM (SubjectPublicKeyInfo / PKCS#8, id-ecPublicKey + curve 1.2.156.10197.1.301) ----

def public_key_to_pem(pub: bytes) -> bytes:
    """SubjectPublicKeyInfo PEM for a raw x||y public key."""
    key = PublicKey(CURVE, bytes(pub))
    obj = _tec.EllipticCurvePublicNumbers(key.x, key.y, _tec.SM2()).public_key()
    return obj.public_bytes(_ser.Encoding.PEM, _ser.PublicFormat.SubjectPublicKeyInfo)


def public_key_from_pem(pem: bytes) -> bytes:
    """Raw x||y from a SubjectPublicKeyInfo PEM; ValueError unless it is an SM2 key."""
    try:
        obj = _ser.load_pem_public_key(bytes(pem))
    except Exception as exc:  # tongsuopy raises UnsupportedAlgorithm for other key types
        raise ValueError("not an SM2 public key") from exc
    if not isinstance(getattr(obj, "curve", None), _tec.SM2):
        raise ValueError("not an SM2 public key")
    pub = _pub_bytes(obj)
    PublicKey(CURVE, pub)
    return pub


def private_key_to_pem(priv: bytes) -> bytes:
    """Unencrypted PKCS#8 PEM."""
    return _private_key(bytes(priv)).private_bytes(
        _ser.Encoding.PEM, _ser.PrivateFormat.PKCS8, _ser.NoEncryption()
    )


def private_key_from_pem(pem: bytes) -> bytes:
    """Raw 32-byte private key from an unencrypted PKCS#8 (or SEC1) PEM; ValueError otherwise."""
    try:
        obj = _ser.load_pem_private_key(bytes(pem), password=None)
    except Exception as exc:
        raise ValueError("not an unencrypted SM2 private key") from exc
    if not isinstance(getattr(obj, "curve", None), _tec.SM2):
        raise ValueError("not an SM2 private key")
    return obj.private_numbers().private_value.to_bytes(32, "big")


def raw_to_der(sig: bytes) -> bytes:
    """Raw r||s to DER SEQUENCE{r, s}."""
    if len(sig) != 64:
        raise ValueError("raw SM2 signature must be 64 bytes")
    return encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
