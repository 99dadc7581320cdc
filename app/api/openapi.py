"""The OpenAPI 3.1 document, kept in step with the routes (a test compares it with the URL map)."""
from __future__ import annotations

from ..channels.common import CHANNEL_USER_PATTERN, METHODS, NONCE_RE
from ..errors import CODES
from ..services.activation import PURPOSES as REVERIFICATION_PURPOSES
from ..services.family import RELATIONS
from ..services.scans import PURPOSES

PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _err(*codes: str) -> dict:
    return _with_codes({}, codes)


def _with_codes(responses: dict, codes) -> dict:
    """`responses` plus a problem response per code; codes of one status share its entry."""
    out = dict(responses)
    for code in codes:
        status = str(CODES[code][0])
        entry = out.get(status) or {"description": "", "content": {"application/problem+json": {"schema": PROBLEM}}}
        if code in entry["description"].removeprefix("codes: ").split(", "):
            continue
        out[status] = {**entry, "description": (entry["description"] + ", " if entry["description"] else "codes: ")
                       + code}
    return out


def _json(schema: dict, description: str = "OK", status: str = "200") -> dict:
    return {status: {"description": description, "content": {"application/json": {"schema": schema}}}}


def _body(props: dict, required: list[str]) -> dict:
    # A body with no required member may be omitted: an empty body counts as {}.
    return {"required": bool(required), "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": False, "properties": props, "required": required}}}}


S = {"type": "string"}
PIN = {"type": "string", "pattern": r"^\d{6}$"}
REGION = {"type": "string", "pattern": r"^\d{6}$"}
PHONE = {"type": "string", "pattern": r"^1\d{10}$"}
REQUEST_ID = {"type": "string", "pattern": "^" + NONCE_RE.pattern + "$"}
CHANNEL_USER = {"type": "string", "pattern": "^" + CHANNEL_USER_PATTERN + "$", "maxLength": 128}
OBJ = {"type": "object"}
INST = [{"institutionToken": []}]
HOLDER = [{"holderToken": []}]
CHANNEL = [{"channelSignature": []}]
COMMON = ("invalid_request", "payload_too_large")
FROZEN = ("voucher_suspended", "voucher_cancelled")  # what a holder may not change while reported lost
TOKEN_ERRORS = ("token_malformed", "token_signature_invalid", "token_unknown_key", "token_expired",
                "token_already_used", "token_revoked", "voucher_not_found", "voucher_suspended",
                "voucher_cancelled", "institution_inactive", "region_not_enrolled",
                "remote_care_filing_required", "pin_required", "pin_change_required", "pin_locked", "rate_limited",
                "service_unavailable", "unauthorized", "forbidden")
CHANNEL_ERRORS = ("channel_signature_invalid", "channel_request_replayed", "channel_unknown", "rate_limited",
                  "service_unavailable", *COMMON)


def op(summary: str, tag: str, responses: dict, *, security=None, body=None, params=None) -> dict:
    # Any path segment or query value may carry text no field allows (schema.check_url_text):
    # every operation can answer 400 invalid_request.
    out = {"summary": summary, "tags": [tag], "responses": _with_codes(responses, ["invalid_request"])}
    if security is not None:
        out["security"] = security
    if body:
        out["requestBody"] = body
    if params:
        out["parameters"] = params
    return out


