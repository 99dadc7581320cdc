"""QR tokens: round trips, sizes, and every attack the verifier must refuse."""

import base64
import dataclasses
import hashlib
import hmac
import json
import random
import re

import base45
import pytest
from cryptography.hazmat.primitives import serialization

from crypto import ev1, keyring, tokens
from crypto.tokens import TokenError

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z

QR_ALNUM = re.compile(r"[0-9A-Z $%*+\-./:]+")
CODES = {"token_malformed", "token_signature_invalid", "token_unknown_key", "token_expired"}


def _issue(key, fmt="ev1", actor=None, **over):
    fields = dict(voucher_id=tokens.new_voucher_id(), region="410700", iat=NOW, lifetime=60,
                  token_id=tokens.new_token_id(), actor=actor, fmt=fmt)
    fields.update(over)
    return tokens.issue(key, **fields)


def test_base45_codec_agrees_with_the_base45_package():
    """crypto/ev1.py encodes and decodes base45 by table; the `base45` package (RFC 9285, one
    character at a time) must agree on every length, and both refuse the same bad text."""
    rfc9285 = {b"AB": "BB8", b"Hello!!": "%69 VD92EX0", b"base-45": "UJCLQE7W581", b"ietf!": "QED8WEX0"}
    for data, text in rfc9285.items():  # the RFC's own examples (§4.3, §4.4)
        assert ev1.b45encode(data) == text and ev1.b45decode(text) == data
    rng = random.Random(9285)
    for length in range(0, 130):
        for _ in range(8):
            data = bytes(rng.randrange(256) for _ in range(length))
            text = ev1.b45encode(data)
            assert text == base45.b45encode(data).decode()
            assert ev1.b45decode(text) == data
    assert ev1.b45encode(b"\xff\xff") == "FGW" and ev1.b45decode("FGW") == b"\xff\xff"
    for bad in ["GGW", ":::", "::", "A", "ABCD", "AB:", "ab", "ÄB"]:
        with pytest.raises(ValueError):
            ev1.b45decode(bad)
        with pytest.raises(ValueError):
            base45.b45decode(bad)
    # The package strips a trailing newline; ours takes the exact alphabet only.
    with pytest.raises(ValueError):
        ev1.b45decode("AB\n")
    # Every other character, at each place of a group, whatever its encoding: Latin-1, a wider
    # character, a lone surrogate.
    outside = [chr(c) for c in range(0x180) if chr(c) not in ev1._ALPHABET] + ["中", "\ud800", "\U0001f600"]
    for c in outside:
        for bad in (c + "BB8", "B" + c + "B8", "BB" + c + "8", "BB8" + c + "0"):
            with pytest.raises(ValueError, match="alphabet"):
                ev1.b45decode(bad)


def _code(text, ring, now=NOW + 1, **kw):
    with pytest.raises(TokenError) as info:
        tokens.verify(text, ring, now, **kw)
    return info.value.code


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jws(header: dict, claims: dict, sign) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


def _claims(**over):
    c = {"iss": "evoucher", "sub": tokens.new_voucher_id(), "rgn": "110000", "iat": NOW, "exp": NOW + 60,
         "jti": tokens.new_token_id()}
    c.update(over)
    return c


@pytest.mark.parametrize("fmt", ["ev1", "jwt"])
@pytest.mark.parametrize("alg", keyring.ALGORITHMS)
@pytest.mark.parametrize("with_actor", [False, True])
def test_round_trip(keys, ring, fmt, alg, with_actor):
    actor = tokens.new_voucher_id() if with_actor else None
    vid, tid = tokens.new_voucher_id(), tokens.new_token_id()
    text = _issue(keys[alg], fmt, actor, voucher_id=vid, token_id=tid)
    claims = tokens.verify(text, ring, NOW + 1)
    assert claims == tokens.TokenClaims(fmt, alg, keys[alg].kid, vid, "410700", NOW, 60, tid, actor)
    assert claims.exp == NOW + 60


@pytest.mark.parametrize("alg", keyring.ALGORITHMS)
def test_ev1_size_and_alphabet(keys, alg):
    plain, with_actor = _issue(keys[alg]), _issue(keys[alg], actor=tokens.new_voucher_id())
    assert len(plain) == 150 and len(with_actor) == 165
    assert plain.startswith("EV1:") and QR_ALNUM.fullmatch(plain) and QR_ALNUM.fullmatch(with_actor)


