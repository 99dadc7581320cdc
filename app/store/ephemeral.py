"""Ephemeral state behind one small interface: token consumption, nonces, rate counters,
issued-token sets. `SqlStore` serves one machine; `RedisStore` serves many."""
from __future__ import annotations

import random
import time
from typing import Protocol

from sqlalchemy import and_, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from .models import EphemeralEntry, RateCounter


class StoreUnavailable(Exception):
    """The ephemeral store could not be reached; callers fail closed or open by use."""


class EphemeralStore(Protocol):
    name: str

    def consume(self, tag: str, token_id: str, ttl: int) -> bool:
        """Mark a token used; True only for the first caller, atomically across workers."""

    def use_nonce(self, scope: str, nonce: str, ttl: int) -> bool:
        """Record a nonce; True when it had not been seen within its ttl."""

    def hit(self, key: str, limit: int, window: int) -> tuple[bool, int]:
        """Count one event in a fixed window; (allowed, seconds until the window resets)."""

    def remember(self, group: str, member: str, ttl: int) -> None:
        """Add a member to a set whose members expire individually."""

    def members(self, group: str) -> list[str]:
        """Unexpired members of a set."""

    def ping(self) -> None:
        """Raise StoreUnavailable when the backing service cannot be reached."""


def _insert(engine: Engine):
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


class SqlStore:
    """SQL-backed store: primary-key inserts make consumption atomic on SQLite and PostgreSQL."""

    name = "sql"

    def __init__(self, engine: Engine, clock=time.time):
        self.engine = engine
        self.clock = clock
        self._insert = _insert(engine)

    def _add(self, scope: str, key: str, ttl: int) -> bool:
        now = int(self.clock())
        try:
            with self.engine.begin() as conn:
                if random.random() < 0.01:  # purge expired rows now and then
                    conn.execute(delete(EphemeralEntry).where(EphemeralEntry.expires_at < now))
                existing = conn.execute(select(EphemeralEntry.expires_at).where(
                    and_(EphemeralEntry.scope == scope, EphemeralEntry.key == key))).scalar()
                if existing is not None and existing < now:
                    conn.execute(delete(EphemeralEntry).where(
                        and_(EphemeralEntry.scope == scope, EphemeralEntry.key == key,
                             EphemeralEntry.expires_at < now)))
                stmt = self._insert(EphemeralEntry).values(scope=scope, key=key, expires_at=now + ttl)
                # RETURNING, not rowcount: some drivers report -1 for ON CONFLICT inserts.
                inserted = conn.execute(stmt.on_conflict_do_nothing().returning(EphemeralEntry.key)).first()
                return inserted is not None
        except SQLAlchemyError as exc:
            raise StoreUnavailable(str(exc.__class__.__name__)) from exc

    def consume(self, tag: str, token_id: str, ttl: int) -> bool:
        return self._add("used", token_id, ttl)

    def use_nonce(self, scope: str, nonce: str, ttl: int) -> bool:
        return self._add("nonce", f"{scope}|{nonce}", ttl)

    def hit(self, key: str, limit: int, window: int) -> tuple[bool, int]:
        now = int(self.clock())
        start = now - now % window
        try:
            with self.engine.begin() as conn:
                stmt = self._insert(RateCounter).values(key=key, window=start, count=1,
                                                        expires_at=start + window)
                stmt = stmt.on_conflict_do_update(index_elements=["key", "window"],
                                                  set_={"count": RateCounter.count + 1})
                count = conn.execute(stmt.returning(RateCounter.count)).scalar_one()
                if random.random() < 0.01:
                    conn.execute(delete(RateCounter).where(RateCounter.expires_at < now))
        except SQLAlchemyError as exc:
            raise StoreUnavailable(str(exc.__class__.__name__)) from exc
        return count <= limit, start + window - now

    def remember(self, group: str, member: str, ttl: int) -> None:
        self._add("set", f"{group}|{member}", ttl)

    def members(self, group: str) -> list[str]:
        now = int(self.clock())
        prefix = f"{group}|"
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(EphemeralEntry.key).where(
                    EphemeralEntry.scope == "set", EphemeralEntry.key.startswith(prefix, autoescape=True),
                    EphemeralEntry.expires_at >= now)).scalars().all()
        except SQLAlchemyError as exc:
            raise StoreUnavailable(str(exc.__class__.__name__)) from exc
        return [k[len(prefix):] for k in rows]

    def ping(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
        except SQLAlchemyError as exc:
            raise StoreUnavailable(str(exc.__class__.__name__)) from exc


class RedisStore:
    """Redis-backed store. Keys are hash-tagged by voucher (`{tag}`) so Redis Cluster keeps a
    voucher's keys on one slot."""

    name = "redis"

    def __init__(self, url: str, prefix: str = "ev", clock=time.time):
        import redis

        self._redis_mod = redis
        self.client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.prefix = prefix
        self.clock = clock

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except self._redis_mod.RedisError as exc:
            raise StoreUnavailable(exc.__class__.__name__) from exc

    def consume(self, tag: str, token_id: str, ttl: int) -> bool:
        key = f"{self.prefix}:used:{{{tag}}}:{token_id}"
        return bool(self._call(self.client.set, key, b"1", nx=True, ex=max(ttl, 1)))

    def use_nonce(self, scope: str, nonce: str, ttl: int) -> bool:
        key = f"{self.prefix}:nonce:{{{scope}}}:{nonce}"
        return bool(self._call(self.client.set, key, b"1", nx=True, ex=max(ttl, 1)))

    def hit(self, key: str, limit: int, window: int) -> tuple[bool, int]:
        now = int(self.clock())
        start = now - now % window
        rkey = f"{self.prefix}:rate:{{{key}}}:{start}"
        pipe = self.client.pipeline(transaction=True)
        pipe.incr(rkey)
        pipe.expire(rkey, window + 1)
        count, _ = self._call(pipe.execute)
        return count <= limit, start + window - now

    def remember(self, group: str, member: str, ttl: int) -> None:
        key = f"{self.prefix}:set:{{{group}}}"
        now = self.clock()
        pipe = self.client.pipeline(transaction=True)
        pipe.zadd(key, {member: now + ttl})
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.expire(key, ttl + 1)
        self._call(pipe.execute)

    def members(self, group: str) -> list[str]:
        key = f"{self.prefix}:set:{{{group}}}"
        raw = self._call(self.client.zrangebyscore, key, self.clock(), "+inf")
        return [m.decode() for m in raw]

    def ping(self) -> None:
        self._call(self.client.ping)


def make_store(redis_url: str | None, engine: Engine, prefix: str = "ev") -> EphemeralStore:
    """Pick the store from configuration: Redis when a URL is set, else SQL."""
    if redis_url:
        return RedisStore(redis_url, prefix=prefix)
    return SqlStore(engine)
