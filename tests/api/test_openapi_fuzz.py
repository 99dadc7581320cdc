"""Every operation in the service's own OpenAPI document, sent bad input systematically.

The house rule: bad input gets a clear problem+json error with its `code`, never a 500, and
loses nothing. The operations come from `app.api.openapi.document()`, which is what
`GET /openapi.json` serves (checked below): a newly documented operation is fuzzed at once,
and the coverage test fails until a JSON one has a valid base body here.

- JSON bodies: each documented property replaced by null, true, 0, -1, 2**70, 1.5, NaN, 1e400,
  a 5,000-digit number, "", a 15,000-character string (the body stays under the 16 KiB limit,
  so the field's length rule answers), a 20,000-character one (over the limit: 413), text with
  a NUL, with ESC, a lone surrogate escape (raw JSON text `"\ud800"`), a list and an object; the
  property missing; an unknown property; bodies that are no JSON object (`[]`, `"x"`, `1`,
  `null`, invalid JSON, bad UTF-8, a raw control character, nothing at all); the wrong media
  type; a Content-Length of 5,000 digits. Channel calls are signed in each of the three schemes
  (WeChat Pay v3, Alipay RSA2, bank SM2), so the body reaches validation, not just the
  signature check.
- The OAuth form and the scanner's photo upload, with the bodies their media types allow; the
  two operations documented without a body whose views still read one.
- Path and query values: very long, percent-encoded control characters, non-decimal and
  oversized cursors, unicode, bytes that are no UTF-8; a control character in the query of
  every operation.

Every answer: no 5xx; a 4xx is application/problem+json whose `status` is the HTTP status, whose
`code` is in SPEC §4.5 (or is one of the service's documented additions) and is listed for that
operation and status in the document; and it is the exact answer expected for the case. The
bases are chosen so that a body which passes validation gets a known answer and changes nothing
that matters (channel calls name nobody bound or enrolled; holder calls carry the right PIN).
After every case has run against the same world, `test_nothing_was_lost` checks that the
holder's voucher, PIN, family link, filing and scan are as they were, that the records show no
state change but the one valid case's (the free limit set to what it was), and that a fresh
code still issues and scans exactly once, and `test_no_personal_data_was_logged` that no ID
number, phone, PIN or token reached a log line.

One world per backend serves every case (module scope): a world per case would take minutes.
Its rate limits are raised: they are tested elsewhere, and here they would only hide the answer
each case should get.
"""
from __future__ import annotations

import base64
import datetime as dt
import io
import itertools
import json
import logging
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlencode

import pytest

from app.api.openapi import document
from app.channels.common import METHODS as CALL_METHODS
from app.logs import JsonFormatter
from app.demo import make_id_number
from mock_channels.alipay import METHODS as ALIPAY_METHODS
from mock_channels.alipay import beijing_time
from tests.conftest import BACKENDS, FrozenClock, build_app, build_config
from tests.helpers import World

# SPEC §4.5, verbatim.
SPEC_CODES = frozenset("""
    invalid_request unsupported_id_type invalid_id_number person_not_enrolled
    face_verification_required channel_signature_invalid channel_request_replayed channel_unknown
    unauthorized forbidden token_malformed token_signature_invalid token_unknown_key token_expired
    token_already_used token_revoked voucher_not_found voucher_suspended voucher_cancelled
    institution_inactive region_not_enrolled remote_care_filing_required family_limit_reached
    family_link_not_found pin_required pin_invalid pin_locked pin_too_weak pin_change_required
    rate_limited payload_too_large service_unavailable""".split())
# §4.5 lists codes "at least"; these are the service's additions, each listed in the OpenAPI
# document for the operations that answer it (assert_answer checks that too).
EXTENSION_CODES = frozenset({"not_found", "family_link_exists", "filing_not_found", "reverification_required",
                             "name_mismatch", "channel_not_bound"})
BODY_LIMIT = 16 * 1024
PIN, NEW_PIN = "258013", "135792"
SCHEMES = ("wechat", "alipay", "bank-icbc")
RAISED_LIMITS = dict(issue_rate_per_minute=100_000, pin_rate_per_minute=1_000, family_rate_per_minute=1_000,
                     channel_rate_per_minute=1_000_000, scan_rate_per_minute=1_000_000,
                     decode_rate_per_minute=1_000_000)

DOC = document()
OPERATIONS = {(method.upper(), path): op for path, ops in DOC["paths"].items() for method, op in ops.items()}

BAD = (400, "invalid_request")
TOO_LARGE = (413, "payload_too_large")

