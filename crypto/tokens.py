"""QR tokens (ev1, jwt) and access tokens: issue, and verify with one opaque error type.

Every QR failure is a TokenError whose code is one of token_malformed,
token_signature_invalid, token_unknown_key, token_expired (a token whose iat is more than
`skew` seconds in the future is also token_expired: it is outside its validity window).
Every access-token failure is TokenError("unauthorized").
"""

from __future__ import annotations

import base64
import os
import re
from typing import NamedTuple

from . import ev1, jws
from .keyring import JOSE_ALG, Keyring, SigningKey

QR_TYP = "evoucher+jwt"
ACCESS_TYP = "at+jwt"  # RFC 9068
ACCESS_SKEW = 5  # seconds an access token's iat may be ahead of this node's clock
_ALG_FROM_JOSE = {jose: alg for alg, jose in JOSE_ALG.items()}
VOUCHER_ID = re.compile(r"[A-Z2-7]{16}")  # what new_voucher_id makes
_TOKEN_ID = re.compile(r"[0-9a-f]{16}")
_REGION = re.compile(r"[0-9]{6}")


class TokenError(Exception):
    """A token was refused; `code` says why (never more)."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


class TokenClaims(NamedTuple):  # a tuple: built on every scan, in a third of a frozen dataclass's time
    format: str  # "ev1" | "jwt"
    alg: str  # "Ed25519" | "ES256" | "SM2"
    kid: str
    voucher_id: str
    region: str
    iat: int
    lifetime: int
    token_id: str
    actor: str | None = None  # voucher id of the guardian presenting a member's code

    @property
    def exp(self) -> int:
        return self.iat + self.lifetime


def new_voucher_id() -> str:
    """Random voucher id: RFC 4648 base32 of 10 random bytes (16 chars, no padding)."""
    return base64.b32encode(os.urandom(10)).decode()


def new_token_id() -> str:
    """Random token id: 8 random bytes as 16 lowercase hex characters."""
    return os.urandom(8).hex()


def issue(key: SigningKey, *, voucher_id: str, region: str, iat: int, lifetime: int, token_id: str,
          actor: str | None = None, fmt: str = "ev1", issuer: str = "evoucher") -> str:
    """Signed QR token text in format fmt ("ev1" or "jwt")."""
    if type(iat) is not int or type(lifetime) is not int:
        raise ValueError("iat and lifetime must be integers")
    # ev1.payload validates every field, so both formats accept exactly the same values.
    signed = ev1.payload(key.alg, key.kid, iat, lifetime, region, voucher_id, token_id, actor)
    if fmt == "ev1":
        return ev1.encode(signed, key.sign(signed))
    if fmt == "jwt":
        claims = {"iss": issuer, "sub": voucher_id, "rgn": region, "iat": iat, "exp": iat + lifetime, "jti": token_id}
        if actor:
            claims["act"] = {"sub": actor}  # RFC 8693 actor claim
        return jws.sign(key, claims, QR_TYP)
    raise ValueError(f"unknown token format {fmt!r}")


def _key(keyring: Keyring, kid: str, alg: str | None, now: int) -> SigningKey:
    key = keyring.get(kid)
    if key is None or (key.not_after is not None and now > key.not_after):
        raise TokenError("token_unknown_key")
    if key.alg != alg:  # pin: the key decides the algorithm, never the token
        raise TokenError("token_signature_invalid")
    return key


def _verify_ev1(text: str, keyring: Keyring, now: int) -> TokenClaims:
    try:
        tok = ev1.decode(text)
    except ev1.Malformed:
        raise TokenError("token_malformed") from None
    key = _key(keyring, tok.kid, tok.alg, now)
    if not key.verify(tok.signed, tok.signature):
        raise TokenError("token_signature_invalid")
    return TokenClaims("ev1", tok.alg, tok.kid, tok.voucher_id, tok.region, tok.iat, tok.lifetime,
                       tok.token_id, tok.actor)


def _verify_jwt(text: str, keyring: Keyring, now: int, issuer: str) -> TokenClaims:
    try:
        head = jws.header(text)
        if head.get("typ") != QR_TYP:
            raise TokenError("token_malformed")
        key = _key(keyring, head["kid"], _ALG_FROM_JOSE.get(head["alg"]), now)
        c = jws.verify(text, key)
    except jws.JwsError as exc:
        raise TokenError("token_signature_invalid" if exc.code == "signature" else "token_malformed") from None
    act = c.get("act")
    actor = act.get("sub") if isinstance(act, dict) else None
    ok = (
        c.get("iss") == issuer
        and isinstance(c.get("sub"), str) and VOUCHER_ID.fullmatch(c["sub"])
        and isinstance(c.get("rgn"), str) and _REGION.fullmatch(c["rgn"])
        and type(c.get("iat")) is int and type(c.get("exp")) is int
        and 0 < c["exp"] - c["iat"] < 2**16
        and isinstance(c.get("jti"), str) and _TOKEN_ID.fullmatch(c["jti"])
        and (act is None or (isinstance(actor, str) and VOUCHER_ID.fullmatch(actor)))
    )
    if not ok:
        raise TokenError("token_malformed")
    return TokenClaims("jwt", key.alg, key.kid, c["sub"], c["rgn"], c["iat"], c["exp"] - c["iat"], c["jti"], actor)


def verify(text: str, keyring: Keyring, now: int, *, skew: int = 5, issuer: str = "evoucher") -> TokenClaims:
    """Verify a QR token of either format (detected from the text) at time now."""
    if isinstance(text, str) and text.startswith(ev1.PREFIX):
        claims = _verify_ev1(text, keyring, now)
    else:
        claims = _verify_jwt(text, keyring, now, issuer)
    # Signature first, then time: a forged token never learns whether its times would pass.
    if claims.iat > now + skew or now > claims.exp + skew:
        raise TokenError("token_expired")
    return claims


def issue_access(key: SigningKey, *, subject: str, audience: str, ttl: int, now: int,
                 claims: dict | None = None, issuer: str = "evoucher") -> str:
    """RFC 9068-style access token (typ at+jwt) for subject, valid ttl seconds."""
    body = {"iss": issuer, "sub": subject, "aud": audience, "iat": now, "exp": now + ttl, "jti": new_token_id()}
    extra = dict(claims or {})
    if extra.keys() & body.keys():
        raise ValueError("extra claims may not override registered claims")
    return jws.sign(key, {**body, **extra}, ACCESS_TYP)


def verify_access(text: str, keyring: Keyring, *, audience: str, now: int, issuer: str = "evoucher") -> dict:
    """Claims of a valid access token for audience; TokenError("unauthorized") otherwise."""
    try:
        head = jws.header(text)
        if head.get("typ") != ACCESS_TYP:  # a QR token is never an access token
            raise TokenError("unauthorized")
        key = _key(keyring, head["kid"], _ALG_FROM_JOSE.get(head["alg"]), now)
        c = jws.verify(text, key)
    except (jws.JwsError, TokenError):
        raise TokenError("unauthorized") from None
    ok = (
        c.get("iss") == issuer
        and c.get("aud") == audience
        and isinstance(c.get("sub"), str)
        and type(c.get("iat")) is int and type(c.get("exp")) is int
        and c["iat"] <= now + ACCESS_SKEW and now < c["exp"]
    )
    if not ok:
        raise TokenError("unauthorized")
    return c
