"""SM2 verification engine over public data only: key validation, Z, fixed-base tables.

OpenSSL's generic SM2 verify manages ~1,700/s on one core here, too slow for the scan hot
path. Verification needs no secret, so it runs on hand-written point arithmetic
(crypto/_ec.py) with precomputed tables for G and for each long-lived public key.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from cryptography.hazmat.primitives import hashes

from . import _ec
from ._ec import Curve

DEFAULT_UID = b"1234567812345678"

# GB/T 32918.5 recommended curve (sm2p256v1).
CURVE = Curve(
    name="sm2p256v1",
    p=0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF,
    a=0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC,
    b=0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93,
    n=0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123,
    gx=0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7,
    gy=0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0,
)

# Window widths trade memory for additions: a verify costs ~256/12 + 256/10 = 48 mixed
# additions. The G table (45k points, ~9 MB, ~0.7 s to build) is shared by every key;
# a key table is ~2.5 MB and ~0.2 s to build, hence the small LRU below.
G_WINDOW, KEY_WINDOW = 12, 10
KEY_CACHE_SIZE = 16  # service signing keys + bank channel keys: a handful in practice
_TABLE_AFTER_USES = 2  # a key seen once (e.g. a one-off channel key) never pays for a table


def sm3(*parts: bytes) -> bytes:
    h = hashes.Hash(hashes.SM3())
    for part in parts:
        h.update(part)
    return h.finalize()


def user_hash(pub: bytes, uid: bytes = DEFAULT_UID, *, curve: Curve = CURVE) -> bytes:
    """Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA)."""
    if len(uid) >= 8192:  # ENTL is a 16-bit count of bits
        raise ValueError("SM2 user id too long")
    size = curve.size
    consts = b"".join(v.to_bytes(size, "big") for v in (curve.a, curve.b, curve.gx, curve.gy))
    return sm3((len(uid) * 8).to_bytes(2, "big"), uid, consts, pub)


class PublicKey:
    """A validated public key with its default-id Z and, once used twice, its table."""

    __slots__ = ("x", "y", "z", "uses", "table")

    def __init__(self, curve: Curve, pub: bytes):
        size = curve.size
        if len(pub) != 2 * size:
            raise ValueError("bad SM2 public key length")
        self.x, self.y = int.from_bytes(pub[:size], "big"), int.from_bytes(pub[size:], "big")
        if not curve.on_curve(self.x, self.y):  # also rules out the point at infinity
            raise ValueError("SM2 public key is not on the curve")
        self.z = user_hash(pub, DEFAULT_UID, curve=curve)
        self.uses = 0
        self.table = None


_keys: OrderedDict = OrderedDict()
_g_tables: dict = {}
_lock = threading.Lock()
_g_lock = threading.Lock()


def _g_table(curve: Curve) -> _ec.FixedBaseTable:
    table = _g_tables.get(curve)
    if table is None:
        with _g_lock:  # other threads wait rather than build a second 0.7 s table
            table = _g_tables.get(curve)
            if table is None:
                table = _g_tables[curve] = _ec.FixedBaseTable(curve, curve.gx, curve.gy, G_WINDOW)
    return table


def _key(curve: Curve, pub: bytes, force_table: bool = False) -> PublicKey:
    ident = (curve, pub)
    with _lock:
        key = _keys.get(ident)
        if key is not None:
            _keys.move_to_end(ident)
    if key is None:
        key = PublicKey(curve, pub)
        with _lock:
            _keys[ident] = key
            while len(_keys) > KEY_CACHE_SIZE:
                _keys.popitem(last=False)
    key.uses += 1
    if key.table is None and (force_table or key.uses >= _TABLE_AFTER_USES):
        # Built outside the lock: two threads may both build it, and that is harmless.
        key.table = _ec.FixedBaseTable(curve, key.x, key.y, KEY_WINDOW)
    return key


def precompute(pub: bytes | None = None, *, curve: Curve = CURVE) -> None:
    """Build the G table and, if given, a long-lived key's table now (ValueError if invalid)."""
    _g_table(curve)
    if pub is not None:
        _key(curve, bytes(pub), force_table=True)


def verify_rs(pub: bytes, msg: bytes, r: int, s: int, uid: bytes, curve: Curve) -> bool:
    n, p = curve.n, curve.p
    if not (0 < r < n and 0 < s < n):
        return False
    t = (r + s) % n
    if t == 0:
        return False
    key = _key(curve, pub)
    z = key.z if uid == DEFAULT_UID else user_hash(pub, uid, curve=curve)
    e = int.from_bytes(sm3(z, msg), "big")
    points = _g_table(curve).points(s)
    if key.table is not None:
        acc = _ec.sum_affine(curve, _ec.INFINITY, points + key.table.points(t))
    else:
        acc = _ec.sum_affine(curve, _ec.mul(curve, t, key.x, key.y), points)
    X, _, zz, _ = acc
    if not zz:
        return False
    # Check (e + x1) mod n == r without inverting Z: x1 = X / Z^2 must be (r - e) mod n + k*n.
    candidate = (r - e) % n
    while candidate < p:
        if X == candidate * zz % p:
            return True
        candidate += n
    return False
