"""Bearer access tokens for institutions and holders."""
from __future__ import annotations

from functools import wraps

from flask import g, request

from crypto.tokens import TokenError, verify_access

from ..errors import DomainError
from ..extensions import cache_put, runtime
from ..services import keys
from ..services.activation import HOLDER_AUD  # the audience holder sessions are issued for

INSTITUTION_AUD = "evoucher:institution"


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
    if hit is not None and now < hit["exp"]:  # the rule verify_access applies
        return hit
    claims = _verify(rt, token, audience)
    cache_put(cache, (audience, token), claims, 20_000)
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


def _bearer_required(audience: str):
    """A view decorator: a valid access token for `audience`, its claims in `g.auth`."""
    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            g.auth = claims_for(audience)
            return view(*args, **kwargs)
        wrapper.bearer_audience = audience  # read by the OpenAPI test: security must be documented
        return wrapper
    return decorate


institution_required = _bearer_required(INSTITUTION_AUD)
holder_required = _bearer_required(HOLDER_AUD)
