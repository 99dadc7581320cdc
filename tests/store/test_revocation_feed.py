"""The revocation feed's ids become visible in id order (the id is the feed's cursor)."""
from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from app.services import revocations


def test_a_feed_write_waits_while_another_is_open(app, rt, backend):
    """Were a second writer not to wait, it could commit a higher id before the first commits
    a lower one, and a reader between the two commits would skip the lower id for good."""
    with rt.engine.connect() as other:
        if backend == "pg-redis":  # the advisory lock revocations.add takes
            other.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": revocations.FEED_LOCK})
        else:  # SQLite: one writer at a time
            other.exec_driver_sql("BEGIN IMMEDIATE")
        with app.app_context():
            session = rt.session()
            session.execute(text("SET LOCAL lock_timeout = '300ms'") if backend == "pg-redis"
                            else text("PRAGMA busy_timeout = 300"))
            with pytest.raises(OperationalError):
                revocations.add(session, kind="token", subject="tok_1", reason="family_link_ended")
                session.commit()
            session.rollback()
        other.rollback()
    with app.app_context():  # and once the other writer is gone, it goes through
        session = rt.session()
        revocations.add(session, kind="token", subject="tok_1", reason="family_link_ended")
        session.commit()
        assert [i["id"] for i in revocations.feed(session, 0)["items"]] == ["tok_1"]
