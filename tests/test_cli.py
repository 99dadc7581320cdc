"""The `evoucher` operator command, run as an operator would (SQLite embedded default)."""
from __future__ import annotations

import json
import stat

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, func, select, text

from app.cli import main
from app.demo import make_id_number
from app.store.models import Institution, Person


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("EVOUCHER_INSTANCE", str(tmp_path / "instance"))
    for name in ("DATABASE_URL", "REDIS_URL", "EVOUCHER_MASTER_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIN_HASH_TIME_COST", "1")
    monkeypatch.setenv("PIN_HASH_MEMORY_KIB", "8")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    return tmp_path / "instance"


def run(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def test_the_choices_the_cli_offers_are_the_services_own():
    from app.services.institutions import KINDS
    from crypto.keyring import ALGORITHMS

    def choices(group, command, option):
        param = next(p for p in main.commands[group].commands[command].params if p.name == option)
        return tuple(param.type.choices)
    assert choices("institutions", "add", "kind") == KINDS
    assert choices("keys", "rotate", "alg") == ALGORITHMS


def test_db_upgrade_generates_master_key_0600(env):
    assert run("db", "upgrade").exit_code == 0
    key = env / "master.key"
    assert key.stat().st_size == 32 and stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes()
    assert run("db", "upgrade").exit_code == 0
    assert key.read_bytes() == before


def test_postgres_without_master_key_refuses_to_start(env, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    result = run("db", "upgrade")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "EVOUCHER_MASTER_KEY must be set" in result.stderr


def test_institutions_add_prints_secret_once_and_stores_a_hash(env):
    run("db", "upgrade")
    out = run("institutions", "add", "--code", "H1", "--name", "示范医院", "--kind", "hospital",
              "--region", "110000")
    data = json.loads(out.output)
    assert data["client_secret"] and data["client_id"].startswith("inst_")
    engine = create_engine(f"sqlite:///{env / 'evoucher.db'}")
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT secret_hash FROM institutions")).scalar()
    assert data["client_secret"] not in stored and stored.startswith("sha256$")
    bad = run("institutions", "add", "--code", "H2", "--name", "x", "--kind", "hospital", "--region", "11")
    assert bad.exit_code != 0 and "6 digits" in bad.output


def test_a_new_secret_for_a_deactivated_institution_leaves_it_inactive(env):
    """Re-keying is what an operator does to a deactivated institution whose secret leaked: it
    must not quietly let the institution scan again. Only set-status reactivates."""
    run("db", "upgrade")
    add = ("institutions", "add", "--code", "H1", "--name", "示范医院", "--kind", "hospital", "--region", "110000")
    assert run(*add).exit_code == 0
    assert run("institutions", "set-status", "--code", "H1", "--status", "inactive").exit_code == 0
    again = run(*add)
    assert again.exit_code == 0 and json.loads(again.output)["status"] == "inactive"
    engine = create_engine(f"sqlite:///{env / 'evoucher.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM institutions")).scalar() == "inactive"
    assert json.loads(run(*add, "--inactive").output)["status"] == "inactive"
    assert run("institutions", "set-status", "--code", "H1", "--status", "active").exit_code == 0
    assert json.loads(run(*add).output)["status"] == "active"  # an active one stays active
    assert json.loads(run(*add, "--inactive").output)["status"] == "inactive"


def test_enrolments_import_reports_lines(env, tmp_path):
    run("db", "upgrade")
    good = make_id_number("110105", "1980-01-02", 7, 1)
    f = tmp_path / "e.csv"
    f.write_text("person_no,id_type,id_number,name,phone,region_code,insurance_type,status,since\n"
                 f"P1,01,{good},张三,13800001111,110000,employee,active,2020-01-01\n"
                 f"P2,01,{good[:-1]}{'1' if good[-1] != '1' else '2'},李四,13800001112,110000,employee,active,2020-01-01\n",
                 encoding="utf-8")
    result = CliRunner().invoke(main, ["enrolments", "import", str(f)])
    assert result.exit_code == 0
    assert "line 3: invalid_id_number" in result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["applied"] == 1


def test_vouchers_cancel_cancels_once_and_for_good(env, tmp_path):
    """The operator's cancellation (注销): the voucher is cancelled, listed in the revocation feed
    and recorded once; running it again changes nothing (tests/api/test_state_changes.py has
    what a cancelled voucher then refuses)."""
    from app.cli import _app
    from app.extensions import runtime
    from app.services import vouchers
    run("db", "upgrade")
    f = tmp_path / "e.csv"
    f.write_text("person_no,id_type,id_number,name,phone,region_code,insurance_type,status,since\n"
                 f"P1,01,{make_id_number('110105', '1980-01-02', 7, 1)},张三,13800001111,110000,employee,active,"
                 "2020-01-01\n", encoding="utf-8")
    assert run("enrolments", "import", str(f)).exit_code == 0
    with _app().app_context():
        session = runtime().session()
        voucher_id = vouchers.create(session, session.scalars(select(Person)).one()).voucher_id
        session.commit()
    for _ in range(2):
        out = run("vouchers", "cancel", "--voucher-id", voucher_id)
        assert out.exit_code == 0 and json.loads(out.output) == {"voucher_id": voucher_id, "status": "cancelled"}
    engine = create_engine(f"sqlite:///{env / 'evoucher.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM vouchers")).scalar() == "cancelled"
        assert conn.execute(text("SELECT kind, subject, reason FROM revocations")).all() == [
            ("voucher", voucher_id, "cancelled")]
        assert conn.execute(text("SELECT count(*) FROM usage_records WHERE kind = 'cancellation'")).scalar() == 1


