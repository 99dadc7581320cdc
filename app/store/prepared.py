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
    args: Callable[[dict], Any]  # the caller's parameters → the driver's (a dict or a tuple)
    row: Callable[[Any], dict]  # a driver row → column key → value


def _function(params: str, expr: str, env: dict) -> Callable:
    """`lambda params: expr`, compiled once: the statement's parameters and columns written out
    one by one, the way namedtuple and dataclasses write their methods. A generic loop over
    them (with a test per value for a literal or a processor) cost a scan about 5 µs."""
    namespace = dict(env)
    exec(f"def f({params}):\n    return {expr}\n", namespace)  # the names are ours; values by reference
    return namespace["f"]


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
        self._last: tuple[Any, _Plan | None] = (None, None)  # (dialect, its plan): one service, one dialect

    def _plan(self, dialect) -> _Plan:
        last = self._last  # one read: another thread may replace the pair meanwhile, never half of it
        if last[0] is dialect:
            return last[1]
        key = (dialect.name, dialect.driver)  # the driver decides the parameter style
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._compile(dialect)
        self._last = (dialect, plan)
        return plan

    def _compile(self, dialect) -> _Plan:
        stmt = self.stmt if isinstance(self.stmt, ClauseElement) else self.stmt(dialect)
        compiled = stmt.compile(dialect=dialect)
        named = compiled.positiontup is None
        names = list(compiled.binds) if named else list(compiled.positiontup)
        escaped = getattr(compiled, "escaped_bind_names", None) or {}
        env, args = {}, []
        for position, name in enumerate(names):
            bind = compiled.binds[name]
            proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.required or bind.callable is not None:
                expr = f"params[{bind.key!r}]"
                if proc is not None:
                    env[f"p{position}"] = proc
                    expr = f"p{position}({expr})"
            else:  # a literal of the statement, e.g. status == 'active'
                env[f"c{position}"] = proc(bind.value) if proc else bind.value
                expr = f"c{position}"
            args.append(f"{escaped.get(name, name)!r}: {expr}" if named else expr)
        args_expr = "{" + ", ".join(args) + "}" if named else "(" + "".join(a + ", " for a in args) + ")"
        # A SELECT's columns, or the RETURNING columns of an INSERT/UPDATE (empty without RETURNING).
        columns = getattr(stmt, "selected_columns", None)
        if columns is None:
            columns = getattr(stmt, "exported_columns", ())
        fields = []
        for position, column in enumerate(columns):
            proc = column.type.dialect_impl(dialect).result_processor(dialect, None)
            expr = f"row[{position}]"
            if proc is not None:
                env[f"r{position}"] = proc
                expr = f"r{position}({expr})"
            fields.append(f"{column.key!r}: {expr}")
        return _Plan(compiled.string, _function("params", args_expr, env),
                     _function("row", "{" + ", ".join(fields) + "}", env))

    def run(self, conn: Connection, params: dict[str, Any]):
        """Execute in `conn`'s transaction; returns the DBAPI cursor."""
        return self._execute(conn, params)[1]

    def _execute(self, conn: Connection, params: dict[str, Any]):
        plan = self._plan(conn.dialect)
        args = plan.args(params)
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
        return None if row is None else plan.row(row)

    def scalar(self, conn: Connection, params: dict[str, Any]):
        """The first column of the first row, or None."""
        row = self.one(conn, params)
        return None if row is None else next(iter(row.values()))
