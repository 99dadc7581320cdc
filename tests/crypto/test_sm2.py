"""SM2-with-SM3: published vectors, cross-checks with the pure-Python gmssl package, edge cases."""

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from gmssl import sm2 as gmssl_sm2

from crypto import _ec, sm2

# GB/T 32918.2 Annex A example, on the Fp-256 test curve (also draft-shen-sm2-ecdsa-02 and
# OpenSSL test/sm2_internal_test.c).
TEST_CURVE = _ec.Curve(
    name="gbt32918-fp256-test",
    p=0x8542D69E4C044F18E8B92435BF6FF7DE457283915C45517D722EDB8B08F1DFC3,
    a=0x787968B4FA32C3FD2417842E73BBFEFF2F3C848B6831D7E0EC65228B3937E498,
    b=0x63E4C6D3B23B0C849CF84241484BFE48F61D59A5B16BA06E6E12D1DA27C5249A,
    n=0x8542D69E4C044F18E8B92435BF6FF7DD297720630485628D5AE74EE7C32E79B7,
    gx=0x421DEBD61B62EAB6746434EBC3CC315E32220B3BADD50BDC4C4E6C147FEDD43D,
    gy=0x0680512BCBB42C07D47349D2153B70C4E5D7FDFCBFA36EA1A85841B9E46E09A2,
)
ALICE_PRIV = 0x128B2FA8BD433C6C068C8D803DFF79792A519A55171B1B650C23661D15897263
ALICE_PUB = bytes.fromhex(
    "0AE4C7798AA0F119471BEE11825BE46202BB79E2A5844495E97C04FF4DF2548A"
    "7C0240F88F1CD4E16352A73C17B7F16F07353E53A176D684A9FE0C6BB798E857"
)
ALICE_SIG = bytes.fromhex(
    "40F1EC59F793D9F49E09DCEF49130D4194F79FB1EED2CAA55BACDB49C4E755D1"
    "6FC6DAC32C5D5CF10C77DFB20F7C2EB667A457872FB09EC56327A67EC7DEEBE7"
)
ALICE_ID = b"ALICE123@YAHOO.COM"
MSG = b"message digest"

# GB/T 32918.5 / GM/T 0003.5 Annex A example on the recommended curve, default user id.
REC_PRIV = bytes.fromhex("3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8")
REC_SIG = bytes.fromhex(
    "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3"
    "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA"
)
N = sm2.CURVE.n


@pytest.fixture(scope="module")
def keypair():
    priv, pub = sm2.generate_keypair()
    sm2.precompute(pub)
    return priv, pub


def _gmssl(priv: bytes | None, pub: bytes) -> gmssl_sm2.CryptSM2:
    """A gmssl signer/verifier; the key is set after construction because gmssl's constructor
    lstrip("04")s the hex, corrupting keys whose x starts with a 0 or 4 digit."""
    other = gmssl_sm2.CryptSM2(private_key=priv.hex() if priv else None, public_key="")
    other.public_key = pub.hex()
    return other


def _raw(r: int, s: int) -> bytes:
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_annex_example_public_key_is_d_times_g():
    X, Y, Z = _ec.mul(TEST_CURVE, ALICE_PRIV, TEST_CURVE.gx, TEST_CURVE.gy)
    ((x, y),) = _ec.to_affine_many(TEST_CURVE, [(X, Y, Z)])
    assert x.to_bytes(32, "big") + y.to_bytes(32, "big") == ALICE_PUB


def test_annex_example_verifies_on_both_paths():
    # First call: uncached key (wNAF path); later calls: per-key table path.
    for _ in range(3):
        assert sm2.verify(ALICE_PUB, MSG, ALICE_SIG, ALICE_ID, curve=TEST_CURVE)
    assert not sm2.verify(ALICE_PUB, MSG, ALICE_SIG, curve=TEST_CURVE)  # wrong user id