def _app_at(moment: float):
    """An app on the CLI's database (the environment's settings) whose clock the test sets."""
    from app import create_app
    from app.config import Config
    from tests.conftest import FrozenClock
    return create_app(Config.from_env(), clock=FrozenClock(moment))


def _signing_kid(app) -> str:
    from app.services import keys as key_service
    with app.app_context():
        rt = app.extensions["evoucher"]
        return key_service.keyring(rt, rt.session(), refresh=True).current.kid


def _jwks_kids(app) -> set[str]:
    return {k["kid"] for k in app.test_client().get("/.well-known/jwks.json").get_json()["keys"]}


def _at(text: str) -> float:
    import datetime as dt
    assert text.endswith("Z")
    return dt.datetime.fromisoformat(text[:-1] + "+00:00").timestamp()


def test_keys_rotate_publishes_the_new_key_and_says_when_it_starts_signing(env):
    """The first key signs at once; a rotated-in key is in the JWKS at once and signs after
    KEY_ROTATION_LEAD_TIME (15 minutes); the old key verifies until every token it signed expired."""
    import time
    from app.services import keys as key_service
    from crypto import tokens
    run("db", "upgrade")
    app = _app_at(time.time())
    (old,) = _jwks_kids(app)
    assert _signing_kid(app) == old
    before = time.time()
    out = run("keys", "rotate")
    after = time.time()
    assert out.exit_code == 0
    rotated = json.loads(out.output)
    signs_from = _at(rotated["signs_from"])
    assert set(rotated) == {"kid", "alg", "signs_from"} and rotated["kid"] != old and rotated["alg"] == "Ed25519"
    assert before + 900 <= signs_from <= after + 900
    app.extensions["evoucher"].clock.t = after + 6  # past the worker's 5 s keyring cache
    assert _jwks_kids(app) == {old, rotated["kid"]} and _signing_kid(app) == old
    with app.app_context():
        rt = app.extensions["evoucher"]
        rt.clock.t = signs_from - 1
        last = tokens.issue(key_service.keyring(rt, rt.session()).current, voucher_id=tokens.new_voucher_id(),
                            region="110000", iat=int(rt.clock.now()), lifetime=300, token_id=tokens.new_token_id())
        rt.clock.t = signs_from
        assert key_service.keyring(rt, rt.session()).current.kid == rotated["kid"]
        rt.clock.t = signs_from + 300
        assert tokens.verify(last, key_service.keyring(rt, rt.session()), int(rt.clock.now())).kid == old
        rt.clock.t = signs_from + 961  # once every token it can have signed has expired, it is gone
        assert key_service.keyring(rt, rt.session(), refresh=True).get(old) is None
    assert _jwks_kids(app) == {rotated["kid"]}


