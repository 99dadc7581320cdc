"""The `evoucher` command given an operator's mistakes: each ends in a short message on stderr
and a non-zero exit status (2 for usage, 1 otherwise), never a traceback, and writes nothing.

Commands run in-process with exceptions let through (`catch_exceptions=False`): a crash fails
the test as the exception itself. `serve` never gets to exec gunicorn here: `os.execv` is
replaced by a stub that fails the test."""
from __future__ import annotations

import base64
import builtins
import json
import os
import shutil
import sqlite3
import uuid

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from app.cli import main
from app.demo import make_id_number
from tests.conftest import PG_URL, need_service, pg_available

HEADER = "person_no,id_type,id_number,name,phone,region_code,insurance_type,status,since\n"
ID1 = make_id_number("110105", "1980-01-02", 7, 1)
ID2 = make_id_number("320682", "1990-05-06", 8, 0)
ID3 = make_id_number("410702", "1975-03-04", 9, 1)
OTHER_KEY = base64.b64encode(b"w" * 32).decode()


def _clean_env(monkeypatch, instance) -> None:
    monkeypatch.setenv("EVOUCHER_INSTANCE", str(instance))
    for name in ("DATABASE_URL", "REDIS_URL", "EVOUCHER_MASTER_KEY", "EVOUCHER_URL", "TOKEN_LIFETIME",
                 "CRYPTO_PROFILE", "WEB_CONCURRENCY", "EVOUCHER_THREADS", "EVOUCHER_BIND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIN_HASH_TIME_COST", "1")
    monkeypatch.setenv("PIN_HASH_MEMORY_KIB", "8")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def fails(result, code: int, *words: str) -> None:
    """Exit `code`, no traceback anywhere, and each of `words` in the message on stderr."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.stderr, (word, result.stderr)


@pytest.fixture(scope="module")
def migrated_template(tmp_path_factory):
    """One instance folder after `evoucher db upgrade`, copied for each test that needs it."""
    instance = tmp_path_factory.mktemp("cli-template") / "instance"
    with pytest.MonkeyPatch.context() as mp:
        _clean_env(mp, instance)
        assert run("db", "upgrade").exit_code == 0
    return instance


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An instance folder that does not exist yet (no `evoucher db upgrade` has run)."""
    instance = tmp_path / "instance"
    _clean_env(monkeypatch, instance)
    return instance


@pytest.fixture
def env(fresh, migrated_template):
    """A migrated SQLite instance with its generated master key."""
    shutil.copytree(migrated_template, fresh)
    return fresh


@pytest.fixture
def no_exec(monkeypatch):
    """`serve` must stop before it execs gunicorn in every test here."""
    def refuse(*_args):
        raise AssertionError("serve went on to exec gunicorn")
    monkeypatch.setattr(os, "execv", refuse)


