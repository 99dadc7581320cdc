"""QR tokens for holders: issue for one's own voucher or a linked member's, render as SVG/PNG."""
from __future__ import annotations

import base64
import functools
import io
import itertools
import math

from crypto import tokens

from .. import metrics
from ..errors import DomainError
from ..store.ephemeral import StoreUnavailable
from ..store.writelock import writes
from . import activation, family, keys, limits, records
from .vouchers import first_code_second, iso_z, require_usable, utc


def issue(rt, claims: dict, *, voucher_id: str | None, fmt: str | None, image: str | None) -> dict:
    """Sign a short-lived one-use token for the holder's voucher or a linked member's.

    The holder lookup and the rate count share the thread's kept-open Core connection
    (prepared statements, one commit; app/store/hotconn.py); the request's ORM session is opened
    only on the family path. With PostgreSQL and Redis the count is not in the database, the
    lookup is the connection's only statement and runs in autocommit, which saves the BEGIN and
    COMMIT round trips (create_app)."""
    with rt.hot_connection() as conn:
        holder = activation.holder_snapshot(conn, claims)
        actor = link = None
        target = holder
        if voucher_id and voucher_id != holder.voucher_id:
            target, link = family.linked_member(rt.session(), holder, voucher_id,
                                                "You may show codes only for yourself and linked family members")
            actor = holder.voucher_id
        require_usable(holder)
        require_usable(target)
        with writes(rt.engine):
            limits.enforce(rt, "issue", target.voucher_id, rt.config.issue_rate_per_minute,
                           "Too many codes requested; wait a moment", conn=conn)
            conn.commit()
    fmt = fmt or rt.config.token_format
    now = issue_time(rt, holder, target)  # the same voucher twice for one's own code
    lifetime = rt.config.token_lifetime
    token_id = tokens.new_token_id()
    text = tokens.issue(keys.keyring(rt).current, voucher_id=target.voucher_id,
                        region=target.active_region, iat=now, lifetime=lifetime, token_id=token_id,
                        actor=actor, fmt=fmt, issuer=rt.config.issuer)
    if actor:
        try:
            # Kept as long as a scan admits the code: to `iat` + lifetime + the clock skew, where
            # `iat` may be up to a second ahead of now (issue_time).
            rt.store.remember(family.issued_group(link), token_id, lifetime + rt.config.clock_skew + 1)
        except StoreUnavailable:
            # Without the set, an end of the link could not list this code in the revocation
            # feed, and a scan could not tell it was issued under the live link: refuse.
            raise DomainError("service_unavailable", "Try again in a moment",
                              headers={"Retry-After": "1"}) from None
        session = rt.session()  # the request's session, which found the member above
        records.record(session, target, "qr_issued_for_member", actor=actor, token_id=token_id)
        session.commit()
    metrics.TOKENS.labels(fmt).inc()
    out = {"token": text, "format": fmt, "token_id": token_id, "voucher_id": target.voucher_id,
           "region_code": target.active_region,
           "expires_at": iso_z(utc(now + lifetime)),
           "expires_in": lifetime, "refresh_in": refresh_in(lifetime)}
    if image == "svg":
        out["qr_svg"] = render_svg(text)
    elif image == "png":
        out["qr_png_base64"] = base64.b64encode(render_png(text)).decode()
    return out


def issue_time(rt, *vouchers) -> int:
    """The code's `iat`: now in whole seconds, and later than the `tokens_valid_after` of every
    voucher given (the member's, and the guardian's that shows it: app/services/family.presenter).

    In the second of a reinstatement, a code dated now (rounded down) would be refused from
    birth: scans admit only codes issued after the threshold. Such a code is dated at the next
    whole second instead, less than a second ahead: well inside the 5 s every verifier allows
    (docs/token-format.md), and no worker waits. A threshold more than a second ahead means
    another node's clock runs ahead of this one's; the holder's app is asked to try again."""
    now = rt.clock.now()
    first = max((first_code_second(v) or 0 for v in vouchers), default=0)
    if first - now > 1:
        raise DomainError("service_unavailable", "Try again in a moment",
                          headers={"Retry-After": str(math.ceil(first - now))})
    return max(int(now), first)


def refresh_in(lifetime: int) -> int:
    """Refresh early enough that a slow network never shows an expired code."""
    return max(5, min(lifetime - 10, lifetime * 5 // 6))


# The QR data mask is fixed instead of chosen per code. Choosing tries all eight masks and
# scores each (ISO/IEC 18004 §7.8.3), which is 85 % of zxing-cpp's encoding time (0.42 ms of
# 0.49). Our payload is signature bytes, random-looking under every mask; over 300 random
# tokens, mask 2 scores a median 4 % (p95 19 %) above the best of the eight, and every code
# decodes (bench/qr_mask_penalty.py, tests/api/test_scans.py). docs/decisions.md.
DATA_MASK = 2
QUIET_ZONE = 4  # modules, as the standard asks


def _barcode(text: str):
    import zxingcpp
    return zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode, ec_level="M", data_mask=DATA_MASK)


def _fragment(modules: bytes) -> str:
    """SVG path commands for a run of modules (0 = dark): `hN` draws, `mN 0` skips."""
    out, i = [], 0
    while i < len(modules):
        j = i
        while j < len(modules) and (modules[j] == 0) == (modules[i] == 0):
            j += 1
        out.append(f"h{j - i}" if modules[i] == 0 else f"m{j - i} 0")
        i = j
    return "".join(out)


# Every pattern of up to 8 modules and its path commands: a row becomes a few table lookups.
_CHUNK = 8
_FRAGMENTS = {bytes(p): _fragment(bytes(p)) for k in range(1, _CHUNK + 1)
              for p in itertools.product((0, 255), repeat=k)}


@functools.lru_cache(maxsize=8)
def _chunks(width: int, height: int) -> tuple:
    """(start, end) offsets of each row's chunks in the module matrix, by row."""
    return tuple(tuple((o + i, o + min(i + _CHUNK, width)) for i in range(0, width, _CHUNK))
                 for o in range(0, width * height, width))


def render_svg(text: str) -> str:
    """SVG at ECC level M with a 4-module quiet zone: one stroked path, a row at a time.

    Each row's runs are drawn as horizontal strokes of width 1 (`h`) and skipped (`m`), so the
    path is about half the size of one rectangle per run."""
    view = memoryview(_barcode(text).to_image(scale=1, add_quiet_zones=False))
    height, width = view.shape
    raw = view.tobytes()
    get = _FRAGMENTS.__getitem__
    path = f"m-{width} 1".join(["".join([get(raw[a:b]) for a, b in row]) for row in _chunks(width, height)])
    size = width + 2 * QUIET_ZONE
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" shape-rendering="crispEdges">'
            f'<path fill="#fff" d="M0 0h{size}v{size}H0z"/>'
            f'<path stroke="#000" d="M{QUIET_ZONE} {QUIET_ZONE + 0.5}{path}"/></svg>')


def render_png(text: str, scale: int = 6) -> bytes:
    from PIL import Image
    view = memoryview(_barcode(text).to_image(scale=scale, add_quiet_zones=True))
    buf = io.BytesIO()
    Image.frombytes("L", (view.shape[1], view.shape[0]), view.tobytes()).save(buf, format="PNG")
    return buf.getvalue()