# Property values, as the raw JSON text a client sends.
VALUES = {
    "null": "null", "true": "true", "0": "0", "-1": "-1", "2**70": str(2 ** 70), "1.5": "1.5", "NaN": "NaN",
    "1e400": "1e400", "5000-digits": "1" * 5000,  # a float that overflows; past Python's int-parsing limit
    "empty": '""', "15000-chars": json.dumps("x" * 15_000), "20000-chars": json.dumps("x" * 20_000),
    "nul": r'"a\u0000b"', "escape": r'"a\u001bb"', "lone-surrogate": r'"\ud800"',
    "list": '["x"]', "object": '{"x": "y"}',
}
# A stated body length past what int() parses (4,300 digits): werkzeug reads it as 0.
HUGE_LENGTH = {"CONTENT_LENGTH": "1" * 5000}
# Bodies that are no JSON object, or not JSON at all.
NOT_AN_OBJECT = {
    "array": b"[]", "string": b'"x"', "number": b"1", "null": b"null", "invalid-json": b'{"',
    "not-utf8": b'{"x": "\xff"}', "raw-control-char": b'{"x": "a\x01b"}',
}


# ---------------------------------------------------------------------------------------------
# Valid bases, and what a body that passes validation gets.

def _nobody_id_number() -> str:
    """A well-formed ID number of no one in the registry."""
    return make_id_number("110105", "1990-01-01", 97, 1)


def json_bases(fx) -> dict:
    """A valid body per JSON operation (channel calls get a fresh request_id when sent)."""
    minor = fx.world.person("高翔")  # 14 years old on the frozen clock's day: linked at once
    bases = {
        ("POST", "/v1/scans"): {"token": fx.base_token, "purpose": "registration"},
        ("POST", "/v1/me/qr-tokens"): {"voucher_id": fx.member_voucher_id, "format": "ev1", "image": "svg"},
        ("PUT", "/v1/me/active-region"): {"region_code": "110000"},
        ("POST", "/v1/me/family"): {"id_number": minor["id_number"], "name": "高翔", "relation": "guardian",
                                    "document_ref": "户口簿 0001"},
        ("POST", "/v1/me/remote-care-filings"): {"care_region_code": "410700", "valid_from": fx.today,
                                                 "valid_until": fx.today},
        ("PUT", "/v1/me/pin"): {"old_pin": PIN, "new_pin": NEW_PIN},
        ("PUT", "/v1/me/pin-free-limit"): {"amount_fen": 0, "pin": PIN},
        ("PUT", "/v1/me/phone"): {"phone": "13900000000", "pin": PIN},
        ("DELETE", "/v1/me/channels/{channel_id}"): {"pin": PIN},
        # Channel calls name nobody: a body that passes validation is refused for that, unchanged.
        ("POST", "/v1/channels/{channel_id}/activations"): {
            "request_id": None, "channel_user_id": "fuzz_user", "id_type": "01",
            "id_number": _nobody_id_number(), "name": "无名氏", "phone": "13800000000", "face_verified": True,
            "pin": PIN},
        ("POST", "/v1/channels/{channel_id}/sessions"): {"channel_user_id": "fuzz_user", "request_id": None},
        ("POST", "/v1/channels/{channel_id}/reverifications"): {
            "channel_user_id": "fuzz_user", "face_verified": True, "purpose": "pin_reset", "link_id": "fam_fuzz",
            "request_id": None},
        ("POST", "/v1/channels/{channel_id}/unbindings"): {"channel_user_id": "fuzz_user", "request_id": None},
    }
    for op_key, call in CHANNEL_CALLS.items():  # each names the call it is signed for
        bases[op_key]["method"] = CALL_METHODS[call]
    return bases


ACTIVATIONS = ("POST", "/v1/channels/{channel_id}/activations")
CHANNEL_CALLS = {("POST", f"/v1/channels/{{channel_id}}/{call}"): call
                 for call in ("activations", "sessions", "reverifications", "unbindings")}
NOT_BOUND = (404, "channel_not_bound")
NOT_ENROLLED = (422, "person_not_enrolled")

