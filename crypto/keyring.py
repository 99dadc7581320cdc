"""Signing keys (Ed25519, ES256, SM2), key ids, JWKS, and sealing private keys at rest.

JOSE `alg` names: Ed25519 → "EdDSA", ES256 → "ES256", SM2 → "SM2SM3". No JOSE name is
registered for SM2-with-SM3, so "SM2SM3" is this service's own; SM2 keys are published as
{"kty": "EC", "crv": "SM2"}.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey as NaclSigningKey
from nacl.signing import VerifyKey as NaclVerifyKey

from . import aead, sm2

ALGORITHMS = ("Ed25519", "ES256", "SM2")
JOSE_ALG = {"Ed25519": "EdDSA", "ES256": "ES256", "SM2": "SM2SM3"}
_PUBLIC_LEN = {"Ed25519": 32, "ES256": 65, "SM2": 64}
_KID = re.compile(r"[0-9a-f]{8}")
_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class KeyringError(ValueError):
    """A sealed private key could not be opened or does not match its public key."""


@lru_cache(maxsize=16)
def _private_obj(alg: str, private: bytes):
    """pyca/cryptography key objects: for PyJWT (crypto/jws.py) and for ES256."""
    if alg == "Ed25519":
        return ed25519.Ed25519PrivateKey.from_private_bytes(private)
    d = int.from_bytes(private, "big")
    if len(private) != 32 or not 0 < d < _P256_N:
        raise ValueError("invalid P-256 private key")
    return ec.derive_private_key(d, ec.SECP256R1())


@lru_cache(maxsize=256)
def _public_obj(alg: str, public: bytes):
    if alg == "Ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(public)
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public)


# Raw Ed25519 signatures (ev1 tokens, the hot path) go through libsodium (PyNaCl): here it
# verifies in about half the time OpenSSL takes (60 µs against 116 µs, docs/benchmarks.md)
# and signs in 23 µs against 36 µs, and it is the stricter verifier of the two (canonical S,
# no small-order keys or R). Ed25519 is deterministic: both give the same signature bytes.
@lru_cache(maxsize=16)
def _ed25519_signer(private: bytes) -> NaclSigningKey:
    return NaclSigningKey(private)


@lru_cache(maxsize=256)
def _ed25519_verifier(public: bytes) -> NaclVerifyKey:
    return NaclVerifyKey(public)


@dataclass(frozen=True)
class SigningKey:
    """One signing key; `private` is None for verify-only (retired or imported) keys."""

    kid: str
    alg: str
    public: bytes
    private: bytes | None = field(default=None, repr=False)
    not_after: int | None = None  # Unix time after which the key no longer verifies

    def __post_init__(self):
        if self.alg not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.alg!r}")
        if not _KID.fullmatch(self.kid):
            raise ValueError("kid must be 8 lowercase hex characters")
        if len(self.public) != _PUBLIC_LEN[self.alg]:
            raise ValueError(f"bad {self.alg} public key length")

    @property
    def jose_alg(self) -> str:
        return JOSE_ALG[self.alg]

    def sign(self, msg: bytes) -> bytes:
        """Raw 64-byte signature (ES256 and SM2 as r||s)."""
        if self.private is None:
            raise ValueError(f"key {self.kid} has no private part")
        if self.alg == "SM2":
            return sm2.sign(self.private, msg)
        if self.alg == "Ed25519":
            return _ed25519_signer(self.private).sign(msg).signature
        key = _private_obj(self.alg, self.private)
        r, s = decode_dss_signature(key.sign(msg, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def verify(self, msg: bytes, sig: bytes) -> bool:
        """True if sig is this key's raw signature over msg; never raises."""
        try:
            if len(sig) != 64:
                return False
            if self.alg == "SM2":
                return sm2.verify(self.public, msg, sig)
            if self.alg == "Ed25519":
                _ed25519_verifier(self.public).verify(msg, sig)
                return True
            r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
            _public_obj(self.alg, self.public).verify(encode_dss_signature(r, s), msg, ec.ECDSA(hashes.SHA256()))
            return True
        except (InvalidSignature, BadSignatureError, TypeError, ValueError):
            return False


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwk_members(alg: str, public: bytes) -> dict:
    # Exactly the RFC 7638 required members, so this also feeds the thumbprint.
    if alg == "Ed25519":
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64(public)}
    if alg == "ES256":
        return {"kty": "EC", "crv": "P-256", "x": _b64(public[1:33]), "y": _b64(public[33:])}
    return {"kty": "EC", "crv": "SM2", "x": _b64(public[:32]), "y": _b64(public[32:])}


