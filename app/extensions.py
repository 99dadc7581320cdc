"""Per-app runtime: database, ephemeral store, keys, ciphers and clock, bound in create_app."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from flask import current_app, g
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from crypto.fields import FieldCipher
from crypto.pins import PinHasher

from .config import Config


class Clock:
    """Wall clock; tests pass a clock they can set."""

    def now(self) -> float:
        return time.time()


@dataclass
class Runtime:
    config: Config
    engine: Engine
    sessions: sessionmaker
    store: object
    master_key: bytes
    fields: FieldCipher
    pins: PinHasher
    clock: Clock = field(default_factory=Clock)
    keyring_cache: dict = field(default_factory=dict)
    # Per-worker caches of things that may be seconds stale (institutions, verified access tokens).
    caches: dict = field(default_factory=dict)
    # The Core connection of scans and QR issuance, one per thread (app/store/hotconn.py).
    hot_connection: object = None

    def session(self) -> Session:
        """The request's database session (one per app context)."""
        s = g.get("_db_session")
        if s is None:
            s = g._db_session = self.sessions()
        return s


def cache_put(cache: dict, key, value, limit: int) -> None:
    """Store in one of `Runtime.caches`, emptying it first when it holds `limit` entries: a
    worker's memory stays bounded whatever keys callers send."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value


def runtime() -> Runtime:
    return current_app.extensions["evoucher"]


def close_session(_exc=None) -> None:
    s = g.pop("_db_session", None)
    if s is not None:
        s.close()


def load_master_key(config: Config) -> bytes:
    """Master key from the environment, or generated once into the instance folder (0600).

    Only the embedded default (SQLite) may generate one; a shared database needs the operator's key."""
    if config.master_key:
        return config.master_key
    if not config.database_url.startswith("sqlite"):
        raise RuntimeError("EVOUCHER_MASTER_KEY must be set when DATABASE_URL is not SQLite")
    path = os.path.join(config.instance_path, "master.key")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        os.makedirs(config.instance_path, exist_ok=True)
        raw = os.urandom(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker won the race: use its key
            with open(path, "rb") as fh:
                raw = fh.read()
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(raw)
    if len(raw) != 32:
        raise RuntimeError(f"{path} must hold exactly 32 bytes")
    return raw