def rows(instance, sql: str):
    conn = sqlite3.connect(instance / "evoucher.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def count(instance, table: str) -> int:
    return rows(instance, f"SELECT count(*) FROM {table}")[0][0]


def csv_row(person_no, id_number, name="张三", region="110000", since="2020-01-01") -> str:
    return f"{person_no},01,{id_number},{name},13800001111,{region},employee,active,{since}\n"


def json_row(person_no, id_number, **changes) -> str:
    row = {"person_no": person_no, "id_type": "01", "id_number": id_number, "name": "王五",
           "phone": "13800001111", "region_code": "110000", "insurance_type": "employee",
           "status": "active", "since": "2020-01-01", **changes}
    return json.dumps(row, ensure_ascii=False)


# --- configuration -----------------------------------------------------------------------------

@pytest.mark.parametrize("name, value, words", [
    ("EVOUCHER_MASTER_KEY", "abc", "EVOUCHER_MASTER_KEY must be 32 bytes"),
    ("DATABASE_URL", "mysql://u@db.example/evoucher", "DATABASE_URL must start with sqlite:/// or postgresql://"),
    ("DATABASE_URL", "not a url", "DATABASE_URL must start with"),
    ("DATABASE_URL", "postgresql://u:pw@127.0.0.1:port/db", "DATABASE_URL is not a valid database URL"),
    ("REDIS_URL", "notredis://127.0.0.1", "REDIS_URL must start with redis://"),
    ("REDIS_URL", "redis://127.0.0.1:port/0", "REDIS_URL is not a valid Redis URL"),
    ("TOKEN_LIFETIME", "sixty", "TOKEN_LIFETIME must be an integer"),
    ("KEY_ROTATION_LEAD_TIME", "60", "KEY_ROTATION_LEAD_TIME must be between 120 and 86400"),
    ("LOG_LEVEL", "loud", "LOG_LEVEL must be one of"),
])
def test_malformed_settings_are_reported_by_name_before_anything_is_created(fresh, monkeypatch, name, value, words):
    monkeypatch.setenv(name, value)
    result = run("keys", "rotate")
    fails(result, 1, words)
    assert "pw" not in result.stderr  # a URL is never repeated: it may hold a password
    assert not fresh.exists()


def test_lowercase_log_level_is_accepted(env, monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "warning")  # gunicorn.conf.py lower-cases it; the app took upper only
    assert run("keys", "rotate").exit_code == 0


def test_unreachable_postgres_is_one_line(fresh, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/test")  # nothing listens on port 1
    monkeypatch.setenv("EVOUCHER_MASTER_KEY", OTHER_KEY)
    for args in (("db", "upgrade"), ("keys", "rotate"), ("institutions", "set-status", "--code", "H1",
                                                         "--status", "inactive")):
        fails(run(*args), 1, "cannot use the database (DATABASE_URL)")


def test_a_file_that_is_no_database(fresh, tmp_path, monkeypatch):
    other = tmp_path / "persons.csv"
    other.write_text(HEADER, encoding="utf-8")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{other}")
    for args in (("db", "upgrade"), ("keys", "rotate")):
        fails(run(*args), 1, "cannot use the database", "file is not a database")
    assert other.read_text(encoding="utf-8") == HEADER


# --- before `evoucher db upgrade` ----------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("institutions", "add", "--code", "H1", "--name", "示范医院", "--kind", "hospital", "--region", "110000"),
    ("institutions", "set-status", "--code", "H1", "--status", "inactive"),
    ("keys", "rotate"),
    ("channels", "add", "--id", "wechat", "--public-key", "{key}"),
    ("enrolments", "import", "{csv}"),
    ("serve",),
])
def test_commands_before_db_upgrade_say_so_and_create_nothing(fresh, tmp_path, no_exec, args):
    from mock_channels.keys import ensure_keys
    _, public, _ = ensure_keys(tmp_path / "keys", "wechat")
    persons = tmp_path / "p.csv"
    persons.write_text(HEADER + csv_row("P1", ID1), encoding="utf-8")
    args = [a.format(key=public, csv=persons) for a in args]
    fails(run(*args), 1, "run `evoucher db upgrade` first")
    assert not fresh.exists()  # no instance folder, no master key, no empty database


def test_postgres_without_schema_says_to_upgrade(fresh, monkeypatch):
    reason = pg_available()
    if reason:
        need_service("PostgreSQL", reason)
    schema = f"evcli_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        monkeypatch.setenv("DATABASE_URL", f"{PG_URL}?options=-csearch_path%3D{schema}")
        monkeypatch.setenv("EVOUCHER_MASTER_KEY", OTHER_KEY)
        fails(run("institutions", "add", "--code", "H1", "--name", "x", "--kind", "hospital",
                  "--region", "110000"), 1, "no schema yet", "run `evoucher db upgrade` first")
        with admin.connect() as conn:
            tables = conn.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = :s"), {"s": schema})
            assert tables.scalar() == 0
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_an_older_revision_must_be_upgraded_first(fresh, tmp_path, monkeypatch):
    from app.store import migrate
    db = tmp_path / "old.db"
    migrate.upgrade(f"sqlite:///{db}", "0001")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{db}")
    fails(run("keys", "rotate"), 1, "at revision 0001", "run `evoucher db upgrade` first")
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM signing_keys").fetchone()[0] == 0
    conn.close()


def test_a_revision_from_a_newer_version_is_refused(env):
    conn = sqlite3.connect(env / "evoucher.db")
    conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.commit()
    conn.close()
    keys_before = count(env, "signing_keys")
    for args in (("db", "upgrade"), ("keys", "rotate")):
        fails(run(*args), 1, "revision 9999", "does not know")
    assert count(env, "signing_keys") == keys_before


# --- the master key ------------------------------------------------------------------------------

def test_a_wrong_master_key_writes_nothing(env, tmp_path, monkeypatch):
    persons = tmp_path / "p.csv"
    persons.write_text(HEADER + csv_row("P1", ID1), encoding="utf-8")
    monkeypatch.setenv("EVOUCHER_MASTER_KEY", OTHER_KEY)  # valid, but not the key of this database
    keys_before = rows(env, "SELECT kid, status FROM signing_keys")
    for args in (("keys", "rotate"), ("db", "upgrade"), ("enrolments", "import", persons),
                 ("institutions", "add", "--code", "H1", "--name", "x", "--kind", "hospital",
                  "--region", "110000")):
        fails(run(*args), 1, "master key does not open", "EVOUCHER_MASTER_KEY")
    assert rows(env, "SELECT kid, status FROM signing_keys") == keys_before
    assert count(env, "persons") == 0 and count(env, "institutions") == 0