# (operation, property, value) -> the answer when the value passes validation. "absent" is an
# optional property missing or null; "*" is the whole body as the base has it (empty body, wrong
# media type). A case that passes validation and is not listed here fails the test.
PASSES = {
    (("POST", "/v1/scans"), "token", "empty"): (400, "token_malformed"),
    (("POST", "/v1/me/qr-tokens"), "voucher_id", "empty"): (201, None),  # "" is no member: one's own
    (("POST", "/v1/me/qr-tokens"), "voucher_id", "absent"): (201, None),
    (("POST", "/v1/me/qr-tokens"), "format", "absent"): (201, None),
    (("POST", "/v1/me/qr-tokens"), "image", "absent"): (201, None),
    (("POST", "/v1/me/qr-tokens"), "*", "empty-body"): (201, None),
    (("POST", "/v1/me/family"), "id_number", "empty"): (422, "invalid_id_number"),
    (("POST", "/v1/me/family"), "name", "empty"): NOT_ENROLLED,
    (("POST", "/v1/me/family"), "document_ref", "empty"): BAD,  # a minor's link needs one
    (("POST", "/v1/me/family"), "document_ref", "absent"): BAD,
    (("PUT", "/v1/me/pin"), "old_pin", "absent"): (403, "pin_required"),
    (("PUT", "/v1/me/pin-free-limit"), "amount_fen", "0"): (200, None),
    (ACTIVATIONS, "id_type", "empty"): (422, "unsupported_id_type"),
    (ACTIVATIONS, "id_number", "empty"): (422, "invalid_id_number"),
    (ACTIVATIONS, "name", "empty"): NOT_ENROLLED,
    (ACTIVATIONS, "face_verified", "true"): NOT_ENROLLED,
    (ACTIVATIONS, "pin", "absent"): NOT_ENROLLED,
    (ACTIVATIONS, "method", "absent"): NOT_ENROLLED,
    # The media type is not part of a channel's signature; the signed bytes are what count.
    (ACTIVATIONS, "*", "wrong-media-type"): NOT_ENROLLED,
}
for _call in ("sessions", "reverifications", "unbindings"):
    _key = ("POST", f"/v1/channels/{{channel_id}}/{_call}")
    PASSES.update({(_key, "request_id", "absent"): NOT_BOUND, (_key, "method", "absent"): NOT_BOUND,
                   (_key, "*", "wrong-media-type"): NOT_BOUND})
PASSES.update({(("POST", "/v1/channels/{channel_id}/reverifications"), prop, value): NOT_BOUND
               for prop, value in (("face_verified", "true"), ("link_id", "empty"), ("link_id", "absent"))})


def body_expectation(op_key, prop: str, value: str, scheme: str | None) -> tuple[int, str | None]:
    """The answer to the base body with `prop` set to VALUES[value] (or "missing")."""
    schema = OPERATIONS[op_key]["requestBody"]["content"]["application/json"]["schema"]
    if value == "20000-chars":
        return TOO_LARGE
    if scheme == "alipay" and prop == "request_id":
        return BAD  # Alipay's nonce is biz_content.request_id: letters, digits, -_.: only
    if value in ("missing", "null"):
        return BAD if prop in schema["required"] else PASSES[(op_key, prop, "absent")]
    if value in ("15000-chars", "nul", "escape", "lone-surrogate"):
        return BAD  # no field takes these, whatever its schema says (docs/decisions.md, "Bad input")
    if _schema_takes(schema["properties"][prop], value):
        return PASSES[(op_key, prop, value)]
    return BAD  # a wrong type, pattern or choice


def _schema_takes(schema: dict, value: str) -> bool:
    """Whether the documented property schema admits VALUES[value]. None of the values fits a
    pattern, a date, an enum or a const."""
    if {"pattern", "format", "enum", "const"} & set(schema):
        return False
    kind = schema.get("type")
    if kind == "string":
        return value == "empty"
    if kind == "boolean":
        return value == "true"
    if kind == "integer":
        return value == "0" and schema.get("minimum", 0) <= 0 <= schema.get("maximum", 0)
    raise AssertionError(f"no fuzz rule for property schema {schema}")


# ---------------------------------------------------------------------------------------------
# The world every case runs against.

