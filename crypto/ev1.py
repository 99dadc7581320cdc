"""The ev1 QR token codec: fixed binary layout, signed, base45 with the prefix "EV1:".

Layout (big-endian; docs/token-format.md is the normative description):

    0   1  version (high 4 bits, = 1) | algorithm (low 4 bits: 1 Ed25519, 2 ES256, 3 SM2)
    1   1  flags (bit 0: actor present; other bits must be 0)
    2   4  kid (first 4 bytes of the key's RFC 7638 thumbprint)
    6   4  iat, Unix seconds
    10  2  lifetime, seconds
    12  3  region code as an integer (6 decimal digits)
    15 10  voucher id (raw; text form is base32 of these bytes)
    25  8  token id
    33 10  actor voucher id (only when flag bit 0 is set)
    .. 64  signature over every byte before it
"""

from __future__ import annotations

import base64
import re
import struct
from typing import NamedTuple

PREFIX = "EV1:"
VERSION = 1
ALG_CODES = {"Ed25519": 1, "ES256": 2, "SM2": 3}
ALG_NAMES = {code: name for name, code in ALG_CODES.items()}
FLAG_ACTOR = 0x01
SIG_LEN = 64
_FIXED = struct.Struct(">BB4sIH3s10s8s")  # 33 bytes
_ACTOR_LEN = 10
# base45 (RFC 9285): each 2 bytes, as a big-endian number n, are 3 characters n % 45,
# n // 45 % 45, n // 2025; a last single byte is 2 characters. Encoded by table and decoded with
# big integers (b45decode), not a character at a time as the `base45` package does (which the
# tests cross-check against): that took 12 µs to encode and 11 µs to decode a token, decoding a
# fifth of verifying one (bench/ev1_codec.py).
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_TWO = [_ALPHABET[n % 45] + _ALPHABET[n // 45] for n in range(2025)]  # the low 2 characters of n
_NOT_BASE45 = 0xFF
# Each character's value; 0xFF for every byte outside the alphabet, so that one search of the
# translated bytes (memchr, in C) checks the alphabet: a regex took 7,000 instructions a token.
_VALUE = bytes(_ALPHABET.find(chr(b)) if chr(b) in _ALPHABET else _NOT_BASE45 for b in range(256))
# base32 (RFC 4648) of a 10-byte voucher id: 80 bits, 8 groups of 10 bits, 2 characters each.
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_B32_PAIRS = [a + b for a in _B32 for b in _B32]


class Malformed(ValueError):
    """Not a well-formed ev1 token."""


class Ev1(NamedTuple):
    alg: str
    kid: str
    iat: int
    lifetime: int
    region: str
    voucher_id: str
    token_id: str
    actor: str | None
    signed: bytes  # the exact bytes the signature covers
    signature: bytes


def voucher_bytes(voucher_id: str) -> bytes:
    """The 10 raw bytes of a 16-character base32 voucher id."""
    if not isinstance(voucher_id, str) or not re.fullmatch(r"[A-Z2-7]{16}", voucher_id):
        raise ValueError("voucher id must be 16 base32 characters")
    return base64.b32decode(voucher_id)


def _voucher_text(raw: bytes) -> str:
    """base64.b32encode(raw).decode() for exactly 10 bytes, by table (a third of its time)."""
    n, p = int.from_bytes(raw, "big"), _B32_PAIRS
    return (p[n >> 70] + p[n >> 60 & 1023] + p[n >> 50 & 1023] + p[n >> 40 & 1023]
            + p[n >> 30 & 1023] + p[n >> 20 & 1023] + p[n >> 10 & 1023] + p[n & 1023])


def payload(alg: str, kid: str, iat: int, lifetime: int, region: str, voucher_id: str,
            token_id: str, actor: str | None) -> bytes:
    """The signed part of a token (ValueError for out-of-range fields)."""
    if not re.fullmatch(r"[0-9]{6}", region):
        raise ValueError("region must be 6 digits")
    if not re.fullmatch(r"[0-9a-f]{16}", token_id):
        raise ValueError("token id must be 16 lowercase hex characters")
    if not (0 <= iat < 2**32 and 0 < lifetime < 2**16):
        raise ValueError("iat or lifetime out of range")
    head = _FIXED.pack(
        VERSION << 4 | ALG_CODES[alg], FLAG_ACTOR if actor else 0, bytes.fromhex(kid),
        iat, lifetime, int(region).to_bytes(3, "big"), voucher_bytes(voucher_id),
        bytes.fromhex(token_id),
    )
    return head + voucher_bytes(actor) if actor else head


def b45encode(data: bytes) -> str:
    words = struct.unpack_from(f">{len(data) // 2}H", data)
    text = "".join([_TWO[w % 2025] + _ALPHABET[w // 2025] for w in words])
    return text + _TWO[data[-1]] if len(data) % 2 else text


def b45decode(text: str) -> bytes:
    """The bytes of base45 text; ValueError for a character outside the alphabet, a lone last
    character, or a group worth more than its bytes can hold."""
    try:
        v = text.encode("ascii").translate(_VALUE)
    except UnicodeEncodeError:  # outside ASCII, so outside the alphabet
        v = None
    if v is None or _NOT_BASE45 in v:
        raise ValueError("not in the base45 alphabet")
    groups, rest = divmod(len(v), 3)
    if rest == 1:
        raise ValueError("a lone last character")
    end = 3 * groups
    # Every group at once, in C: the groups' first, second and third values each become one big
    # integer with a 3-byte slot per group, and a + 45 b + 2025 c is then each group's number in
    # its slot (at most 91,124, so no slot carries into the next). A number past 0xFFFF shows
    # as a non-zero top byte of its slot.
    slots = bytearray(end)
    slots[2::3] = v[0:end:3]
    a = int.from_bytes(slots, "big")
    slots[2::3] = v[1:end:3]
    b = int.from_bytes(slots, "big")
    slots[2::3] = v[2:end:3]
    n = (a + 45 * b + 2025 * int.from_bytes(slots, "big")).to_bytes(end, "big")
    if n[0::3].count(0) != groups:
        raise ValueError("a group out of range")
    raw = bytearray(2 * groups)
    raw[0::2] = n[1::3]
    raw[1::2] = n[2::3]
    if rest:
        tail = v[-2] + 45 * v[-1]
        if tail > 0xFF:
            raise ValueError("a group out of range")
        raw.append(tail)
    return bytes(raw)


def encode(signed: bytes, signature: bytes) -> str:
    """Token text for a payload and its signature."""
    return PREFIX + b45encode(signed + signature)


def decode(text: str) -> Ev1:
    """Parse a token strictly (signature NOT checked); Malformed on any deviation."""
    if not isinstance(text, str) or not text.startswith(PREFIX):
        raise Malformed("missing ev1 prefix")
    try:
        raw = b45decode(text[len(PREFIX):])
    except ValueError:
        raise Malformed("not base45") from None
    if len(raw) < _FIXED.size + SIG_LEN:
        raise Malformed("too short")
    head, flags, kid, iat, lifetime, region, voucher, token = _FIXED.unpack_from(raw)
    if head >> 4 != VERSION or (head & 0x0F) not in ALG_NAMES or flags & ~FLAG_ACTOR:
        raise Malformed("unknown version, algorithm or flags")
    size = _FIXED.size + (_ACTOR_LEN if flags & FLAG_ACTOR else 0)
    if len(raw) != size + SIG_LEN:
        raise Malformed("wrong length")
    region_num = int.from_bytes(region, "big")
    if region_num > 999_999 or lifetime == 0:
        raise Malformed("field out of range")
    actor = _voucher_text(raw[_FIXED.size:size]) if flags & FLAG_ACTOR else None
    return Ev1(
        alg=ALG_NAMES[head & 0x0F], kid=kid.hex(), iat=iat, lifetime=lifetime,
        region=f"{region_num:06d}", voucher_id=_voucher_text(voucher), token_id=token.hex(),
        actor=actor, signed=raw[:size], signature=raw[size:],
    )
