"""Prepared statements store and read values exactly as the ORM does, inside the caller's transaction."""
from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import bindparam, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from app.store.engine import make_engine
from app.store.models import EphemeralEntry, UsageRecord
from app.store.prepared import Prepared, dialect_insert

_COLUMNS = ("voucher_id", "kind", "actor", "detail", "created_at")
INSERT = Prepared(insert(UsageRecord).values({c: bindparam(c) for c in _COLUMNS}).returning(UsageRecord.id))
READ = Prepared(select(UsageRecord.id, UsageRecord.kind, UsageRecord.actor, UsageRecord.detail,
                       UsageRecord.created_at).where(UsageRecord.id == bindparam("rid"), UsageRecord.kind == "scan"))
TAKE = Prepared(lambda dialect: dialect_insert(dialect)(EphemeralEntry)
                .values(scope=bindparam("scope"), key=bindparam("key"), expires_at=bindparam("exp"))
                .on_conflict_do_nothing().returning(EphemeralEntry.key))
PLAIN_INSERT = Prepared(insert(EphemeralEntry).values(scope=bindparam("scope"), key=bindparam("key"),
                                                      expires_at=bindparam("exp")))


@pytest.fixture
def engine(migrated_url):
    eng = make_engine(migrated_url)
    yield eng
    eng.dispose()


def _record(detail=None) -> dict:
    return {"voucher_id": None, "kind": "scan", "actor": "医保",
            "detail": detail or {"result": "ok", "名": "张丽", "n": 3},
            "created_at": dt.datetime(2026, 11, 22, 8, 30, 15, 123456, tzinfo=dt.timezone.utc)}


def test_values_round_trip_as_the_orm_reads_them(engine):
    with engine.connect() as conn:
        rid = INSERT.scalar(conn, _record())
        conn.commit()
        row = READ.one(conn, {"rid": rid})
    with Session(engine) as s:
        orm = s.get(UsageRecord, rid)
        assert (orm.kind, orm.actor, orm.detail) == ("scan", "医保", {"result": "ok", "名": "张丽", "n": 3})
        assert orm.created_at.replace(tzinfo=None) == dt.datetime(2026, 11, 22, 8, 30, 15, 123456)
        assert row == {"id": rid, "kind": "scan", "actor": "医保", "detail": orm.detail,
                       "created_at": orm.created_at}


def test_a_literal_of_the_statement_is_bound_too(engine):
    other = _record()
    other["kind"] = "activation"
    with engine.connect() as conn:
        rid = INSERT.scalar(conn, other)
        assert READ.one(conn, {"rid": rid}) is None  # the statement's kind == 'scan' filters it out
        conn.rollback()


def test_writes_commit_and_roll_back_with_the_connection(engine):
    with engine.connect() as conn:  # autobegun by the first prepared statement
        kept = INSERT.scalar(conn, _record())
        conn.commit()
        dropped = INSERT.scalar(conn, _record())
        conn.rollback()
        lost = INSERT.scalar(conn, _record())
    # `lost` was never committed: closing the connection rolled it back
    with engine.connect() as conn:
        found = {r for r in (kept, dropped, lost) if READ.one(conn, {"rid": r})}
    assert found == {kept}


def test_on_conflict_insert_returns_nothing_for_a_taken_key(engine):
    key = uuid.uuid4().hex
    with engine.connect() as conn:
        assert TAKE.scalar(conn, {"scope": "used", "key": key, "exp": 1}) == key
        assert TAKE.scalar(conn, {"scope": "used", "key": key, "exp": 1}) is None
        conn.commit()


def test_driver_errors_surface_as_sqlalchemy_errors(engine):
    key = uuid.uuid4().hex
    with engine.connect() as conn:
        PLAIN_INSERT.run(conn, {"scope": "used", "key": key, "exp": 1})
        with pytest.raises(IntegrityError):
            PLAIN_INSERT.run(conn, {"scope": "used", "key": key, "exp": 1})
        conn.rollback()
        PLAIN_INSERT.run(conn, {"scope": "used", "key": key, "exp": 1})  # usable again after the rollback
        conn.commit()


@pytest.mark.parametrize("migrated_url", ["postgresql"], indirect=True)  # SQLite has no connection to lose
def test_a_lost_connection_is_invalidated_not_reused(engine):
    with engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        conn.commit()
        with engine.connect() as killer:
            killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError) as exc:
            READ.one(conn, {"rid": 1})
        assert exc.value.connection_invalidated and conn.invalidated
    with engine.connect() as conn:  # the pool hands out a fresh connection
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
