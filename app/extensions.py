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
        if _holds_sealed_data(config.database_url):
            # A new key would not open what is there, and data written under it would mix
            # with data under the lost one: refuse rather than generate (docs/decisions.md).
            raise RuntimeError(f"{path} is missing but the database already holds data sealed "
                               "under a master key: restore that file or set EVOUCHER_MASTER_KEY")
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


def _holds_sealed_data(database_url: str) -> bool:
    """Whether the SQLite database at `database_url` exists and holds a signing key or a person
    (both sealed under the master key). Only read: a missing file is not created."""
    import sqlite3
    from urllib.parse import quote

    from .store.engine import sqlite_file
    path = sqlite_file(database_url)
    if path is None or not os.path.exists(path):
        return False
    try:
        conn = sqlite3.connect(f"file:{quote(path)}?mode=rw", uri=True)
    except sqlite3.Error:
        return False
    try:
        for table in ("signing_keys", "persons"):
            try:
                if conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():
                    return True
            except sqlite3.Error:  # no such table (no schema yet) or not a database
                pass
        return False
    finally:
        conn.close()
