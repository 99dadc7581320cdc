"""WeChat Pay API v3 merchant request signing, as WeChat Pay's public documentation
describes it (商户 API 请求签名生成).

    signed message = HTTP_METHOD\\nURL_PATH_AND_QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n
    signature      = base64(SHA256withRSA(merchant private key, message))
    Authorization: WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",signature="…",
                   timestamp="…",serial_no="<merchant certificate serial>"
"""
from __future__ import annotations

import base64
import json
import time
import uuid
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from . import SignedRequest


class WechatPaySigner:
    """Signs calls as a WeChat Pay merchant (mchid) with its API certificate key."""

    def __init__(self, mchid: str, serial_no: str, private_key_pem: bytes):
        self.mchid = mchid
        self.serial_no = serial_no
        self._key = serialization.load_pem_private_key(private_key_pem, password=None)

    def authorization(self, method: str, path_and_query: str, body: bytes, timestamp: int, nonce: str) -> str:
        """The Authorization header value for one request."""
        message = f"{method}\n{path_and_query}\n{timestamp}\n{nonce}\n".encode("utf-8") + body + b"\n"
        signature = base64.b64encode(self._key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()
        return (f'WECHATPAY2-SHA256-RSA2048 mchid="{self.mchid}",nonce_str="{nonce}",'
                f'signature="{signature}",timestamp="{timestamp}",serial_no="{self.serial_no}"')

    def sign(self, call: str, url: str, payload: dict, *, now: float | None = None,
             nonce: str | None = None) -> SignedRequest:
        """A signed POST of `payload` as a JSON body to `url`."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        timestamp = int(time.time() if now is None else now)
        nonce = nonce or uuid.uuid4().hex.upper()
        headers = {"Authorization": self.authorization("POST", target, body, timestamp, nonce),
                   "Content-Type": "application/json", "Accept": "application/json"}
        return SignedRequest("POST", url, headers, body)
