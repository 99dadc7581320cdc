"""PIN hashing (argon2id) and the weak-PIN rules."""

import datetime

import pytest

from crypto import pins
from crypto.pins import PinHasher, is_weak_pin

CHEAP = dict(time_cost=1, memory_cost=1024, parallelism=1)  # tests make argon2 cheap, never skip it


def test_hash_and_check():
    hasher = PinHasher(**CHEAP)
    h = hasher.hash("258013")
    assert h.startswith("$argon2id$") and "m=1024,t=1,p=1" in h
    assert hasher.check(h, "258013")
    assert not hasher.check(h, "258014")
    assert hasher.hash("258013") != h  # salted


def test_check_never_raises_on_bad_hashes():
    hasher = PinHasher(**CHEAP)
    for bad in ("", "not a hash", "$argon2id$v=19$m=1024,t=1,p=1$bad$bad", "€", None):
        assert hasher.check(bad, "258013") is False


def test_needs_rehash_follows_parameters():
    cheap, default = PinHasher(**CHEAP), PinHasher()
    h = cheap.hash("258013")
    assert not cheap.needs_rehash(h)
    assert default.needs_rehash(h)
    assert default.needs_rehash("garbage") and default.needs_rehash(None)


def test_default_parameters():
    h = PinHasher().hash("258013")
    assert "$argon2id$" in h and "m=65536,t=3,p=1" in h


@pytest.mark.parametrize("pin,reason", [
    ("12345", pins.NOT_SIX_DIGITS), ("1234567", pins.NOT_SIX_DIGITS), ("12a456", pins.NOT_SIX_DIGITS),
    ("１２３４５７", pins.NOT_SIX_DIGITS), (" 25801", pins.NOT_SIX_DIGITS), (None, pins.NOT_SIX_DIGITS),
    ("000000", pins.INITIAL_PIN), ("123456", pins.INITIAL_PIN),
    ("111111", pins.REPEATED_DIGIT), ("999999", pins.REPEATED_DIGIT),
    ("012345", pins.SEQUENCE), ("456789", pins.SEQUENCE), ("987654", pins.SEQUENCE), ("543210", pins.SEQUENCE),
    ("890123", pins.SEQUENCE), ("789012", pins.SEQUENCE), ("210987", pins.SEQUENCE), ("109876", pins.SEQUENCE),
])
def test_weak_pins(pin, reason):
    assert is_weak_pin(pin, None) == reason


def test_birth_date_forms():
    born = datetime.date(1990, 7, 15)
    assert is_weak_pin("900715", born) == pins.BIRTH_DATE  # YYMMDD
    assert is_weak_pin("071590", born) == pins.BIRTH_DATE  # MMDDYY
    assert is_weak_pin("150790", born) is None  # DDMMYY is not in the rules
    assert is_weak_pin("900715", None) is None


@pytest.mark.parametrize("pin", ["258013", "135790", "112233", "123457", "024680", "019283"])
def test_acceptable_pins(pin):
    assert is_weak_pin(pin, datetime.date(1985, 3, 2)) is None
