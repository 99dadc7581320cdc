"""Channel public keys as operators register them: validation, normal form, default serial."""
from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives import serialization

from crypto import sm2

from .common import load_rsa_public_key

MIN_RSA_BITS = 2048
# Which key type each signing scheme verifies with.
KEY_TYPES = {"wechat": "rsa", "alipay": "rsa", "bank": "sm2"}


def _load_sm2(pem: bytes) -> bytes | None:
    try:
        return sm2.public_key_from_pem(pem)
    except ValueError:
        return None


def public_key_type(pem: bytes) -> str:
    """"rsa" or "sm2" for a PEM public key; ValueError for anything else."""
    if b"PRIVATE KEY" in pem:
        raise ValueError("this is a private key: register the channel's public key")
    if load_rsa_public_key(pem) is not None:
        return "rsa"
    if _load_sm2(pem) is not None:
        return "sm2"
    raise ValueError("not a PEM RSA or SM2 public key")


def load_public_key(pem: bytes, kind: str) -> bytes:
    """Validate a key for a channel kind and return it as a SubjectPublicKeyInfo PEM.

    wechat and alipay need RSA of at least 2048 bits (a certificate is accepted and its key
    taken); bank channels need SM2. Raises ValueError with a message for the operator.
    """
    wanted = KEY_TYPES.get(kind)
    if wanted is None:
        raise ValueError(f"unknown channel kind {kind!r}")
    found = public_key_type(pem)
    if found != wanted:
        raise ValueError(f"{kind} channels sign with {wanted.upper()} keys, this is an {found.upper()} key")
    if found == "rsa":
        key = load_rsa_public_key(pem)
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are required")
        return key.public_bytes(serialization.Encoding.PEM,
                                serialization.PublicFormat.SubjectPublicKeyInfo)
    return sm2.public_key_to_pem(_load_sm2(pem))


def spki_der(pem: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of an RSA or SM2 public key, whatever PEM form it came in."""
    key = load_rsa_public_key(pem)
    if key is not None:
        return key.public_bytes(serialization.Encoding.DER,
                                serialization.PublicFormat.SubjectPublicKeyInfo)
    public = _load_sm2(pem)
    if public is None:
        raise ValueError("not a PEM RSA or SM2 public key")
    body = b"".join(line.strip() for line in sm2.public_key_to_pem(public).splitlines()
                    if line.strip() and not line.startswith(b"-----"))
    return base64.b64decode(body, validate=True)


def default_serial(public_pem: bytes) -> str:
    """First 16 hex digits (upper case, like WeChat serials) of SHA-256 of the DER public key."""
    return hashlib.sha256(spki_der(public_pem)).hexdigest()[:16].upper()
