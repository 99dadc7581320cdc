"""One Core connection per engine and thread, kept open between scans and QR issuances.

A scan runs a handful of prepared statements on a Core connection (app/store/prepared.py), and
QR issuance one or two. Checking that connection out of SQLAlchemy's pool and back in for every
request (the pool's bookkeeping and its reset, a rollback on the driver connection) cost about
45 µs of a scan on the benchmark machine, nearly as much as the voucher lookup itself.
`HotConnection` keeps one connection per thread instead and leaves it exactly as the pool
would: never inside a transaction between uses, replaced when it was invalidated (a lost
PostgreSQL connection) or is older than the pool's recycle time, never shared across a fork,
and closed when the engine is disposed.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError


class HotConnection:
    """`with hot() as conn:` gives this thread's connection to `engine`, with `options`
    (execution options such as an isolation level) applied once when it is opened."""

    def __init__(self, engine: Engine, *, recycle: float | None = None, **options):
        self.engine = engine
        self.recycle = recycle  # seconds, as the pool's pool_recycle: reopen a connection this old
        self.options = options
        self._local = threading.local()
        # (pid, thread, connection) of every thread: for dispose, and to take back an ended thread's
        self._all: list[tuple[int, threading.Thread, Connection]] = []
        self._guard = threading.Lock()
        event.listen(engine, "engine_disposed", self._close_all)

    def _open(self) -> Connection:
        self._close_ended()
        conn = self.engine.connect()
        if self.options:
            conn.execution_options(**self.options)
        self._local.conn, self._local.pid, self._local.opened = conn, os.getpid(), time.monotonic()
        with self._guard:
            self._all.append((os.getpid(), threading.current_thread(), conn))
        return conn

    def _close_ended(self) -> None:
        """Give back the connections of this process's threads that have ended. Nothing else
        would: a server that starts a thread per client (werkzeug's threaded server, `flask run`)
        would otherwise hold one connection per client it ever had, and once the pool ran dry
        every request would wait for one. gunicorn's threads live as long as their worker."""
        pid = os.getpid()
        with self._guard:
            ended = [c for p, t, c in self._all if p == pid and not t.is_alive()]
            if not ended:
                return
            self._all = [entry for entry in self._all if not any(entry[2] is c for c in ended)]
        for conn in ended:
            with contextlib.suppress(SQLAlchemyError):
                conn.close()

    def __call__(self) -> "HotConnection":
        """`with hot() as conn:`. (A class, not a generator: this runs on every scan, and a
        generator's context costs a microsecond more.)"""
        return self

    def __enter__(self) -> Connection:
        local = self._local
        if getattr(local, "lent", None) is not None:
            # The inner `with` would end the outer one's transaction on its way out (a rollback
            # of writes not yet committed): one thread holds one at a time.
            raise RuntimeError("this thread already holds its hot connection")
        conn = getattr(local, "conn", None)
        if conn is not None and local.pid != os.getpid():
            conn = None  # inherited through fork: the parent's, never used nor closed from here
        elif conn is not None and self.recycle is not None and time.monotonic() - local.opened > self.recycle:
            self._forget(conn)  # back to the pool, whose own recycling then replaces it
            conn = None
        if conn is None or conn.closed or conn.invalidated:
            conn = self._open()
        local.lent = conn
        return conn

    def __exit__(self, *_exc) -> bool:
        conn, self._local.lent = self._local.lent, None
        self._release(conn)
        return False

    def _release(self, conn: Connection) -> None:
        """End whatever the caller left open, as the pool's reset on return would."""
        try:
            if conn.invalidated:
                self._forget(conn)
            elif conn.in_transaction():
                conn.rollback()
        except SQLAlchemyError:
            self._forget(conn)

    def _forget(self, conn: Connection) -> None:
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._guard:
            self._all = [entry for entry in self._all if entry[2] is not conn]
        with contextlib.suppress(SQLAlchemyError):
            conn.close()

    def _close_all(self, _engine) -> None:
        """On engine.dispose(): close this process's connections (a parent's, inherited through
        fork, are the parent's to close)."""
        with self._guard:
            mine = [c for pid, _thread, c in self._all if pid == os.getpid()]
            self._all = []
        for conn in mine:
            with contextlib.suppress(SQLAlchemyError):
                conn.close()
