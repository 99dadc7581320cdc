"""The migrations build exactly the schema the models describe, and 0002 goes both ways."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.store import migrate
from app.store.engine import make_engine
from app.store.models import Base


def test_models_and_migrations_agree(migrated_url):
    engine = make_engine(migrated_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_lean_scan_rows_downgrade_and_upgrade(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)

    def scan_indexes() -> set[str]:
        insp = inspect(engine)
        return ({i["name"] for i in insp.get_indexes("scans")}
                | {u["name"] for u in insp.get_unique_constraints("scans")})

    assert scan_indexes() == {"uq_scans_scan_id", "uq_scans_token_id"}
    migrate.downgrade(url, "0001")
    assert {"ix_scans_institution_id", "ix_scans_voucher_id", "uq_scans_ec_token"} <= scan_indexes()
    migrate.upgrade(url)
    assert scan_indexes() == {"uq_scans_scan_id", "uq_scans_token_id"}
    engine.dispose()
