"""Channel partners and their public keys (several at once during rotation)."""
from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.channels import ChannelInfo, channel_kind
from app.channels.keys import default_serial, load_public_key

from ..store.models import Channel, ChannelKey

_HEADER_TEXT = re.compile(r"[!-~]{1,64}")


def add(session: Session, channel_id: str, public_pem: bytes, *, serial: str | None = None,
        app_id: str | None = None) -> tuple[Channel, ChannelKey]:
    """Register a channel (or add a key to it); raises ValueError for a bad id or key."""
    kind = channel_kind(channel_id)
    if kind is None:
        raise ValueError("channel id must be wechat, alipay or bank-<code>")
    # Both arrive in request headers or signed fields, compared as given: printable ASCII only,
    # and within their columns (64 characters).
    for label, value in (("serial", serial), ("app id", app_id)):
        if value and not _HEADER_TEXT.fullmatch(value):
            raise ValueError(f"{label} must be 1-64 printable ASCII characters without spaces")
    if kind == "bank" and app_id and "&" in app_id:
        # Signed unescaped in the bank's `key=value&…` string, which must split back (bank.unsplit_field).
        raise ValueError("a bank channel's app id may not hold '&': its signature joins fields with '&', unescaped")
    public_pem = load_public_key(public_pem, kind)  # stored in its standard SubjectPublicKeyInfo form
    serial = serial or default_serial(public_pem)
    channel = session.get(Channel, channel_id)
    if channel is None:
        channel = Channel(id=channel_id, app_id=app_id or channel_id)
        session.add(channel)
    elif app_id:
        channel.app_id = app_id
    channel.status = "active"
    key = session.scalars(select(ChannelKey).where(ChannelKey.channel_id == channel_id,
                                                   ChannelKey.serial == serial)).first()
    if key is None:
        key = ChannelKey(channel_id=channel_id, serial=serial)
        session.add(key)
    key.public_key_pem, key.status = public_pem, "active"
    session.flush()
    return channel, key


def info(session: Session, channel_id: str) -> ChannelInfo | None:
    """What the signature verifier needs to know about a channel, or None if unknown."""
    kind = channel_kind(channel_id)
    channel = session.get(Channel, channel_id) if kind else None
    if channel is None:
        return None
    keys = {k.serial: k.public_key_pem for k in session.scalars(
        select(ChannelKey).where(ChannelKey.channel_id == channel_id, ChannelKey.status == "active"))}
    return ChannelInfo(id=channel.id, app_id=channel.app_id, kind=kind, keys=keys, status=channel.status)
