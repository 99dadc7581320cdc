"""The SQLite writer lock excludes other processes and threads, and is a no-op elsewhere."""
from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import sqlite3
import threading
import time

from sqlalchemy import create_engine

from app.store.writelock import WriterLock, writes


def _hold(path: str, seconds: float, ready) -> None:
    with WriterLock(path)():
        ready.set()
        time.sleep(seconds)


def test_another_process_waits_for_the_holder(tmp_path):
    path = str(tmp_path / "db-writer.lock")
    lock = WriterLock(path)
    with lock():  # open our descriptor before forking: the child must not share it
        pass
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=_hold, args=(path, 0.4, ready))
    child.start()
    assert ready.wait(10)
    started = time.monotonic()
    with lock():
        waited = time.monotonic() - started
    child.join(10)
    assert waited >= 0.25 and child.exitcode == 0


def test_threads_exclude_each_other_and_one_thread_may_nest(tmp_path):
    lock = WriterLock(str(tmp_path / "t-writer.lock"))
    inside, overlaps = [], []

    def work():
        for _ in range(20):
            with lock():
                with lock():  # re-entrant within a thread
                    inside.append(1)
                    if len(inside) > 1:
                        overlaps.append(1)
                    time.sleep(0.001)
                    inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not overlaps and not inside


def test_only_an_sqlite_file_gets_a_lock(tmp_path):
    file_engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert not isinstance(writes(file_engine), contextlib.nullcontext)
    with writes(file_engine):
        assert (tmp_path / "x.db-writer.lock").exists()
    assert isinstance(writes(create_engine("sqlite://")), contextlib.nullcontext)
    pg = create_engine("postgresql+psycopg://u@127.0.0.1:1/none")  # never connects
    assert isinstance(writes(pg), contextlib.nullcontext)


def _engine_and_table(path):
    from sqlalchemy import text

    from app.store.engine import make_engine
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)"))
    return engine


def _write(engine, n: int) -> None:
    from sqlalchemy import text
    for _ in range(n):
        with writes(engine), engine.begin() as conn:
            conn.execute(text("INSERT INTO t (v) VALUES (randomblob(3000))"))


def _wal_pages(path) -> int:
    wal = f"{path}-wal"
    return os.path.getsize(wal) // 4096 if os.path.exists(wal) else 0


def test_sqlite_own_checkpoint_is_only_a_backstop(tmp_path):
    from sqlalchemy import text

    from app.store.writelock import WAL_BACKSTOP_PAGES
    engine = _engine_and_table(tmp_path / "c.db")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar() == WAL_BACKSTOP_PAGES


def test_checkpoints_run_after_the_lock_is_released(tmp_path, monkeypatch):
    from app.store import writelock
    monkeypatch.setattr(writelock, "CHECKPOINT_EVERY", 5)
    path = tmp_path / "c.db"
    engine = _engine_and_table(path)
    lock_free = []
    real = writelock.WriterLock.checkpoint

    def spy(self):
        probe = os.open(self.path, os.O_RDWR)
        try:  # another descriptor gets the lock at once only if nobody holds it
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(probe, fcntl.LOCK_UN)
            lock_free.append(True)
        except BlockingIOError:
            lock_free.append(False)
        finally:
            os.close(probe)
        real(self)

    monkeypatch.setattr(writelock.WriterLock, "checkpoint", spy)
    _write(engine, 12)
    assert lock_free == [True, True]  # after the 5th and the 10th release, never under the lock
    # ...and it did checkpoint: the first ten rows are in the database file, not only in the WAL
    assert os.path.getsize(path) > 10 * 3000


def _hammer(path: str, n: int, restart_pages: int) -> None:
    from app.store import writelock
    writelock.CHECKPOINT_EVERY, writelock.WAL_RESTART_PAGES = 4, restart_pages
    _write(_engine_and_table(path), n)


def test_wal_starts_again_under_steady_writes_from_two_processes(tmp_path):
    """Checkpoints made beside a writer never catch up; past WAL_RESTART_PAGES one finishes under
    the lock, so the WAL starts again instead of growing with every write."""
    path = str(tmp_path / "c.db")
    _engine_and_table(path)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(path, 1500, 60)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    # 3,000 writes of a 3 KB row wrote well over 3,000 WAL pages; the WAL itself stayed small
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 3000
    assert _wal_pages(path) < 1500, _wal_pages(path)


def test_a_failed_checkpoint_is_logged_and_the_write_stands(tmp_path, monkeypatch, caplog):
    from app.store import writelock
    monkeypatch.setattr(writelock, "CHECKPOINT_EVERY", 1)
    lock = writelock.WriterLock(str(tmp_path / "x-writer.lock"), str(tmp_path / "missing" / "x.db"))
    with caplog.at_level("WARNING", logger="app.store.writelock"):
        with lock():
            pass
    assert "WAL checkpoint failed" in caplog.text
    assert not (tmp_path / "missing").exists()  # nothing was created