@pytest.mark.parametrize("bit", [0, 7, 100, 255, 256, 300, 511])
def test_annex_example_flipped_signature_bit_fails(bit):
    sig = bytearray(ALICE_SIG)
    sig[bit // 8] ^= 0x80 >> (bit % 8)
    assert not sm2.verify(ALICE_PUB, MSG, bytes(sig), ALICE_ID, curve=TEST_CURVE)


def test_annex_example_flipped_message_bit_fails():
    assert not sm2.verify(ALICE_PUB, b"message digesu", ALICE_SIG, ALICE_ID, curve=TEST_CURVE)


def test_recommended_curve_annex_example():
    pub = sm2.public_from_private(REC_PRIV)
    assert sm2.verify(pub, MSG, REC_SIG)
    assert not sm2.verify(pub, b"message digest!", REC_SIG)


def test_our_signatures_verify_in_gmssl(keypair):
    priv, pub = keypair
    other = _gmssl(priv, pub)
    for msg in (b"", b"abc", bytes(range(256)) * 3):
        sig = sm2.sign(priv, msg)
        assert other.verify_with_sm3(sig.hex(), msg)
        assert not other.verify_with_sm3(sig.hex(), msg + b"x")


def test_gmssl_signatures_verify_in_ours(keypair):
    priv, pub = keypair
    other = _gmssl(priv, pub)
    for msg in (b"", b"abc", "医保电子凭证".encode()):
        sig = bytes.fromhex(other.sign_with_sm3(msg))
        assert sm2.verify(pub, msg, sig)
        assert not sm2.verify(pub, msg + b"x", sig)


def test_custom_user_id_binds_the_signature(keypair):
    priv, pub = keypair
    sig = sm2.sign(priv, b"hello", uid=b"bank-icbc@example")
    assert sm2.verify(pub, b"hello", sig, uid=b"bank-icbc@example")
    assert not sm2.verify(pub, b"hello", sig)


def test_der_round_trip_and_gm_t_0009_shape(keypair):
    priv, pub = keypair
    der = sm2.sign_der(priv, b"payload")
    assert der[0] == 0x30 and der[1] == len(der) - 2
    assert sm2.verify_der(pub, b"payload", der)
    assert not sm2.verify_der(pub, b"payload2", der)
    assert sm2.verify_der(pub, b"p", sm2.raw_to_der(sm2.sign(priv, b"p")))


def test_malformed_der_is_false_not_an_exception(keypair):
    priv, pub = keypair
    der = sm2.sign_der(priv, b"payload")
    for bad in (b"", b"\x30", der + b"\x00", b"\x31" + der[1:], der[:-1], b"\x30\x00", "text", None,
                encode_dss_signature(0, 1), encode_dss_signature(1, N),
                bytes.fromhex("30060201ff020105"),  # r = -1
                bytes.fromhex("300702020001020105")):  # non-minimal INTEGER (BER, not DER)
        assert sm2.verify_der(pub, b"payload", bad) is False


def test_malformed_raw_inputs_are_false(keypair):
    priv, pub = keypair
    sig = sm2.sign(priv, b"m")
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    bad_sigs = [b"", sig[:-1], sig + b"\x00", _raw(0, s), _raw(r, 0), _raw(N, s), _raw(r, N),
                _raw(N - s, s), bytes(64), b"\xff" * 64, None, "sig"]
    for bad in bad_sigs:
        assert sm2.verify(pub, b"m", bad) is False
    bad_pubs = [b"", pub[:-1], pub + b"\x00", bytes(64), pub[:32] + bytes(32), b"\xff" * 64, None]
    for bad in bad_pubs:
        assert sm2.verify(bad, b"m", sig) is False
    assert sm2.verify(pub, "m", sig) is False  # text is not bytes
    assert sm2.verify(pub, b"m", sig, uid=b"x" * 8192) is False  # ENTL overflows 16 bits


def test_sum_at_infinity_is_rejected():
    # Key d = 1 (P = G); with r = -2s mod n, t = -s and s*G + t*P is the point at infinity.
    one = (1).to_bytes(32, "big")
    pub = sm2.public_from_private(one)
    assert pub == _raw(sm2.CURVE.gx, sm2.CURVE.gy)
    s = 0x1234567
    sig = _raw((-2 * s) % N, s)
    assert sm2.verify(pub, b"m", sig) is False  # uncached path
    sm2.precompute(pub)
    assert sm2.verify(pub, b"m", sig) is False  # table path
    assert sm2.verify(pub, b"m", sm2.sign(one, b"m"))


def _sum(c, points, acc=_ec.INFINITY):
    """Affine result of sum_affine, None for infinity."""
    X, Y, zz, zzz = _ec.sum_affine(c, acc, points)
    return (X * pow(zz, -1, c.p) % c.p, Y * pow(zzz, -1, c.p) % c.p) if zz else None


def test_point_arithmetic_exceptional_cases():
    c = sm2.CURVE
    g, neg_g = (c.gx, c.gy), (c.gx, c.p - c.gy)
    two_g = _ec.to_affine_many(c, [_ec.double(c, (c.gx, c.gy, 1))])[0]
    four_g = _ec.to_affine_many(c, [_ec.double(c, _ec.double(c, (c.gx, c.gy, 1)))])[0]
    assert _sum(c, [g, g]) == two_g  # doubling inside the mixed addition
    assert _sum(c, [g, g, g, g]) == four_g
    assert _sum(c, [two_g, g, g]) == four_g  # 3G + G after an addition
    assert _sum(c, [g, neg_g]) is None
    assert _sum(c, [g, neg_g, g]) == g
    assert _sum(c, [g], acc=(c.gx, c.gy, 1)) == two_g
    assert _ec.to_affine_many(c, [_ec.add_affine(c, (c.gx, c.gy, 1), *g)])[0] == two_g
    assert _ec.mul(c, c.n, *g)[2] == 0
    assert _ec.to_affine_many(c, [_ec.mul(c, c.n - 1, *g)])[0] == neg_g
    table = _ec.FixedBaseTable(c, c.gx, c.gy, 4)
    for k in (1, 2, 7, 8, 9, c.n - 1, 2**200 + 12345):
        expect = _ec.to_affine_many(c, [_ec.mul(c, k, *g)])[0]
        assert _sum(c, table.points(k)) == expect


def test_cached_and_uncached_paths_agree():
    priv, pub = sm2.generate_keypair()
    sig = sm2.sign(priv, b"x")
    results = [(sm2.verify(pub, b"x", sig), sm2.verify(pub, b"y", sig)) for _ in range(3)]
    assert results == [(True, False)] * 3


def test_public_pem_round_trip_is_spki_with_sm2_oid(keypair):
    _, pub = keypair
    pem = sm2.public_key_to_pem(pub)
    der = base64.b64decode(b"".join(pem.splitlines()[1:-1]))
    assert bytes.fromhex("06072a8648ce3d0201") in der  # id-ecPublicKey
    assert bytes.fromhex("06082a811ccf5501822d") in der  # 1.2.156.10197.1.301
    assert sm2.public_key_from_pem(pem) == pub


def test_private_pem_round_trip(keypair):
    priv, pub = keypair
    pem = sm2.private_key_to_pem(priv)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert sm2.private_key_from_pem(pem) == priv
    assert sm2.public_from_private(sm2.private_key_from_pem(pem)) == pub


def test_pem_of_other_key_types_is_refused():
    p256 = ec.generate_private_key(ec.SECP256R1())
    pub_pem = p256.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    priv_pem = p256.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(ValueError):
        sm2.public_key_from_pem(pub_pem)
    with pytest.raises(ValueError):
        sm2.private_key_from_pem(priv_pem)
    with pytest.raises(ValueError):
        sm2.public_key_from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_invalid_private_keys_are_refused():
    for bad in (bytes(32), (N - 1).to_bytes(32, "big"), b"\x01" * 31):
        with pytest.raises(ValueError):
            sm2.sign(bad, b"m")


def test_cross_check_over_fresh_keys():
    for i in range(4):
        priv, pub = sm2.generate_keypair()
        msg = b"fresh key %d" % i
        other = _gmssl(priv, pub)
        assert other.verify_with_sm3(sm2.sign(priv, msg).hex(), msg)
        assert sm2.verify(pub, msg, bytes.fromhex(other.sign_with_sm3(msg)))
