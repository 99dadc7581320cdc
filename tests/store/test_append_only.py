"""Usage records have no update or delete path, enforced by the database itself."""
from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.services import records


def test_usage_records_refuse_update_and_delete(app, backend):
    rt = app.extensions["evoucher"]
    with app.app_context():
        s = rt.session()
        records.record(s, None, "activation", channel="wechat")
        s.commit()
    for sql in ("UPDATE usage_records SET kind = 'scan'", "DELETE FROM usage_records"):
        with pytest.raises(DBAPIError) as exc:
            with rt.engine.begin() as conn:
                conn.execute(text(sql))
        assert "append-only" in str(exc.value)
    if backend == "pg-redis":
        with pytest.raises(DBAPIError):
            with rt.engine.begin() as conn:
                conn.execute(text("TRUNCATE usage_records"))
    with rt.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM usage_records")).scalar() == 1


def test_record_kinds_are_checked(app):
    with app.app_context():
        with pytest.raises(ValueError):
            records.record(app.extensions["evoucher"].session(), None, "deleted_everything")
