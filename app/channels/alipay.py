"""Alipay open-platform request signatures (RSA2), as python-alipay-sdk's `sign_data` makes them.

The body is application/x-www-form-urlencoded (UTF-8) with app_id, method, charset=utf-8,
sign_type=RSA2, timestamp ("YYYY-MM-DD HH:MM:SS", UTC+8), version=1.0, biz_content (JSON),
optionally format, and sign: base64 RSA-SHA256 (PKCS#1 v1.5) over the ASCII-sorted
`key=value&…` of every parameter except `sign`, values unencoded. Like the SDK, `sign_type` is
signed and empty values stay in; Alipay's own SDKs leave empty values out, so that form is
accepted as well (both forms cover the same non-empty parameters).

Key choice: requests carry no key serial unless the partner uses certificate mode, where the
SDK (`DCAliPay`) adds `app_cert_sn`; then it must name a registered serial. Otherwise every
registered key is tried, which is how a channel rotates keys without a flag day.
`biz_content.request_id` is the nonce (and, for activations, the idempotency key).
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Mapping
from urllib.parse import parse_qsl

from .common import (METHODS, NONCE_RE, Authenticated, ChannelInfo, b64decode_strict, bad_request,
                     bad_signature, json_object, lookup_key, rsa_sha256_verifies)

CHINA_STANDARD_TIME = timezone(timedelta(hours=8))
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
_REQUIRED = ("app_id", "method", "charset", "sign_type", "timestamp", "version", "biz_content", "sign")


def parse_form(body: bytes) -> dict[str, str]:
    """The form parameters; a repeated parameter is ambiguous and refused."""
    try:
        text = body.decode("utf-8")
        if not text:
            raise ValueError("empty form")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True,
                          encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise bad_request("Body must be an application/x-www-form-urlencoded UTF-8 form") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise bad_signature(f"Parameter {name} appears twice")
        params[name] = value
    return params


def signing_strings(params: Mapping[str, str]) -> list[str]:
    """The signed content: the SDK's form (all but sign) and, if it differs, Alipay's (no empties)."""
    items = sorted((k, v) for k, v in params.items() if k != "sign")
    forms = ["&".join(f"{k}={v}" for k, v in items)]
    if any(v == "" for _, v in items):
        forms.append("&".join(f"{k}={v}" for k, v in items if v != ""))
    return forms


def parse_timestamp(text: str) -> int:
    """Unix seconds of an Alipay timestamp, which is China Standard Time (UTC+8)."""
    if not _TIMESTAMP.fullmatch(text):
        raise ValueError("bad timestamp")
    moment = datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=CHINA_STANDARD_TIME)
    return int(moment.timestamp())


def _check_envelope(info: ChannelInfo, call: str, params: Mapping[str, str]) -> None:
    missing = [name for name in _REQUIRED if not params.get(name)]
    if missing:
        raise bad_signature(f"Missing parameter {', '.join(missing)}")
    if params["app_id"] != info.app_id:
        raise bad_signature("app_id is not this channel's app id")
    if params["sign_type"] != "RSA2":
        raise bad_signature("sign_type must be RSA2")
    if params["charset"].lower() != "utf-8":
        raise bad_signature("charset must be utf-8")
    if params["version"] != "1.0":
        raise bad_signature("version must be 1.0")
    if params.get("format", "JSON").upper() != "JSON":
        raise bad_signature("format must be JSON")
    if params["method"] != METHODS[call]:
        raise bad_signature(f"method must be {METHODS[call]} for this call")


def _candidate_keys(info: ChannelInfo, params: Mapping[str, str]) -> list[bytes]:
    cert_sn = params.get("app_cert_sn")
    if cert_sn:
        pem = lookup_key(info.keys, cert_sn)
        if pem is None:
            raise bad_signature("Unknown app_cert_sn")
        return [pem]
    return list(info.keys.values())


def authenticate(info: ChannelInfo, *, call: str, method: str, path_and_query: str,
                 headers: Mapping[str, str], body: bytes) -> Authenticated:
    """Verify the form's RSA2 signature; the business request is biz_content."""
    params = parse_form(body)
    _check_envelope(info, call, params)
    try:
        timestamp = parse_timestamp(params["timestamp"])
    except ValueError:
        raise bad_signature("timestamp must be YYYY-MM-DD HH:MM:SS") from None
    try:
        signature = b64decode_strict(params["sign"])
    except ValueError:
        raise bad_signature("sign is not base64") from None
    messages = [form.encode("utf-8") for form in signing_strings(params)]
    if not any(rsa_sha256_verifies(pem, message, signature)
               for pem in _candidate_keys(info, params) for message in messages):
        raise bad_signature("Signature does not verify")
    payload = json_object(params["biz_content"], "biz_content")
    request_id = payload.get("request_id")
    if not isinstance(request_id, str) or not NONCE_RE.fullmatch(request_id):
        raise bad_request("biz_content.request_id must be 1-64 letters, digits or -_.:")
    return Authenticated(nonce=request_id, timestamp=timestamp, payload=payload)