def test_jwt_shape(keys):
    actor = tokens.new_voucher_id()
    head, body, _ = _issue(keys["ES256"], "jwt", actor).split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    assert json.loads(base64.urlsafe_b64decode(pad(head))) == {"alg": "ES256", "kid": keys["ES256"].kid,
                                                                "typ": "evoucher+jwt"}
    claims = json.loads(base64.urlsafe_b64decode(pad(body)))
    assert set(claims) == {"iss", "sub", "rgn", "iat", "exp", "jti", "act"}
    assert claims["act"] == {"sub": actor} and claims["exp"] - claims["iat"] == 60


def test_every_single_bit_flip_of_ev1_bytes_fails(keys, ring):
    raw = base45.b45decode(_issue(keys["Ed25519"], actor=tokens.new_voucher_id())[4:])
    for i in range(len(raw) * 8):
        flipped = bytearray(raw)
        flipped[i // 8] ^= 1 << (i % 8)
        assert _code("EV1:" + base45.b45encode(bytes(flipped)).decode(), ring) in CODES, f"bit {i}"


def test_text_must_be_exact(keys, ring):
    text = _issue(keys["Ed25519"])
    raw = base45.b45decode(text[4:])
    for bad in (text.lower(), "ev1:" + text[4:], text + "\n", " " + text, text[:-1], text[:-3],
                text[:100], "EV1:", "EV1:" + base45.b45encode(raw + b"\x00").decode(),
                "EV1:" + base45.b45encode(raw[:-1]).decode(), "EV1:" + text[4:-2] + "::"):
        assert _code(bad, ring) == "token_malformed", repr(bad)


@pytest.mark.parametrize("byte0,byte1", [(0x21, 0), (0x01, 0), (0x14, 0), (0x10, 0), (0x11, 0x02), (0x11, 0x80)])
def test_unknown_version_alg_or_flags_are_malformed(keys, ring, byte0, byte1):
    key = keys["Ed25519"]
    signed = bytearray(ev1.payload("Ed25519", key.kid, NOW, 60, "110000", tokens.new_voucher_id(),
                                   tokens.new_token_id(), None))
    signed[0], signed[1] = byte0, byte1
    assert _code(ev1.encode(bytes(signed), key.sign(bytes(signed))), ring) == "token_malformed"


def test_actor_flag_must_match_length(keys, ring):
    key = keys["Ed25519"]
    signed = bytearray(ev1.payload("Ed25519", key.kid, NOW, 60, "110000", tokens.new_voucher_id(),
                                   tokens.new_token_id(), tokens.new_voucher_id()))
    signed[1] = 0  # claims no actor but carries one
    assert _code(ev1.encode(bytes(signed), key.sign(bytes(signed))), ring) == "token_malformed"


@pytest.mark.parametrize("fmt", ["ev1", "jwt"])
def test_unknown_kid(keys, fmt):
    other = keyring.generate("Ed25519")
    ring = keyring.Keyring([keys["Ed25519"]], keys["Ed25519"].kid)
    assert _code(_issue(other, fmt), ring) == "token_unknown_key"


def test_ev1_known_kid_with_other_alg(keys, ring):
    ed, es = keys["Ed25519"], keys["ES256"]
    signed = ev1.payload("ES256", ed.kid, NOW, 60, "110000", tokens.new_voucher_id(), tokens.new_token_id(), None)
    assert _code(ev1.encode(signed, es.sign(signed)), ring) == "token_signature_invalid"


def test_jwt_known_kid_with_other_alg(keys, ring):
    header = {"alg": "ES256", "kid": keys["Ed25519"].kid, "typ": "evoucher+jwt"}
    assert _code(_jws(header, _claims(), keys["ES256"].sign), ring) == "token_signature_invalid"


def test_jwt_alg_none(keys, ring):
    header = {"alg": "none", "kid": keys["Ed25519"].kid, "typ": "evoucher+jwt"}
    assert _code(_jws(header, _claims(), lambda _: b""), ring) == "token_signature_invalid"
    assert _code(_jws({"alg": "none", "typ": "evoucher+jwt"}, _claims(), lambda _: b""), ring) == "token_malformed"


@pytest.mark.parametrize("alg", keyring.ALGORITHMS)
def test_jwt_hs256_signed_with_the_public_key(keys, ring, alg):
    key = keys[alg]
    secrets = [key.public, json.dumps(keyring.to_jwk(key)).encode()]
    if alg != "SM2":
        obj = keyring._public_obj(alg, key.public)
        secrets.append(obj.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    for secret in secrets:
        header = {"alg": "HS256", "kid": key.kid, "typ": "evoucher+jwt"}
        text = _jws(header, _claims(), lambda m: hmac.new(secret, m, hashlib.sha256).digest())
        assert _code(text, ring) == "token_signature_invalid"


@pytest.mark.parametrize("fmt", ["ev1", "jwt"])
def test_expiry_and_future_iat(keys, ring, fmt):
    text = _issue(keys["Ed25519"], fmt, lifetime=60)
    assert tokens.verify(text, ring, NOW + 65).iat == NOW  # within skew after exp
    assert _code(text, ring, now=NOW + 66) == "token_expired"
    assert tokens.verify(text, ring, NOW - 5).iat == NOW  # iat within skew ahead of us
    assert _code(text, ring, now=NOW - 6) == "token_expired"
    assert _code(text, ring, now=NOW + 61, skew=0) == "token_expired"


def test_retired_key_no_longer_verifies(keys):
    key = dataclasses.replace(keys["Ed25519"], not_after=NOW + 30)
    ring = keyring.Keyring([key], key.kid)
    text = _issue(key)
    assert tokens.verify(text, ring, NOW + 30).kid == key.kid
    assert _code(text, ring, now=NOW + 31) == "token_unknown_key"


def test_jwt_tampering(keys, ring):
    text = _issue(keys["SM2"], "jwt")
    head, body, sig = text.split(".")
    forged = _b64(json.dumps(_claims()).encode())
    assert _code(f"{head}.{forged}.{sig}", ring) == "token_signature_invalid"
    assert _code(f"{head}.{body}.{sig[:-2]}AA", ring) == "token_signature_invalid"
    for bad in (text + ".", "a.b.c", "", text.replace(".", "", 1), "x" * 5000):
        assert _code(bad, ring) == "token_malformed"


def test_jwt_with_a_character_outside_ascii_is_malformed_not_an_exception(keys, ring):
    """A JWS compact token is ASCII. A lone surrogate (which no UTF-8 encoder takes) or any other
    non-ASCII character anywhere in JWT-shaped text is token_malformed, never a UnicodeError; an
    access token likewise is refused as unauthorized."""
    text = _issue(keys["Ed25519"], "jwt")
    head, body, sig = text.split(".")
    for odd in ("\ud800", "\udfff", "\u4e2d", "\u00e9"):
        for bad in (f"{head}{odd}.{body}.{sig}", f"{head}.{body}{odd}.{sig}", f"{head}.{body}.{sig}{odd}"):
            assert _code(bad, ring) == "token_malformed"
            with pytest.raises(TokenError) as exc:
                tokens.verify_access(bad, ring, audience="institution", now=NOW)
            assert exc.value.code == "unauthorized"


def test_jwt_wrong_typ_issuer_or_claims_are_malformed(keys, ring):
    key = keys["Ed25519"]
    sign = key.sign
    header = {"alg": "EdDSA", "kid": key.kid, "typ": "evoucher+jwt"}
    access = tokens.issue_access(key, subject="H110000001", audience="institution", ttl=600, now=NOW)
    assert _code(access, ring) == "token_malformed"
    assert _code(_jws({**header, "typ": "JWT"}, _claims(), sign), ring) == "token_malformed"
    assert _code(_jws({**header, "crit": ["exp"]}, _claims(), sign), ring) == "token_malformed"
    for bad in (_claims(iss="other"), _claims(sub="lowercase-id-xyz"), _claims(rgn=110000), _claims(iat=True),
                _claims(exp=NOW), _claims(jti="XYZ"), _claims(act="NOTANOBJECT"), _claims(act={"sub": 1})):
        assert _code(_jws(header, bad, sign), ring) == "token_malformed", bad
    assert _code(_issue(key, "jwt"), ring, issuer="someone-else") == "token_malformed"


def test_issue_refuses_bad_fields(keys):
    key = keys["Ed25519"]
    for over in ({"voucher_id": "abc"}, {"voucher_id": "A" * 15 + "1"}, {"region": "11000"}, {"region": "11000a"},
                 {"token_id": "ABCDEF0123456789"}, {"lifetime": 0}, {"lifetime": 70000}, {"iat": -1},
                 {"iat": 1.5}, {"actor": "short"}, {"fmt": "cbor"}):
        with pytest.raises(ValueError):
            _issue(key, **over)
    with pytest.raises(ValueError):
        _issue(dataclasses.replace(key, private=None))


def test_ids_are_random_and_well_formed():
    vids = {tokens.new_voucher_id() for _ in range(200)}
    tids = {tokens.new_token_id() for _ in range(200)}
    assert len(vids) == len(tids) == 200
    assert all(re.fullmatch(r"[A-Z2-7]{16}", v) and len(base64.b32decode(v)) == 10 for v in vids)
    assert all(re.fullmatch(r"[0-9a-f]{16}", t) for t in tids)


def test_ev1_text_never_starts_or_ends_with_whitespace(keys):
    # Odd byte counts end in a one-byte base45 group, whose last character is 0-5, so a
    # caller may strip() scanned text safely.
    for _ in range(200):
        for actor in (None, tokens.new_voucher_id()):
            text = _issue(keys["Ed25519"], actor=actor)
            assert text == text.strip() and text[-1] in "012345"


def _garbage(rnd: random.Random, keys) -> tuple[str, str]:
    """One random input of the shapes a scanner could hand over: random ev1 bytes, a real token
    cut, stretched or with bytes swapped in, random text, and JWTs whose header and claims are
    JSON of any type (a kid that is a number, an alg that is a list, claims that are a string).
    Returns the input and the real token it was made beside."""
    real = _issue(keys[rnd.choice(sorted(keys))], fmt=rnd.choice(["ev1", "jwt"]),
                  actor=rnd.choice([None, tokens.new_voucher_id()]))
    json_values = [None, True, 0, -1, 2 ** 70, 1.5, "", "x" * 300, [], {}, ["RS256"], {"alg": "none"},
                   keys["Ed25519"].kid, "EdDSA", "ES256", "SM2", "none", "HS256", "evoucher+jwt"]
    shape = rnd.randrange(6)
    if shape == 0:
        return "EV1:" + base45.b45encode(rnd.randbytes(rnd.randrange(0, 140))).decode(), real
    if shape == 1:
        cut = rnd.randrange(len(real))
        return real[:cut] + real[cut + rnd.randrange(1, 4):], real
    if shape == 2:
        i = rnd.randrange(len(real))
        swapped = chr(rnd.choice([0, 10, 32, 46, 58, 0xD7FF, 0x7F, 0x4E2D, rnd.randrange(32, 127)]))
        return real[:i] + swapped + real[i + 1:], real
    if shape == 3:
        return "".join(chr(rnd.randrange(0, 0x3000)) for _ in range(rnd.randrange(0, 200))), real
    head = {k: rnd.choice(json_values) for k in rnd.sample(["alg", "kid", "typ", "crit", "b64"], rnd.randrange(0, 5))}
    head = head if shape == 4 else rnd.choice(json_values)
    claims = rnd.choice([{"iss": "evoucher", "sub": rnd.choice(json_values), "rgn": rnd.choice(json_values),
                          "iat": rnd.choice(json_values), "exp": rnd.choice(json_values),
                          "jti": rnd.choice(json_values), "act": rnd.choice(json_values)}] + json_values)
    segments = [_b64(json.dumps(head).encode()), _b64(json.dumps(claims).encode()),
                _b64(rnd.randbytes(rnd.choice([0, 64, 65, 71])))]
    return ".".join(segments[:rnd.choice([1, 2, 3, 3, 3])] + [""] * rnd.choice([0, 0, 1])), real


def test_random_input_is_refused_with_a_token_code_and_nothing_else(keys, ring):
    """3,000 seeded random inputs: each is refused with one of the token codes, or, where a
    swapped character left the token as it was, verifies as exactly the real token it was made
    beside; no other exception escapes the verifier."""
    rnd = random.Random(20261122)
    refused = 0
    for n in range(3000):
        text, real = _garbage(rnd, keys)
        try:
            claims = tokens.verify(text, ring, NOW)
        except TokenError as exc:
            assert exc.code in CODES, (n, text[:80])
            refused += 1
        else:
            assert claims == tokens.verify(real, ring, NOW), (n, text[:80])
    assert refused > 2900
