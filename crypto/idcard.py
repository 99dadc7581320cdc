"""Resident ID card numbers (GB 11643-1999): checksum, birth date, gender, age."""

from __future__ import annotations

import datetime
import re

_FORMAT = re.compile(r"[0-9]{17}[0-9X]")
# ISO 7064 MOD 11-2: weight of position i (from the left) is 2^(17 - i) mod 11.
_WEIGHTS = [pow(2, 17 - i, 11) for i in range(17)]
_CHECK = "10X98765432"
# GB/T 2260 province-level codes, plus 81/82/83 used by residence permits (HK, Macao, Taiwan).
_PROVINCES = {
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37",
    "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64",
    "65", "71", "81", "82", "83",
}


def check_char(first17: str) -> str:
    """The 18th character for 17 leading digits."""
    return _CHECK[sum(int(c) * w for c, w in zip(first17, _WEIGHTS)) % 11]


def normalize_id_number(value: str) -> str:
    """Strip surrounding spaces and upper-case a trailing x (as people type it)."""
    return value.strip().upper()


def _birth(id_number: str) -> datetime.date | None:
    try:
        born = datetime.date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))
    except ValueError:
        return None
    return born if born.year >= 1900 else None


def validate_id_number(s: str) -> bool:
    """True for an 18-character number with a known province, a real birth date and a valid check character."""
    return (
        isinstance(s, str)
        and _FORMAT.fullmatch(s) is not None
        and s[:2] in _PROVINCES
        and _birth(s) is not None
        and check_char(s[:17]) == s[17]
    )


def birth_date(id_number: str) -> datetime.date:
    """Birth date encoded in a valid number (ValueError otherwise)."""
    if not validate_id_number(id_number):
        raise ValueError("invalid ID number")
    return _birth(id_number)


def gender(id_number: str) -> str:
    """"male" if the 17th digit is odd, else "female"."""
    if not validate_id_number(id_number):
        raise ValueError("invalid ID number")
    return "male" if int(id_number[16]) % 2 else "female"


def age(id_number: str, on: datetime.date) -> int:
    """Age in whole years on a date (a 29 February birthday counts from 1 March in common years)."""
    return age_from_birth(birth_date(id_number), on)


def age_from_birth(born: datetime.date, on: datetime.date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))
