"""Bank app signatures (`bank-<code>`), national mobile-payment style: SM2 with SM3.

Headers X-Bank-App-Id, X-Bank-Timestamp (Unix seconds), X-Bank-Nonce, X-Bank-Signature
(base64 of the DER SM2 signature, GM/T 0009, default user id 1234567812345678) and an
optional X-Bank-Serial naming the key; without it every registered key is tried.
The signed content is `canonical_string` of the JSON body's top-level fields plus app_id,
timestamp and nonce. Values are not escaped, so a value holding `&` (or a name holding `&` or
`=`) makes the signed string read as other fields: such a request is refused (`unsplit_field`).
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Mapping

from crypto import sm2

from ..errors import DomainError
from ..text import plain_text
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


def canonical_pairs(fields: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (name, text) pairs of the signed content, sorted by name (ASCII order)."""
    return [(key, canonical_value(fields[key])) for key in sorted(fields)]


def canonical_string(fields: Mapping[str, Any]) -> str:
    """`key=value&…` of the fields sorted by key (ASCII order); shared by signer and verifier.

    Exactly the partner's scheme: nothing is escaped, and a body whose string reads as other
    fields is signed as it is (the verifier refuses it: `unsplit_field`)."""
    return _join(canonical_pairs(fields))


def _join(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{key}={text}" for key, text in pairs)


def unsplit_field(pairs: list[tuple[str, str]]) -> str | None:
    """The first field the signed string does not give back, or None when it splits back on `&`,
    and each piece on its first `=`, into exactly `pairs`.

    Otherwise two bodies sign alike: {"channel_user_id": "u&face_verified=true"} and
    {"channel_user_id": "u", "face_verified": true} both read `channel_user_id=u&face_verified=true`,
    and {"a=b": "c"} reads as {"a": "b=c"}. The string splits back exactly when every piece does:
    when no piece holds an `&` and no name an `=` (a value's `=` stays after the first)."""
    for key, text in pairs:
        if "&" in key or "=" in key or "&" in text:
            return key
    return None


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
        pairs = canonical_pairs(signed_fields(payload, app_id, timestamp, nonce))
        message = _join(pairs).encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request("The body holds text that cannot be written as UTF-8 (a lone surrogate)") from None
    except ValueError as exc:  # canonical_value's and signed_fields' own messages
        raise bad_request(str(exc)) from None
    if not any(_verifies(pem, message, signature) for pem in candidates):
        raise bad_signature("Signature does not verify")
    return Authenticated(nonce=nonce, timestamp=int(timestamp), payload=payload,
                         refusal=_ambiguity(unsplit_field(pairs)))


def _ambiguity(field: str | None) -> DomainError | None:
    """invalid_request naming the field whose `&` (or, in its name, `=`) the signed string cannot carry."""
    if field is None:
        return None
    where = "Field name" if "&" in field or "=" in field else "The value of field"
    shown = field if plain_text(field) else "(not shown)"  # not echoed if it could not be encoded
    return DomainError(
        "invalid_request",
        f"{where} {shown} holds '&' or '=': the bank signature joins fields with '&' and names to values "
        "with '=', unescaped, so this body would sign exactly as a different one. Leave '&' out of values "
        "and '&' and '=' out of names.",
        **({"field": field} if shown == field else {}))