def test_keys_rotate_now_signs_at_once_and_a_second_rotation_waits_for_the_first(env):
    import time
    run("db", "upgrade")
    waiting = json.loads(run("keys", "rotate").output)
    keys_before = _keys(env)
    again = CliRunner().invoke(main, ["keys", "rotate"])
    assert again.exit_code == 1 and _keys(env) == keys_before
    assert (f"key {waiting['kid']} is already published and signs from {waiting['signs_from']}: rotate again "
            "after that, or with --now to sign with a new key at once") in again.stderr
    before = time.time()
    out = run("keys", "rotate", "--now")
    assert out.exit_code == 0
    now = json.loads(out.output)
    assert before <= _at(now["signs_from"]) <= time.time()
    app = _app_at(time.time())
    assert _signing_kid(app) == now["kid"] and {waiting["kid"], now["kid"]} <= _jwks_kids(app)
    app.extensions["evoucher"].clock.t = _at(waiting["signs_from"]) + 1
    assert _signing_kid(app) == now["kid"]  # the key that was waiting never signs


def _keys(env) -> list[tuple]:
    engine = create_engine(f"sqlite:///{env / 'evoucher.db'}")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT kid, status, signs_from, retired_at, publish_until FROM signing_keys "
                                 "ORDER BY id")).all()
    engine.dispose()
    return [tuple(row) for row in rows]


def _current_alg(env) -> tuple[str, str]:
    engine = create_engine(f"sqlite:///{env / 'evoucher.db'}")
    with engine.connect() as conn:
        row = conn.execute(text("SELECT kid, alg FROM signing_keys WHERE status = 'current'")).one()
    engine.dispose()
    return tuple(row)


def test_db_upgrade_keeps_a_key_the_profile_signs_with_and_replaces_one_it_does_not(env, monkeypatch):
    run("db", "upgrade")
    assert _current_alg(env)[1] == "Ed25519"
    assert json.loads(run("keys", "rotate", "--alg", "ES256").output)["alg"] == "ES256"
    chosen = _current_alg(env)
    assert run("db", "upgrade").exit_code == 0 and _current_alg(env) == chosen  # the operator's choice stays
    monkeypatch.setenv("CRYPTO_PROFILE", "gm")  # the ES256 key that was waiting gives way
    assert run("db", "upgrade").exit_code == 0 and _current_alg(env)[1] == "SM2"
    monkeypatch.delenv("CRYPTO_PROFILE")
    assert run("db", "upgrade").exit_code == 0 and _current_alg(env)[1] == "Ed25519"


def test_a_profile_change_publishes_the_new_algorithm_before_it_signs(env, monkeypatch):
    """`db upgrade` after a CRYPTO_PROFILE change rotates as `keys rotate` does: offline scanners
    get the new key (here SM2) in their JWKS before the first code it signs."""
    import time
    run("db", "upgrade")
    (old,) = _jwks_kids(_app_at(time.time()))
    monkeypatch.setenv("CRYPTO_PROFILE", "gm")
    assert run("db", "upgrade").exit_code == 0
    kid, _ = _current_alg(env)
    signs_from = next(row[2] for row in _keys(env) if row[0] == kid)
    app = _app_at(time.time())
    assert _jwks_kids(app) == {old, kid} and _signing_kid(app) == old
    app.extensions["evoucher"].clock.t = _at(signs_from.replace(" ", "T") + "Z")
    assert _signing_kid(app) == kid


def test_keys_rotate_refuses_an_algorithm_the_profile_does_not_sign_with(env, monkeypatch):
    run("db", "upgrade")
    before = _current_alg(env)
    refused = CliRunner().invoke(main, ["keys", "rotate", "--alg", "SM2"])
    assert refused.exit_code == 1 and "CRYPTO_PROFILE=default signs with Ed25519 or ES256, not SM2" in refused.stderr
    monkeypatch.setenv("CRYPTO_PROFILE", "gm")
    run("db", "upgrade")
    gm = _current_alg(env)
    refused = CliRunner().invoke(main, ["keys", "rotate", "--alg", "Ed25519"])
    assert refused.exit_code == 1 and "signs with SM2, not Ed25519" in refused.stderr
    assert _current_alg(env) == gm != before