def test_a_lost_master_key_file_is_not_replaced_by_a_new_one(env):
    (env / "master.key").unlink()
    keys_before = rows(env, "SELECT kid, status FROM signing_keys")
    for args in (("keys", "rotate"), ("db", "upgrade")):
        fails(run(*args), 1, "master.key is missing", "restore that file or set EVOUCHER_MASTER_KEY")
    assert not (env / "master.key").exists()
    assert rows(env, "SELECT kid, status FROM signing_keys") == keys_before


def test_a_master_key_file_of_the_wrong_size(env):
    (env / "master.key").write_bytes(b"short")
    fails(run("keys", "rotate"), 1, "master.key must hold exactly 32 bytes")


# --- enrolments import ---------------------------------------------------------------------------

def _import(path):
    result = run("enrolments", "import", path)
    assert "Traceback" not in result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else None
    return result, summary


@pytest.mark.parametrize("content, words", [
    (b"", "is empty: nothing to import"),
    (b"\n \n", "is empty: nothing to import"),
    (HEADER.encode(), "has a header but no rows"),
    ((HEADER + csv_row("P1", ID1, name="王五")).encode("gbk"), "is not UTF-8 (line 2)"),
    (HEADER.encode() + csv_row("P1", ID1).encode()[:-3] + b"\xff\xfe\n", "is not UTF-8 (line 2)"),
])
def test_import_of_an_empty_or_undecodable_file_fails_and_imports_nothing(env, tmp_path, content, words):
    f = tmp_path / "persons.csv"
    f.write_bytes(content)
    result, _ = _import(f)
    fails(result, 1, words)
    assert count(env, "persons") == 0


def test_import_of_an_unreadable_file_is_one_line(env, tmp_path, monkeypatch):
    f = tmp_path / "persons.csv"
    f.write_text(HEADER + csv_row("P1", ID1), encoding="utf-8")
    real_open = builtins.open

    def denied(path, *args, **kwargs):  # as for a file the operator may not read (root reads all)
        if str(path) == str(f):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", denied)
    fails(run("enrolments", "import", f), 1, "cannot read", "Permission denied")
    monkeypatch.setattr(builtins, "open", real_open)
    assert count(env, "persons") == 0


def test_import_with_a_byte_order_mark_in_json_lines_named_txt(env, tmp_path):
    f = tmp_path / "persons.txt"  # no .jsonl name: the format is told by the first character
    f.write_text("\ufeff" + json_row("J1", ID1) + "\n", encoding="utf-8")
    result, summary = _import(f)
    assert result.exit_code == 0 and summary["applied"] == 1


def test_import_names_every_line_an_open_quote_swallows(env, tmp_path):
    f = tmp_path / "persons.csv"
    f.write_text(HEADER + csv_row("P1", ID1)                       # line 2: good
                 + csv_row("P2", ID2, name='"王五')                 # line 3: opens a quote
                 + csv_row("P3", ID3) + csv_row("P4", ID3),        # lines 4-5: swallowed by it
                 encoding="utf-8")
    result, summary = _import(f)
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        "line 3: invalid_request: a quoted field runs from line 3 to line 5 (a quote left open?)"]
    assert summary == {"applied": 1, "persons_created": 1, "rejected": 1}


def test_import_reports_a_csv_field_past_the_parser_limit_and_goes_on(env, tmp_path):
    f = tmp_path / "persons.csv"
    f.write_text(HEADER + csv_row("P1", ID1, name="x" * 200_000) + csv_row("P2", ID2), encoding="utf-8")
    result, summary = _import(f)
    assert result.exit_code == 0
    assert result.stderr.startswith("line 2: invalid_request: not valid CSV: field larger than field limit")
    assert summary["applied"] == 1 and [r[0] for r in rows(env, "SELECT person_no FROM persons")] == ["P2"]


def test_import_json_lines_are_counted_at_newlines_only(env, tmp_path):
    f = tmp_path / "persons.jsonl"
    # U+2028 and U+0085 may stand inside a JSON string; str.splitlines() also breaks lines there
    f.write_text(json_row("J1", ID1, name="王\u2028五") + "\n" + "{not json\n"
                 + json_row("J3", ID2, name="赵\x85六") + "\n" + json_row("J4", ID3, region_code="11") + "\n",
                 encoding="utf-8")
    result, summary = _import(f)
    assert result.exit_code == 0
    assert result.stderr.splitlines() == ["line 2: invalid_request: not valid JSON",
                                          "line 4: invalid_request: region_code must be 6 digits"]
    assert summary["applied"] == 2


