"""Regenerate docs/token-vectors.json: `python -m crypto.vectors [PATH]`.

Keys are derived from fixed labels so the key ids and JWKS never change; ES256 and SM2
signatures are randomised, so their tokens change on every run (vectors are verify-only).
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path

from . import ev1, keyring, tokens

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "docs" / "token-vectors.json"
ISSUER = "evoucher"
IAT = 1767225600  # 2026-01-01T00:00:00Z
LIFETIME = 60
REGION = "320682"
VOUCHER_ID = base64.b32encode(bytes.fromhex("0123456789abcdef0123")).decode()
ACTOR_ID = base64.b32encode(bytes.fromhex("fedcba9876543210fedc")).decode()
TOKEN_ID = "0011223344556677"
_ORDERS = {
    "ES256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "SM2": 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123,
}


def fixed_key(alg: str) -> keyring.SigningKey:
    """The test-vector key for alg (never use it for anything else)."""
    seed = hashlib.sha256(f"evoucher token test vector key {alg}".encode()).digest()
    if alg != "Ed25519":  # map into [1, n-2]: a valid scalar for both curves
        seed = (int.from_bytes(seed, "big") % (_ORDERS[alg] - 2) + 1).to_bytes(32, "big")
    return keyring.from_private(alg, seed)


def _vector(key: keyring.SigningKey, fmt: str, actor: str | None) -> dict:
    text = tokens.issue(key, voucher_id=VOUCHER_ID, region=REGION, iat=IAT, lifetime=LIFETIME,
                        token_id=TOKEN_ID, actor=actor, fmt=fmt, issuer=ISSUER)
    fields = {"alg": key.alg, "kid": key.kid, "voucher_id": VOUCHER_ID, "region": REGION, "iat": IAT,
              "lifetime": LIFETIME, "exp": IAT + LIFETIME, "token_id": TOKEN_ID, "actor": actor}
    out = {"name": f"{fmt}/{key.alg}/{'actor' if actor else 'self'}", "format": fmt, "alg": key.alg,
           "jwk": keyring.to_jwk(key), "token": text, "fields": fields, "verify_at": IAT + 10}
    if fmt == "ev1":
        tok = ev1.decode(text)
        out["signed_hex"], out["signature_hex"] = tok.signed.hex(), tok.signature.hex()
    else:
        head, body, _ = text.split(".")
        out["header"] = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
        out["claims"] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return out


def build() -> dict:
    """The whole vector document."""
    keys = [fixed_key(alg) for alg in keyring.ALGORITHMS]
    return {
        "about": "Test vectors for docs/token-format.md. Verify each token with the JWK, "
                 "at time verify_at, issuer " + ISSUER + ". Regenerate: python -m crypto.vectors",
        "issuer": ISSUER,
        "jwks": {"keys": [keyring.to_jwk(k) for k in keys]},
        "vectors": [_vector(k, fmt, actor) for fmt in ("ev1", "jwt") for k in keys for actor in (None, ACTOR_ID)],
    }


def main(argv: list[str]) -> None:
    path = Path(argv[0]) if argv else DEFAULT_PATH
    path.write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
