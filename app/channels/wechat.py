"""WeChat Pay API v3 request signatures (商户 API 签名), as the wechatpayv3 SDK produces them.

    Authorization: WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",signature="…",
                   timestamp="…",serial_no="…"
    signature = base64 RSA-SHA256 (PKCS#1 v1.5) over
                METHOD\\nPATH_AND_QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n
The body is verified as the raw bytes sent; `serial_no` picks the key, `mchid` is the app id.
"""
from __future__ import annotations

import re
from typing import Mapping

from .common import (NONCE_RE, Authenticated, ChannelInfo, b64decode_strict, bad_signature,
                     header, json_object, lookup_key, rsa_sha256_verifies)

SCHEMA = "WECHATPAY2-SHA256-RSA2048"
_REQUIRED = ("mchid", "nonce_str", "signature", "timestamp", "serial_no")
# key="quoted value" or key=token, separated by commas; whitespace tolerated around both.
_PARAM = re.compile(r'\s*([A-Za-z_]+)\s*=\s*(?:"([^"]*)"|([^",\s]*))\s*(?:,|$)')
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def parse_authorization(value: str | None) -> dict[str, str]:
    """Split an Authorization header of this schema into its parameters, or refuse it."""
    if not value:
        raise bad_signature("Missing Authorization header")
    schema, _, rest = value.strip().partition(" ")
    if schema != SCHEMA:
        raise bad_signature(f"Authorization schema must be {SCHEMA}")
    params: dict[str, str] = {}
    pos, rest = 0, rest.strip()
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if match is None or match.end() == pos:
            raise bad_signature("Garbled Authorization header")
        name = match.group(1)
        if name in params:
            raise bad_signature(f"Duplicate Authorization parameter {name}")
        params[name] = match.group(2) if match.group(2) is not None else match.group(3)
        pos = match.end()
    missing = [name for name in _REQUIRED if not params.get(name)]
    if missing:
        raise bad_signature(f"Authorization lacks {', '.join(missing)}")
    return params


def signing_message(method: str, path_and_query: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """The bytes WeChat Pay v3 signs: five newline-terminated lines, the body as sent."""
    head = f"{method}\n{path_and_query}\n{timestamp}\n{nonce}\n".encode("utf-8")
    return head + body + b"\n"


def authenticate(info: ChannelInfo, *, call: str, method: str, path_and_query: str,
                 headers: Mapping[str, str], body: bytes) -> Authenticated:
    """Verify the Authorization header over the request; the body must be a JSON object."""
    params = parse_authorization(header(headers, "Authorization"))
    if params["mchid"] != info.app_id:
        raise bad_signature("mchid is not this channel's app id")
    if not _TIMESTAMP.fullmatch(params["timestamp"]):
        raise bad_signature("timestamp must be Unix seconds")
    if not NONCE_RE.fullmatch(params["nonce_str"]):
        raise bad_signature("nonce_str must be 1-64 letters, digits or -_.:")
    pem = lookup_key(info.keys, params["serial_no"])
    if pem is None:
        raise bad_signature("Unknown serial_no")
    try:
        signature = b64decode_strict(params["signature"])
    except ValueError:
        raise bad_signature("signature is not base64") from None
    # Flask's full_path ends in "?" when there is no query; the client signed the bare path.
    target = path_and_query[:-1] if path_and_query.endswith("?") else path_and_query
    message = signing_message(method, target, params["timestamp"], params["nonce_str"], body)
    if not rsa_sha256_verifies(pem, message, signature):
        raise bad_signature("Signature does not verify")
    return Authenticated(nonce=params["nonce_str"], timestamp=int(params["timestamp"]),
                         payload=json_object(body, "Body"))