class Fuzz:
    """One world per backend: a holder with a linked member, a filing and a scan; signers."""

    def __init__(self, world: World):
        self.world, self.client, self.rt = world, world.client, world.rt
        self.ids = itertools.count(1)  # request ids and nonces: unique, and the same every run
        holder = world.holder("王建国", pin=PIN)
        world.activate("王建国", "alipay", pin=PIN)  # the channel DELETE /v1/me/channels/… names
        self.holder_headers = holder["headers"]
        self.inst_headers = world.inst_headers("H110000001")
        inst = world.inst("H110000001")
        self.basic = {"Authorization": "Basic " + base64.b64encode(
            f"{inst['client_id']}:{inst['client_secret']}".encode()).decode()}
        self.today = dt.datetime.fromtimestamp(self.rt.clock.now(), dt.timezone.utc).date().isoformat()
        link = self.ok(self.client.post("/v1/me/family", headers=self.holder_headers, json={
            "id_number": world.person("王小明")["id_number"], "name": "王小明", "relation": "parent",
            "document_ref": "出生医学证明 N110123456"}), 201)
        self.link_id, self.member_voucher_id = link["link_id"], link["member"]["voucher_id"]
        until = (dt.date.fromisoformat(self.today) + dt.timedelta(days=30)).isoformat()
        self.filing_id = self.ok(self.client.post("/v1/me/remote-care-filings", headers=self.holder_headers, json={
            "care_region_code": "410700", "valid_from": self.today, "valid_until": until}), 201)["filing_id"]
        self.scan_id = self.ok(world.scan("H110000001", world.qr(holder)), 200)["scan_id"]
        self.base_token = world.qr(holder)
        self.ok(self.client.put("/v1/me/pin-free-limit", headers=self.holder_headers,
                                json={"amount_fen": 0, "pin": PIN}), 200)  # what the amount 0 case sets
        self.signers = {scheme: world.channel(scheme).signer for scheme in SCHEMES}
        self.before = self.snapshot()
        self.last_record = self.records_since(0)[0]["id"]
        self.bases = json_bases(self)

    @staticmethod
    def ok(resp, status: int) -> dict:
        assert resp.status_code == status, resp.get_data(as_text=True)[:300]
        return resp.get_json()

    def snapshot(self) -> dict:
        """What bad input must not change: the holder's voucher, links, filings and first scan."""
        get = lambda url, headers: self.ok(self.client.get(url, headers=headers), 200)  # noqa: E731
        return {"me": get("/v1/me", self.holder_headers),
                "family": get("/v1/me/family", self.holder_headers),
                "filings": get("/v1/me/remote-care-filings", self.holder_headers),
                "scan": get(f"/v1/scans/{self.scan_id}", self.inst_headers)}

    def records_since(self, record_id: int) -> list[dict]:
        """The holder's usage records newer than `record_id`, newest first."""
        found, cursor = [], ""
        while True:
            page = self.ok(self.client.get(f"/v1/me/records?cursor={cursor}", headers=self.holder_headers), 200)
            found += [r for r in page["items"] if r["id"] > record_id]
            if not page["next_cursor"] or page["items"][-1]["id"] <= record_id:
                return found
            cursor = page["next_cursor"]

    def path_ids(self, op_key, scheme: str | None) -> dict:
        return {"scan_id": self.scan_id, "link_id": self.link_id, "filing_id": self.filing_id,
                "channel_id": scheme or "alipay"}

    def headers_for(self, op_key) -> dict:
        security = OPERATIONS[op_key].get("security")
        scheme = next(iter(security[0])) if security else None
        return {"holderToken": self.holder_headers, "institutionToken": self.inst_headers,
                "clientBasic": self.basic, None: {}}[scheme]

    # sending
    def send_json(self, op_key, body: bytes, *, scheme: str | None = None, content_type="application/json",
                  path: str | None = None, environ: dict | None = None):
        """Send `body` to the operation as its caller would: bearer, Basic or a channel signature."""
        method, template = op_key
        url = path or template.format(**self.path_ids(op_key, scheme))
        if op_key in CHANNEL_CALLS:
            return self.send_signed(scheme, CHANNEL_CALLS[op_key], url, body, content_type, environ)
        return self.client.open(url, method=method, data=body, content_type=content_type,
                                headers=self.headers_for(op_key), environ_overrides=environ)

    def send_signed(self, scheme: str, call: str, url: str, body: bytes, content_type: str,
                    environ: dict | None = None):
        """Sign `body` in the channel's scheme. Whatever cannot be signed (the bank scheme signs
        the fields of a JSON object) goes with a signature of nothing: it is refused first."""
        signer, now, nonce = self.signers[scheme], int(self.rt.clock.now()), f"fz{next(self.ids)}"
        if scheme == "wechat":
            headers = {"Authorization": signer.authorization("POST", url, body, now, nonce)}
            return self.client.post(url, data=body, content_type=content_type, headers=headers,
                                    environ_overrides=environ)
        if scheme == "alipay":
            data = b""
            if body:  # the JSON body is biz_content; an empty body is an empty form
                params = {"app_id": signer.app_id, "method": ALIPAY_METHODS[call], "format": "JSON",
                          "charset": "utf-8", "sign_type": "RSA2", "timestamp": beijing_time(now), "version": "1.0",
                          "biz_content": body.decode("utf-8", "surrogateescape")}
                try:
                    params["sign"] = signer.sign_params(params)
                except UnicodeEncodeError:  # bytes that are no UTF-8 cannot be signed as text
                    params["sign"] = base64.b64encode(b"unsigned").decode()
                data = urlencode(params, encoding="utf-8", errors="surrogateescape").encode("ascii")
            if content_type == "application/json":
                content_type = "application/x-www-form-urlencoded;charset=utf-8"
            return self.client.post(url, data=data, content_type=content_type, environ_overrides=environ)
        try:
            payload = json.loads(body)
            signed = signer.sign(call, url, payload, now=now, nonce=nonce)
            headers = {k: v for k, v in signed.headers.items() if k.startswith("X-Bank-")}
        except (ValueError, TypeError, AttributeError):  # not an object, or text that cannot be signed
            headers = {"X-Bank-App-Id": signer.app_id, "X-Bank-Timestamp": str(now), "X-Bank-Nonce": nonce,
                       "X-Bank-Signature": base64.b64encode(b"unsigned").decode()}
        return self.client.post(url, data=body, content_type=content_type, headers=headers,
                                environ_overrides=environ)

    def body_text(self, op_key, replace: dict[str, str | None], extra: dict[str, str] | None = None) -> bytes:
        """The base body as JSON text, with properties replaced by raw JSON text (None: left out)."""
        base = dict(self.bases[op_key])
        if "request_id" in base:
            base["request_id"] = f"fzreq{next(self.ids)}"
        members = []
        for name, value in base.items():
            raw = replace.get(name, json.dumps(value, ensure_ascii=False))
            if raw is not None:
                members.append(f"{json.dumps(name)}: {raw}")
        members += [f"{json.dumps(name)}: {raw}" for name, raw in (extra or {}).items()]
        return ("{" + ", ".join(members) + "}").encode("utf-8")


