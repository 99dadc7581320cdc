"""Both ephemeral stores keep the same promises: one consumer per token, fresh nonces, counters."""
from __future__ import annotations

import threading
import uuid

import pytest

from app.store import migrate
from app.store.engine import make_engine
from app.store.ephemeral import RedisStore, SqlStore, StoreUnavailable
from tests.conftest import REDIS_URL, need_service, pg_available, redis_available
from tests.helpers import redis_round_trips


@pytest.fixture(params=["sql-sqlite", "sql-postgresql", "redis"])
def store(request, tmp_path):
    if request.param == "redis":
        return request.getfixturevalue("redis_store")
    if request.param == "sql-postgresql":
        if pg_available():
            need_service("PostgreSQL", pg_available())
        url = request.getfixturevalue("pg_schema_url")
    else:
        url = f"sqlite:///{tmp_path / 'eph.db'}"
        migrate.upgrade(url)
    return SqlStore(make_engine(url))


def test_consume_is_once(store):
    tid = uuid.uuid4().hex[:16]
    assert store.consume("V1", tid, 60) is True
    assert store.consume("V1", tid, 60) is False
    assert store.consume("V1", uuid.uuid4().hex[:16], 60) is True


def test_consume_is_atomic_under_threads(store):
    tid = uuid.uuid4().hex[:16]
    wins, barrier = [], threading.Barrier(16)

    def worker():
        barrier.wait()
        wins.append(store.consume("V2", tid, 60))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1 and wins.count(False) == 15


def test_nonces_are_single_use_per_scope(store):
    n = uuid.uuid4().hex
    assert store.use_nonce("wechat", n, 600) is True
    assert store.use_nonce("wechat", n, 600) is False
    assert store.use_nonce("alipay", n, 600) is True


def test_rate_counter_limits_within_a_window(store):
    key = "t:" + uuid.uuid4().hex
    results = [store.hit(key, 3, 60) for _ in range(5)]
    assert [r[0] for r in results] == [True, True, True, False, False]
    assert all(0 < r[1] <= 60 for r in results)


def test_remembered_members_expire(store):
    group = "g" + uuid.uuid4().hex[:8]
    store.remember(group, "a", 60)
    store.remember(group, "b", 60)
    assert sorted(store.members(group)) == ["a", "b"]
    store.clock = lambda: 10**10  # far future: both expired
    assert store.members(group) == []


def test_a_member_is_known_by_itself_until_it_expires(store):
    group = "g" + uuid.uuid4().hex[:8]
    store.remember(group, "a", 60)
    assert store.has_member(group, "a") and not store.has_member(group, "b")
    assert not store.has_member(group + "x", "a") and not store.has_member(group[:-1], "a")
    store.clock = lambda: 10**10  # far future: expired
    assert not store.has_member(group, "a")


def test_remembered_members_are_found_under_a_language_collation(pg_schema_url):
    """A PostgreSQL database created with a language's locale (en_US.UTF-8, zh_CN.UTF-8, or the
    ICU ones) orders text by that language's rules, not byte by byte: there "g|a" does not sort
    below "g}". The set's members must be found whatever the key column's collation."""
    from sqlalchemy import text

    from app.store.models import EphemeralEntry
    schema = "evtest_coll_" + uuid.uuid4().hex[:8]
    base = pg_schema_url.split("?")[0]
    admin = make_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    engine = make_engine(f"{base}?options=-csearch_path%3D{schema}")
    try:
        EphemeralEntry.__table__.create(engine)
        with engine.begin() as conn:
            conn.execute(text('ALTER TABLE ephemeral_entries ALTER COLUMN key TYPE varchar(160) COLLATE "und-x-icu"'))
        store = SqlStore(engine)
        store.remember("family_link:K1", "a13812345678bcde", 60)
        store.remember("family_link:K1", "0123456789abcdef", 60)
        store.remember("family_link:K10", "ffffffffffffffff", 60)  # another group, same start
        assert sorted(store.members("family_link:K1")) == ["0123456789abcdef", "a13812345678bcde"]
        assert store.members("family_link:K10") == ["ffffffffffffffff"]
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_unreachable_redis_raises_store_unavailable():
    dead = RedisStore("redis://127.0.0.1:1/0")
    with pytest.raises(StoreUnavailable):
        dead.consume("V", "t", 10)
    with pytest.raises(StoreUnavailable):
        dead.ping()


