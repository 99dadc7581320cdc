"""Signing keys: creation, rotation and the cached keyring every worker verifies with.

A rotation publishes the new key in the JWKS at once and lets it sign only from `signs_from`, a
lead time later (KEY_ROTATION_LEAD_TIME), so that a scanner verifying offline from a cached JWKS
already holds the key when the first code it signed arrives. The key it replaces signs until
that instant (its `retired_at`) and stays published until every token it signed has expired
(`publish_until`). Both are times written by the rotation: every worker switches on its own
clock, and no process needs to be told."""
from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from crypto import keyring as kr

from ..store import rowlock
from ..store.models import SigningKeyRow
from .vouchers import aware, stored_time, utc

MAX_QR_LIFETIME = 300
CACHE_SECONDS = 5.0
JWKS_MAX_AGE = 60  # seconds a client may cache /.well-known/jwks.json


def _publish_window(rt) -> int:
    """How long a retired key keeps verifying: the longest thing it may have signed, plus skew."""
    return max(MAX_QR_LIFETIME, rt.config.holder_token_ttl, rt.config.institution_token_ttl) + 60


def _store(session: Session, rt, key, signs_from: dt.datetime) -> SigningKeyRow:
    row = SigningKeyRow(kid=key.kid, alg=key.alg, public_key=key.public,
                        private_sealed=kr.seal_private(rt.master_key, key, rt.config.crypto_profile),
                        status="current", signs_from=signs_from)
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
    """Create the first signing key for the configured profile when there is none (it signs at
    once: no verifier can know an older one), or rotate to a key of the profile's algorithm
    when the profile changed and the newest key is not one (an ES256 key an operator chose stays
    under the default profile). That rotation pre-publishes like any other; a key of the old
    profile still waiting to sign is withdrawn instead of refusing."""
    newest = session.scalars(select(SigningKeyRow).where(SigningKeyRow.status == "current")).first()
    if newest is None or newest.alg not in rt.config.signing_algs:
        rotate(session, rt, replace_pending=True)


class PendingKey(ValueError):
    """A rotation while the last one's key is still waiting to sign."""


def rotate(session: Session, rt, alg: str | None = None, *, at_once: bool = False,
           replace_pending: bool = False) -> SigningKeyRow:
    """Publish a new key, which signs once the lead time has passed, or at once with `at_once`
    (a compromised key) or when no key signs yet. The key signing until then is retired at that
    instant and stays published until its tokens have expired. ValueError for an algorithm the
    profile does not sign with; PendingKey when a key is still waiting to sign, unless `at_once`
    or `replace_pending`: that key is then retired without ever signing."""
    if alg is not None and alg not in rt.config.signing_algs:
        raise ValueError(f"CRYPTO_PROFILE={rt.config.crypto_profile} signs with "
                         f"{' or '.join(rt.config.signing_algs)}, not {alg}")
    newest = session.scalars(select(SigningKeyRow).where(SigningKeyRow.status == "current")).first()
    if newest is not None:  # one rotation at a time: a parallel one waits here, then sees this one's key
        rowlock.held(session, newest)
    now = utc(rt.clock.now())
    rows = session.scalars(select(SigningKeyRow).where(SigningKeyRow.status.in_(("current", "retired"))))
    live = [row for row in rows if row.retired_at is None or aware(row.retired_at) > now]  # signing, or waiting to
    waiting = [row for row in live if aware(row.signs_from) > now]
    if waiting and not (at_once or replace_pending):
        row = waiting[0]
        raise PendingKey(f"key {row.kid} is already published and signs from {stored_time(row.signs_from)}: "
                         "rotate again after that, or with --now to sign with a new key at once")
    signing = len(live) > len(waiting)
    signs_from = now + dt.timedelta(seconds=rt.config.key_lead_time if signing and not at_once else 0)
    for row in live:
        row.status = "retired"
        row.retired_at = now if row in waiting else signs_from
        row.publish_until = row.retired_at + dt.timedelta(seconds=_publish_window(rt))
    key = kr.generate(alg or rt.config.signing_alg)
    while session.scalars(select(SigningKeyRow).where(SigningKeyRow.kid == key.kid)).first():
        key = kr.generate(alg or rt.config.signing_alg)  # 32-bit kid: retry on the rare clash
    row = _store(session, rt, key, signs_from)
    session.flush()
    rt.keyring_cache.clear()
    return row


def load_keyring(session: Session, rt) -> tuple[kr.Keyring, float | None]:
    """Every key still published (waiting to sign, signing, or retired inside its publication
    window), with the one that signs now as current; and the Unix time at which another key
    will sign, if one is waiting."""
    now = utc(rt.clock.now())
    keys, signing, unretired, switch = [], [], [], None
    for row in session.scalars(select(SigningKeyRow).where(SigningKeyRow.status.in_(("current", "retired")))):
        until = aware(row.publish_until)
        if row.status == "retired" and (until is None or until < now):
            continue
        key = kr.unseal_private(rt.master_key, row.private_sealed, row.kid, row.alg, row.public_key)
        if until is not None:
            key = dataclasses.replace(key, not_after=int(until.timestamp()))
        keys.append(key)
        signs_from, retired_at = aware(row.signs_from), aware(row.retired_at)
        if retired_at is None or retired_at > now:
            unretired.append((signs_from, row.kid))
            if signs_from <= now:
                signing.append((signs_from, row.kid))
            elif switch is None or signs_from < switch:
                switch = signs_from
    # A clock behind the one that made the first key (another host's) finds none signing yet:
    # then the earliest key signs, rather than none.
    current = max(signing)[1] if signing else min(unretired)[1] if unretired else None
    if current is None:
        raise RuntimeError("no current signing key: run `evoucher db upgrade` or `evoucher keys rotate`")
    return kr.Keyring(keys, current), switch.timestamp() if switch else None


def keyring(rt, session: Session | None = None, *, refresh: bool = False) -> kr.Keyring:
    """The cached keyring; reloaded every few seconds so a rotation by the CLI reaches all workers.

    Without a session, the request's session is opened only when the ring must be reloaded."""
    cached = rt.keyring_cache.get("ring")
    now = rt.clock.now()
    age = now - rt.keyring_cache.get("at", 0)
    switch = rt.keyring_cache.get("switch")
    # A forced refresh (unknown kid) reloads at most once a second, so junk tokens cannot hammer the database.
    # A waiting key's time to sign reloads at that instant: the switch is on the dot in every worker.
    if (cached is None or age > CACHE_SECONDS or (refresh and age > 1.0)
            or (switch is not None and now >= switch)):
        cached, switch = load_keyring(session if session is not None else rt.session(), rt)
        rt.keyring_cache.update(ring=cached, at=now, switch=switch)
    return cached
