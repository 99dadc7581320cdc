"""Ephemeral state behind one small interface: token consumption, nonces, rate counters,
issued-token sets. `SqlStore` serves one machine; `RedisStore` serves many."""
from __future__ import annotations

import random
import time
from typing import Protocol

from sqlalchemy import Integer, String, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from .prepared import Prepared
from .writelock import writes


class StoreUnavailable(Exception):
    """The ephemeral store could not be reached; callers fail closed or open by use."""


class EphemeralStore(Protocol):
    name: str

    def consume(self, tag: str, token_id: str, ttl: int) -> bool:
        """Mark a token used; True only for the first caller, atomically across workers."""

    def use_nonce(self, scope: str, nonce: str, ttl: int) -> bool:
        """Record a nonce; True when it had not been seen within its ttl."""

    def hit(self, key: str, limit: int, window: int, *, conn=None) -> tuple[bool, int]:
        """Count one event in a fixed window; (allowed, seconds until the window resets).

        The SQL store joins `conn`'s transaction when given (a refused caller rolls it back)."""

    def remember(self, group: str, member: str, ttl: int) -> None:
        """Add a member to a set whose members expire individually."""

    def members(self, group: str) -> list[str]:
        """Unexpired members of a set."""

    def has_member(self, group: str, member: str) -> bool:
        """Whether `member` is an unexpired member of the set (one key looked up, not the set read)."""

    def ping(self) -> None:
        """Raise StoreUnavailable when the backing service cannot be reached."""


# Plain SQL that SQLite (≥ 3.35) and PostgreSQL both run, prepared once: this is the hot path.
_TAKE = Prepared(text(
    "INSERT INTO ephemeral_entries (scope, key, expires_at) VALUES (:scope, :key, :expires) "
    "ON CONFLICT (scope, key) DO UPDATE SET expires_at = excluded.expires_at "
    "WHERE ephemeral_entries.expires_at < :now RETURNING key")  # an expired entry is taken over
    .columns(key=String))
_HIT = Prepared(text(
    'INSERT INTO rate_counters (key, "window", count, expires_at) VALUES (:key, :window, 1, :expires) '
    'ON CONFLICT (key, "window") DO UPDATE SET count = rate_counters.count + 1 RETURNING count')
    .columns(count=Integer))
_PURGE_ENTRIES = text("DELETE FROM ephemeral_entries WHERE expires_at < :now")
_PURGE_COUNTERS = text("DELETE FROM rate_counters WHERE expires_at < :now")
# The set's keys by their first characters, compared as equal: a range (key >= 'g|' AND key <
# 'g}') holds only in byte order, and a PostgreSQL database made with a language's locale sorts
# text by that language ('g|a' above 'g}'), so it found no member there.
_MEMBERS = text("SELECT key FROM ephemeral_entries WHERE scope = 'set' AND substr(key, 1, :n) = :prefix "
                "AND expires_at >= :now")
_HAS_MEMBER = text("SELECT 1 FROM ephemeral_entries WHERE scope = 'set' AND key = :key AND expires_at >= :now")


class SqlStore:
    """SQL-backed store: primary-key upserts make consumption atomic on SQLite and PostgreSQL."""

    name = "sql"

    def __init__(self, engine: Engine, clock=time.time):
        self.engine = engine
        self.clock = clock

    def _add(self, scope: str, key: str, ttl: int) -> bool:
        now = int(self.clock())
        params = {"scope": scope, "key": key, "expires": now + ttl, "now": now}
        try:
            with writes(self.engine), self.engine.begin() as own:
                taken = _TAKE.one(own, params) is not None
                if random.random() < 0.001:  # purge expired rows now and then
                    own.execute(_PURGE_ENTRIES, {"now": now})
                return taken
        except SQLAlchemyError as exc:
            raise StoreUnavailable(str(exc.__class__.__name__)) from exc

    def consume(self, tag: str, token_id: str, ttl: int) -> bool:
        # Scans do not call this on the SQL store: there the scan row, unique by token_id and
        # written in the scan's own transaction, is the mark (app/services/scans.py).
        return self._add("used", token_id, ttl)

    def use_nonce(self, scope: str, nonce: str, ttl: int) -> bool:
        return self._add("nonce", f"{scope}|{nonce}", ttl)

    def hit(self, key: str, limit: int, window: int, *, conn: Connection | None = None) -> tuple[bool, int]:
        now = int(self.clock())
        start = now - now % window
        params = {"key": key, "window": start, "expires": start + window}
        try:
            if conn is not None:
                count = _HIT.scalar(conn, params)
            else:
                with writes(self.engine), self.engine.begin() as own:
                    count = _HIT.scalar(own, params)
                    if random.random() < 0.001:
                        own.execute(_PURGE_COUNTERS, {"now": now})
        except SQLAlchemyError as exc:
            raise StoreUnavailable(str(exc.__class__.__name__)) from exc
        return count <= limit, start + window - now

    def _read(self, stmt, params: dict | None = None) -> list:
        """The rows of a read on a connection of its own; StoreUnavailable if it fails."""
        try:
            with self.engine.connect() as conn:
                return conn.execute(stmt, params or {}).all()
        except SQLAlchemyError as exc:
            raise StoreUnavailable(str(exc.__class__.__name__)) from exc

    @staticmethod
    def _set_key(group: str, member: str = "") -> str:
        """A set member's key; with no member, the prefix every member's key of the set starts with."""
        return f"{group}|{member}"

    def remember(self, group: str, member: str, ttl: int) -> None:
        self._add("set", self._set_key(group, member), ttl)

    def members(self, group: str) -> list[str]:
        prefix = self._set_key(group)
        rows = self._read(_MEMBERS, {"n": len(prefix), "prefix": prefix, "now": int(self.clock())})
        return [key[len(prefix):] for (key,) in rows]

    def has_member(self, group: str, member: str) -> bool:
        # By its whole key, the table's primary key: found through the index, where a scan reads
        # the set's members by their first characters (`members`, for the rare full read).
        return bool(self._read(_HAS_MEMBER, {"key": self._set_key(group, member), "now": int(self.clock())}))

    def ping(self) -> None:
        self._read(text("SELECT 1"))


