"""Runnable mock channel partners (WeChat, Alipay, bank apps): signers, a stand-in identity
check, a client, a CLI and a small web page per channel. They sit outside the service and
talk to it only over HTTP, as the real partners would."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SignedRequest:
    """An HTTP request ready to send: what a partner's SDK would put on the wire."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
