"""Access tokens (institution client credentials, holder sessions): RFC 9068 shape, one failure code."""

import base64
import json

import pytest

from crypto import keyring, tokens
from crypto.tokens import TokenError

NOW = 1_767_225_600


def _access(key, **over):
    args = dict(subject="H110000001", audience="institution", ttl=600, now=NOW)
    args.update(over)
    return tokens.issue_access(key, **args)


def _refused(text, ring, audience="institution", now=NOW + 1, **kw):
    with pytest.raises(TokenError) as info:
        tokens.verify_access(text, ring, audience=audience, now=now, **kw)
    return info.value.code == "unauthorized"


@pytest.mark.parametrize("alg", keyring.ALGORITHMS)
def test_round_trip_with_extra_claims(keys, ring, alg):
    text = _access(keys[alg], claims={"voucher_id": "AAAAAAAAAAAAAAAA", "scope": "holder"})
    head = json.loads(base64.urlsafe_b64decode(text.split(".")[0] + "=="))
    assert head == {"alg": keyring.JOSE_ALG[alg], "kid": keys[alg].kid, "typ": "at+jwt"}
    claims = tokens.verify_access(text, ring, audience="institution", now=NOW + 1)
    assert claims["sub"] == "H110000001" and claims["aud"] == "institution" and claims["iss"] == "evoucher"
    assert claims["exp"] - claims["iat"] == 600 and len(claims["jti"]) == 16
    assert claims["voucher_id"] == "AAAAAAAAAAAAAAAA" and claims["scope"] == "holder"


def test_extra_claims_cannot_override_registered_ones(keys):
    for name in ("sub", "aud", "exp", "iss", "iat", "jti"):
        with pytest.raises(ValueError):
            _access(keys["Ed25519"], claims={name: "x"})


def test_every_failure_is_unauthorized(keys, ring):
    key = keys["Ed25519"]
    text = _access(key)
    assert _refused(text, ring, audience="holder")
    assert _refused(text, ring, now=NOW + 600)  # exp is exclusive
    assert tokens.verify_access(text, ring, audience="institution", now=NOW + 599)["sub"] == "H110000001"
    assert _refused(_access(key, now=NOW + 100), ring, now=NOW + 94)  # issued in the future
    assert _refused(text, ring, issuer="other")
    head, body, sig = text.split(".")
    assert _refused(f"{head}.{body}.{sig[::-1]}", ring)
    assert _refused(text[:-4], ring)
    assert _refused("", ring) and _refused("not a token", ring) and _refused(None, ring)
    other = keyring.generate("Ed25519")
    assert _refused(_access(other), ring)  # unknown kid


def test_qr_tokens_are_not_access_tokens(keys, ring):
    for fmt in ("ev1", "jwt"):
        qr = tokens.issue(keys["Ed25519"], voucher_id=tokens.new_voucher_id(), region="110000", iat=NOW,
                          lifetime=60, token_id=tokens.new_token_id(), fmt=fmt)
        assert _refused(qr, ring)


def test_alg_none_and_confused_alg_are_unauthorized(keys, ring):
    key = keys["Ed25519"]
    b64 = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    claims = {"iss": "evoucher", "sub": "x", "aud": "institution", "iat": NOW, "exp": NOW + 60, "jti": "0" * 16}
    none = f"{b64({'alg': 'none', 'kid': key.kid, 'typ': 'at+jwt'})}.{b64(claims)}."
    assert _refused(none, ring)
    es = keys["ES256"]
    signing_input = f"{b64({'alg': 'ES256', 'kid': key.kid, 'typ': 'at+jwt'})}.{b64(claims)}"
    sig = base64.urlsafe_b64encode(es.sign(signing_input.encode())).rstrip(b"=").decode()
    assert _refused(f"{signing_input}.{sig}", ring)
