"""Short-Weierstrass point arithmetic over PUBLIC data only (signature verification).

Never pass a secret scalar here: nothing in this module is constant-time. Private-key
operations go through tongsuopy (OpenSSL code) in crypto/sm2.py.

Points are affine tuples (x, y) or Jacobian tuples (X, Y, Z) with Z == 0 for infinity.
"""

from __future__ import annotations

from dataclasses import dataclass

INFINITY = (1, 1, 0)


@dataclass(frozen=True)
class Curve:
    """Curve y^2 = x^3 + a*x + b over GF(p), prime order n, cofactor 1."""

    name: str
    p: int
    a: int
    b: int
    n: int
    gx: int
    gy: int

    @property
    def size(self) -> int:
        return (self.p.bit_length() + 7) // 8

    def on_curve(self, x: int, y: int) -> bool:
        """True if (x, y) is a finite point of this curve (cofactor 1: then it has order n)."""
        p = self.p
        return 0 <= x < p and 0 <= y < p and (y * y - (x * x * x + self.a * x + self.b)) % p == 0


def double(c: Curve, P: tuple[int, int, int]) -> tuple[int, int, int]:
    """2P in Jacobian coordinates, any a."""
    X, Y, Z = P
    p = c.p
    if not Z or not Y:
        return INFINITY
    yy = Y * Y % p
    s = 4 * X * yy % p
    zz = Z * Z % p
    m = (3 * X * X + c.a * zz * zz) % p
    x3 = (m * m - 2 * s) % p
    return x3, (m * (s - x3) - 8 * yy * yy) % p, 2 * Y * Z % p


def add_affine(c: Curve, P: tuple[int, int, int], x2: int, y2: int) -> tuple[int, int, int]:
    """P + (x2, y2), Jacobian + affine; handles infinity, P == Q and P == -Q."""
    X, Y, Z = P
    p = c.p
    if not Z:
        return x2, y2, 1
    zz = Z * Z % p
    h = (x2 * zz - X) % p
    r = (y2 * zz % p * Z - Y) % p
    if not h:
        # Same x: either the same point (double it) or its negation (sum is infinity).
        return double(c, P) if not r else INFINITY
    hh = h * h % p
    hhh = h * hh % p
    v = X * hh % p
    x3 = (r * r - hhh - 2 * v) % p
    return x3, (r * (v - x3) - Y * hhh) % p, Z * h % p


def sum_affine(c: Curve, acc: tuple[int, int, int], points) -> tuple[int, int, int, int]:
    """acc (Jacobian) + sum(points), returned as (X, Y, Z^2, Z^3); Z^2 == 0 means infinity.

    The verifier's hot loop. Keeping Z^2 and Z^3 instead of Z saves one multiplication and
    one reduction per addition (8M + 2S), and the final check needs only X and Z^2.
    """
    p = c.p
    X, Y, Z = acc
    zz, zzz = Z * Z % p, Z * Z * Z % p
    for x2, y2 in points:
        if not zz:
            X, Y, zz, zzz = x2, y2, 1, 1
            continue
        h = (x2 * zz - X) % p
        r = (y2 * zzz - Y) % p
        if not h:
            # Same x: the same point (double it) or its negation (the sum is infinity).
            X, Y, zz, zzz = _double_zz(c, X, Y, zz, zzz) if not r else (1, 1, 0, 0)
            continue
        hh = h * h % p
        hhh = h * hh % p
        v = X * hh % p
        X = (r * r - hhh - 2 * v) % p
        Y = (r * (v - X) - Y * hhh) % p
        zz = zz * hh % p
        zzz = zzz * hhh % p
    return X, Y, zz, zzz


def _double_zz(c: Curve, X: int, Y: int, zz: int, zzz: int) -> tuple[int, int, int, int]:
    """2P for P = (X, Y, Z^2, Z^3): the Jacobian doubling with Z3 = 2YZ squared and cubed."""
    p = c.p
    if not Y:
        return 1, 1, 0, 0
    yy = Y * Y % p
    s = 4 * X * yy % p
    m = (3 * X * X + c.a * zz * zz) % p
    x3 = (m * m - 2 * s) % p
    return x3, (m * (s - x3) - 8 * yy * yy) % p, 4 * yy * zz % p, 8 * yy * Y % p * zzz % p


def to_affine_many(c: Curve, points: list) -> list[tuple[int, int]]:
    """Normalise finite Jacobian points with one inversion (Montgomery's trick)."""
    p = c.p
    prefix = []
    acc = 1
    for _, _, z in points:
        prefix.append(acc)
        acc = acc * z % p
    inv = pow(acc, -1, p)
    out = [None] * len(points)
    for i in range(len(points) - 1, -1, -1):
        x, y, z = points[i]
        zi = inv * prefix[i] % p
        inv = inv * z % p
        zi2 = zi * zi % p
        out[i] = (x * zi2 % p, y * zi2 % p * zi % p)
    return out


class FixedBaseTable:
    """rows[i][j] = (j + 1) * 2^(w*i) * B in affine form, so k*B costs ~bits/w additions."""

    def __init__(self, c: Curve, x: int, y: int, w: int):
        self.curve, self.w = c, w
        half = 1 << (w - 1)
        # Adding `offset` turns every base-2^w digit u of k + offset into the signed digit
        # u - 2^(w-1), with no carries to propagate; k + offset < 2^(w*windows) needs
        # w*windows >= bits + 2.
        windows = (c.n.bit_length() + w + 1) // w
        self._offset = sum(half << (w * i) for i in range(windows))
        self._shifts = [w * i for i in range(windows)]
        rows = []
        bx, by = x, y
        for _ in range(windows):
            jac = [(bx, by, 1)]
            for _ in range(half - 1):
                jac.append(add_affine(c, jac[-1], bx, by))
            rows.append(to_affine_many(c, jac))
            # Next base 2^w * B = 2 * (half * B).
            ((bx, by),) = to_affine_many(c, [double(c, jac[-1])])
        self.rows = rows

    def points(self, k: int) -> list[tuple[int, int]]:
        """Affine points whose sum is k*B (0 <= k < n)."""
        p, half, mask = self.curve.p, 1 << (self.w - 1), (1 << self.w) - 1
        v = k + self._offset
        out = []
        for row, shift in zip(self.rows, self._shifts):
            u = (v >> shift) & mask
            if u > half:
                out.append(row[u - half - 1])
            elif u < half:
                x, y = row[half - u - 1]
                out.append((x, p - y))
        return out


def mul(c: Curve, k: int, x: int, y: int, w: int = 5) -> tuple[int, int, int]:
    """k*(x, y) by width-w NAF (variable time): for one-off public keys."""
    # Odd multiples P, 3P, ..., (2^(w-1) - 1)P.
    ((dx, dy),) = to_affine_many(c, [double(c, (x, y, 1))])
    jac = [(x, y, 1)]
    for _ in range((1 << (w - 2)) - 1):
        jac.append(add_affine(c, jac[-1], dx, dy))
    odd = to_affine_many(c, jac)
    naf = []
    while k:
        if k & 1:
            d = k & ((1 << w) - 1)
            if d >= 1 << (w - 1):
                d -= 1 << w
            k -= d
        else:
            d = 0
        naf.append(d)
        k >>= 1
    acc = INFINITY
    p = c.p
    for d in reversed(naf):
        acc = double(c, acc)
        if d > 0:
            acc = add_affine(c, acc, *odd[d >> 1])
        elif d < 0:
            ox, oy = odd[(-d) >> 1]
            acc = add_affine(c, acc, ox, p - oy)
    return acc