@pytest.fixture(scope="module", params=BACKENDS)
def fx(request, tmp_path_factory):
    backend = request.param
    config = build_config(request, backend, tmp_path_factory.mktemp(f"fuzz-{backend}"), **RAISED_LIMITS)
    app = build_app(config, backend, FrozenClock())
    # Every line the service logs while it is fuzzed, as its handler writes them (JSON, scrubbed):
    # test_no_personal_data_was_logged reads them.
    log, handler, root = io.StringIO(), None, logging.getLogger()
    handler = logging.StreamHandler(log)
    handler.setFormatter(JsonFormatter())
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        fuzz = Fuzz(World(app, app.test_client(), tmp_path_factory.getbasetemp()))
        fuzz.log = log
        yield fuzz
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        app.extensions["evoucher"].engine.dispose()


# ---------------------------------------------------------------------------------------------
# The answer check every case makes.

def assert_answer(resp, op_key, expected: tuple[int, str | None], field_name: str | None = None) -> None:
    """No 5xx; a 4xx is a documented problem with a known code; and it is the expected answer."""
    status, text = resp.status_code, resp.get_data(as_text=True)[:300]
    assert status < 500, (status, text)
    code = None
    if status >= 400:
        assert resp.mimetype == "application/problem+json", (status, resp.mimetype, text)
        problem = resp.get_json()
        code = problem.get("code")
        assert problem.get("status") == status, text
        assert code in SPEC_CODES | EXTENSION_CODES, f"unknown problem code {code!r}"
        documented = OPERATIONS[op_key]["responses"].get(str(status), {}).get("description", "")
        assert code in documented.removeprefix("codes: ").split(", "), \
            f"{code} ({status}) is not documented for {op_key[0]} {op_key[1]}"
        if code == "invalid_request" and field_name and "field" in problem:
            assert problem["field"] == field_name, text
    assert (status, code) == expected, text


# ---------------------------------------------------------------------------------------------
# The cases.

@dataclass(frozen=True)
class Case:
    id: str
    op_key: tuple
    run: Callable  # (Fuzz) -> response
    expected: tuple  # (status, code); code None for a 2xx
    field_name: str | None = None  # the property an invalid_request names, when it names one

    def param(self):
        return pytest.param(self, id=self.id)


def _op_id(op_key, scheme: str | None = None) -> str:
    method, path = op_key
    return f"{method}:{path}" + (f"@{scheme}" if scheme else "")


def _json_ops():
    return [k for k, op in OPERATIONS.items() if "application/json" in op.get("requestBody", {}).get("content", {})]


def _property_case(op_key, prop: str, value: str, scheme: str | None) -> Case:
    def run(fx):
        body = fx.body_text(op_key, {prop: None if value == "missing" else VALUES[value]})
        if value == "15000-chars":
            assert len(body) < BODY_LIMIT  # the field's length rule answers, not the body limit
        if value == "20000-chars":
            assert len(body) > BODY_LIMIT
        return fx.send_json(op_key, body, scheme=scheme)
    return Case(f"{_op_id(op_key, scheme)}:{prop}={value}", op_key, run,
                body_expectation(op_key, prop, value, scheme), prop)


