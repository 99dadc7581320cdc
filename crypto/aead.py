"""Self-describing AEAD envelope: cipher id (1 byte) || 12-byte nonce || ciphertext || 16-byte tag.

Used for fields at rest and sealed signing keys. The first byte names the cipher, so a
service running either profile can read data written under the other one.
"""

from __future__ import annotations

import os
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

AES_256_GCM = 0x01
SM4_GCM = 0x02
PROFILES = {"default": AES_256_GCM, "gm": SM4_GCM}
_NONCE, _TAG = 12, 16
_MIN_MASTER_KEY = 32


class AeadError(ValueError):
    """Ciphertext is malformed, tampered with, or bound to a different context."""


def cipher_for(profile: str) -> int:
    """Cipher id written by a profile ("default" → AES-256-GCM, "gm" → SM4-GCM)."""
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown crypto profile {profile!r}") from None


def derive(master_key: bytes, label: str, *, gm: bool, length: int = 32) -> bytes:
    """HKDF subkey for one purpose: HKDF-SM3 under the gm profile, HKDF-SHA256 otherwise."""
    if len(master_key) < _MIN_MASTER_KEY:
        raise ValueError("master key must be at least 32 bytes")
    return _derive(bytes(master_key), label, gm, length)


@lru_cache(maxsize=64)
def _derive(master_key: bytes, label: str, gm: bool, length: int) -> bytes:
    algorithm = hashes.SM3() if gm else hashes.SHA256()
    info = b"evoucher/v1/" + label.encode()
    return HKDF(algorithm=algorithm, length=length, salt=None, info=info).derive(master_key)


def _key(master_key: bytes, purpose: str, cipher: int) -> bytes:
    # The subkey depends on the cipher id in the blob, never on the reader's profile.
    if cipher == AES_256_GCM:
        return derive(master_key, f"{purpose}/aes-256-gcm", gm=False, length=32)
    return derive(master_key, f"{purpose}/sm4-gcm", gm=True, length=16)


def seal(master_key: bytes, purpose: str, cipher: int, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt plaintext under the purpose's subkey, binding aad."""
    key, nonce = _key(master_key, purpose, cipher), os.urandom(_NONCE)
    header = bytes([cipher])
    if cipher == AES_256_GCM:
        return header + nonce + AESGCM(key).encrypt(nonce, plaintext, header + aad)
    if cipher == SM4_GCM:
        enc = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
        enc.authenticate_additional_data(header + aad)
        body = enc.update(plaintext) + enc.finalize()
        return header + nonce + body + enc.tag
    raise ValueError(f"unknown cipher id {cipher}")


def open_(master_key: bytes, purpose: str, blob: bytes, aad: bytes) -> bytes:
    """Decrypt a sealed blob; AeadError on any failure."""
    blob = bytes(blob)
    if len(blob) < 1 + _NONCE + _TAG or blob[0] not in (AES_256_GCM, SM4_GCM):
        raise AeadError("malformed ciphertext")
    cipher, nonce, body = blob[0], blob[1 : 1 + _NONCE], blob[1 + _NONCE :]
    key, header = _key(master_key, purpose, cipher), blob[:1]
    try:
        if cipher == AES_256_GCM:
            return AESGCM(key).decrypt(nonce, body, header + aad)
        dec = Cipher(algorithms.SM4(key), modes.GCM(nonce, body[-_TAG:])).decryptor()
        dec.authenticate_additional_data(header + aad)
        return dec.update(body[:-_TAG]) + dec.finalize()
    except InvalidTag:
        raise AeadError("ciphertext failed authentication") from None
