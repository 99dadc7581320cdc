"""Hot-path statements: Core SQL compiled once per dialect, run on the DBAPI connection.

SQLAlchemy spends 30-130 µs of Python per statement building its execution context, far more
than SQLite or a pipelined PostgreSQL round trip takes, and a scan runs six statements.
`Prepared` compiles a Core statement once per dialect, keeps SQLAlchemy's own bind and result
processors for its columns (so values are stored and read exactly as the ORM stores and reads
them), and executes on the driver connection that the caller's SQLAlchemy connection holds. It
runs inside that connection's transaction and commits or rolls back with it.

What it skips on purpose: SQLAlchemy events and echo logging. Driver errors are re-raised as
SQLAlchemy's DBAPIError subclasses, and a lost connection is invalidated, as SQLAlchemy would.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement


class _Plan(NamedTuple):
    sql: str
    names: tuple | None  # pyformat (%(name)s): the parameters' names in `order`; qmark (?): None
    order: tuple  # (caller's key or None, constant, processor) per parameter
    result: tuple | None  # result processors, one per column, or None when none applies
    fields: tuple  # result column names


def dialect_insert(dialect):
    """The dialect's own insert(), the one with on_conflict_do_nothing/do_update."""
    if dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise NotImplementedError(f"no ON CONFLICT insert for {dialect.name}")
    return insert


class Prepared:
    """A Core statement compiled once per dialect; `run`, `one`, `scalar` execute it raw.

    `stmt` is a statement, or a function of the dialect that builds one (for dialect-specific
    constructs such as ON CONFLICT; see `dialect_insert`)."""

    def __init__(self, stmt: ClauseElement | Callable[[Any], ClauseElement]):
        self.stmt = stmt
        self._plans: dict[tuple[str, str], _Plan] = {}

    def _plan(self, dialect) -> _Plan:
        key = (dialect.name, dialect.driver)  # the driver decides the parameter style
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._compile(dialect)
        return plan

    def _compile(self, dialect) -> _Plan:
        stmt = self.stmt if isinstance(self.stmt, ClauseElement) else self.stmt(dialect)
        compiled = stmt.compile(dialect=dialect)
        named = compiled.positiontup is None
        names = list(compiled.binds) if named else list(compiled.positiontup)
        escaped = getattr(compiled, "escaped_bind_names", None) or {}
        order = []
        for name in names:
            bind = compiled.binds[name]
            proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.required or bind.callable is not None:
                order.append((bind.key, None, proc))
            else:  # a literal of the statement, e.g. status == 'active'
                order.append((None, proc(bind.value) if proc else bind.value, None))
        result, fields = None, ()
        # A SELECT's columns, or the RETURNING columns of an INSERT/UPDATE (empty without RETURNING).
        columns = getattr(stmt, "selected_columns", None)
        if columns is None:
            columns = getattr(stmt, "exported_columns", ())
        if len(columns):
            fields = tuple(c.key for c in columns)
            procs = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
            result = procs if any(procs) else None
        sql_names = tuple(escaped.get(n, n) for n in names) if named else None
        return _Plan(compiled.string, sql_names, tuple(order), result, fields)

    def run(self, conn: Connection, params: dict[str, Any]):
        """Execute in `conn`'s transaction; returns the DBAPI cursor."""
        return self._execute(conn, params)[1]

    def _execute(self, conn: Connection, params: dict[str, Any]):
        plan = self._plan(conn.dialect)
        values = [const if key is None else (proc(params[key]) if proc else params[key])
                  for key, const, proc in plan.order]
        args: Any = dict(zip(plan.names, values)) if plan.names is not None else values
        if not conn.in_transaction():  # what SQLAlchemy's autobegin does: conn.commit() then commits this
            conn.begin()
        raw = conn.connection.driver_connection
        try:
            return plan, raw.execute(plan.sql, args)
        except conn.dialect.loaded_dbapi.Error as exc:
            lost = conn.dialect.is_disconnect(exc, raw, None)
            if lost:
                conn.invalidate(exc)
            raise DBAPIError.instance(plan.sql, args, exc, conn.dialect.loaded_dbapi.Error,
                                      connection_invalidated=lost, dialect=conn.dialect) from exc

    def one(self, conn: Connection, params: dict[str, Any]) -> dict | None:
        """The first row as a dict of column key → value, or None."""
        plan, cursor = self._execute(conn, params)
        row = cursor.fetchone()
        if row is None:
            return None
        if plan.result is not None:
            row = [p(v) if p else v for p, v in zip(plan.result, row)]
        return dict(zip(plan.fields, row))

    def scalar(self, conn: Connection, params: dict[str, Any]):
        """The first column of the first row, or None."""
        row = self.one(conn, params)
        return None if row is None else next(iter(row.values()))
