"""The SM2 verifier against a naive affine reference on tiny prime-order curves.

With n around 2^16, the exceptional cases (t == 0, equal or opposite points in a sum, the
point at infinity, x1 >= n) happen often enough to be exercised, for both n > p and n < p.
"""

import random

import pytest

from crypto import _ec, _sm2_verify, sm2

P = 65521
TOY_CURVES = [
    _ec.Curve("toy-n>p", P, P - 3, 3, 65563, 1, 1),
    _ec.Curve("toy-n<p", P, P - 3, 10, 65183, 1, 724),
]


def naive_add(c, A, B):
    if A is None:
        return B
    if B is None:
        return A
    (x1, y1), (x2, y2) = A, B
    if x1 == x2 and (y1 + y2) % c.p == 0:
        return None
    if A == B:
        lam = (3 * x1 * x1 + c.a) * pow(2 * y1, -1, c.p) % c.p
    else:
        lam = (y2 - y1) * pow(x2 - x1, -1, c.p) % c.p
    x3 = (lam * lam - x1 - x2) % c.p
    return x3, (lam * (x1 - x3) - y1) % c.p


def naive_mul(c, k, A):
    out = None
    for bit in bin(k)[2:]:
        out = naive_add(c, out, out)
        if bit == "1":
            out = naive_add(c, out, A)
    return out


def encode(c, point):
    return point[0].to_bytes(c.size, "big") + point[1].to_bytes(c.size, "big")


def e_of(c, pub, msg, uid=sm2.DEFAULT_UID):
    return int.from_bytes(_sm2_verify.sm3(_sm2_verify.user_hash(pub, uid, curve=c), msg), "big")


def reference_verify(c, pub, msg, r, s):
    """GB/T 32918.2 §7 verification, step by step, with naive affine arithmetic."""
    if not (0 < r < c.n and 0 < s < c.n):
        return False
    t = (r + s) % c.n
    if t == 0:
        return False
    Q = (int.from_bytes(pub[: c.size], "big"), int.from_bytes(pub[c.size:], "big"))
    R = naive_add(c, naive_mul(c, s, (c.gx, c.gy)), naive_mul(c, t, Q))
    return R is not None and (e_of(c, pub, msg) + R[0]) % c.n == r


def toy_sign(c, d, pub, msg, rng):
    """Textbook SM2 signing (test-only: never sign real keys with Python arithmetic)."""
    e = e_of(c, pub, msg)
    while True:
        k = rng.randrange(1, c.n)
        r = (e + naive_mul(c, k, (c.gx, c.gy))[0]) % c.n
        if r == 0 or r + k == c.n:
            continue
        s = pow(1 + d, -1, c.n) * (k - r * d) % c.n
        if s:
            return r, s


def sig(c, r, s):
    return r.to_bytes(c.size, "big") + s.to_bytes(c.size, "big")


def test_toy_curves_are_what_we_claim():
    for c in TOY_CURVES:
        assert c.on_curve(c.gx, c.gy)
        assert naive_mul(c, c.n, (c.gx, c.gy)) is None and all(c.n % q for q in range(2, 257))


@pytest.mark.parametrize("c", TOY_CURVES, ids=lambda c: c.name)
def test_fixed_base_tables_match_naive_multiplication(c):
    g = (c.gx, c.gy)
    for w in (2, 3, 5, 8, 16):
        table = _ec.FixedBaseTable(c, c.gx, c.gy, w)
        for k in list(range(1, 40)) + [c.n - i for i in range(1, 40)] + random.Random(w).sample(range(c.n), 200):
            X, Y, zz, zzz = _ec.sum_affine(c, _ec.INFINITY, table.points(k))
            got = (X * pow(zz, -1, c.p) % c.p, Y * pow(zzz, -1, c.p) % c.p) if zz else None
            assert got == naive_mul(c, k, g), (w, k)


@pytest.mark.parametrize("c", TOY_CURVES, ids=lambda c: c.name)
def test_wnaf_matches_naive_multiplication(c):
    for k in list(range(0, 70)) + [c.n - 1, c.n, c.n + 1]:
        X, Y, Z = _ec.mul(c, k, c.gx, c.gy)
        got = _ec.to_affine_many(c, [(X, Y, Z)])[0] if Z else None
        assert got == naive_mul(c, k, (c.gx, c.gy)), k


@pytest.mark.parametrize("c", TOY_CURVES, ids=lambda c: c.name)
def test_verifier_agrees_with_reference(c):
    rng = random.Random(c.name)
    checked_valid = 0
    for d in [1, 2, 3, c.n - 2] + rng.sample(range(4, c.n - 2), 8):
        pub = encode(c, naive_mul(c, d, (c.gx, c.gy)))
        for i in range(12):
            msg = b"toy %d" % i
            r, s = toy_sign(c, d, pub, msg, rng)
            assert sm2.verify(pub, msg, sig(c, r, s), curve=c)  # first: one-off path, then tables
            checked_valid += 1
            for r2, s2 in [(r, s), (r + 1, s), (r, s + 1), (c.n - s, s), ((-2 * s) % c.n, s), (0, s), (r, 0),
                           (c.n, s), (r, c.n), (rng.randrange(c.n), rng.randrange(c.n))]:
                if not (0 <= r2 < 2 ** (8 * c.size) and 0 <= s2 < 2 ** (8 * c.size)):
                    continue
                expect = reference_verify(c, pub, msg, r2, s2)
                assert sm2.verify(pub, msg, sig(c, r2, s2), curve=c) is expect, (d, r2, s2)
    assert checked_valid == 12 * 12
