"""Bearer access tokens for institutions and holders."""
from __future__ import annotations

from functools import wraps

from flask import g, request

from crypto.tokens import TokenError, verify_access

from ..errors import DomainError
from ..extensions import runtime
from ..services import keys

INSTITUTION_AUD = "evoucher:institution"
HOLDER_AUD = "evoucher:holder"


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise DomainError("unauthorized", "A Bearer access token is required",
                          headers={"WWW-Authenticate": 'Bearer realm="evoucher"'})
    return value.strip()


def claims_for(audience: str) -> dict:
    rt = runtime()
    token = _bearer()
    now = rt.clock.now()
    # A verified access token is remembered until it expires: the signature check is the same
    # answer every time, and callers present the same token for minutes.
    cache = rt.caches.setdefault("access", {})
    hit = cache.get((audience, token))
    if hit is not None and hit["exp"] >= now:
        return hit
    claims = _verify(rt, token, audience)
    if len(cache) > 20_000:
        cache.clear()
    cache[(audience, token)] = claims
    return claims


def _verify(rt, token: str, audience: str) -> dict:
    ring = keys.keyring(rt, rt.session())
    try:
        return verify_access(token, ring, audience=audience, now=int(rt.clock.now()),
                             issuer=rt.config.issuer)
    except TokenError:
        # A key rotated in another process may not be in this worker's cache yet.
        ring = keys.keyring(rt, rt.session(), refresh=True)
        try:
            return verify_access(token, ring, audience=audience, now=int(rt.clock.now()),
                                 issuer=rt.config.issuer)
        except TokenError as exc:
            raise DomainError("unauthorized", "The access token is invalid or expired",
                              headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from exc


def institution_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        g.auth = claims_for(INSTITUTION_AUD)
        return view(*args, **kwargs)
    return wrapper


def holder_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        g.auth = claims_for(HOLDER_AUD)
        return view(*args, **kwargs)
    return wrapper
