"""Bank app signatures (`bank-<code>`), national mobile-payment style: SM2 with SM3.

Headers X-Bank-App-Id, X-Bank-Timestamp (Unix seconds), X-Bank-Nonce, X-Bank-Signature
(base64 of the DER SM2 signature, GM/T 0009, default user id 1234567812345678) and an
optional X-Bank-Serial naming the key; without it every registered key is tried.
The signed content is `canonical_string` of the JSON body's top-level fields plus app_id,
timestamp and nonce.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Mapping

from crypto import sm2

from .common import (NONCE_RE, Authenticated, ChannelInfo, b64decode_strict, bad_request,
                     bad_signature, header, json_object, lookup_key)

ENVELOPE_FIELDS = ("app_id", "timestamp", "nonce")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def canonical_value(value: Any) -> str:
    """A field's text in the signed content: strings as they are, everything else as JSON."""
    if isinstance(value, str):
        return value
    try:
        if isinstance(value, (dict, list)):
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        # bool before int: JSON spells them true/false; None is null; numbers as JSON numbers.
        return json.dumps(value, allow_nan=False)
    except ValueError:  # json's own wording names Python, not the field
        raise ValueError("a number out of JSON's range (such as 1e400) cannot be signed") from None


def canonical_string(fields: Mapping[str, Any]) -> str:
    """`key=value&…` of the fields sorted by key (ASCII order); shared by signer and verifier."""
    for key in fields:
        if not isinstance(key, str) or not key or "=" in key or "&" in key:
            raise ValueError(f"field name {key!r} cannot be signed")
    return "&".join(f"{key}={canonical_value(fields[key])}" for key in sorted(fields))


def signed_fields(payload: Mapping[str, Any], app_id: str, timestamp: str, nonce: str) -> dict:
    """The body's fields plus the envelope; a body that redefines the envelope is refused."""
    clash = [name for name in ENVELOPE_FIELDS if name in payload]
    if clash:
        raise ValueError(f"body field {clash[0]} clashes with the signature envelope")
    return {**payload, "app_id": app_id, "timestamp": timestamp, "nonce": nonce}


@lru_cache(maxsize=256)
def _sm2_public_key(pem: bytes) -> bytes | None:
    try:
        return sm2.public_key_from_pem(pem)
    except ValueError:
        return None


def _verifies(pem: bytes, message: bytes, signature: bytes) -> bool:
    public = _sm2_public_key(pem)
    if public is None:
        return False
    try:
        return bool(sm2.verify_der(public, message, signature))
    except ValueError:
        return False


def authenticate(info: ChannelInfo, *, call: str, method: str, path_and_query: str,
                 headers: Mapping[str, str], body: bytes) -> Authenticated:
    """Verify the X-Bank-* headers over the canonical string of the JSON body."""
    values = {name: header(headers, f"X-Bank-{name}")
              for name in ("App-Id", "Timestamp", "Nonce", "Signature")}
    missing = [f"X-Bank-{name}" for name, value in values.items() if not value]
    if missing:
        raise bad_signature(f"Missing header {', '.join(missing)}")
    app_id, timestamp, nonce = values["App-Id"], values["Timestamp"], values["Nonce"]
    if app_id != info.app_id:
        raise bad_signature("X-Bank-App-Id is not this channel's app id")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise bad_signature("X-Bank-Timestamp must be Unix seconds")
    if not NONCE_RE.fullmatch(nonce):
        raise bad_signature("X-Bank-Nonce must be 1-64 letters, digits or -_.:")
    try:
        signature = b64decode_strict(values["Signature"])
    except ValueError:
        raise bad_signature("X-Bank-Signature is not base64") from None
    serial = header(headers, "X-Bank-Serial")
    if serial:
        pem = lookup_key(info.keys, serial)
        if pem is None:
            raise bad_signature("Unknown X-Bank-Serial")
        candidates = [pem]
    else:
        candidates = list(info.keys.values())
    payload = json_object(body, "Body")
    try:
        message = canonical_string(signed_fields(payload, app_id, timestamp, nonce)).encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request("The body holds text that cannot be written as UTF-8 (a lone surrogate)") from None
    except ValueError as exc:  # canonical_string's and signed_fields' own messages
        raise bad_request(str(exc)) from None
    if not any(_verifies(pem, message, signature) for pem in candidates):
        raise bad_signature("Signature does not verify")
    return Authenticated(nonce=nonce, timestamp=int(timestamp), payload=payload)
