"""Masking of personal data for responses (never for storage: that is encrypted)."""

from __future__ import annotations


def _keep_ends(value: str, head: int, tail: int) -> str:
    if len(value) <= head + tail:  # too short to show anything safely
        return "*" * len(value)
    return value[:head] + "*" * (len(value) - head - tail) + value[len(value) - tail:]


def mask_id_number(id_number: str) -> str:
    """First 3 and last 4 characters: 110105199001011234 → 110***********1234."""
    return _keep_ends(id_number, 3, 4)


def mask_phone(phone: str) -> str:
    """First 3 and last 4 digits: 13800000000 → 138****0000."""
    return _keep_ends(phone, 3, 4)


def mask_name(name: str) -> str:
    """First character hidden (the payee convention of Alipay): 张三 → *三, 张三丰 → *三丰, 王 → *."""
    if not name:
        return ""
    # One star for the first character only: the holder at the desk still recognises
    # their given name, while the family name (the most linkable part) is hidden.
    return "*" + name[1:]