def _body_case(op_key, name: str, scheme: str | None) -> Case:
    schema = OPERATIONS[op_key]["requestBody"]["content"]["application/json"]["schema"]

    def run(fx):
        if name == "unknown-property":
            return fx.send_json(op_key, fx.body_text(op_key, {}, {"unexpected": '"x"'}), scheme=scheme)
        if name == "empty-body":
            return fx.send_json(op_key, b"", scheme=scheme)
        if name == "wrong-media-type":
            return fx.send_json(op_key, fx.body_text(op_key, {}), scheme=scheme, content_type="text/plain")
        if name == "content-length-5000-digits":
            return fx.send_json(op_key, fx.body_text(op_key, {}), scheme=scheme, environ=HUGE_LENGTH)
        return fx.send_json(op_key, NOT_AN_OBJECT[name], scheme=scheme)

    if name == "empty-body" and scheme is None and not schema["required"]:
        expected = PASSES[(op_key, "*", name)]  # an empty body counts as {}
    elif name == "wrong-media-type" and scheme is not None:
        expected = PASSES[(op_key, "*", name)]
    elif name == "content-length-5000-digits":
        expected = TOO_LARGE
    else:
        expected = BAD
    return Case(f"{_op_id(op_key, scheme)}:body={name}", op_key, run, expected,
                "unexpected" if name == "unknown-property" else None)


def json_body_cases() -> list[Case]:
    cases = []
    for op_key in _json_ops():
        schema = OPERATIONS[op_key]["requestBody"]["content"]["application/json"]["schema"]
        assert schema.get("additionalProperties") is False, op_key  # else "unknown-property" is no error
        for scheme in (SCHEMES if op_key in CHANNEL_CALLS else (None,)):
            for prop in schema["properties"]:
                for value in (*VALUES, "missing"):
                    cases.append(_property_case(op_key, prop, value, scheme))
            for name in ("unknown-property", "empty-body", "wrong-media-type", "content-length-5000-digits",
                         *NOT_AN_OBJECT):
                cases.append(_body_case(op_key, name, scheme))
    return cases


OAUTH = ("POST", "/v1/oauth/token")


def oauth_cases() -> list[Case]:
    """The documented form, with grant_type values a form can carry; and bodies of other kinds."""
    def form(data: bytes, content_type="application/x-www-form-urlencoded", environ=None):
        return lambda fx: fx.client.post("/v1/oauth/token", data=data, content_type=content_type,
                                         headers=fx.basic, environ_overrides=environ)
    grant = {"empty": b"grant_type=", "15000-chars": b"grant_type=" + b"x" * 15_000,
             "20000-chars": b"grant_type=" + b"x" * 20_000, "nul": b"grant_type=client_credentials%00",
             "escape": b"grant_type=%1B", "not-utf8": b"grant_type=%FF%FE",
             "encoded-surrogate": b"grant_type=%ED%A0%80", "upper-case": b"grant_type=CLIENT_CREDENTIALS",
             "missing": b"scope=x", "twice": b"grant_type=password&grant_type=client_credentials"}
    cases = [Case(f"{_op_id(OAUTH)}:grant_type={name}", OAUTH, form(data),
                  TOO_LARGE if name == "20000-chars" else BAD) for name, data in grant.items()]
    cases.append(Case(f"{_op_id(OAUTH)}:body=unknown-property", OAUTH,
                      form(b"grant_type=client_credentials&unexpected=%00"), (200, None)))  # RFC 6749 §3.2
    json_values = {name: b'{"grant_type": ' + raw.encode() + b"}" for name, raw in VALUES.items()}
    for name, data in {**json_values, **NOT_AN_OBJECT, "empty-body": b""}.items():
        cases.append(Case(f"{_op_id(OAUTH)}:json-body={name}", OAUTH, form(data, "application/json"),
                          TOO_LARGE if name == "20000-chars" else BAD))
    cases.append(Case(f"{_op_id(OAUTH)}:body=wrong-media-type", OAUTH,
                      form(b"grant_type=client_credentials", "text/plain"), BAD))
    cases.append(Case(f"{_op_id(OAUTH)}:body=content-length-5000-digits", OAUTH,
                      form(b"grant_type=client_credentials", environ=HUGE_LENGTH), TOO_LARGE))
    return cases


DECODE = ("POST", "/scanner/decode")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode_cases() -> list[Case]:
    """The photo upload: no image, an image that is none, the wrong media type, too big."""
    def upload(data=None, content_type=None, raw: bytes | None = None, environ=None):
        def run(fx):
            if raw is not None:
                return fx.client.post("/scanner/decode", data=raw, content_type=content_type,
                                      headers=fx.inst_headers)
            return fx.client.post("/scanner/decode", data=data() if callable(data) else data,
                                  headers=fx.inst_headers, environ_overrides=environ)
        return run
    image = lambda content, name="code.png": lambda: {"image": (io.BytesIO(content), name)}  # noqa: E731
    cases = {
        "no-image": (upload(lambda: {"other": (io.BytesIO(b"x"), "x.png")}), BAD, "image"),
        "image-as-text": (upload({"image": "EV1:not-a-file"}), BAD, "image"),
        "empty-file": (upload(image(b"")), BAD, None),
        "not-an-image": (upload(image(b"%PDF-1.4 not an image")), BAD, None),
        "truncated-png": (upload(image(PNG_SIGNATURE + b"\x00\x00\x00\rIHDR")), BAD, None),
        "control-char-filename": (upload(image(b"x", "a\x00b.png")), BAD, None),
        "json-body": (upload(raw=b'{"image": "x"}', content_type="application/json"), BAD, "image"),
        "empty-body": (upload(raw=b"", content_type="multipart/form-data; boundary=x"), BAD, "image"),
        "over-2-MiB": (upload(image(b"\x00" * (2 * 1024 * 1024 + 1))), TOO_LARGE, None),
        "content-length-5000-digits": (upload(image(b"x"), environ=HUGE_LENGTH), TOO_LARGE, None),
    }
    return [Case(f"{_op_id(DECODE)}:{name}", DECODE, run, expected, field_name)
            for name, (run, expected, field_name) in cases.items()]


