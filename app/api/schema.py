"""Request parsing: strict JSON bodies with typed fields; every failure is `invalid_request`."""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import IO, Any, Callable

import flask
import orjson
from flask import request
from werkzeug.exceptions import ClientDisconnected
from werkzeug.utils import cached_property

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
# The payment PIN (SPEC §2): six digits, on the holder's own calls and, where a channel may pass
# one (activation), optional.
PIN = Field(str, pattern=r"\d{6}", max_len=6)
OPTIONAL_PIN = Field(str, required=False, pattern=PIN.pattern, max_len=PIN.max_len)


def _bad(detail: str, field: str | None = None) -> DomainError:
    return DomainError("invalid_request", detail, **({"field": field} if field else {}))


def cursor(value: str | None, name: str) -> int | None:
    """A cursor query parameter: absent, or a decimal integer in 0..2**63-1."""
    if value in (None, ""):
        return None
    # The length first: int() refuses more than 4,300 digits with a ValueError (a 500).
    if not (value.isascii() and value.isdigit()) or len(value) > len(str(CURSOR_MAX)) or int(value) > CURSOR_MAX:
        raise _bad(f"{name} must be a value returned by this endpoint", name)
    return int(value)


class Request(flask.Request):
    """Flask's request, reading a body in one call where werkzeug loops.

    Werkzeug reads every body through its LimitedStream, Python-level reads that cost about
    15 µs of a 200-byte scan body on the benchmark machine (docs/benchmarks.md), and it cuts a
    body without a Content-Length at the limit without saying so (the cut JSON then failed as
    "not a JSON object"). Here a body with a Content-Length within the limit is one read of
    exactly that many bytes, all a WSGI application may read (PEP 3333); a body the server ends
    itself (chunked: `wsgi.input_terminated`) is read to its end, and past the limit it is
    `payload_too_large`. Anything else (no limit, a stated length over it, a stream nobody ends,
    a shallow request) takes werkzeug's own path, with its own checks."""

    @cached_property
    def stream(self) -> IO[bytes]:
        limit = self.max_content_length
        if self.shallow or limit is None:
            return super().stream
        stream, length = self.environ["wsgi.input"], self.environ.get("CONTENT_LENGTH", "")
        if length.isascii() and length.isdigit():
            stated = length.lstrip("0") or "0"
            if len(stated) > len(str(limit)):
                # Past 4,300 digits int() raises and werkzeug reads the length as 0, so the app's
                # size check let it by: refuse it here, not as a 500 or an empty body.
                raise too_large(limit)
            if int(stated) <= limit:  # a longer one is refused by the app's size check first
                return io.BytesIO(_read_up_to(stream, int(stated)))
        elif self.environ.get("wsgi.input_terminated"):
            data = _read_up_to(stream, limit + 1)
            if len(data) > limit:
                raise too_large(limit)
            return io.BytesIO(data)
        return super().stream


def _read_up_to(stream: IO[bytes], size: int) -> bytes:
    """`size` bytes, or fewer when the stream ends first; a short read is read on. A stream
    that fails (the client went away mid-body) is werkzeug's ClientDisconnected, a 400."""
    parts, got = [], 0
    while got < size:
        try:
            chunk = stream.read(size - got)
        except (OSError, ValueError) as exc:
            raise ClientDisconnected() from exc
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def too_large(limit: int) -> DomainError:
    return DomainError("payload_too_large", f"Request body exceeds {limit // 1024} KiB")


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
    raw = request.get_data(cache=True)
    if not raw and request.content_length in (None, 0):
        return {}
    # is_json parses the media type (5 µs); the type every client sends is recognised as it is.
    if request.environ.get("CONTENT_TYPE") != "application/json" and not request.is_json:
        raise DomainError("invalid_request", "Body must be application/json")
    try:  # orjson: a ninth of the json module's time on a scan's body
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # What orjson refuses, the json module (which request.get_json uses) may still read: a
        # lone surrogate escape, then refused by name in `validate`, a byte order mark, UTF-16.
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
            data = None
    if not isinstance(data, dict):
        raise _bad("Body must be a JSON object")
    return data


def validate(data: dict, fields: dict[str, Field]) -> dict:
    """Check `data` against `fields`: unknown fields, missing fields, types and ranges."""
    if not data.keys() <= fields.keys():
        unknown = sorted(set(data) - set(fields))
        if not plain_text(unknown[0]):  # not echoed back: it could not even be encoded
            raise _bad("Unknown field")
        raise _bad(f"Unknown field: {unknown[0]}", unknown[0])
    out = {}
    for name, spec in fields.items():
        value = data.get(name)
        if value is None:
            if spec.required:
                raise _bad(f"Missing field: {name}", name)
            continue
        if not isinstance(value, spec.type) or (
                isinstance(value, bool) and bool not in (spec.type if isinstance(spec.type, tuple) else (spec.type,))):
            raise _bad(f"Field {name} has the wrong type", name)
        if isinstance(value, str):
            if spec.max_len is not None and len(value) > spec.max_len:
                raise _bad(f"Field {name} is too long", name)
            if not plain_text(value):
                raise _bad(f"Field {name} contains characters that are not allowed", name)
            if spec.pattern and not re.fullmatch(spec.pattern, value, re.ASCII):  # \d is 0-9 only
                raise _bad(f"Field {name} has an invalid format", name)
        elif isinstance(value, int) and not isinstance(value, bool):
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
