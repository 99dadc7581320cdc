"""Signing keys: creation, rotation and the cached keyring every worker verifies with."""
from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from crypto import keyring as kr

from ..store.models import SigningKeyRow
from .vouchers import aware, utc

MAX_QR_LIFETIME = 300
CACHE_SECONDS = 5.0


def _publish_window(rt) -> int:
    """How long a retired key keeps verifying: the longest thing it may have signed, plus skew."""
    return max(MAX_QR_LIFETIME, rt.config.holder_token_ttl, rt.config.institution_token_ttl) + 60


def _store(session: Session, rt, key) -> SigningKeyRow:
    row = SigningKeyRow(kid=key.kid, alg=key.alg, public_key=key.public,
                        private_sealed=kr.seal_private(rt.master_key, key, rt.config.crypto_profile),
                        status="current")
    session.add(row)
    return row


class WrongMasterKey(RuntimeError):
    """The configured master key does not open the database's sealed signing key."""


def check_master_key(session: Session, rt) -> None:
    """Raise WrongMasterKey unless the master key opens the current signing key (if there is
    one). Every sealed value in the database is under the same key, so this one is enough: a
    command must not write data under a key that cannot read what is already there."""
    row = session.scalars(select(SigningKeyRow).where(SigningKeyRow.status == "current")).first()
    if row is None:
        return
    try:
        kr.unseal_private(rt.master_key, row.private_sealed, row.kid, row.alg, row.public_key)
    except kr.KeyringError:
        raise WrongMasterKey("the master key does not open this database's signing key: it is not "
                             "the key the database was written with") from None


def ensure_signing_key(session: Session, rt) -> None:
    """Create the first signing key for the configured profile when there is none, or a new one
    when the profile changed and no longer signs with the current key's algorithm (an ES256 key
    an operator chose stays current under the default profile)."""
    current = session.scalars(select(SigningKeyRow).where(SigningKeyRow.status == "current")).first()
    if current is None or current.alg not in rt.config.signing_algs:
        rotate(session, rt)


def rotate(session: Session, rt, alg: str | None = None) -> SigningKeyRow:
    """Make a new current key; the old one is retired but published until its tokens expire.
    ValueError for an algorithm the profile does not sign with."""
    if alg is not None and alg not in rt.config.signing_algs:
        raise ValueError(f"CRYPTO_PROFILE={rt.config.crypto_profile} signs with "
                         f"{' or '.join(rt.config.signing_algs)}, not {alg}")
    now = utc(rt.clock.now())
    for old in session.scalars(select(SigningKeyRow).where(SigningKeyRow.status == "current")):
        old.status = "retired"
        old.retired_at = now
        old.publish_until = now + dt.timedelta(seconds=_publish_window(rt))
    key = kr.generate(alg or rt.config.signing_alg)
    while session.scalars(select(SigningKeyRow).where(SigningKeyRow.kid == key.kid)).first():
        key = kr.generate(alg or rt.config.signing_alg)  # 32-bit kid: retry on the rare clash
    row = _store(session, rt, key)
    session.flush()
    rt.keyring_cache.clear()
    return row


def load_keyring(session: Session, rt) -> kr.Keyring:
    """Current key plus retired keys still inside their publication window."""
    now = utc(rt.clock.now())
    keys, current = [], None
    for row in session.scalars(select(SigningKeyRow).where(SigningKeyRow.status.in_(("current", "retired")))):
        until = aware(row.publish_until)
        if row.status == "retired" and (until is None or until < now):
            continue
        key = kr.unseal_private(rt.master_key, row.private_sealed, row.kid, row.alg, row.public_key)
        if until is not None:
            key = dataclasses.replace(key, not_after=int(until.timestamp()))
        keys.append(key)
        if row.status == "current":
            current = row.kid
    if current is None:
        raise RuntimeError("no current signing key: run `evoucher db upgrade` or `evoucher keys rotate`")
    return kr.Keyring(keys, current)


def keyring(rt, session: Session | None = None, *, refresh: bool = False) -> kr.Keyring:
    """The cached keyring; reloaded every few seconds so a rotation by the CLI reaches all workers.

    Without a session, the request's session is opened only when the ring must be reloaded."""
    cached = rt.keyring_cache.get("ring")
    now = rt.clock.now()
    age = now - rt.keyring_cache.get("at", 0)
    # A forced refresh (unknown kid) reloads at most once a second, so junk tokens cannot hammer the database.
    if cached is None or age > CACHE_SECONDS or (refresh and age > 1.0):
        cached = load_keyring(session if session is not None else rt.session(), rt)
        rt.keyring_cache.update(ring=cached, at=now)
    return cached
