"""The migrations build exactly the schema the models describe, and 0002 to 0007 go both ways."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
import datetime as dt

from sqlalchemy import inspect, text

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


def test_tokens_valid_after_carries_existing_suspensions_over(tmp_path):
    """0003 starts each voucher's threshold at its suspension (a voucher suspended before the
    upgrade keeps refusing its old codes), and goes back down to 0002 and up again."""
    url = f"sqlite:///{tmp_path / 'd.db'}"
    migrate.upgrade(url, "0002")
    engine = make_engine(url)
    at = dt.datetime(2026, 11, 1, 8, 30, 15, 250000, tzinfo=dt.timezone.utc)
    with engine.begin() as conn:
        for n, suspended in ((1, at), (2, None)):
            conn.execute(text("INSERT INTO persons (id, person_no, id_type, id_number_enc, id_index, name, "
                              "created_at, updated_at) VALUES (:n, :no, '01', x'00', :idx, 'x', :t, :t)"),
                         {"n": n, "no": f"P{n}", "idx": f"i{n}", "t": at})
            conn.execute(text("INSERT INTO vouchers (id, voucher_id, person_id, status, active_region, pin_initial, "
                              "pin_failures, pin_free_limit_fen, created_at, updated_at, suspended_at) VALUES "
                              "(:n, :vid, :n, 'active', '110000', 0, 0, 0, :t, :t, :s)"),
                         {"n": n, "vid": f"V{n}", "t": at, "s": suspended})
    engine.dispose()
    for _ in range(2):
        migrate.upgrade(url)
        engine = make_engine(url)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT voucher_id, suspended_at, tokens_valid_after FROM vouchers "
                                     "ORDER BY id")).all()
        engine.dispose()
        assert [r[0] for r in rows] == ["V1", "V2"]
        assert rows[0][2] is not None and rows[0][2] == rows[0][1] and rows[1][2] is None
        migrate.downgrade(url, "0002")
        engine = make_engine(url)
        assert "tokens_valid_after" not in {c["name"] for c in inspect(engine).get_columns("vouchers")}
        engine.dispose()


def test_revocations_by_subject_goes_both_ways(tmp_path):
    """0004 indexes the feed by subject (a guardian code's scan looks its token id up) and goes
    back down to 0003 and up again."""
    url = f"sqlite:///{tmp_path / 'd.db'}"

    def revocation_indexes() -> set[str]:
        engine = make_engine(url)
        names = {i["name"] for i in inspect(engine).get_indexes("revocations")}
        engine.dispose()
        return names

    migrate.upgrade(url)
    assert revocation_indexes() == {"ix_revocations_subject"}
    migrate.downgrade(url, "0003")
    assert revocation_indexes() == set()
    migrate.upgrade(url)
    assert revocation_indexes() == {"ix_revocations_subject"}


def test_unkeyed_request_digests_are_erased(tmp_path):
    """0005 overwrites the plain SHA-256 digests of activation bodies (they hold the PIN) with a
    marker no digest equals, keeps the answers, and goes down to 0004 and up again."""
    import hashlib
    url = f"sqlite:///{tmp_path / 'd.db'}"
    migrate.upgrade(url, "0004")
    plain = hashlib.sha256(b'{"id_number": "110101199003070011", "pin": "258013"}').hexdigest()
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO channels (id, app_id, status, created_at) "
                          "VALUES ('wechat', 'wx1', 'active', :t)"), {"t": dt.datetime(2026, 11, 1)})
        conn.execute(text("INSERT INTO channel_requests (channel_id, request_id, fingerprint, response, created_at) "
                          "VALUES ('wechat', 'r1', :f, '{\"voucher_id\": \"V1\"}', :t)"),
                     {"f": plain, "t": dt.datetime(2026, 11, 1)})
    engine.dispose()

    def rows():
        engine = make_engine(url)
        with engine.connect() as conn:
            out = conn.execute(text("SELECT fingerprint, response FROM channel_requests")).all()
        engine.dispose()
        return out

    for _ in range(2):
        migrate.upgrade(url)
        [(fingerprint, response)] = rows()
        assert fingerprint != plain and not all(c in "0123456789abcdef" for c in fingerprint)
        assert "V1" in response
        migrate.downgrade(url, "0004")
        assert rows()[0][0] == fingerprint


def test_reverifications_name_their_binding_both_ways(tmp_path):
    """0006 adds the binding that made each face check; a face check recorded before it keeps its
    row and names none (it then serves no session). Down to 0005 and up again."""
    url = f"sqlite:///{tmp_path / 'd.db'}"
    migrate.upgrade(url, "0005")
    at = dt.datetime(2026, 11, 1, 8, 30, tzinfo=dt.timezone.utc)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO persons (id, person_no, id_type, id_number_enc, id_index, name, "
                          "created_at, updated_at) VALUES (1, 'P1', '01', x'00', 'i1', 'x', :t, :t)"), {"t": at})
        conn.execute(text("INSERT INTO vouchers (id, voucher_id, person_id, status, active_region, pin_initial, "
                          "pin_failures, pin_free_limit_fen, created_at, updated_at) VALUES "
                          "(1, 'V1', 1, 'active', '110000', 0, 0, 0, :t, :t)"), {"t": at})
        conn.execute(text("INSERT INTO channels (id, app_id, status, created_at) "
                          "VALUES ('wechat', 'wx1', 'active', :t)"), {"t": at})
        conn.execute(text("INSERT INTO reverifications (voucher_id, channel_id, purpose, verified_at, expires_at) "
                          "VALUES (1, 'wechat', 'pin_reset', :t, :t)"), {"t": at})
    engine.dispose()

    def columns() -> tuple[list, dict]:
        engine = make_engine(url)
        names = [c["name"] for c in inspect(engine).get_columns("reverifications")]
        with engine.connect() as conn:
            row = conn.execute(text("SELECT * FROM reverifications")).mappings().one()
        engine.dispose()
        return names, dict(row)

    for _ in range(2):
        migrate.upgrade(url)
        names, row = columns()
        assert "binding_id" in names and row["binding_id"] is None and row["purpose"] == "pin_reset"
        migrate.downgrade(url, "0005")
        names, row = columns()
        assert "binding_id" not in names and row["purpose"] == "pin_reset"


def test_an_existing_signing_key_signs_from_when_it_was_made(tmp_path):
    """0007 gives each key the time it starts to sign: an existing key has signed since it was
    made, so the service keeps signing with it after the upgrade; 0007 goes down and up again."""
    import base64

    from app import create_app
    from app.config import Config
    from app.services import keys
    from crypto import keyring
    from tests.conftest import MASTER_KEY, FrozenClock
    url = f"sqlite:///{tmp_path / 'd.db'}"
    migrate.upgrade(url, "0006")
    made = dt.datetime(2026, 11, 1, 8, 30, 15, 250000, tzinfo=dt.timezone.utc)
    key = keyring.generate("Ed25519")
    sealed = keyring.seal_private(base64.b64decode(MASTER_KEY), key)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO signing_keys (kid, alg, public_key, private_sealed, status, created_at) "
                          "VALUES (:kid, 'Ed25519', :pub, :sealed, 'current', :t)"),
                     {"kid": key.kid, "pub": key.public, "sealed": sealed, "t": made})
    engine.dispose()
    for _ in range(2):
        migrate.upgrade(url)
        engine = make_engine(url)
        with engine.connect() as conn:
            signs_from = conn.execute(text("SELECT signs_from, created_at FROM signing_keys")).one()
        engine.dispose()
        assert signs_from[0] == signs_from[1]
        app = create_app(Config.from_env({"EVOUCHER_MASTER_KEY": MASTER_KEY}, instance_path=str(tmp_path),
                                         database_url=url), clock=FrozenClock(made.timestamp() + 60))
        with app.app_context():
            rt = app.extensions["evoucher"]
            assert keys.keyring(rt, rt.session()).current.kid == key.kid
        rt.engine.dispose()
        migrate.downgrade(url, "0006")
        engine = make_engine(url)
        assert "signs_from" not in {c["name"] for c in inspect(engine).get_columns("signing_keys")}
        engine.dispose()