def test_import_json_values_of_the_wrong_kind_are_reported_by_line(env, tmp_path):
    f = tmp_path / "persons.jsonl"
    f.write_text("\n".join([
        json_row("J1", ID1),                                   # line 1: good
        '{"person_no": ' + "9" * 5000 + "}",                   # line 2: past int()'s digit limit
        "[" * 100_000 + "]" * 100_000,                         # line 3: nested past the parser
        json_row("J4", ID2, name=["王五"]),                    # line 4: a list is no name
        json_row("J5", ID2, name=True),                        # line 5: nor is a boolean
        json_row("J6", ID2, since=2020.5),                     # line 6: nor a fraction a date
    ]) + "\n", encoding="utf-8")
    result, summary = _import(f)
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        "line 2: invalid_request: not valid JSON", "line 3: invalid_request: not valid JSON",
        "line 4: invalid_request: name must be text", "line 5: invalid_request: name must be text",
        "line 6: invalid_request: since must be text"]
    assert summary["applied"] == 1 and count(env, "persons") == 1


@pytest.mark.parametrize("since", ["2020-W01-1", "20200101", "2020W011"])
def test_import_since_must_be_written_yyyy_mm_dd(env, tmp_path, since):
    f = tmp_path / "persons.csv"
    f.write_text(HEADER + csv_row("P1", ID1, since=since), encoding="utf-8")
    result, summary = _import(f)
    fails(result, 1)
    assert result.stderr.splitlines() == ["line 2: invalid_request: since must be a date YYYY-MM-DD"]
    assert count(env, "enrolments") == 0


# --- institutions and channels --------------------------------------------------------------------

@pytest.mark.parametrize("name, words", [
    ("   ", "name must be 1-128 characters, not blank"),
    ("示范\x1b[31m医院", "name must not contain control characters"),
    ("示范\udcff医院", "name must not contain control characters or invalid text"),  # argv not UTF-8
])
def test_institution_names_that_are_blank_or_not_plain_text(env, name, words):
    fails(run("institutions", "add", "--code", "H1", "--name", name, "--kind", "hospital",
              "--region", "110000"), 1, words)
    assert count(env, "institutions") == 0


@pytest.mark.parametrize("code", ["H1\udcff", "H1\x00", "H" * 33, "Ｈ1"])  # argv not UTF-8, NUL, too long, fullwidth
def test_set_status_of_a_code_no_institution_can_have_is_no_institution(env, code):
    assert run("institutions", "add", "--code", "H1", "--name", "示范医院", "--kind", "hospital",
               "--region", "110000").exit_code == 0
    fails(run("institutions", "set-status", "--code", code, "--status", "inactive"), 1, "no institution")
    assert rows(env, "SELECT code, status FROM institutions") == [("H1", "active")]


@pytest.mark.parametrize("voucher_id", ["NOSUCHVOUCHER234", "abc", "\udcff" * 16, "A\x00" * 8, ""])
def test_cancel_of_a_voucher_id_no_voucher_has_is_no_voucher(env, voucher_id):
    fails(run("vouchers", "cancel", "--voucher-id", voucher_id), 1, "no voucher")
    assert rows(env, "SELECT count(*) FROM revocations") == [(0,)]


@pytest.fixture
def wechat_key(tmp_path):
    from mock_channels.keys import ensure_keys
    return ensure_keys(tmp_path / "keys", "wechat")[1]


@pytest.mark.parametrize("option, value, words", [
    ("--serial", "AB\x01CD", "serial must be 1-64 printable ASCII characters"),
    ("--serial", "S" * 65, "serial must be 1-64 printable ASCII characters"),
    ("--serial", "AB CD", "serial must be 1-64 printable ASCII characters"),
    ("--app-id", "商户\udcff", "app id must be 1-64 printable ASCII characters"),
    ("--app-id", "1" * 65, "app id must be 1-64 printable ASCII characters"),
])
def test_channel_serials_and_app_ids_fit_their_headers_and_columns(env, wechat_key, option, value, words):
    fails(run("channels", "add", "--id", "wechat", "--public-key", wechat_key, option, value), 1, words)
    assert count(env, "channels") == 0 and count(env, "channel_keys") == 0