_HIT_LUA = """
local count = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return count
"""
# Add a member that expires at ARGV[2], drop the expired (scores up to ARGV[3]), and let the key
# live at least ARGV[1] seconds more: never less than it has, which an earlier, longer-lived
# member may need (EXPIRE ... GT would say this from Redis 7 on).
_REMEMBER_LUA = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return 1
"""


class RedisStore:
    """Redis-backed store. Keys are hash-tagged by voucher (`{tag}`) so Redis Cluster keeps a
    voucher's keys on one slot."""

    name = "redis"

    def __init__(self, url: str, prefix: str = "ev", clock=time.time):
        import redis

        self._redis_mod = redis
        self.client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        # The count and its expiry in one atomic command (EVALSHA): a counter never lives
        # without its expiry, and it costs one command where MULTI/INCR/EXPIRE/EXEC cost four
        # (client CPU 25 µs against 43, docs/benchmarks.md).
        self._hit_script = self.client.register_script(_HIT_LUA)
        self._remember_script = self.client.register_script(_REMEMBER_LUA)
        self.prefix = prefix
        self.clock = clock

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except self._redis_mod.RedisError as exc:
            raise StoreUnavailable(exc.__class__.__name__) from exc

    def _used_key(self, tag: str, token_id: str) -> str:
        return f"{self.prefix}:used:{{{tag}}}:{token_id}"

    def _rate_key(self, key: str, window: int) -> tuple[str, int]:
        """The key of the current window's counter, and the seconds until the next window."""
        now = int(self.clock())
        start = now - now % window
        return f"{self.prefix}:rate:{{{key}}}:{start}", start + window - now

    def consume(self, tag: str, token_id: str, ttl: int) -> bool:
        return bool(self._call(self.client.set, self._used_key(tag, token_id), b"1", nx=True, ex=max(ttl, 1)))

    def hit_and_consume(self, key: str, limit: int, window: int, tag: str, token_id: str,
                        ttl: int) -> tuple[tuple[bool, int] | None, bool]:
        """`hit` and `consume` in one round trip: (hit's answer, or None when the count failed;
        consume's answer). Raises StoreUnavailable when the mark cannot be confirmed.

        A pipeline, not a transaction or one script: the counter and the mark are hash-tagged
        by institution and by voucher, two different cluster slots. Both commands always run,
        so a caller refusing on the count must `release` the mark it has just set."""
        rkey, retry = self._rate_key(key, window)
        pipe = self.client.pipeline(transaction=False)
        pipe.evalsha(self._hit_script.sha, 1, rkey, window + 1)
        pipe.set(self._used_key(tag, token_id), b"1", nx=True, ex=max(ttl, 1))
        count, used = self._call(pipe.execute, raise_on_error=False)
        if isinstance(used, Exception):
            raise StoreUnavailable(used.__class__.__name__)
        if isinstance(count, self._redis_mod.exceptions.NoScriptError):  # a restarted Redis
            try:
                count = self._call(self._hit_script, keys=[rkey], args=[window + 1])  # loads it
            except StoreUnavailable as exc:
                count = exc
        counted = None if isinstance(count, Exception) else (count <= limit, retry)
        return counted, bool(used)

    def release(self, tag: str, token_id: str) -> None:
        """Undo a `consume` whose scan was refused before it used the token."""
        self._call(self.client.delete, self._used_key(tag, token_id))

    def use_nonce(self, scope: str, nonce: str, ttl: int) -> bool:
        key = f"{self.prefix}:nonce:{{{scope}}}:{nonce}"
        return bool(self._call(self.client.set, key, b"1", nx=True, ex=max(ttl, 1)))

    def hit(self, key: str, limit: int, window: int, *, conn=None) -> tuple[bool, int]:
        rkey, retry = self._rate_key(key, window)
        count = self._call(self._hit_script, keys=[rkey], args=[window + 1])
        return count <= limit, retry

    def _set_key(self, group: str) -> str:
        return f"{self.prefix}:set:{{{group}}}"

    def remember(self, group: str, member: str, ttl: int) -> None:
        key = self._set_key(group)
        now = self.clock()
        self._call(self._remember_script, keys=[key], args=[ttl + 1, repr(float(now + ttl)), repr(float(now)), member])

    def members(self, group: str) -> list[str]:
        raw = self._call(self.client.zrangebyscore, self._set_key(group), self.clock(), "+inf")
        return [m.decode() for m in raw]

    def has_member(self, group: str, member: str) -> bool:
        score = self._call(self.client.zscore, self._set_key(group), member)
        return score is not None and score >= self.clock()

    def ping(self) -> None:
        self._call(self.client.ping)


def make_store(redis_url: str | None, engine: Engine, prefix: str = "ev", clock=time.time) -> EphemeralStore:
    """Pick the store from configuration: Redis when a URL is set, else SQL."""
    if redis_url:
        return RedisStore(redis_url, prefix=prefix, clock=clock)
    return SqlStore(engine, clock=clock)
