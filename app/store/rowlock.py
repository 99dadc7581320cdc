"""Serialise read-check-write steps that belong to one row (a voucher's state and every holder
change of it, a guardian's links, a person's filings) on both databases with one statement.

`hold(session, Model, row_id)` updates the row to itself at the start of the step. On
PostgreSQL that takes the row's lock until the transaction ends, so a parallel step on the same
row waits and then reads what the first one committed. On SQLite it starts the write
transaction (pysqlite would otherwise run the step's reads outside any transaction), and SQLite
admits one writer at a time. Reads made after it see every step that committed before it.

`held(session, obj)` does that for a row the step has already loaded, and reads it again under
the hold: a check of what the step read before it could miss a change committed meanwhile."""
from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session


def hold(session: Session, model, row_id: int) -> None:
    table = model.__table__
    session.execute(update(table).where(table.c.id == row_id).values(id=table.c.id))


def held(session: Session, obj):
    """Hold `obj`'s row (as `hold`) and read it again; returns `obj`."""
    hold(session, type(obj), obj.id)
    session.refresh(obj)
    return obj
