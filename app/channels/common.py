"""What every channel signing scheme shares: the call record, key loading, strict parsing."""
from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..errors import DomainError

CALLS = ("activations", "sessions", "reverifications", "unbindings")
# Each call's name in Alipay's `method` parameter, and in the optional body field `method` on
# every channel: a bank signature does not cover the path, so a body that names its call cannot
# be presented at another endpoint (docs/channels.md).
METHODS = {
    "activations": "evoucher.activation.create",
    "sessions": "evoucher.session.create",
    "reverifications": "evoucher.reverification.create",
    "unbindings": "evoucher.unbinding.create",
}
MAX_SKEW_SECONDS = 300
# A stamp stays acceptable for 2 x MAX_SKEW (from 300 s before it to 300 s after it, inclusive,
# on a clock read in whole seconds), so its nonce must be kept longer than that: a Redis key
# expires to the millisecond, and app nodes' clocks differ by a few seconds. A minute to spare.
NONCE_TTL_SECONDS = 2 * MAX_SKEW_SECONDS + 60

# Nonces and request ids: what real partners send (hex, uuid, alnum) and nothing that could
# smuggle separators into a store key.
NONCE_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
# A channel's user id: not blank, no whitespace at either end (" u" and "u" are not two users).
CHANNEL_USER_PATTERN = r"\S(?:.*\S)?"


@dataclass(frozen=True)
class ChannelInfo:
    """A registered channel partner: its id, app id (mchid), kind and public keys by serial."""

    id: str
    app_id: str
    kind: str  # "wechat" | "alipay" | "bank"
    keys: dict[str, bytes]  # serial -> public key PEM
    status: str = "active"


@dataclass(frozen=True)
class SignedCall:
    """A channel call whose signature, freshness and nonce have been checked."""

    channel: str
    nonce: str
    timestamp: int
    payload: dict  # the JSON business request


@dataclass(frozen=True)
class Authenticated:
    """What a scheme hands back once the signature verifies; freshness is checked after.

    `refusal` is a reason the scheme found to refuse a correctly signed request (the bank's
    signed string reading as other fields). It is raised once the nonce is spent, so that the
    signature can serve no other reading of the same signed content afterwards."""

    nonce: str
    timestamp: int
    payload: dict
    refusal: DomainError | None = None


class NonceStore(Protocol):
    def use_nonce(self, scope: str, nonce: str, ttl_seconds: int) -> bool:
        """True when the nonce is fresh, False when seen within the ttl."""


def bad_signature(detail: str) -> DomainError:
    return DomainError("channel_signature_invalid", detail)


def bad_request(detail: str) -> DomainError:
    return DomainError("invalid_request", detail)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup that works for plain dicts and Werkzeug headers alike."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, val in headers.items():
            if key.lower() == lowered:
                return val
    return value


def b64decode_strict(text: str) -> bytes:
    """Decode standard base64 or raise ValueError; no silently skipped characters."""
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64") from exc


def _reject_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def json_object(text: str | bytes, what: str) -> dict:
    """Parse a JSON object (UTF-8, no NaN/Infinity) or raise invalid_request."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nesting too deep
        raise bad_request(f"{what} must be UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise bad_request(f"{what} must be a JSON object")
    return value


def lookup_key(keys: Mapping[str, bytes], serial: str) -> bytes | None:
    """The key registered under `serial`; hex serials compare case-insensitively."""
    if serial in keys:
        return keys[serial]
    wanted = serial.upper()
    for known, pem in keys.items():
        if known.upper() == wanted:
            return pem
    return None


def load_rsa_public_key(pem: bytes) -> rsa.RSAPublicKey | None:
    """An RSA public key from a PEM public key (SPKI or PKCS#1) or X.509 certificate, else None."""
    try:
        if b"-----BEGIN CERTIFICATE-----" in pem:
            key = x509.load_pem_x509_certificate(pem).public_key()
        else:
            key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    return key if isinstance(key, rsa.RSAPublicKey) else None


rsa_public_key = lru_cache(maxsize=256)(load_rsa_public_key)


def rsa_sha256_verifies(pem: bytes, message: bytes, signature: bytes) -> bool:
    """RSA PKCS#1 v1.5 with SHA-256, the signature both WeChat Pay v3 and Alipay RSA2 use."""
    key = rsa_public_key(pem)
    if key is None:
        return False
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True
