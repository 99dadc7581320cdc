"""Bank app request signing, national mobile-payment style: SM2 with SM3 (GM/T 0009 DER,
user id 1234567812345678) over the canonical `key=value&…` string of the JSON body's
top-level fields plus app_id, timestamp and nonce. The canonical string is the service's
published definition (`app.channels.bank.canonical_string`), used here as-is so that the
two sides cannot drift apart.
"""
from __future__ import annotations

import base64
import json
import time
import uuid

from app.channels.bank import canonical_string
from crypto import sm2

from . import SignedRequest


class BankSigner:
    """Signs calls as a bank app (app id) with its SM2 private key; `serial` names the key."""

    def __init__(self, app_id: str, private_key_pem: bytes, serial: str | None = None):
        self.app_id = app_id
        self.serial = serial
        self._private = sm2.private_key_from_pem(private_key_pem)

    def sign(self, call: str, url: str, payload: dict, *, now: float | None = None,
             nonce: str | None = None) -> SignedRequest:
        """A signed POST of `payload` as a JSON body, with the X-Bank-* headers."""
        timestamp = str(int(time.time() if now is None else now))
        nonce = nonce or uuid.uuid4().hex
        envelope = {"app_id": self.app_id, "timestamp": timestamp, "nonce": nonce}
        if set(envelope) & set(payload):
            raise ValueError("payload fields may not be named app_id, timestamp or nonce")
        content = canonical_string({**payload, **envelope}).encode("utf-8")
        signature = base64.b64encode(sm2.sign_der(self._private, content)).decode()
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "X-Bank-App-Id": self.app_id, "X-Bank-Timestamp": timestamp,
                   "X-Bank-Nonce": nonce, "X-Bank-Signature": signature}
        if self.serial:
            headers["X-Bank-Serial"] = self.serial
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return SignedRequest("POST", url, headers, body)
