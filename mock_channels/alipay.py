"""Alipay open-platform request signing (RSA2), as Alipay's public documentation describes
it (自行实现签名).

Every parameter except `sign` with a non-empty value, sorted by name, joined as
`name=value&…` with values not URL-encoded, is signed with SHA256withRSA; the request is an
application/x-www-form-urlencoded UTF-8 form. `timestamp` is Beijing time (UTC+8).
This service names its calls `evoucher.<thing>.create`; `biz_content.request_id` is the nonce.
"""
from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from . import SignedRequest

METHODS = {
    "activations": "evoucher.activation.create",
    "sessions": "evoucher.session.create",
    "reverifications": "evoucher.reverification.create",
    "unbindings": "evoucher.unbinding.create",
}
BEIJING = timezone(timedelta(hours=8))


def beijing_time(epoch: float) -> str:
    """Alipay's timestamp text for a Unix time."""
    return datetime.fromtimestamp(epoch, BEIJING).strftime("%Y-%m-%d %H:%M:%S")


class AlipaySigner:
    """Signs calls as an Alipay open-platform app (app_id) with its application private key."""

    def __init__(self, app_id: str, private_key_pem: bytes):
        self.app_id = app_id
        self._key = serialization.load_pem_private_key(private_key_pem, password=None)

    def sign_params(self, params: dict[str, str]) -> str:
        """base64 SHA256withRSA over the sorted, unencoded `k=v&…` of the non-empty params."""
        content = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "sign" and params[k] != "")
        return base64.b64encode(self._key.sign(content.encode("utf-8"), padding.PKCS1v15(),
                                               hashes.SHA256())).decode()

    def sign(self, call: str, url: str, payload: dict, *, now: float | None = None,
             nonce: str | None = None) -> SignedRequest:
        """A signed form POST; `payload` becomes biz_content and must carry request_id."""
        if not payload.get("request_id"):
            raise ValueError("Alipay calls carry their nonce as biz_content.request_id")
        if nonce is not None and nonce != payload["request_id"]:
            raise ValueError("the Alipay nonce is biz_content.request_id")
        params = {
            "app_id": self.app_id,
            "method": METHODS[call],
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": beijing_time(time.time() if now is None else now),
            "version": "1.0",
            "biz_content": json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
        }
        params["sign"] = self.sign_params(params)
        headers = {"Content-Type": "application/x-www-form-urlencoded;charset=utf-8",
                   "Accept": "application/json"}
        return SignedRequest("POST", url, headers, urlencode(params, encoding="utf-8").encode("ascii"))
