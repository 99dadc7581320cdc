"""Stand-in for a partner's own real-name and face check (实名认证 + 人脸识别). Deterministic.

- Real-name check: passes when the name is 1-30 characters and the ID number is a
  well-formed resident ID (GB 11643: 17 digits + check digit 0-9/X, valid checksum, a real
  birth date not in the future). The real check asks the public-security registry; the
  mock cannot know whether the name fits the number.
- Face check: passes unless the name starts with "失败", the caller forces a failure
  (`--face-fail` on the CLI, the unticked box on the web page), or the environment has
  MOCK_FACE_FAIL=1.
"""
from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass

FACE_FAIL_PREFIX = "失败"
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_SHAPE = re.compile(r"[0-9]{17}[0-9X]")


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    code: str | None = None  # the service's problem code the failure corresponds to
    detail: str | None = None


def check_digit(first17: str) -> str:
    """The GB 11643 check character for the first 17 digits."""
    return _CHECK_CHARS[sum(int(d) * w for d, w in zip(first17, _WEIGHTS)) % 11]


def id_number_valid(id_number: str, today: dt.date | None = None) -> bool:
    """True for a well-formed 18-character resident ID number."""
    id_number = id_number.strip().upper()
    if not _SHAPE.fullmatch(id_number) or check_digit(id_number[:17]) != id_number[17]:
        return False
    try:
        born = dt.date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))
    except ValueError:
        return False
    return dt.date(1900, 1, 1) <= born <= (today or dt.date.today())


def real_name_check(id_number: str, name: str) -> CheckResult:
    """The partner's real-name check of an ID number and name."""
    name = (name or "").strip()
    if not name or len(name) > 30:
        return CheckResult(False, "invalid_request", "name must be 1-30 characters")
    if not id_number_valid(id_number or ""):
        return CheckResult(False, "invalid_id_number", "ID number failed the real-name check")
    return CheckResult(True)


def face_check(name: str, *, force_fail: bool = False) -> bool:
    """The partner's liveness + face match: True when it passes."""
    if force_fail or os.environ.get("MOCK_FACE_FAIL") == "1":
        return False
    return not (name or "").strip().startswith(FACE_FAIL_PREFIX)
