"""Encryption of personal fields at rest (AES-256-GCM / SM4-GCM) and keyed blind indexes."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, hmac

from . import aead

_INDEX_PURPOSE = "blind-index"


class FieldError(ValueError):
    """A field ciphertext is malformed, tampered with, or from another context."""


class FieldCipher:
    """Field encryption and blind indexing under one master key.

    The profile picks what is written ("default": AES-256-GCM + HMAC-SHA256, "gm": SM4-GCM
    + HMAC-SM3); either profile decrypts both ciphers, since the first byte names the cipher.
    Indexes differ between profiles: `index` writes the profile's own, and lookups match
    `indexes` (own first, then the other profile's), so rows indexed before a profile change
    are still found.
    """

    def __init__(self, master_key: bytes, profile: str = "default"):
        self._master = bytes(master_key)
        self._cipher = aead.cipher_for(profile)
        self._gm = profile == "gm"
        self._index_key = aead.derive(self._master, _INDEX_PURPOSE, gm=self._gm)
        self._other_index_key = aead.derive(self._master, _INDEX_PURPOSE, gm=not self._gm)

    def encrypt(self, value: str, context: str) -> bytes:
        """Ciphertext of value bound to context (e.g. "person.id_number")."""
        return aead.seal(self._master, "field", self._cipher, value.encode(), _aad(context))

    def decrypt(self, blob: bytes, context: str) -> str:
        """Plaintext of a blob written by encrypt with the same context; FieldError otherwise."""
        try:
            return aead.open_(self._master, "field", blob, _aad(context)).decode()
        except (aead.AeadError, UnicodeDecodeError, TypeError):
            raise FieldError("field cannot be decrypted") from None

    def index(self, value: str, context: str) -> str:
        """Deterministic keyed index (hex) for equality lookups; differs per context."""
        return _index(self._index_key, self._gm, value, context)

    def indexes(self, value: str, context: str) -> tuple[str, str]:
        """The index under this profile, then under the other one: what a lookup must match."""
        return (_index(self._index_key, self._gm, value, context),
                _index(self._other_index_key, not self._gm, value, context))


def _index(key: bytes, gm: bool, value: str, context: str) -> str:
    # cryptography's own OpenSSL always has SM3; hashlib's depends on the system build.
    mac = hmac.HMAC(key, hashes.SM3() if gm else hashes.SHA256())
    mac.update(_aad(context) + value.encode())
    return mac.finalize().hex()


def _aad(context: str) -> bytes:
    # Length prefix: ("ab", "c…") and ("a", "bc…") must not collide in the index input.
    raw = context.encode()
    return len(raw).to_bytes(2, "big") + raw