@pytest.fixture
def redis_store():
    reason = redis_available()
    if reason:
        need_service("Redis", reason)
    return RedisStore(REDIS_URL, prefix=f"evt{uuid.uuid4().hex[:8]}")


def test_a_shorter_lived_member_does_not_cut_a_redis_sets_life_short(redis_store):
    """A set's members expire one by one; the key itself must live as long as its longest-lived
    member, also when a member with a shorter life comes later (TOKEN_LIFETIME lowered on one
    node of a deployment, or between a restart): the earlier code is still being shown."""
    group = "family_link:" + uuid.uuid4().hex[:8]
    redis_store.remember(group, "long", 306)
    redis_store.remember(group, "short", 21)
    assert redis_store.client.ttl(f"{redis_store.prefix}:set:{{{group}}}") > 300
    assert sorted(redis_store.members(group)) == ["long", "short"]
    redis_store.remember(group, "later", 400)  # and a longer-lived one still extends it
    assert redis_store.client.ttl(f"{redis_store.prefix}:set:{{{group}}}") > 395


def test_redis_counter_always_carries_its_expiry(redis_store):
    """The count and its expiry are set by one Lua script, atomically: no counter outlives its
    window (a counter without one would refuse that key for ever)."""
    store = redis_store
    key = "t:" + uuid.uuid4().hex
    assert store.hit(key, 2, 60)[0] is True
    [rkey] = list(store.client.scan_iter(f"{store.prefix}:rate:*"))
    assert 0 < store.client.ttl(rkey) <= 61
    assert [store.hit(key, 2, 60)[0] for _ in range(2)] == [True, False]
    assert 0 < store.client.ttl(rkey) <= 61 and int(store.client.get(rkey)) == 3
    # A restarted Redis has forgotten the script: it is loaded again, and the count goes on.
    store.client.script_flush()
    assert store.hit(key, 3, 60)[0] is False and int(store.client.get(rkey)) == 4


def test_redis_counts_and_marks_in_one_round_trip(redis_store, monkeypatch):
    store, key, tid = redis_store, "scan:" + uuid.uuid4().hex, uuid.uuid4().hex[:16]
    store.hit(key, 5, 60)  # the script is loaded before counting round trips
    sent = redis_round_trips(monkeypatch)
    assert store.hit_and_consume(key, 5, 60, "V1", tid, 60)[1] is True
    assert len(sent) == 1
    counted, fresh = store.hit_and_consume(key, 5, 60, "V1", tid, 60)
    assert fresh is False and counted[0] is True and 0 < counted[1] <= 60  # the count is the third
    assert len(sent) == 2
    assert store.hit(key, 3, 60)[0] is False  # 4 > 3: the pipeline's counts were real counts
    assert store.consume("V1", tid, 60) is False  # and so was its mark


def test_redis_hit_and_consume_at_the_limit_and_after_a_restart(redis_store):
    store, key = redis_store, "scan:" + uuid.uuid4().hex
    first, second = uuid.uuid4().hex[:16], uuid.uuid4().hex[:16]
    assert store.hit_and_consume(key, 1, 60, "V1", first, 60)[0][0] is True
    counted, fresh = store.hit_and_consume(key, 1, 60, "V1", second, 60)
    assert counted[0] is False and fresh is True  # both commands ran: the caller releases
    store.release("V1", second)
    assert store.consume("V1", second, 60) is True  # released: usable again
    # A restarted Redis has forgotten the count script: the count is made with it loaded again.
    store.client.script_flush()
    counted, fresh = store.hit_and_consume(key, 10, 60, "V1", uuid.uuid4().hex[:16], 60)
    assert counted[0] is True and fresh is True
    [rkey] = list(store.client.scan_iter(f"{store.prefix}:rate:*"))
    assert int(store.client.get(rkey)) == 3


def test_redis_hit_and_consume_fails_closed_when_unreachable():
    dead = RedisStore("redis://127.0.0.1:1/0")
    with pytest.raises(StoreUnavailable):
        dead.hit_and_consume("scan:x", 5, 60, "V", "t", 10)
