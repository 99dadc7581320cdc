"""Masked display of ID numbers, phones and names."""

from crypto.masking import mask_id_number, mask_name, mask_phone


def test_id_number():
    assert mask_id_number("110105199001011234") == "110***********1234"
    assert mask_id_number("11010519491231002X") == "110***********002X"


def test_phone():
    assert mask_phone("13800000000") == "138****0000"


def test_name():
    assert mask_name("张三丰") == "*三丰"
    assert mask_name("张三") == "*三"
    assert mask_name("王") == "*"
    assert mask_name("") == ""


def test_short_values_are_fully_masked():
    assert mask_phone("1234567") == "*******"
    assert mask_id_number("123") == "***"
