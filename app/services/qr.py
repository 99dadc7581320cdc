"""QR tokens for holders: issue for one's own voucher or a linked member's, render as SVG/PNG."""
from __future__ import annotations

import base64
import io

from sqlalchemy.orm import Session

from crypto import tokens

from .. import metrics
from ..errors import DomainError
from ..store.ephemeral import StoreUnavailable
from ..store.models import Voucher
from . import family, keys, limits, records
from .vouchers import by_public_id, iso_z, require_usable, utc


def issued_group(member_voucher_id: str, guardian_voucher_id: str) -> str:
    """The set of tokens a guardian issued for a member (revoked together when the link ends)."""
    return f"{member_voucher_id}:{guardian_voucher_id}"


def issue(session: Session, rt, holder: Voucher, *, voucher_id: str | None, fmt: str | None,
          image: str | None) -> dict:
    """Sign a short-lived one-use token for the holder's voucher or a linked member's."""
    actor = None
    target = holder
    if voucher_id and voucher_id != holder.voucher_id:
        target = by_public_id(session, voucher_id)
        if not family.active_link(session, holder, target):
            raise DomainError("forbidden", "You may show codes only for yourself and linked family members")
        actor = holder.voucher_id
    require_usable(holder)
    require_usable(target)
    limits.enforce(rt, "issue", target.voucher_id, rt.config.issue_rate_per_minute,
                   "Too many codes requested; wait a moment")
    fmt = fmt or rt.config.token_format
    now = int(rt.clock.now())
    lifetime = rt.config.token_lifetime
    token_id = tokens.new_token_id()
    text = tokens.issue(keys.keyring(rt, session).current, voucher_id=target.voucher_id,
                        region=target.active_region, iat=now, lifetime=lifetime, token_id=token_id,
                        actor=actor, fmt=fmt, issuer=rt.config.issuer)
    if actor:
        try:
            rt.store.remember(issued_group(target.voucher_id, actor), token_id, lifetime + rt.config.clock_skew)
        except StoreUnavailable:
            # Without the set we could not list these tokens in the revocation feed: refuse.
            raise DomainError("service_unavailable", "Try again in a moment",
                              headers={"Retry-After": "1"}) from None
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


def refresh_in(lifetime: int) -> int:
    """Refresh early enough that a slow network never shows an expired code."""
    return max(5, min(lifetime - 10, lifetime * 5 // 6))


def _barcode(text: str):
    import zxingcpp
    return zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode, ec_level="M")


def render_svg(text: str) -> str:
    """SVG at ECC level M with a 4-module quiet zone."""
    return _barcode(text).to_svg(add_quiet_zones=True)


def render_png(text: str, scale: int = 6) -> bytes:
    from PIL import Image
    view = memoryview(_barcode(text).to_image(scale=scale, add_quiet_zones=True))
    buf = io.BytesIO()
    Image.frombytes("L", (view.shape[1], view.shape[0]), view.tobytes()).save(buf, format="PNG")
    return buf.getvalue()
