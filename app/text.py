"""Text no field of this service carries: control characters and lone surrogates."""
from __future__ import annotations

import re

# C0 controls, DEL and lone UTF-16 surrogates. A NUL cannot be stored by PostgreSQL, and a
# surrogate cannot be written as UTF-8 at all.
_UNSAFE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def plain_text(value: str) -> bool:
    """True when `value` holds no control character and no lone surrogate."""
    return _UNSAFE.search(value) is None