# Operations documented without a body whose views still read one (it must be empty or {}).
BODYLESS_READERS = (("POST", "/v1/me/family/{link_id}/accept"), ("POST", "/v1/me/loss-report"))


def bodyless_reader_cases() -> list[Case]:
    cases = []
    for op_key in BODYLESS_READERS:
        bodies = {"unknown-property": (b'{"unexpected": 1}', "application/json"),
                  "wrong-media-type": (b"{}", "text/plain"),
                  **{name: (body, "application/json") for name, body in NOT_AN_OBJECT.items()}}
        for name, (body, content_type) in bodies.items():
            def run(fx, op_key=op_key, body=body, content_type=content_type):
                return fx.send_json(op_key, body, content_type=content_type)
            cases.append(Case(f"{_op_id(op_key)}:body={name}", op_key, run, BAD,
                              "unexpected" if name == "unknown-property" else None))
    return cases


# Path segment values, percent-encoded as sent.
PATH_VALUES = {
    "long": "a" * 4000, "nul": "id%00", "escape": "id%1B", "del": "id%7F", "newline": "id%0A",
    "unicode": "%E7%8E%8B%F0%9F%98%80", "not-utf8": "%FF%FE", "encoded-surrogate": "%ED%A0%80",
    "quotes": "%22%27%3C%3E", "space": "a%20b", "percent": "%25",
}
CONTROL = ("nul", "escape", "del", "newline")
NOT_FOUND_CODES = {  # what each path parameter answers for an id that names nothing
    ("GET", "/v1/scans/{scan_id}"): (404, "not_found"),
    ("POST", "/v1/me/family/{link_id}/accept"): (404, "family_link_not_found"),
    ("DELETE", "/v1/me/family/{link_id}"): (404, "family_link_not_found"),
    ("DELETE", "/v1/me/remote-care-filings/{filing_id}"): (404, "filing_not_found"),
    ("DELETE", "/v1/me/channels/{channel_id}"): (404, "channel_not_bound"),
    **{op_key: (404, "channel_unknown") for op_key in CHANNEL_CALLS},
}


def _send_plain(fx, op_key, path: str, scheme: str | None = None):
    """A valid request to the operation at `path` (a valid body where it takes one)."""
    if op_key in fx.bases:
        return fx.send_json(op_key, fx.body_text(op_key, {}), path=path, scheme=scheme)
    if op_key == OAUTH:
        return fx.client.post(path, data={"grant_type": "client_credentials"}, headers=fx.basic)
    return fx.client.open(path, method=op_key[0], headers=fx.headers_for(op_key))


def path_cases() -> list[Case]:
    cases = []
    for op_key in OPERATIONS:
        params = [p for p in OPERATIONS[op_key].get("parameters", []) if p["in"] == "path"]
        for param in params:
            assert op_key in NOT_FOUND_CODES, f"no not-found answer known for {op_key}"
            for name, value in PATH_VALUES.items():
                def run(fx, op_key=op_key, param=param["name"], value=value):
                    scheme = "wechat" if op_key in CHANNEL_CALLS else None
                    ids = {**fx.path_ids(op_key, scheme), param: value}
                    return _send_plain(fx, op_key, op_key[1].format(**ids), scheme)
                cases.append(Case(f"{_op_id(op_key)}:{param['name']}={name}", op_key, run,
                                  BAD if name in CONTROL else NOT_FOUND_CODES[op_key]))
    return cases


QUERY_VALUES = {
    "long-digits": "1" * 5000, "long-text": "a" * 5000, "nul": "1%00", "escape": "%1B", "del": "1%7F",
    "unicode": "%E7%8E%8B", "arabic-indic": "%D9%A1", "not-utf8": "%FF", "hex": "0x10", "decimal-point": "1.0",
    "plus": "%2B1", "minus-zero": "-0", "underscore": "1_000", "space-after": "1%20", "negative-huge": "-" + "9" * 30,
}