def path_param(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": S}


def query_param(name: str, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": S, "description": description}


def _channel_call(call: str, summary: str, props: dict, required: list[str], extra_errors=()) -> dict:
    method = {"type": "string", "const": METHODS[call],
              "description": "optional: the call this body is signed for; a bank signature does not cover "
                             "the path, so this keeps the body from serving another endpoint (docs/channels.md)"}
    return {"post": op(summary, "channels", {**_json(OBJ), **_err(*CHANNEL_ERRORS, *extra_errors)},
                      security=CHANNEL, body=_body({**props, "method": method}, required),
                      params=[path_param("channel_id")])}


def document() -> dict:
    html = {"200": {"description": "HTML page", "content": {"text/html": {}}}}
    paths = {
        "/healthz": {"get": op("Process is up", "ops", _json(OBJ))},
        "/readyz": {"get": op("Database and token store reachable", "ops",
                              {**_json(OBJ), "503": {"description": "not ready"}})},
        "/metrics": {"get": op("Prometheus metrics", "ops", {"200": {"description": "text format",
                                                                     "content": {"text/plain": {}}}})},
        "/openapi.json": {"get": op("This document", "ops", _json(OBJ))},
        "/.well-known/jwks.json": {"get": op("Public token-signing keys (RFC 7517): the signing key, a rotated-in "
                                             "key before it signs, retired keys until their tokens expire",
                                             "ops", _json(OBJ))},
        "/v1/oauth/token": {"post": op("Client-credentials access token (RFC 6749 §4.4), HTTP Basic", "institutions",
                                       {**_json({"type": "object", "properties": {
                                           "access_token": S, "token_type": S, "expires_in": {"type": "integer"},
                                           "scan_purposes": {"type": "array", "items": {"enum": list(PURPOSES)},
                                                             "description": "the purposes POST /v1/scans accepts "
                                                                            "from this institution (its kind)"}}}),
                                        **_err("unauthorized", "institution_inactive", *COMMON)},
                                       security=[{"clientBasic": []}],
                                       body={"required": True, "content": {"application/x-www-form-urlencoded": {
                                           "schema": {"type": "object", "properties": {
                                               "grant_type": {"const": "client_credentials"}}}}}})},
        "/v1/scans": {"post": op("Verify a QR token once; returns the visit's ec_token", "institutions",
                                 {**_json({"$ref": "#/components/schemas/Scan"}), **_err(*TOKEN_ERRORS, *COMMON)},
                                 security=INST, body=_body({"token": S, "purpose": {"enum": list(PURPOSES)}},
                                                           ["token", "purpose"]))},
        "/v1/scans/{scan_id}": {"get": op("One of the institution's own scans", "institutions",
                                          {**_json({"$ref": "#/components/schemas/Scan"}),
                                           **_err("not_found", "institution_inactive", "unauthorized")},
                                          security=INST, params=[path_param("scan_id")])},
        "/v1/revocations": {"get": op("Revoked voucher ids and token ids since a cursor", "institutions",
                                      {**_json({"$ref": "#/components/schemas/RevocationPage"}),
                                       **_err("invalid_request", "institution_inactive", "unauthorized")},
                                      security=INST,
                                      params=[query_param("since", "cursor from a previous page")])},
        "/v1/me": {"get": op("Voucher status, enrolments, region, channels, family", "holders",
                             {**_json(OBJ), **_err("unauthorized")}, security=HOLDER)},
        "/v1/me/qr-tokens": {"post": op("Issue a QR token for self or a linked member", "holders",
                                        {**_json(OBJ, "Created", "201"), **_err(
                                            "forbidden", "voucher_suspended", "voucher_cancelled", "voucher_not_found",
                                            "rate_limited", "service_unavailable", "unauthorized", *COMMON)},
                                        security=HOLDER,
                                        body=_body({"voucher_id": S, "format": {"enum": ["ev1", "jwt"]},
                                                    "image": {"enum": ["svg", "png"]}}, []))},
        "/v1/me/active-region": {"put": op("Switch the active insured region", "holders",
                                           {**_json(OBJ), **_err("region_not_enrolled", *FROZEN, "unauthorized", *COMMON)},
                                           security=HOLDER, body=_body({"region_code": REGION}, ["region_code"]))},
        "/v1/me/family": {
            "get": op("Family links", "holders", {**_json(OBJ), **_err("unauthorized")}, security=HOLDER),
            "post": op("Link a family member (亲情账户)", "holders",
                       {**_json(OBJ, "Created", "201"), **_err("family_limit_reached", "family_link_exists",
                                                               "person_not_enrolled", "invalid_id_number",
                                                               "unsupported_id_type", *FROZEN, "rate_limited", "unauthorized", *COMMON)},
                       security=HOLDER, body=_body({"id_number": S, "name": S, "relation": {"enum": list(RELATIONS)},
                                                    "document_ref": S}, ["id_number", "name", "relation"]))},
        "/v1/me/family/{link_id}/accept": {"post": op(
            "Accept a link as the member (after a family_accept face check of this session's channel user)",
            "holders",
            {**_json(OBJ), **_err("family_link_not_found", "reverification_required", *FROZEN, "unauthorized")},
            security=HOLDER, params=[path_param("link_id")])},
        "/v1/me/family/{link_id}": {"delete": op(
            "End a link (either side); the guardian's tokens for the member are revoked", "holders",
            {**_json(OBJ), **_err("family_link_not_found", *FROZEN, "unauthorized")}, security=HOLDER,
            params=[path_param("link_id")])},
        "/v1/me/remote-care-filings": {
            "get": op("Remote-care filings", "holders", {**_json(OBJ), **_err("unauthorized")}, security=HOLDER),
            "post": op("File remote care (异地就医备案)", "holders",
                       {**_json(OBJ, "Created", "201"), **_err(*FROZEN, "unauthorized", *COMMON)}, security=HOLDER,
                       body=_body({"care_region_code": REGION, "valid_from": {"type": "string", "format": "date"},
                                   "valid_until": {"type": "string", "format": "date"}},
                                  ["care_region_code", "valid_from", "valid_until"]))},
        "/v1/me/remote-care-filings/{filing_id}": {"delete": op(
            "Cancel a filing", "holders", {**_json(OBJ), **_err("filing_not_found", *FROZEN, "unauthorized")},
            security=HOLDER, params=[path_param("filing_id")])},
        "/v1/me/pin": {"put": op("Set, change or reset the payment PIN (reset: after a pin_reset face check of this "
                                 "session's channel user)", "holders",
                                 {**_json(OBJ), **_err("pin_invalid", "pin_locked", "pin_too_weak", "pin_required",
                                                       *FROZEN, "rate_limited", "unauthorized", *COMMON)},
                                 security=HOLDER, body=_body({"old_pin": PIN, "new_pin": PIN}, ["new_pin"]))},
        "/v1/me/pin-free-limit": {"put": op("Password-free limit (限额免密) in fen, 0-500000", "holders",
                                            {**_json(OBJ), **_err("pin_invalid", "pin_locked", "pin_required",
                                                                  "pin_change_required", *FROZEN, "rate_limited",
                                                                  "unauthorized", *COMMON)},
                                            security=HOLDER, body=_body({"amount_fen": {
                                                "type": "integer", "minimum": 0, "maximum": 500000}, "pin": PIN},
                                                ["amount_fen", "pin"]))},
        "/v1/me/loss-report": {"post": op("Report loss (挂失): suspends at once", "holders",
                                          {**_json(OBJ), **_err("voucher_cancelled", "unauthorized")},
                                          security=HOLDER)},
        "/v1/me/phone": {"put": op("Change phone (needs the PIN)", "holders",
                                   {**_json(OBJ), **_err("pin_invalid", "pin_locked", "pin_required",
                                                         *FROZEN, "rate_limited", "unauthorized", *COMMON)},
                                   security=HOLDER, body=_body({"phone": PHONE, "pin": PIN}, ["phone", "pin"]))},
        "/v1/me/channels/{channel_id}": {"delete": op(
            "Unbind one channel (needs the PIN; also while reported lost, not once cancelled)", "holders",
            {**_json(OBJ), **_err("channel_not_bound", "pin_invalid", "pin_locked", "pin_required", "voucher_cancelled",
                                  "rate_limited", "unauthorized", *COMMON)},
            security=HOLDER, params=[path_param("channel_id")], body=_body({"pin": PIN}, ["pin"]))},
        "/v1/me/records": {"get": op("Usage records, newest first", "holders",
                                     {**_json(OBJ), **_err("forbidden", "voucher_not_found", *FROZEN, "invalid_request",
                                                           "unauthorized")},
                                     security=HOLDER, params=[query_param("cursor", "next_cursor of the last page"),
                                                              query_param("voucher_id", "a linked member's voucher")])},
        "/v1/channels/{channel_id}/activations": _channel_call(
            "activations", "Activate a voucher after the channel's real-name and face check",
            {"request_id": REQUEST_ID, "channel_user_id": CHANNEL_USER, "id_type": S, "id_number": S, "name": S,
             "phone": PHONE, "face_verified": {"type": "boolean"}, "pin": PIN},
            ["request_id", "channel_user_id", "id_type", "id_number", "name", "phone", "face_verified"],
            ("unsupported_id_type", "invalid_id_number", "person_not_enrolled", "name_mismatch",
             "face_verification_required", "voucher_suspended", "pin_too_weak", "pin_invalid", "pin_locked")),
        "/v1/channels/{channel_id}/sessions": _channel_call(
            "sessions", "Open a 15-minute holder session", {"channel_user_id": CHANNEL_USER, "request_id": REQUEST_ID},
            ["channel_user_id"], ("channel_not_bound", "voucher_cancelled")),
        "/v1/channels/{channel_id}/reverifications": _channel_call(
            "reverifications", "Record a fresh face check for pin_reset, reinstate or family_accept (serves this "
            "channel user's sessions only)",
            {"channel_user_id": CHANNEL_USER, "face_verified": {"type": "boolean"},
             "purpose": {"enum": list(REVERIFICATION_PURPOSES)}, "link_id": S, "request_id": REQUEST_ID},
            ["channel_user_id", "face_verified", "purpose"],
            ("face_verification_required", "channel_not_bound", "voucher_cancelled")),
        "/v1/channels/{channel_id}/unbindings": _channel_call(
            "unbindings", "Unbind a channel user", {"channel_user_id": CHANNEL_USER, "request_id": REQUEST_ID},
            ["channel_user_id"], ("channel_not_bound",)),
        "/m/": {"get": op("Holder page (mobile)", "pages", html)},
        "/scanner/": {"get": op("Institution desk scanner page", "pages", html)},
        "/scanner/decode": {"post": op("Decode a photo or camera frame of a QR code; limited per institution", "pages",
                                       {**_json(OBJ), **_err("token_malformed", "institution_inactive", "unauthorized",
                                                             "rate_limited", *COMMON)},
                                       security=INST, body={"content": {"multipart/form-data": {"schema": {
                                           "type": "object", "properties": {"image": {"type": "string",
                                                                                      "format": "binary"}}}}}})},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "医保电子凭证 e-voucher service", "version": "1.0.0",
                 "description": "Signed one-use QR tokens for insured people, verified in real time by institutions."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "clientBasic": {"type": "http", "scheme": "basic"},
                "institutionToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "holderToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "channelSignature": {"type": "apiKey", "in": "header", "name": "Authorization",
                                     "description": "Per-channel request signature (WeChat Pay v3 header, Alipay "
                                                    "RSA2 form sign, or X-Bank-* SM2 headers); see docs/channels.md"},
            },
            "schemas": {
                "Problem": {"type": "object", "required": ["type", "title", "status", "code", "detail"],
                            "properties": {"type": S, "title": S, "status": {"type": "integer"},
                                           "code": {"enum": sorted(CODES)}, "detail": S}},
                "Scan": {"type": "object", "properties": {
                    "scan_id": S, "ec_token": S, "ec_token_expires_in": {"type": "integer"},
                    "person": {"type": "object", "properties": {"name_masked": S, "id_number_masked": S,
                                                                "gender": S, "age": {"type": "integer"}}},
                    "insurance": {"type": "object", "properties": {"region_code": S, "insurance_type": S}},
                    "voucher_status": S, "presented_by": {"type": ["object", "null"]},
                    "remote_care_filing_id": {"type": ["string", "null"]}, "purpose": {"enum": list(PURPOSES)},
                    "token_id": S, "scanned_at": {"type": "string", "format": "date-time"}}},
                "RevocationPage": {"type": "object", "properties": {
                    "items": {"type": "array", "items": {"type": "object", "properties": {
                        "cursor": S, "kind": {"enum": ["voucher", "reinstated", "token"]}, "id": S,
                        "reason": S, "at": {"type": "string", "format": "date-time"}}}},
                    "next": {"type": "string", "description": "the cursor to send as `since` next time"},
                    "more": {"type": "boolean"}}},
            },
        },
    }
