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
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import weakref

from sqlalchemy.engine import Engine


class WriterLock:
    """An exclusive flock on a file, one open file per process and thread (so it excludes both)."""

    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()

    def _fd(self) -> int:
        fd, pid = getattr(self._local, "fd", None), getattr(self._local, "pid", None)
        if fd is None or pid != os.getpid():  # never reuse a descriptor inherited through fork
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._local.fd, self._local.pid = fd, os.getpid()
        return fd

    @contextlib.contextmanager
    def __call__(self):
        if getattr(self._local, "held", False):  # re-entrant within one thread
            yield
            return
        fd = self._fd()
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._local.held = True
        try:
            yield
        finally:
            self._local.held = False
            fcntl.flock(fd, fcntl.LOCK_UN)


_LOCKS: "weakref.WeakKeyDictionary[Engine, WriterLock | None]" = weakref.WeakKeyDictionary()


def writes(engine: Engine):
    """A context that serialises this engine's hot-path writers: a WriterLock for an SQLite
    file, nothing for PostgreSQL (whose row locks need no help) or an in-memory database."""
    lock = _LOCKS.get(engine, False)
    if lock is False:
        path = engine.url.database if engine.dialect.name == "sqlite" else None
        lock = _LOCKS[engine] = WriterLock(f"{path}-writer.lock") if path and path != ":memory:" else None
    return lock() if lock is not None else contextlib.nullcontext()
