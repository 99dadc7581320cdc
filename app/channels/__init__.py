"""Verification of channel partners' signed calls (SPEC §5), one module per signing scheme.

Pure functions: the caller passes the request parts, the channel record, the clock and the
nonce store. The order of checks is fixed for every scheme: the signature first, then the
timestamp window, and only then the nonce, so that unsigned junk cannot burn nonces. A signed
request a scheme refuses for what it says (`Authenticated.refusal`) is refused after its nonce
is spent.
"""
from __future__ import annotations

import re
from typing import Mapping

from ..errors import DomainError
from . import alipay, bank, wechat
from .common import (CALLS, MAX_SKEW_SECONDS, NONCE_TTL_SECONDS, ChannelInfo, NonceStore,
                     SignedCall)

__all__ = ["CALLS", "ChannelInfo", "SignedCall", "channel_kind", "verify_call"]

_BANK_ID = re.compile(r"bank-[a-z0-9]{2,16}")
_SCHEMES = {"wechat": wechat, "alipay": alipay, "bank": bank}


def channel_kind(channel_id: str) -> str | None:
    """The signing scheme a channel id uses: "wechat", "alipay", "bank" (bank-<code>) or None."""
    if channel_id in ("wechat", "alipay"):
        return channel_id
    if isinstance(channel_id, str) and _BANK_ID.fullmatch(channel_id):
        return "bank"
    return None


def verify_call(info: ChannelInfo | None, *, call: str, method: str, path_and_query: str,
                headers: Mapping[str, str], body: bytes, now: int,
                nonces: NonceStore) -> SignedCall:
    """Check a channel call's signature, freshness and nonce; return the business request.

    `path_and_query` is the request target as sent (path, plus `?query` when there is one).
    Store outages raised by `nonces` propagate: the caller fails closed.
    """
    if info is None or info.status != "active":
        raise DomainError("channel_unknown", "No active channel with that id")
    if call not in CALLS:
        raise DomainError("not_found", "No such channel call")
    scheme = _SCHEMES.get(info.kind)
    if scheme is None or channel_kind(info.id) != info.kind:
        raise DomainError("channel_unknown", "Channel has no signing scheme")
    auth = scheme.authenticate(info, call=call, method=method.upper(),
                               path_and_query=path_and_query, headers=headers, body=body)
    if abs(auth.timestamp - int(now)) > MAX_SKEW_SECONDS:
        raise DomainError("channel_request_replayed", "Timestamp outside the allowed window of 5 minutes")
    # One nonce space per channel, whatever the call: a request signed for one endpoint that
    # reached it cannot be presented at another (the bank scheme does not sign the path).
    if not nonces.use_nonce(info.id, auth.nonce, NONCE_TTL_SECONDS):
        raise DomainError("channel_request_replayed", "Nonce already used")
    if auth.refusal is not None:
        raise auth.refusal
    return SignedCall(channel=info.id, nonce=auth.nonce, timestamp=auth.timestamp, payload=auth.payload)
