"""The SQLite writer lock excludes other processes and threads, and is a no-op elsewhere."""
from __future__ import annotations

import contextlib
import multiprocessing
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
