"""A channel partner's client for the service's channel API (SPEC §4.3), signing every call in
the channel's own scheme. The HTTP sender is injectable: `requests` by default, a Flask test
client in tests (`flask_sender`)."""
from __future__ import annotations

import hashlib
import os
import time
import uuid
from typing import Any, Callable
from urllib.parse import urlsplit

from app.channels import channel_kind
from app.channels.common import METHODS

from . import identity
from .alipay import AlipaySigner
from .bank import BankSigner
from .keys import default_instance_dir, ensure_keys
from .wechat import WechatPaySigner

Sender = Callable[[str, str, dict, bytes], tuple[int, Any]]
DEFAULT_BASE_URL = "http://127.0.0.1:8000"


class ChannelError(Exception):
    """The service (or the way to it) refused a call; `code` is the problem's code."""

    def __init__(self, status: int, problem: dict):
        self.status = status
        self.problem = problem
        self.code = problem.get("code") or "unexpected_response"
        super().__init__(f"{self.code} (HTTP {status}): {problem.get('detail', '')}".strip())


def default_base_url() -> str:
    return os.environ.get("EVOUCHER_URL") or DEFAULT_BASE_URL


def http_sender(timeout: float = 10.0) -> Sender:
    """Send with `requests`; network failures become a `service_unreachable` problem."""
    import requests

    def send(method: str, url: str, headers: dict, body: bytes):
        try:
            resp = requests.request(method, url, headers=headers, data=body, timeout=timeout)
        except requests.RequestException as exc:
            return 0, {"code": "service_unreachable", "detail": f"{url}: {exc.__class__.__name__}"}
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, {"code": "unexpected_response", "detail": resp.text[:200]}

    return send


def flask_sender(test_client) -> Sender:
    """Send through a Flask test client: the URL's path and query are kept, the host dropped."""

    def send(method: str, url: str, headers: dict, body: bytes):
        parts = urlsplit(url)
        resp = test_client.open(parts.path, method=method, headers=headers, data=body,
                                query_string=parts.query or None)
        return resp.status_code, resp.get_json(silent=True)

    return send


def make_signer(channel_id: str, app_id: str, private_pem: bytes, serial: str):
    """The signer of the channel's scheme."""
    kind = channel_kind(channel_id)
    if kind == "wechat":
        return WechatPaySigner(app_id, serial, private_pem)
    if kind == "alipay":
        return AlipaySigner(app_id, private_pem)
    if kind == "bank":
        return BankSigner(app_id, private_pem, serial)
    raise ValueError(f"unknown channel {channel_id!r}: use wechat, alipay or bank-<code>")


def derive_channel_user_id(channel_id: str, id_number: str) -> str:
    """A stable per-channel user id, shaped like the partner's own (openid, 2088… user id)."""
    digest = hashlib.sha256(f"{channel_id}:{id_number.strip().upper()}".encode()).hexdigest()
    kind = channel_kind(channel_id)
    if kind == "wechat":
        return "wx_" + digest[:12]
    if kind == "alipay":
        return "2088" + str(int(digest, 16) % 10**12).zfill(12)
    return channel_id.split("-", 1)[1] + "_" + digest[:12]


class ChannelClient:
    """Calls the service as one channel partner, with keys from the instance folder."""

    def __init__(self, channel_id: str, base_url: str | None = None, instance_dir=None, *,
                 send: Sender | None = None, app_id: str | None = None, clock=time.time):
        if channel_kind(channel_id) is None:
            raise ValueError(f"unknown channel {channel_id!r}: use wechat, alipay or bank-<code>")
        self.channel_id = channel_id
        self.base_url = (base_url or default_base_url()).rstrip("/")
        private_path, self.public_key_path, self.serial = ensure_keys(
            instance_dir or default_instance_dir(), channel_id)
        self.app_id = app_id or channel_id  # `evoucher channels add` defaults --app-id likewise
        self.signer = make_signer(channel_id, self.app_id, private_path.read_bytes(), self.serial)
        self.send = send or http_sender()
        self.clock = clock

    def call(self, call: str, payload: dict) -> dict:
        """POST one signed call; the JSON answer, or ChannelError carrying the problem code."""
        payload = {"request_id": uuid.uuid4().hex, **payload}
        if channel_kind(self.channel_id) == "bank":
            # A bank signature does not cover the path, and sessions and unbindings take the same
            # fields: naming the call keeps a captured body from serving the other endpoint.
            payload.setdefault("method", METHODS[call])
        url = f"{self.base_url}/v1/channels/{self.channel_id}/{call}"
        req = self.signer.sign(call, url, payload, now=self.clock())
        status, data = self.send(req.method, req.url, req.headers, req.body)
        if not 200 <= status < 300 or not isinstance(data, dict):
            raise ChannelError(status, data if isinstance(data, dict) else {"code": "unexpected_response"})
        return data

    def channel_user_id(self, id_number: str) -> str:
        return derive_channel_user_id(self.channel_id, id_number)

    def activate(self, id_number: str, name: str, phone: str, pin: str | None = None,
                 channel_user_id: str | None = None, face_verified: bool | None = None) -> dict:
        """Activate (激活) the person's voucher in this channel; face check by the stand-in if not given."""
        channel_user_id = channel_user_id or self.channel_user_id(id_number)
        if face_verified is None:
            face_verified = identity.face_check(name)
        payload = {"channel_user_id": channel_user_id, "id_type": "01", "id_number": id_number,
                   "name": name, "phone": phone, "face_verified": bool(face_verified)}
        if pin is not None:
            payload["pin"] = pin
        result = self.call("activations", payload)
        result.setdefault("channel_user_id", channel_user_id)
        return result

    def session(self, channel_user_id: str) -> dict:
        """Open a holder session: {access_token, expires_in, voucher_id}."""
        return self.call("sessions", {"channel_user_id": channel_user_id})

    def reverify(self, channel_user_id: str, purpose: str, *, face_verified: bool = True, **extra) -> dict:
        """Re-verify the person (face) for pin_reset, reinstate or family_accept."""
        return self.call("reverifications", {"channel_user_id": channel_user_id, "purpose": purpose,
                                             "face_verified": bool(face_verified), **extra})

    def unbind(self, channel_user_id: str) -> dict:
        """Unbind this channel from the person's voucher."""
        return self.call("unbindings", {"channel_user_id": channel_user_id})
