"""Engine settings: SQLite pragmas (WAL always; how durable a commit is, by configuration), PostgreSQL
connection attempts that time out."""
from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from app.config import Config
from app.store.engine import make_engine


@pytest.mark.parametrize("setting, level", [("NORMAL", 1), ("FULL", 2)])
def test_sqlite_synchronous_setting(tmp_path, setting, level):
    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}", setting)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar_one() == level
    engine.dispose()


def test_sqlite_synchronous_is_validated():
    assert Config.from_env({}).sqlite_synchronous == "NORMAL"
    assert Config.from_env({"SQLITE_SYNCHRONOUS": "full"}).sqlite_synchronous == "FULL"
    with pytest.raises(ValueError, match="SQLITE_SYNCHRONOUS"):
        Config.from_env({"SQLITE_SYNCHRONOUS": "OFF"})
    with pytest.raises(ValueError):
        make_engine("sqlite://", "OFF")


def test_database_errors_never_carry_the_statement_values(tmp_path):
    """A failed statement's error (which the 500 handler logs) names no bound value."""
    from sqlalchemy.exc import IntegrityError
    engine = make_engine(f"sqlite:///{tmp_path / 'h.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (k TEXT PRIMARY KEY)"))
        conn.execute(text("INSERT INTO t VALUES (:k)"), {"k": "110105198001020071"})
    with pytest.raises(IntegrityError) as exc, engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (:k)"), {"k": "110105198001020071"})
    assert "110105198001020071" not in str(exc.value) and "hidden" in str(exc.value)
    engine.dispose()


@pytest.mark.parametrize("url,expected", [
    ("postgresql://postgres@127.0.0.1:1/test", 10),
    ("postgresql://postgres@127.0.0.1:1/test?connect_timeout=3", 3),
])
def test_postgresql_connection_attempts_time_out(monkeypatch, url, expected):
    """A host that drops packets must not hold a worker or a command for minutes: psycopg is
    given a connect_timeout (10 s), unless the URL sets its own."""
    import psycopg

    seen = {}

    def connect(*args, **kwargs):
        seen.update(kwargs)
        raise psycopg.OperationalError("refused in the test")
    monkeypatch.setattr(psycopg, "connect", connect)
    monkeypatch.setattr(psycopg.Connection, "connect", staticmethod(connect))
    engine = make_engine(url)
    with pytest.raises(OperationalError):
        engine.connect()
    assert int(seen["connect_timeout"]) == expected