def test_keys_rotate_to_sm2_publishes_an_sm2_jwk(env, monkeypatch):
    monkeypatch.setenv("CRYPTO_PROFILE", "gm")
    run("db", "upgrade")
    run("keys", "rotate", "--alg", "SM2")
    from app import create_app
    from app.config import Config
    keys = create_app(Config.from_env()).test_client().get("/.well-known/jwks.json").get_json()["keys"]
    sm2 = [k for k in keys if k.get("crv") == "SM2"]
    assert sm2 and sm2[0]["kty"] == "EC" and sm2[0]["alg"] == "SM2SM3"


def test_demo_is_idempotent_and_writes_demo_json(env):
    assert run("demo").exit_code == 0
    doc = json.loads((env / "demo.json").read_text(encoding="utf-8"))
    assert stat.S_IMODE((env / "demo.json").stat().st_mode) == 0o600
    assert {"base_url", "institutions", "persons", "channels"} <= set(doc)
    assert len(doc["persons"]) >= 20 and doc["channels"] == ["wechat", "alipay", "bank-icbc", "bank-cmb"]
    regions = {r for p in doc["persons"] for r in p["region_codes"]}
    assert {"110000", "320682", "410700"} <= regions
    assert any(len(p["region_codes"]) == 2 for p in doc["persons"])
    assert any(p["age"] < 16 for p in doc["persons"]) and any(p["age"] > 60 for p in doc["persons"])
    kinds = {(i["kind"], i["region_code"][:2]) for i in doc["institutions"]}
    assert {("hospital", "11"), ("pharmacy", "11"), ("hospital", "32"), ("hospital", "41")} <= kinds
    assert {"person_no", "id_number", "name", "phone", "region_codes", "age"} <= set(doc["persons"][0])
    assert {"code", "name", "kind", "region_code", "client_id", "client_secret"} <= set(doc["institutions"][0])
    assert run("demo").exit_code == 0
    doc2 = json.loads((env / "demo.json").read_text(encoding="utf-8"))
    assert doc2["institutions"] == doc["institutions"]  # secrets still work, so they are kept
    engine = create_engine(f"sqlite:///{env / 'evoucher.db'}")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Person)).scalar() == len(doc["persons"])
        assert conn.execute(select(func.count()).select_from(Institution)).scalar() == len(doc["institutions"])


def test_channels_add_and_bad_key(env, tmp_path):
    run("db", "upgrade")
    from mock_channels.keys import ensure_keys
    _, public, serial = ensure_keys(tmp_path / "k", "bank-abc")
    out = json.loads(run("channels", "add", "--id", "bank-abc", "--public-key", str(public)).output)
    assert out == {"id": "bank-abc", "app_id": "bank-abc", "serial": serial}
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a key")
    result = run("channels", "add", "--id", "wechat", "--public-key", str(bogus))
    assert result.exit_code != 0
    result = run("channels", "add", "--id", "telegram", "--public-key", str(public))
    assert result.exit_code != 0


def test_db_upgrade_tells_the_operator_what_it_migrated_and_nothing_else(tmp_path):
    """Run as an operator runs it: Alembic's plugin and dialect announcements stay out of the
    terminal; the migrations it applied and the command's own answer are there."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "EVOUCHER_MASTER_KEY")}
    env.update(EVOUCHER_INSTANCE=str(tmp_path / "instance"), LOG_LEVEL="INFO")
    done = subprocess.run([sys.executable, "-c", "from app.cli import main; main()", "db", "upgrade"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "database is at the latest revision"
    loggers = [json.loads(line)["logger"] for line in done.stderr.splitlines()]
    messages = [json.loads(line)["msg"] for line in done.stderr.splitlines()]
    assert "alembic.runtime.plugins" not in loggers
    assert not [m for m in messages if m.startswith(("Context impl", "Will assume"))]
    assert [m for m in messages if m.startswith("Running upgrade")][:1] == ["Running upgrade  -> 0001, initial schema"]
