"""Structured JSON logs, one object per line, scrubbed of ID numbers, phones and tokens."""
from __future__ import annotations

import json
import logging
import re
import sys
import time

import orjson
from flask import g, has_request_context

# Belt and braces: code never logs these, and the formatter masks them if it ever did.
# It runs on the finished JSON line, so quotes may arrive escaped (\") or as Python reprs (').
# Each pattern runs only when its guard (a plain substring; of the lower-cased line for the PIN)
# is in the line: this runs on every access line, and a pattern that cannot start with a literal
# costs microseconds a line. For the same reason the patterns that run on every line start with
# what they match and look behind only after it (`1(?<![0-9]1)` is a 1 with no digit before it):
# a pattern that starts with a look-behind is tried at every position of the line (10-17 µs a
# line), one that starts with a character or a class is searched for first (1-15 µs).
_Q = r"""(?:\\?["'])?"""
_PHONE_REST = r"[3-9][0-9](?:[ -]?[0-9]{4}){2}(?![0-9])"  # after the leading 1
_SCRUB = [
    ("EV1:", re.compile(r"EV1:[0-9A-Z $%*+\-./:]{20,}"), "[token]"),
    ("eyJ", re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*"), "[jwt]"),
    ("ec", re.compile(r"(?<=[0-9]{6})ec[A-Z2-7]{30}"), "[ec_token]"),
    ("", re.compile(r"[0-9](?<![0-9]{2})[0-9]{5}[ -]?[0-9]{8}[ -]?[0-9]{3}[0-9Xx](?![0-9])"), "[id_number]"),
    ("86", re.compile(r"\+?86[ -]?1" + _PHONE_REST), "[phone]"),
    ("", re.compile(r"1(?<![0-9]1)" + _PHONE_REST), "[phone]"),
    ("pin", re.compile(r"(?i)(pin" + _Q + r"\s*[:=]\s*" + _Q + r")[0-9]{4,8}"), r"\1[pin]"),
]
_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

# Identifiers the service makes itself, in the exact form it makes them, are left out of the
# scrub: they are random hex, which now and then holds a run of digits shaped like a phone
# number (about 1 token id in 1,700) or an ID number, and masking one would lose the very thing
# it is logged for, finding a token's or a request's lines. The request's own id (`g.request_id`)
# is one the service made or a caller's that `clean_request_id` let through; any other value
# under that key is scrubbed like the rest.
_OWN_IDS = {"token_id": re.compile(r"[0-9a-f]{16}"), "scan_id": re.compile(r"scn_[0-9a-f]{24}")}
_REQUEST_ID = re.compile(r"[0-9A-Za-z._-]{1,64}")


def scrub(text: str) -> str:
    lower = text.lower()
    for guard, pattern, repl in _SCRUB:
        if guard in (lower if guard == "pin" else text):
            text = pattern.sub(repl, text)
    return text


def clean_request_id(incoming: str) -> bool:
    """A caller's X-Request-Id is kept (and logged unscrubbed) only when it is short, plain and
    holds nothing the scrubber would mask."""
    return bool(_REQUEST_ID.fullmatch(incoming)) and scrub(incoming) == incoming


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                 "logger": record.name, "msg": record.getMessage()}
        request_id = g.get("request_id") if has_request_context() else None
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        own = {key: entry.pop(key) for key, form in _OWN_IDS.items()
               if isinstance(entry.get(key), str) and form.fullmatch(entry[key])}
        if request_id is not None and entry.get("request_id") == request_id:  # not replaced by an extra
            own["request_id"] = entry.pop("request_id")
        line = scrub(dumps(entry))
        return line[:-1] + "," + dumps(own)[1:] if own else line


# Datetimes and dataclasses go to `str` as the json module's default=str sent them.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(entry: dict) -> str:
    """A log entry as one line of compact JSON, non-ASCII kept, unknown objects as str(). orjson
    costs a fifth of the json module's time on an access line (docs/benchmarks.md); what it
    refuses (an integer past 64 bits, a lone surrogate, a key that is not a string) is written
    by the json module instead, in the same form."""
    try:
        return orjson.dumps(entry, default=str, option=_ORJSON_OPTIONS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":"))


def configure(level: str = "INFO") -> None:
    """Send every logger through one JSON handler on stderr."""
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("werkzeug").setLevel("WARNING")


def event(logger: logging.Logger, msg: str, **fields) -> None:
    """Log what a request did. Inside a request it rides on that request's one access line
    (as `event` plus the fields), so a busy endpoint writes one line per request, not two."""
    if has_request_context():
        g.log_event = {"event": msg, **fields}
    else:
        logger.info(msg, extra=fields)


def access_log(status: int, started: float, path: str, method: str) -> None:
    extra = {"method": method, "path": path, "status": status,
             "ms": round((time.perf_counter() - started) * 1000, 2)}
    extra.update(g.get("log_event") or ())
    logging.getLogger("evoucher.access").info("request", extra=extra)
