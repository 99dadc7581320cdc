"""Engine construction for SQLite and PostgreSQL."""
from __future__ import annotations

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url

from .writelock import WAL_BACKSTOP_PAGES

POOL_RECYCLE_SECONDS = 1800  # PostgreSQL connections are replaced at this age
CONNECT_TIMEOUT_SECONDS = 10  # PostgreSQL: give up on a connection attempt after this long


def sqlite_file(url: str) -> str | None:
    """The file a SQLite URL names; None for another database or an in-memory one
    (sqlalchemy's ArgumentError for a malformed URL)."""
    if not url.startswith("sqlite"):
        return None
    path = make_url(url).database
    return path if path and path != ":memory:" else None


def make_engine(url: str, sqlite_synchronous: str = "NORMAL") -> Engine:
    """Create an engine with the pragmas SQLite needs for concurrent workers.

    SQLite runs in WAL mode. With synchronous=NORMAL (the default) a commit survives a crash of
    the service but not of the machine: a power loss can undo the last commits the OS had not
    yet written. FULL syncs every commit to disk and costs about a fifth of scan throughput
    (docs/benchmarks.md); PostgreSQL is the choice for production (docs/decisions.md)."""
    if sqlite_synchronous not in ("NORMAL", "FULL"):
        raise ValueError("sqlite_synchronous must be NORMAL or FULL")
    # hide_parameters (both engines): a database error's text, logged with its traceback, never
    # carries the statement's values, which can be an ec_token, a ciphertext or a person's name.
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 15, "check_same_thread": False},
                               hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - exercised on every connect
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={sqlite_synchronous}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=15000")
            # Checkpoints are taken out of the writer lock by app/store/writelock.py; SQLite's
            # own, inside a commit, is only a backstop.
            cur.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
            cur.close()
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    # A host that drops packets would otherwise hold a connection attempt (a worker, a command)
    # for the kernel's TCP retries, minutes; a connect_timeout in the URL wins.
    connect_args = {} if "connect_timeout" in make_url(url).query else {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    # No pre-ping (a round trip per request): connections are recycled instead, and a dead one
    # fails that request with service_unavailable and is replaced.
    return create_engine(url, pool_recycle=POOL_RECYCLE_SECONDS, pool_size=5, max_overflow=10,
                         hide_parameters=True, connect_args=connect_args)
