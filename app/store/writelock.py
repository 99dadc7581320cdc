"""One SQLite writer at a time, queued by the kernel rather than by SQLite's busy handler.

SQLite allows one write transaction at a time. A second writer gets SQLITE_BUSY and sleeps in
SQLite's busy handler (1 ms, then 2, 5, 10 ms ...) although the first writer is done after a
tenth of that; with two workers writing on every scan those sleeps left the CPU idle 13 % of
the time. The hot write paths (a scan's transaction, the rate counts, nonces) therefore take an
exclusive `flock` on `<database>-writer.lock` first: a waiter is woken the moment the holder
releases it. It is an aid, not the guard: SQLite's own locking still decides, so a writer that
does not take it (the CLI, an ORM session) is only slower, never wrong. The holder's wait is
bounded by SQLite's busy timeout and by gunicorn's worker timeout, and the kernel drops the
lock of a process that dies.

WAL checkpoints are taken out of the lock as well. SQLite's automatic checkpoint runs inside the
commit that crosses its threshold, so under the lock: every ~150th scan spent 5-20 ms copying
the WAL into the database file while the other worker waited, two thirds of all commit time.
Hot-path connections therefore raise the automatic threshold to a backstop (WAL_BACKSTOP_PAGES,
set in app/store/engine.py), and every CHECKPOINT_EVERY-th release of this lock in a process
rings that process's checkpoint thread, which checkpoints passively while writers (its own
process's requests among them) go on. Under steady load a checkpoint made beside writers never
catches up with the last frames, and SQLite starts the WAL again from its beginning only after
one that did; so once the WAL holds WAL_RESTART_PAGES, the frames written meanwhile are
checkpointed under the lock too (that one costs a few ms: it syncs the database file). The WAL
file then stops growing a few thousand pages past WAL_RESTART_PAGES (about 30 MB with two
workers scanning flat out).
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import weakref
from urllib.parse import quote

from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 256  # lock releases of one process between two checkpoints (~7 WAL pages a scan)
WAL_RESTART_PAGES = 4_000  # 16 MiB of 4 KiB pages: finish a checkpoint under the lock from here on
WAL_BACKSTOP_PAGES = 10_000  # SQLite's own automatic checkpoint, for writers that skip this lock


class _Descriptor:
    """Owns a file descriptor: closes it when dropped."""

    __slots__ = ("fd",)

    def __init__(self, fd: int):
        self.fd = fd

    def __del__(self, _close=os.close):
        try:
            _close(self.fd)
        except OSError:
            pass


class WriterLock:
    """An exclusive flock on a file, one open file per process and thread (so it excludes both).

    With `database`, the SQLite file the lock guards, it also checkpoints that file's WAL now and
    then, after a release (see the module's docstring)."""

    def __init__(self, path: str, database: str | None = None):
        self.path = path
        self.database = database
        self._local = threading.local()
        self._checkpointers: dict[int, threading.Event] = {}  # pid -> its checkpoint thread's bell

    def _fd(self) -> int:
        fd, pid = getattr(self._local, "fd", None), getattr(self._local, "pid", None)
        if fd is None or pid != os.getpid():  # never reuse a descriptor inherited through fork
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            # The owner closes the descriptor when this thread's locals go, with the thread: a
            # server that starts a thread per client (`flask run`) would otherwise keep one open
            # per client it ever had. After a fork it closes the child's copy of the parent's.
            self._local.fd, self._local.pid, self._local.owner = fd, os.getpid(), _Descriptor(fd)
        return fd

    def __call__(self) -> "WriterLock":
        """`with lock():` holds it; re-entrant within one thread. (A class, not a generator: the
        lock is taken on every scan, and a generator's context costs a microsecond more.)"""
        return self

    def __enter__(self) -> None:
        local = self._local
        depth = getattr(local, "depth", 0)
        if not depth:
            fcntl.flock(self._fd(), fcntl.LOCK_EX)
        local.depth = depth + 1

    def __exit__(self, *_exc) -> bool:
        local = self._local
        local.depth -= 1
        if local.depth:
            return False
        fcntl.flock(local.fd, fcntl.LOCK_UN)
        if self.database is not None:
            local.releases = getattr(local, "releases", 0) + 1
            if local.releases % CHECKPOINT_EVERY == 0:
                self._checkpoint_soon()
        return False

    def _checkpoint_soon(self) -> None:
        """Ring this process's checkpoint thread, starting it on first use (and after a fork:
        threads do not survive one). The request goes on at once: a checkpoint waits for the
        disk to sync, and pysqlite releases the GIL meanwhile."""
        bell = self._checkpointers.get(os.getpid())
        if bell is None:
            new = threading.Event()
            bell = self._checkpointers.setdefault(os.getpid(), new)  # one thread, even if two race
            if bell is new:
                threading.Thread(target=_checkpoint_loop, args=(weakref.ref(self), bell), daemon=True,
                                 name="wal-checkpoint").start()
        bell.set()

    def checkpoint(self) -> None:
        """Copy the WAL into the database file without the lock; past WAL_RESTART_PAGES, finish
        under it, so that the next write can start the WAL again.

        PASSIVE never waits for readers or writers; a checkpoint that cannot finish (a reader
        still needs old frames, another process is checkpointing) is simply tried again later,
        and SQLite's own checkpoint at WAL_BACKSTOP_PAGES bounds the WAL if none ever could."""
        conn = getattr(self._local, "conn", None)
        try:
            if conn is None or self._local.conn_pid != os.getpid():
                # mode=rw: never create a database file that is not there
                conn = self._local.conn = sqlite3.connect(f"file:{quote(self.database)}?mode=rw", uri=True,
                                                          isolation_level=None, check_same_thread=False)
                self._local.conn_pid = os.getpid()
            _busy, pages, _done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if pages >= WAL_RESTART_PAGES:
                with self():
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # the backstop still holds; a request must not fail for this
            log.warning("WAL checkpoint failed: %s", exc.__class__.__name__)


def _checkpoint_loop(lock_ref, bell: threading.Event) -> None:
    """A process's checkpoint thread: checkpoint whenever rung; end once the lock is gone."""
    while True:
        rung = bell.wait(timeout=30)
        lock = lock_ref()
        if lock is None:
            return
        if rung:
            bell.clear()
            lock.checkpoint()
        del lock


_LOCKS: "weakref.WeakKeyDictionary[Engine, WriterLock | None]" = weakref.WeakKeyDictionary()


def writes(engine: Engine):
    """A context that serialises this engine's hot-path writers: a WriterLock for an SQLite
    file, nothing for PostgreSQL (whose row locks need no help) or an in-memory database."""
    lock = _LOCKS.get(engine, False)
    if lock is False:
        path = engine.url.database if engine.dialect.name == "sqlite" else None
        lock = _LOCKS[engine] = WriterLock(f"{path}-writer.lock", path) if path and path != ":memory:" else None
    return lock() if lock is not None else contextlib.nullcontext()
