"""Structured logs: one JSON object per line, never an ID number, phone, PIN or token."""
from __future__ import annotations

import io
import json
import logging

from app.logs import JsonFormatter, scrub


def test_scrub_masks_secrets_that_slip_into_a_message():
    line = scrub('id 11010519491231002X phone 13800001111 pin=258013 EV1:ABCDEFGHIJKLMNOPQRSTUVWXYZ0123 '
                 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln')
    for secret in ("11010519491231002X", "13800001111", "258013", "EV1:ABCDEFGHIJ", "eyJhbGciOiJFZERTQSJ9"):
        assert secret not in line


def test_scrub_masks_the_forms_a_serialised_line_carries():
    """The formatter scrubs the finished JSON line: exception texts arrive with escaped quotes,
    database and dict reprs with single quotes, phones with a country code or spaces."""
    record = logging.LogRecord("t", logging.ERROR, "", 0, "failed", (), None)
    record.detail = json.dumps({"new_pin": "493817", "pin": "582014"})
    record.params = repr({"old_pin": "771923", "ec_token": "110000ecABCDEFGHIJKLMNOPQRSTUVWXYZ2345"})
    record.phones = "+8613812345678 / +86 139 1234 5678 / 137-1234-5678"
    record.ids = "110105 19800102 0071"
    line = JsonFormatter().format(record)
    json.loads(line)  # still one JSON object
    for secret in ("493817", "582014", "771923", "ABCDEFGHIJKLMNOPQRSTUVWXYZ2345", "13812345678", "1234 5678",
                   "1234-5678", "19800102"):
        assert secret not in line, secret


def test_the_services_own_ids_are_logged_whole_even_when_digits_in_them_look_like_a_phone():
    """Token and scan ids are random hex: some hold a phone- or ID-number-shaped run of digits. In
    their exact form they are logged as they are; anything else under those keys, and every other
    field, is still scrubbed. (The request's own id: the next test.)"""
    own = {"token_id": "a13812345678bcde", "scan_id": "scn_11010519491231002100ab"}
    record = logging.LogRecord("t", logging.INFO, "", 0, "request", (), None)
    record.__dict__.update(own, note="call 13800001111")
    entry = json.loads(JsonFormatter().format(record))
    assert {k: entry[k] for k in own} == own
    assert entry["note"] == "call [phone]" and entry["msg"] == "request"

    record = logging.LogRecord("t", logging.INFO, "", 0, "request", (), None)
    record.__dict__.update(token_id="13800001111", scan_id="scn_13800001111")  # not the service's forms
    line = JsonFormatter().format(record)
    assert "13800001111" not in line and json.loads(line)["token_id"] == "[phone]"


def test_only_the_requests_own_id_is_logged_unscrubbed_under_request_id():
    """Inside a request, `request_id` is left whole when it is the request's own (made by the
    service, or a caller's it vetted); another value logged under that key is scrubbed."""
    from flask import Flask, g

    app = Flask(__name__)
    with app.test_request_context():
        g.request_id = "f13912345678ab0c"  # as the service makes them: random hex
        record = logging.LogRecord("t", logging.INFO, "", 0, "request", (), None)
        assert json.loads(JsonFormatter().format(record))["request_id"] == "f13912345678ab0c"
        record = logging.LogRecord("t", logging.INFO, "", 0, "request", (), None)
        record.request_id = "13800001111"  # e.g. a partner's id, not this request's
        line = JsonFormatter().format(record)
        assert "13800001111" not in line and json.loads(line)["request_id"] == "[phone]"


def test_a_whole_flow_logs_json_without_personal_data(world):
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        holder = world.holder("张丽", pin="258013")
        token = world.qr(holder)
        world.scan("H110000001", token)
        world.scan("H110000001", token)  # refused: logged with the token id only
        world.client.put("/v1/me/pin", json={"old_pin": "000111", "new_pin": "470136"}, headers=holder["headers"])
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    assert lines, "the flow should have logged something"
    entries = [json.loads(ln) for ln in lines]
    scans = [e for e in entries if e.get("path") == "/v1/scans"]
    # One line per request: the scan's outcome rides on the access line, with the token id only.
    assert [(e["msg"], e["event"], e["status"]) for e in scans] == [
        ("request", "scan accepted", 200), ("request", "scan refused", 409)]
    assert all(e["token_id"] and e["request_id"] and e["institution"] == "H110000001" for e in scans)
    assert scans[1]["code"] == "token_already_used" and scans[0]["scan_id"].startswith("scn_")
    text = buf.getvalue()
    person = world.person("张丽")
    for secret in (person["id_number"], person["phone"], "258013", "000111", "470136", token,
                   holder["headers"]["Authorization"].split()[1]):
        assert secret not in text


def test_lines_are_what_the_json_module_wrote_even_where_orjson_refuses():
    """logs.dumps (orjson) writes what json.dumps(ensure_ascii=False, default=str) wrote, compact:
    non-ASCII kept, datetimes and unknown objects as str(); an integer past 64 bits or a lone
    surrogate, which orjson refuses, goes to the json module."""
    import dataclasses
    import datetime as dt

    from app.logs import dumps

    @dataclasses.dataclass
    class Point:
        x: int

    plain = {"msg": "扫码 ok", "ms": 0.67, "status": 200, "ok": True, "none": None, "quote": 'a"b\\c\n',
             "at": dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.timezone.utc), "point": Point(1), "nested": {"k": [1]}}
    for entry in (plain, {"big": 2 ** 70}, {"odd": "x\ud800y"}):
        assert dumps(entry) == json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":"))


def test_the_fast_patterns_mask_exactly_what_the_plain_ones_would():
    """logs._SCRUB writes the ID-number and phone patterns with the look-behind after the first
    character, for speed; they must mask exactly what the plain forms (look-behind first) mask."""
    import random
    import re

    from app.logs import _SCRUB

    phone = r"1[3-9][0-9](?:[ -]?[0-9]{4}){2}(?![0-9])"
    plain = {"[id_number]": re.compile(r"(?<![0-9])[0-9]{6}[ -]?[0-9]{8}[ -]?[0-9]{3}[0-9Xx](?![0-9])"),
             "[phone]": re.compile(r"(?<![0-9])" + phone)}
    fast = {repl: pattern for guard, pattern, repl in _SCRUB if guard == ""}
    assert fast.keys() == plain.keys()
    rng = random.Random(7)
    alphabet = "0123456789" * 6 + " -xX+86ab\"'"
    samples = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(20000)]
    samples += ["11010519491231002X", "x13800001111y", "913800001111", "1380000111", "110105 19491231 002x"]
    for text in samples:
        for repl in plain:
            assert fast[repl].sub(repl, text) == plain[repl].sub(repl, text), (repl, text)
