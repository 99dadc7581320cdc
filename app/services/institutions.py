"""Institutions (定点医药机构): registration and client-credentials authentication."""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import DomainError
from ..extensions import cache_put
from ..store.models import Institution
from ..text import plain_text

KINDS = ("hospital", "pharmacy")
CODE = re.compile(r"[A-Za-z0-9]{1,32}")


def _hash_secret(secret: str) -> str:
    # Client secrets are 256-bit random values, so a fast hash is enough (unlike PINs).
    return "sha256$" + hashlib.sha256(secret.encode()).hexdigest()


def secret_tag(secret_hash: str) -> str:
    """Names the client secret an access token was got with (its `sv` claim): a new secret ends
    the tokens the old one got. A hash of the stored hash, so the token tells nothing of either."""
    return hashlib.sha256(b"evoucher-secret-tag:" + secret_hash.encode()).hexdigest()[:16]


def add(session: Session, *, code: str, name: str, kind: str, region_code: str,
        status: str | None = None) -> tuple[Institution, str]:
    """Register (or re-key) an institution; returns it with its new client secret, shown once.

    A new institution is active unless `status` says otherwise; an existing one keeps its status
    unless `status` is given: re-keying a deactivated institution (its secret leaked, say) must
    not let it scan again."""
    if not CODE.fullmatch(code or ""):
        raise ValueError("institution code must be 1-32 letters or digits")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    if not re.fullmatch(r"\d{6}", region_code or "", re.ASCII):
        raise ValueError("region code must be 6 digits")
    if not name or not name.strip() or len(name) > 128:
        raise ValueError("name must be 1-128 characters, not blank")
    if not plain_text(name):
        raise ValueError("name must not contain control characters or invalid text")
    secret = secrets.token_urlsafe(32)
    inst = session.scalars(select(Institution).where(Institution.code == code)).first()
    if inst is None:
        inst = Institution(code=code, client_id="inst_" + secrets.token_hex(8))
        session.add(inst)
    inst.name, inst.kind, inst.region_code = name, kind, region_code
    inst.status = status or inst.status or "active"
    inst.secret_hash = _hash_secret(secret)
    session.flush()
    return inst, secret


def authenticate(session: Session, client_id: str, secret: str) -> Institution:
    """The institution for these client credentials; refuses wrong secrets and inactive ones."""
    inst = session.scalars(select(Institution).where(Institution.client_id == client_id)).first()
    expected = inst.secret_hash if inst else _hash_secret(secrets.token_urlsafe(32))
    if not hmac.compare_digest(expected, _hash_secret(secret)) or inst is None:
        raise DomainError("unauthorized", "Unknown client or wrong secret",
                          headers={"WWW-Authenticate": 'Basic realm="evoucher"'}, error="invalid_client")
    if inst.status != "active":  # `error`: RFC 6749 §5.2, read by OAuth client libraries
        raise DomainError("institution_inactive", "This institution may not scan", error="unauthorized_client")
    return inst


def by_code(session: Session, code: str) -> Institution | None:
    # A code no institution can have is not looked up: the database driver cannot even encode
    # some (a lone surrogate from an argv that is not UTF-8; a NUL on PostgreSQL).
    if not CODE.fullmatch(code):
        return None
    return session.scalars(select(Institution).where(Institution.code == code)).first()


@dataclass(frozen=True)
class InstitutionView:
    id: int
    code: str
    kind: str
    region_code: str
    status: str
    secret_tag: str


CACHE_SECONDS = 5.0


def cached(rt, code: str) -> InstitutionView | None:
    """An institution as seen at most 5 s ago: a scan-path read saved per request.

    A deactivation or a new client secret therefore stops its tokens within 5 seconds
    (docs/decisions.md)."""
    cache = rt.caches.setdefault("institutions", {})
    now = rt.clock.now()
    hit = cache.get(code)
    if hit is not None and now - hit[1] <= CACHE_SECONDS:
        return hit[0]
    inst = by_code(rt.session(), code)
    view = (InstitutionView(inst.id, inst.code, inst.kind, inst.region_code, inst.status,
                            secret_tag(inst.secret_hash)) if inst else None)
    cache_put(cache, code, (view, now), 10_000)
    return view
