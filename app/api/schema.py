"""Request parsing: strict JSON bodies with typed fields; every failure is `invalid_request`."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from flask import request

from ..errors import DomainError
from ..text import plain_text


@dataclass(frozen=True)
class Field:
    type: type | tuple = str
    required: bool = True
    choices: tuple | None = None
    pattern: str | None = None
    max_len: int | None = 256
    min: int | None = None
    max: int | None = None
    check: Callable[[Any], bool] | None = None


CURSOR_MAX = 2 ** 63 - 1  # a database integer key


def _bad(detail: str, field: str | None = None) -> DomainError:
    return DomainError("invalid_request", detail, **({"field": field} if field else {}))


def cursor(value: str | None, name: str) -> int | None:
    """A cursor query parameter: absent, or a decimal integer in 0..2**63-1."""
    if value in (None, ""):
        return None
    if not (value.isascii() and value.isdigit()) or int(value) > CURSOR_MAX:
        raise _bad(f"{name} must be a value returned by this endpoint", name)
    return int(value)


def check_url_text() -> None:
    """Path and query values are text like any field: refuse control characters and surrogates
    before any of them reaches a view or the database."""
    values = list((request.view_args or {}).values())
    if request.query_string:
        values += [v for item in request.args.items(multi=True) for v in item]
    for value in values:
        if isinstance(value, str) and not plain_text(value):
            raise _bad("The URL contains characters that are not allowed")


def json_object() -> dict:
    """The request body as a JSON object, or `invalid_request`."""
    # get_data, not request.data: .data would first try to parse the body as a form.
    if not request.get_data(cache=True) and request.content_length in (None, 0):
        return {}
    if not request.is_json:
        raise DomainError("invalid_request", "Body must be application/json")
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # nesting deeper than the parser goes; silent=True covers ValueError only
        data = None
    if not isinstance(data, dict):
        raise _bad("Body must be a JSON object")
    return data


def validate(data: dict, fields: dict[str, Field]) -> dict:
    """Check `data` against `fields`: unknown fields, missing fields, types and ranges."""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        if not plain_text(unknown[0]):  # not echoed back: it could not even be encoded
            raise _bad("Unknown field")
        raise _bad(f"Unknown field: {unknown[0]}", unknown[0])
    out = {}
    for name, spec in fields.items():
        if name not in data or data[name] is None:
            if spec.required:
                raise _bad(f"Missing field: {name}", name)
            continue
        value = data[name]
        types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
        if isinstance(value, bool) and bool not in types:
            raise _bad(f"Field {name} has the wrong type", name)
        if not isinstance(value, types):
            raise _bad(f"Field {name} has the wrong type", name)
        if isinstance(value, str):
            if spec.max_len is not None and len(value) > spec.max_len:
                raise _bad(f"Field {name} is too long", name)
            if not plain_text(value):
                raise _bad(f"Field {name} contains characters that are not allowed", name)
            if spec.pattern and not re.fullmatch(spec.pattern, value, re.ASCII):  # \d is 0-9 only
                raise _bad(f"Field {name} has an invalid format", name)
        if isinstance(value, int) and not isinstance(value, bool):
            if spec.min is not None and value < spec.min or spec.max is not None and value > spec.max:
                raise _bad(f"Field {name} is out of range", name)
        if spec.choices is not None and value not in spec.choices:
            raise _bad(f"Field {name} must be one of: {', '.join(map(str, spec.choices))}", name)
        if spec.check is not None and not spec.check(value):
            raise _bad(f"Field {name} is invalid", name)
        out[name] = value
    return out


def body(fields: dict[str, Field]) -> dict:
    return validate(json_object(), fields)