def _query_expectation(op_key, param: str, name: str):
    if name in ("nul", "escape", "del"):
        return BAD, None
    if param in ("since", "cursor"):
        return BAD, param
    assert param == "voucher_id", (op_key, param)
    return (404, "voucher_not_found"), None  # names no voucher


def query_cases() -> list[Case]:
    cases = []
    for op_key, op in OPERATIONS.items():
        # Any operation: a control character in a query value or name (docs/decisions.md).
        for label, query in (("value", "?fuzz=%00"), ("name", "?%1B=1")):
            def run(fx, op_key=op_key, query=query):
                scheme = "wechat" if op_key in CHANNEL_CALLS else None
                return _send_plain(fx, op_key, op_key[1].format(**fx.path_ids(op_key, scheme)) + query, scheme)
            cases.append(Case(f"{_op_id(op_key)}:control-char-in-query-{label}", op_key, run, BAD))
        for param in (p["name"] for p in op.get("parameters", []) if p["in"] == "query"):
            for name, value in QUERY_VALUES.items():
                expected, field_name = _query_expectation(op_key, param, name)
                def run(fx, op_key=op_key, url=f"{op_key[1]}?{param}={value}"):
                    return fx.client.open(url, method=op_key[0], headers=fx.headers_for(op_key))
                cases.append(Case(f"{_op_id(op_key)}:{param}={name}", op_key, run, expected, field_name))
    return cases


BODY_CASES = json_body_cases() + oauth_cases() + decode_cases() + bodyless_reader_cases()
URL_CASES = path_cases() + query_cases()


# ---------------------------------------------------------------------------------------------
# Tests.

def test_every_documented_operation_is_fuzzed(fx):
    assert fx.client.get("/openapi.json").get_json() == json.loads(json.dumps(DOC))  # what is served
    assert {case.op_key for case in BODY_CASES + URL_CASES} == set(OPERATIONS)
    assert {k for k, op in OPERATIONS.items() if "requestBody" in op} <= {case.op_key for case in BODY_CASES}
    for op_key in _json_ops():  # a base body has exactly the documented properties
        schema = OPERATIONS[op_key]["requestBody"]["content"]["application/json"]["schema"]
        assert set(fx.bases[op_key]) == set(schema["properties"]), op_key
    assert len({case.id for case in BODY_CASES + URL_CASES}) == len(BODY_CASES + URL_CASES)


@pytest.mark.parametrize("case", [c.param() for c in BODY_CASES])
def test_bad_body(fx, case):
    assert_answer(case.run(fx), case.op_key, case.expected, case.field_name)


@pytest.mark.parametrize("case", [c.param() for c in URL_CASES])
def test_bad_path_or_query(fx, case):
    assert_answer(case.run(fx), case.op_key, case.expected, case.field_name)


def test_nothing_was_lost(fx):
    """After every case: the holder's voucher, PIN, link, filing and scan are as they were, and
    a fresh code (own and member's) still issues and scans exactly once."""
    assert fx.snapshot() == fx.before
    # Every state change of a voucher is recorded: the only one a case may make is the amount 0
    # case's setting of the limit it already had.
    assert {r["kind"] for r in fx.records_since(fx.last_record)} <= {"pin_free_limit"}
    client, world = fx.client, fx.world
    fx.ok(client.put("/v1/me/pin-free-limit", headers=fx.holder_headers, json={"amount_fen": 0, "pin": PIN}), 200)
    for body in ({}, {"voucher_id": fx.member_voucher_id}):
        token = fx.ok(client.post("/v1/me/qr-tokens", json=body, headers=fx.holder_headers), 201)["token"]
        fx.ok(world.scan("H110000001", token), 200)
        again = world.scan("H110000001", token)
        assert again.status_code == 409 and again.get_json()["code"] == "token_already_used"
    fx.ok(world.scan("H110000001", fx.base_token), 200)  # the scan cases' base token was never consumed


def test_no_personal_data_was_logged(fx):
    """Bad input is where a value is most likely to reach a log line (an error's detail, a
    repr): after every case, no ID number, phone, PIN or token of the world or of the bodies
    appears in what the service logged, and the lines are JSON. (Run alone, it reads what the
    world's own set-up logged.)"""
    lines = [line for line in fx.log.getvalue().splitlines() if line.strip()]
    assert lines
    for line in lines:
        json.loads(line)
    text = "\n".join(lines)
    people = [fx.world.person(name) for name in ("王建国", "王小明", "高翔")]
    secrets = {p["id_number"] for p in people} | {p["phone"] for p in people} | {
        _nobody_id_number(), "13900000000", "13800000000", PIN, NEW_PIN, fx.base_token,
        fx.holder_headers["Authorization"].split()[1], fx.inst_headers["Authorization"].split()[1]}
    for secret in secrets:
        assert secret not in text, "a personal datum or a token reached the log"
