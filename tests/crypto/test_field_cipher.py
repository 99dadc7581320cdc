"""Field encryption at rest (AES-256-GCM / SM4-GCM) and blind indexes."""

import pytest

from crypto.fields import FieldCipher, FieldError

ID = "11010519491231002X"


@pytest.mark.parametrize("profile,cipher", [("default", 1), ("gm", 2)])
def test_round_trip_and_format(master_key, profile, cipher):
    fc = FieldCipher(master_key, profile)
    blob = fc.encrypt(ID, "person.id_number")
    assert blob[0] == cipher and len(blob) == 1 + 12 + len(ID) + 16 and ID.encode() not in blob
    assert fc.decrypt(blob, "person.id_number") == ID
    assert fc.encrypt(ID, "person.id_number") != blob  # random nonce
    assert fc.decrypt(fc.encrypt("张三丰", "person.name"), "person.name") == "张三丰"


def test_either_profile_reads_both_ciphers(master_key):
    default, gm = FieldCipher(master_key), FieldCipher(master_key, "gm")
    assert gm.decrypt(default.encrypt(ID, "c"), "c") == ID
    assert default.decrypt(gm.encrypt(ID, "c"), "c") == ID


@pytest.mark.parametrize("profile", ["default", "gm"])
def test_tamper_context_and_key_are_detected(master_key, profile):
    fc = FieldCipher(master_key, profile)
    blob = fc.encrypt("13800000000", "person.phone")
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x04
        with pytest.raises(FieldError):
            fc.decrypt(bytes(bad), "person.phone")
    with pytest.raises(FieldError):
        fc.decrypt(blob, "person.id_number")  # moved to another column
    with pytest.raises(FieldError):
        FieldCipher(bytes(range(1, 33)), profile).decrypt(blob, "person.phone")
    for junk in (b"", blob[:28], b"\x03" + blob[1:], None):
        with pytest.raises(FieldError):
            fc.decrypt(junk, "person.phone")


@pytest.mark.parametrize("profile", ["default", "gm"])
def test_blind_index(master_key, profile):
    fc = FieldCipher(master_key, profile)
    idx = fc.index(ID, "person.id_number")
    assert idx == FieldCipher(master_key, profile).index(ID, "person.id_number")
    assert len(idx) == 64 and int(idx, 16) >= 0
    assert idx != fc.index(ID, "person.phone")
    assert idx != fc.index("11010519491231002x", "person.id_number")
    assert idx != FieldCipher(bytes(range(1, 33)), profile).index(ID, "person.id_number")
    # The context is length-prefixed: shifting characters between context and value changes the index.
    assert fc.index("bc", "a") != fc.index("c", "ab")


def test_profiles_use_different_index_functions(master_key):
    assert FieldCipher(master_key).index(ID, "c") != FieldCipher(master_key, "gm").index(ID, "c")


def test_lookups_match_both_profiles_indexes_own_first(master_key):
    """A row indexed before a CRYPTO_PROFILE change must still be found after it."""
    default, gm = FieldCipher(master_key), FieldCipher(master_key, "gm")
    assert default.indexes(ID, "c") == (default.index(ID, "c"), gm.index(ID, "c"))
    assert gm.indexes(ID, "c") == (gm.index(ID, "c"), default.index(ID, "c"))


def test_bad_configuration_is_refused(master_key):
    with pytest.raises(ValueError):
        FieldCipher(b"too short")
    with pytest.raises(ValueError):
        FieldCipher(master_key, "rot13")
