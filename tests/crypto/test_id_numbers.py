"""Resident ID numbers (GB 11643): check character, birth date, gender, age."""

import datetime

import pytest

from crypto.idcard import age, birth_date, check_char, gender, normalize_id_number, validate_id_number

VALID = ["11010519491231002X", "110105199001011232", "320682200002290012", "410702201505200023"]


@pytest.mark.parametrize("number", VALID)
def test_valid_numbers(number):
    assert validate_id_number(number)
    assert check_char(number[:17]) == number[17]


@pytest.mark.parametrize("number", [
    "110105194912310021",  # wrong check character
    "11010519491231002x",  # lower-case x
    "11010519491231002",  # 17 characters
    "11010519491231002XX",
    "110105194902300028",  # 30 February (check character recomputed below)
    "990105194912310020",  # no province 99
    "11010518991231002X",  # before 1900
    "1101051949123100 X",
    "",
])
def test_invalid_numbers(number):
    if number == "110105194902300028" or number == "990105194912310020":
        number = number[:17] + check_char(number[:17])  # invalid for the date/province alone
    assert not validate_id_number(number)


def test_non_strings_are_invalid():
    assert not validate_id_number(None) and not validate_id_number(110105194912310020)


def test_normalize():
    assert normalize_id_number(" 11010519491231002x ") == "11010519491231002X"
    assert validate_id_number(normalize_id_number("11010519491231002x"))


def test_birth_date_gender_age():
    assert birth_date("11010519491231002X") == datetime.date(1949, 12, 31)
    assert gender("11010519491231002X") == "female"  # 17th digit 2
    assert gender("110105199001011232") == "male"  # 17th digit 3
    assert age("11010519491231002X", datetime.date(2026, 12, 30)) == 76
    assert age("11010519491231002X", datetime.date(2026, 12, 31)) == 77


def test_leap_day_birthday():
    leap = "320682200002290012"
    assert birth_date(leap) == datetime.date(2000, 2, 29)
    assert age(leap, datetime.date(2017, 2, 28)) == 16
    assert age(leap, datetime.date(2017, 3, 1)) == 17


def test_invalid_number_has_no_facts():
    for fn in (birth_date, gender):
        with pytest.raises(ValueError):
            fn("110105194912310021")
