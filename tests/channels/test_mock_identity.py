"""The stand-in real-name and face checks: deterministic passes and failures."""
from __future__ import annotations

import datetime as dt

import pytest

from mock_channels import identity

VALID = "11010519491231002X"  # the GB 11643 worked example


def test_known_valid_id_number():
    assert identity.check_digit(VALID[:17]) == "X"
    assert identity.id_number_valid(VALID)
    assert identity.id_number_valid(VALID.lower())


@pytest.mark.parametrize("number", [
    "110105194912310021",        # wrong check digit
    "11010519491231002",         # 17 characters
    "1101051949123100X2",        # X in the middle
    "110105194913310027",        # month 13
    "",
])
def test_invalid_id_numbers(number):
    assert not identity.id_number_valid(number)


def test_birth_date_in_the_future_is_invalid():
    first17 = "11010520500101001"
    number = first17 + identity.check_digit(first17)
    assert not identity.id_number_valid(number)
    assert identity.id_number_valid(number, today=dt.date(2051, 1, 1))


def test_real_name_check():
    assert identity.real_name_check(VALID, "张三").ok
    result = identity.real_name_check("110105194912310021", "张三")
    assert (result.ok, result.code) == (False, "invalid_id_number")
    assert identity.real_name_check(VALID, "  ").code == "invalid_request"


def test_face_check_passes_by_default(monkeypatch):
    monkeypatch.delenv("MOCK_FACE_FAIL", raising=False)
    assert identity.face_check("张三")


@pytest.mark.parametrize("name,force", [("失败张三", False), ("张三", True)])
def test_face_check_fails_on_request(monkeypatch, name, force):
    monkeypatch.delenv("MOCK_FACE_FAIL", raising=False)
    assert not identity.face_check(name, force_fail=force)


def test_face_check_fails_by_environment(monkeypatch):
    monkeypatch.setenv("MOCK_FACE_FAIL", "1")
    assert not identity.face_check("张三")