def test_a_bank_app_id_may_not_hold_an_ampersand(env, tmp_path):
    """Every call would be refused: the bank's signed string joins fields with an unescaped '&'."""
    from mock_channels.keys import ensure_keys
    key = ensure_keys(tmp_path / "keys", "bank-icbc")[1]
    fails(run("channels", "add", "--id", "bank-icbc", "--public-key", key, "--app-id", "icbc&01"), 1,
          "app id may not hold '&'")
    assert count(env, "channels") == 0 and count(env, "channel_keys") == 0


def test_channel_key_file_that_cannot_be_read(env, wechat_key, monkeypatch):
    real_open = builtins.open

    def denied(path, *args, **kwargs):
        if str(path) == str(wechat_key):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", denied)
    fails(run("channels", "add", "--id", "wechat", "--public-key", wechat_key), 1, "cannot read",
          "Permission denied")
    monkeypatch.setattr(builtins, "open", real_open)
    assert count(env, "channel_keys") == 0


def test_a_database_failure_mid_command_is_one_line(env, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from app.services import institutions

    def broken(*_args, **_kwargs):
        raise OperationalError("INSERT INTO institutions ...", {}, Exception("disk I/O error"))
    monkeypatch.setattr(institutions, "add", broken)
    fails(run("institutions", "add", "--code", "H1", "--name", "x", "--kind", "hospital",
              "--region", "110000"), 1, "database error: disk I/O error")


# --- demo ----------------------------------------------------------------------------------------

def test_demo_refuses_a_base_url_that_is_no_http_url(fresh, monkeypatch):
    fails(run("demo", "--base-url", "127.0.0.1:8000"), 2, "--base-url", "http:// or https://")
    monkeypatch.setenv("EVOUCHER_URL", "ftp://demo.example")
    fails(run("demo"), 1, "EVOUCHER_URL must be an http:// or https:// URL")
    assert not fresh.exists()


@pytest.mark.parametrize("content", ["{truncated", "[1, 2]", '{"institutions": 7}'])
def test_demo_refuses_a_demo_json_it_did_not_write_and_leaves_it(env, content):
    (env / "demo.json").write_text(content, encoding="utf-8")
    fails(run("demo"), 1, "demo.json is not a demo.json this command wrote", "move it away")
    assert (env / "demo.json").read_text(encoding="utf-8") == content
    assert count(env, "institutions") == 0


def test_demo_names_an_unusable_demo_channel_key(env):
    folder = env / "channels" / "wechat"
    folder.mkdir(parents=True)
    (folder / "public.pem").write_text("not a key")
    (folder / "serial").write_text("0000\n")
    fails(run("demo"), 1, "demo keys in", "channels/wechat are unusable", "not a PEM RSA or SM2 public key")
    assert count(env, "institutions") == 0 and count(env, "channels") == 0


# --- serve ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (("--workers", "0"), "0 is not in the range x>=1"),
    (("--bind", "127.0.0.1:99999"), "port 99999 is not between 0 and 65535"),
])
def test_serve_usage_errors(env, no_exec, args, words):
    fails(run("serve", *args), 2, words)


@pytest.mark.parametrize("name, value, words", [
    ("WEB_CONCURRENCY", "four", "WEB_CONCURRENCY must be a whole number of at least 1"),
    ("EVOUCHER_THREADS", "0", "EVOUCHER_THREADS must be a whole number of at least 1"),
    ("EVOUCHER_BIND", "0.0.0.0:70000", "EVOUCHER_BIND: port 70000 is not between 0 and 65535"),
])
def test_serve_refuses_bad_settings_before_starting(env, no_exec, monkeypatch, name, value, words):
    monkeypatch.setenv(name, value)
    fails(run("serve"), 1, words)


@pytest.mark.parametrize("kind", ["missing", "a file"])
def test_serve_refuses_a_metrics_folder_it_cannot_write_to(env, no_exec, monkeypatch, tmp_path, kind):
    """Every worker writes its metrics files there: in a folder that is not there, every request
    would answer 500 internal_error once the workers had started."""
    path = tmp_path / "metrics"
    if kind == "a file":
        path.write_text("")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(path))
    fails(run("serve"), 1, "PROMETHEUS_MULTIPROC_DIR must be an existing folder the service can write to")


def test_serve_starts_with_redis_down_and_says_so(env, monkeypatch):
    """Redis down is an outage, not a misconfiguration of this service: the workers start, fail
    closed on what needs Redis and /readyz reports it; the operator is told at once."""
    started = []
    monkeypatch.setattr(os, "execv", lambda *args: started.append(args))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens on port 1
    result = run("serve")
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert "warning: cannot reach Redis (REDIS_URL)" in result.stderr
    assert "503 service_unavailable" in result.stderr
    assert len(started) == 1 and started[0][1][-1] == "app:create_app()"
