"""JWS compact signing/verification on a private PyJWS instance that also knows SM2SM3.

The SM2 algorithm is registered on our own PyJWS object, never on PyJWT's global one, so
importing this module changes nothing for other PyJWT users in the process.
"""

from __future__ import annotations

import base64
import json

import jwt
from jwt.algorithms import Algorithm
from jwt.exceptions import InvalidSignatureError, InvalidTokenError

from . import keyring
from .keyring import SigningKey

MAX_TOKEN_CHARS = 4096  # far above any token we issue; bounds the work for junk input


class SM2SM3(Algorithm):
    """SM2 with SM3 and the default user id; raw 64-byte r||s signatures (like ES256)."""

    def prepare_key(self, key):
        if not isinstance(key, SigningKey) or key.alg != "SM2":
            raise jwt.InvalidKeyError("SM2SM3 needs an SM2 SigningKey")
        return key

    def sign(self, msg: bytes, key: SigningKey) -> bytes:
        return key.sign(msg)

    def verify(self, msg: bytes, key: SigningKey, sig: bytes) -> bool:
        return key.verify(msg, sig)

    @staticmethod
    def to_jwk(key_obj: SigningKey, as_dict: bool = False):
        jwk = keyring.to_jwk(key_obj)
        return jwk if as_dict else json.dumps(jwk)

    @staticmethod
    def from_jwk(jwk):
        data = json.loads(jwk) if isinstance(jwk, str) else jwk
        if data.get("kty") != "EC" or data.get("crv") != "SM2":
            raise jwt.InvalidKeyError("not an SM2 JWK")
        public = _b64decode(data["x"]) + _b64decode(data["y"])
        return SigningKey(data.get("kid") or keyring.kid_for("SM2", public), "SM2", public)


def _b64decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


_jws = jwt.PyJWS(algorithms=["EdDSA", "ES256"])
_jws.register_algorithm("SM2SM3", SM2SM3())


class JwsError(ValueError):
    """code: "malformed" or "signature"."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


def _sign_key(key: SigningKey):
    if key.private is None:
        raise ValueError(f"key {key.kid} has no private part")
    return key if key.alg == "SM2" else keyring._private_obj(key.alg, key.private)


def _verify_key(key: SigningKey):
    return key if key.alg == "SM2" else keyring._public_obj(key.alg, key.public)


def sign(key: SigningKey, claims: dict, typ: str) -> str:
    """Compact JWS with header {alg, kid, typ}."""
    body = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode()
    return _jws.encode(body, _sign_key(key), algorithm=key.jose_alg, headers={"kid": key.kid, "typ": typ})


def header(text: str) -> dict:
    """Unverified protected header; JwsError("malformed") if it cannot be parsed."""
    # A compact JWS is ASCII (base64url and dots); anything else, a lone surrogate included
    # (PyJWT's UTF-8 encoding of it raises UnicodeEncodeError), is refused here.
    if not isinstance(text, str) or len(text) > MAX_TOKEN_CHARS or not text.isascii() or text.count(".") != 2:
        raise JwsError("malformed")
    try:
        head = _jws.get_unverified_header(text)
    except InvalidTokenError:
        raise JwsError("malformed") from None
    # We define no extensions: "crit" (and b64=false, which needs it) is refused outright.
    if not isinstance(head.get("kid"), str) or not isinstance(head.get("alg"), str) or "crit" in head or "b64" in head:
        raise JwsError("malformed")
    return head


def verify(text: str, key: SigningKey) -> dict:
    """Claims of a JWS signed by key, pinned to key's algorithm; JwsError otherwise."""
    try:
        decoded = _jws.decode_complete(text, _verify_key(key), algorithms=[key.jose_alg])
    except InvalidSignatureError:
        raise JwsError("signature") from None
    except jwt.InvalidAlgorithmError:
        raise JwsError("signature") from None
    except InvalidTokenError:
        raise JwsError("malformed") from None
    try:
        claims = json.loads(decoded["payload"])
    except (UnicodeDecodeError, ValueError):
        raise JwsError("malformed") from None
    if not isinstance(claims, dict):
        raise JwsError("malformed")
    return claims
