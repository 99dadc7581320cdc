"""Payment PIN hashing (argon2id) and the weak-PIN rules of SPEC §2."""

from __future__ import annotations

import datetime
import re

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

# Reasons returned by is_weak_pin (stable strings: the API maps any of them to pin_too_weak).
NOT_SIX_DIGITS = "not_six_digits"
INITIAL_PIN = "initial_pin"
REPEATED_DIGIT = "repeated_digit"
SEQUENCE = "sequence"
BIRTH_DATE = "birth_date"

_INITIAL = {"000000", "123456"}
# Runs step by +1 or -1 modulo 10, so wrap-arounds such as 890123 and 210987 count too:
# on a keypad they are typed exactly like 012345.
_SEQUENCES = {
    "".join(str((start + step * i) % 10) for i in range(6))
    for start in range(10)
    for step in (1, -1)
}
_SIX_DIGITS = re.compile(r"[0-9]{6}")  # ASCII only: str.isdigit() would accept "１２３４５６"


class PinHasher:
    """argon2id hashing; test configs lower the costs, they never skip the hash."""

    def __init__(self, time_cost: int = 3, memory_cost: int = 65536, parallelism: int = 1):
        self._ph = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost,
                                  parallelism=parallelism, type=Type.ID)

    def hash(self, pin: str) -> str:
        """Salted argon2id hash string."""
        return self._ph.hash(pin)

    def check(self, hash: str, pin: str) -> bool:
        """True if pin matches hash; False on mismatch or an unreadable hash."""
        if not isinstance(hash, str) or not isinstance(pin, str):
            return False
        try:
            return self._ph.verify(hash, pin)
        except (VerificationError, InvalidHashError, ValueError):
            return False

    def needs_rehash(self, hash: str) -> bool:
        """True if hash was made with other parameters (or cannot be read)."""
        if not isinstance(hash, str):
            return True
        try:
            return self._ph.check_needs_rehash(hash)
        except (InvalidHashError, ValueError):
            return True


def is_weak_pin(pin: str, birth_date: datetime.date | None = None) -> str | None:
    """Why pin may not be chosen as a new PIN, or None if it is acceptable."""
    if not isinstance(pin, str) or not _SIX_DIGITS.fullmatch(pin):
        return NOT_SIX_DIGITS
    if pin in _INITIAL:
        return INITIAL_PIN
    if len(set(pin)) == 1:
        return REPEATED_DIGIT
    if pin in _SEQUENCES:
        return SEQUENCE
    if birth_date is not None and pin in {birth_date.strftime("%y%m%d"), birth_date.strftime("%m%d%y")}:
        return BIRTH_DATE
    return None
