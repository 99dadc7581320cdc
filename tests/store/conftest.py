"""Store tests that run against both databases at the migrated head, without an app."""
from __future__ import annotations

import pytest

from app.store import migrate


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated_url(request, tmp_path):
    """A database URL at the migration head: a fresh SQLite file, or the session's PostgreSQL
    schema (which pg_schema_url migrates, and skips or fails without PostgreSQL)."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_schema_url")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    migrate.upgrade(url)
    return url