def kid_for(alg: str, public: bytes) -> str:
    """First 4 bytes (hex) of the RFC 7638 SHA-256 thumbprint of the public JWK."""
    canonical = json.dumps(_jwk_members(alg, public), separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).digest()[:4].hex()


def from_private(alg: str, private: bytes, not_after: int | None = None) -> SigningKey:
    """SigningKey for an existing private key (public part and kid derived)."""
    private = bytes(private)
    if alg == "SM2":
        public = sm2.public_from_private(private)
    elif alg in ("Ed25519", "ES256"):
        pub_obj = _private_obj(alg, private).public_key()
        if alg == "Ed25519":
            public = pub_obj.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            public = pub_obj.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    else:
        raise ValueError(f"unknown algorithm {alg!r}")
    return SigningKey(kid_for(alg, public), alg, public, private, not_after)


def generate(alg: str) -> SigningKey:
    """Fresh key pair for alg."""
    if alg == "SM2":
        private, _ = sm2.generate_keypair()
    elif alg == "Ed25519":
        private = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value.to_bytes(32, "big")
    else:
        raise ValueError(f"unknown algorithm {alg!r}")
    return from_private(alg, private)


def to_jwk(key: SigningKey) -> dict:
    """Public JWK with kid, alg and use."""
    return {**_jwk_members(key.alg, key.public), "kid": key.kid, "alg": key.jose_alg, "use": "sig"}


def seal_private(master_key: bytes, key: SigningKey, profile: str = "default") -> bytes:
    """Private key encrypted (AES-256-GCM or SM4-GCM by profile) with the kid as associated data."""
    if key.private is None:
        raise ValueError(f"key {key.kid} has no private part")
    return aead.seal(master_key, "signing-key", aead.cipher_for(profile), key.private, key.kid.encode())


def unseal_private(master_key: bytes, blob: bytes, kid: str, alg: str, public: bytes) -> SigningKey:
    """Open a sealed key and check it matches kid/alg/public; KeyringError otherwise."""
    try:
        private = aead.open_(master_key, "signing-key", blob, kid.encode())
        key = from_private(alg, private)
    except ValueError as exc:
        raise KeyringError("sealed signing key cannot be opened") from exc
    if key.public != bytes(public):  # a blob moved to another key's row
        raise KeyringError("sealed signing key does not match its public key")
    return SigningKey(kid, alg, key.public, private)


class Keyring:
    """The service's signing keys: one current key signs, all of them verify."""

    def __init__(self, keys: Iterable[SigningKey], current_kid: str):
        self._keys: dict[str, SigningKey] = {}
        for key in keys:
            if key.kid in self._keys:
                raise ValueError(f"duplicate kid {key.kid}")
            self._keys[key.kid] = key
        current = self._keys.get(current_kid)
        if current is None or current.private is None:
            raise ValueError("current key must be in the keyring and have a private part")
        self.current = current

    def get(self, kid: str) -> SigningKey | None:
        """Key by kid, or None."""
        return self._keys.get(kid)

    def keys(self) -> list[SigningKey]:
        return list(self._keys.values())

    def jwks(self, now: int | None = None) -> dict:
        """RFC 7517 key set of every key (given now: only keys not yet past not_after)."""
        keys = [k for k in self._keys.values() if now is None or k.not_after is None or now <= k.not_after]
        return {"keys": [to_jwk(k) for k in keys]}

    def warm(self) -> None:
        """Precompute SM2 verification tables now rather than on the first scans."""
        for key in self._keys.values():
            if key.alg == "SM2":
                sm2.precompute(key.public)
