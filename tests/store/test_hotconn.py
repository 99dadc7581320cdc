"""Scans' kept-open connection behaves like a pooled one: clean between uses, replaced when
lost, per thread and per process, closed on dispose."""
from __future__ import annotations

import multiprocessing
import threading

import pytest
from sqlalchemy import event, text

from app.store.engine import make_engine
from app.store.hotconn import HotConnection


@pytest.fixture
def url(migrated_url):
    """The migrated database with a scratch table, dropped afterwards: on PostgreSQL the schema
    is shared with the test that compares it to the models."""
    engine = make_engine(migrated_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE hot_t (v INTEGER)"))
    yield migrated_url
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE hot_t"))
    engine.dispose()


def _engine(url):
    engine = make_engine(url)
    checkouts = []
    event.listen(engine, "checkout", lambda *a: checkouts.append(1))
    return engine, checkouts


def test_one_connection_is_reused_and_left_outside_any_transaction(url):
    engine, checkouts = _engine(url)
    hot = HotConnection(engine)
    seen = set()
    for n in range(3):
        with hot() as conn:
            seen.add(id(conn))
            conn.execute(text("INSERT INTO hot_t (v) VALUES (:v)"), {"v": n})  # never committed
        assert not conn.in_transaction()
    assert len(seen) == 1 and len(checkouts) == 1
    with engine.connect() as other:  # what was left uncommitted was rolled back, not kept
        assert other.execute(text("SELECT count(*) FROM hot_t")).scalar() == 0
    engine.dispose()


def test_a_thread_cannot_take_its_connection_twice(url):
    # A nested `with` would roll the outer one's writes back when it ended: it is refused, and
    # the outer one goes on and commits.
    engine, _ = _engine(url)
    hot = HotConnection(engine)
    with hot() as conn:
        conn.execute(text("INSERT INTO hot_t (v) VALUES (1)"))
        with pytest.raises(RuntimeError, match="already holds"):
            with hot():
                pass
        assert conn.in_transaction()
        conn.commit()
    with hot() as again:  # given back: the thread may take it again
        assert again is conn
        assert again.execute(text("SELECT count(*) FROM hot_t")).scalar() == 1
    engine.dispose()


def test_a_lost_connection_is_replaced_and_dispose_closes_it(url):
    engine, checkouts = _engine(url)
    hot = HotConnection(engine)
    with hot() as first:
        first.invalidate()  # what a dropped PostgreSQL connection looks like
    with hot() as second:
        assert second is not first and second.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()
    assert second.closed
    with hot() as third:
        assert third is not second and third.execute(text("SELECT 1")).scalar() == 1
    assert len(checkouts) == 3
    engine.dispose()


def test_options_are_applied_once_when_opened(url):
    engine, _ = _engine(url)
    hot = HotConnection(engine, isolation_level="AUTOCOMMIT")
    with hot() as conn:
        conn.execute(text("INSERT INTO hot_t (v) VALUES (1)"))  # autocommit: stays
    with engine.connect() as other:
        assert other.execute(text("SELECT count(*) FROM hot_t")).scalar() == 1
    assert conn.get_execution_options()["isolation_level"] == "AUTOCOMMIT"
    engine.dispose()


def test_threads_have_their_own(url):
    engine, _ = _engine(url)
    hot = HotConnection(engine)
    seen = []  # the connections themselves: an id() alone may be reused once one is closed

    def use():
        with hot() as conn:
            seen.append(conn)

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    with hot() as mine:
        seen.append(mine)
    assert len({id(conn) for conn in seen}) == 4
    engine.dispose()


def test_a_thread_that_ended_gives_its_connection_back(url):
    """A server that starts a thread per client (werkzeug's threaded server) must not drain the
    pool: the browser tests' server hung once 15 of its threads had scanned or issued a code."""
    engine, _ = _engine(url)
    hot = HotConnection(engine)

    def use():
        with hot() as conn:
            conn.execute(text("SELECT 1"))

    for _ in range(8):  # one after another, fewer than the pool holds: nothing waits here
        thread = threading.Thread(target=use)
        thread.start()
        thread.join(10)
    assert engine.pool.checkedout() == 1  # the last thread's only
    with hot() as mine:
        assert mine.execute(text("SELECT 1")).scalar() == 1
    assert engine.pool.checkedout() == 1  # this thread's
    engine.dispose()


def _child(hot, parent_conn, out) -> None:
    with hot() as conn:
        out.send((conn is parent_conn, conn.execute(text("SELECT 1")).scalar()))


def test_a_forked_process_opens_its_own(url):
    engine, _ = _engine(url)
    hot = HotConnection(engine)
    with hot() as parent_conn:
        pass
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(hot, parent_conn, send))
    child.start()
    assert recv.poll(30) and recv.recv() == (False, 1)
    child.join(10)
    with hot() as again:  # the parent's is untouched by the child
        assert again is parent_conn and again.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()


def test_a_connection_older_than_the_recycle_time_is_replaced(url, monkeypatch):
    from app.store import hotconn
    engine, checkouts = _engine(url)
    hot = HotConnection(engine, recycle=1800)
    now = [1000.0]
    monkeypatch.setattr(hotconn.time, "monotonic", lambda: now[0])
    with hot() as first:
        pass
    now[0] += 1799
    with hot() as same:
        assert same is first
    now[0] += 2
    with hot() as fresh:
        assert fresh is not first and first.closed and fresh.execute(text("SELECT 1")).scalar() == 1
    assert len(checkouts) == 2
    engine.dispose()
