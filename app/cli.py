"""The `evoucher` operator command.

An operator's mistake ends in a short message on stderr and a non-zero exit status, never a
traceback: usage errors (a missing or malformed option) exit 2, as click does; everything else
(bad configuration, an unreachable or unmigrated database, a wrong master key, a bad file) exits
1 through `click.ClickException`. Checks that need no database run before the app is built, and
every command but `db upgrade` and `demo` first checks that the database is reachable, at the
latest revision and opened by the master key, so a mistake writes nothing.
"""
from __future__ import annotations

import json
import os
import re
import sys
from urllib.parse import urlsplit

import click
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from .config import Config


def _fail(message: str):
    raise click.ClickException(message)


def _first_line(text: str) -> str:
    return (str(text).strip().splitlines() or [""])[0]


def db_reason(exc: SQLAlchemyError) -> str:
    """The driver's own first line (no statement, no parameters: `hide_parameters` is on)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return _first_line(exc.orig) or exc.orig.__class__.__name__
    return _first_line(exc) or exc.__class__.__name__


class _Main(click.Group):
    """The top group: a database failure met while a command runs (a lost connection, a locked
    SQLite file) ends as one line, exit 1, like every other operational error."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SQLAlchemyError as exc:
            raise click.ClickException(f"database error: {db_reason(exc)}") from None


def _config() -> Config:
    try:
        return Config.from_env()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _sqlite_path(config: Config) -> str | None:
    """The SQLite file the app will open, or None for PostgreSQL or an in-memory database."""
    from sqlalchemy.exc import ArgumentError

    from . import database_url
    from .store.engine import sqlite_file
    try:
        return sqlite_file(database_url(config))
    except ArgumentError:
        raise click.ClickException("DATABASE_URL is not a valid database URL") from None


def _app(*, migrated: bool = True):
    """The app for a command, or a one-line error.

    migrated: the command needs the schema at the latest revision (all but `db upgrade` and
    `demo`, which migrate). Then a missing SQLite file is reported before anything is created
    (no stray instance folder, master key or empty database)."""
    from sqlalchemy.exc import ArgumentError

    from . import create_app
    config = _config()
    if migrated:
        path = _sqlite_path(config)
        if path and not os.path.exists(path):
            _fail(f"no database at {path}: run `evoucher db upgrade` first")
    try:
        app = create_app(config)
    except ArgumentError:
        raise click.ClickException("DATABASE_URL is not a valid database URL") from None
    except (ValueError, RuntimeError) as exc:  # a malformed URL, a missing or bad master key
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # the instance folder or the master key file
        raise click.ClickException(f"{exc.filename or 'instance folder'}: {exc.strerror}") from None
    _check_database(app, migrated=migrated)
    return app


def _check_database(app, *, migrated: bool) -> None:
    """Reachable; with `migrated`, at this version's revision and opened by the master key."""
    from .store import migrate
    rt = app.extensions["evoucher"]
    try:
        current = migrate.current_revision(rt.engine)
    except SQLAlchemyError as exc:
        raise click.ClickException(f"cannot use the database (DATABASE_URL): {db_reason(exc)}") from None
    if current is not None and not migrate.known_revision(current):
        _fail(f"the database is at revision {current}, which this version of the service does not "
              "know (was it upgraded by a newer version?)")
    if not migrated:
        return
    head = migrate.head_revision()
    if current is None:
        _fail("the database has no schema yet: run `evoucher db upgrade` first")
    if current != head:
        _fail(f"the database is at revision {current}, this version needs {head}: "
              "run `evoucher db upgrade` first")
    _check_master_key(app)


def _check_master_key(app) -> None:
    from .extensions import runtime
    from .services import keys
    with app.app_context():
        rt = runtime()
        try:
            keys.check_master_key(rt.session(), rt)
        except keys.WrongMasterKey as exc:
            _fail(f"{exc} ({_master_key_source(rt.config)})")


def _master_key_source(config: Config) -> str:
    if config.master_key:
        return "EVOUCHER_MASTER_KEY"
    return os.path.join(config.instance_path, "master.key")


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None


@click.group(cls=_Main, help="Operate the e-voucher service (医保电子凭证).")
def main() -> None:
    pass


@main.group(help="Database schema.")
def db() -> None:
    pass


@db.command("upgrade", help="Apply migrations and create the first signing key if there is none.")
def db_upgrade() -> None:
    _upgrade(_app(migrated=False))
    click.echo("database is at the latest revision")


def _upgrade(app) -> None:
    from alembic.util import CommandError

    from .services.keys import WrongMasterKey
    try:
        upgrade_database(app)
    except WrongMasterKey as exc:
        _fail(f"{exc} ({_master_key_source(app.extensions['evoucher'].config)})")
    except CommandError as exc:
        _fail(f"migration failed: {_first_line(exc)}")


def upgrade_database(app) -> None:
    """Migrate to head; then, once the master key is known to open the database's signing key
    (WrongMasterKey otherwise), create the first signing key if there is none."""
    from .extensions import runtime
    from .services import keys
    from .store import migrate
    with app.app_context():
        rt = runtime()
        migrate.upgrade(rt.config.database_url)
        session = rt.session()
        keys.check_master_key(session, rt)
        keys.ensure_signing_key(session, rt)
        session.commit()


@main.group(help="The enrolment registry.")
def enrolments() -> None:
    pass


@enrolments.command("import", help="Import persons and enrolments from CSV or JSON lines.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["auto", "csv", "jsonl"]), default="auto")
def enrolments_import(file: str, fmt: str) -> None:
    from .extensions import runtime
    from .services import enrolment_import
    raw = _read_file(file)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        _fail(f"{file} is not UTF-8 (line {line}): save it as UTF-8; a GBK or GB18030 export "
              "converts with `iconv -f GB18030 -t UTF-8`")
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # as a text-mode read would
    if not text.lstrip("\ufeff").strip():
        _fail(f"{file} is empty: nothing to import")
    if fmt == "auto":
        fmt = enrolment_import.detect_format(file, text)
    app = _app()
    with app.app_context():
        rt = runtime()
        report = enrolment_import.import_text(rt.session(), rt, text, fmt)
    for err in sorted(report.errors, key=lambda e: e["line"]):
        click.echo(f"line {err['line']}: {err['code']}: {err['detail']}", err=True)
    click.echo(json.dumps({k: v for k, v in report.as_dict().items() if k != "errors"}))
    if not report.applied:
        if not report.errors:
            _fail(f"{file} has a header but no rows: nothing to import")
        sys.exit(1)


@main.group(help="Designated medical institutions (定点医药机构).")
def institutions() -> None:
    pass


@institutions.command("add", help="Register an institution; prints its client secret once.")
@click.option("--code", required=True)
@click.option("--name", required=True)
# The choices below are services.institutions.KINDS and crypto.keyring.ALGORITHMS written out:
# importing either module here would add a fifth of a second to every command, `--help` too.
# tests/test_cli.py holds them equal.
@click.option("--kind", type=click.Choice(["hospital", "pharmacy"]), required=True)
@click.option("--region", required=True, help="6-digit region code")
@click.option("--inactive", is_flag=True,
              help="Register as inactive (may not scan); without it an existing institution keeps its status")
def institutions_add(code, name, kind, region, inactive) -> None:
    from .extensions import runtime
    from .services import institutions as svc
    app = _app()
    with app.app_context():
        session = runtime().session()
        try:
            inst, secret = svc.add(session, code=code, name=name, kind=kind, region_code=region,
                                   status="inactive" if inactive else None)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        session.commit()
        click.echo(json.dumps({"code": inst.code, "client_id": inst.client_id, "client_secret": secret,
                               "status": inst.status}, ensure_ascii=False))


@institutions.command("set-status", help="Activate or deactivate an institution.")
@click.option("--code", required=True)
@click.option("--status", type=click.Choice(["active", "inactive"]), required=True)
def institutions_status(code, status) -> None:
    from .extensions import runtime
    from .services import institutions as svc
    app = _app()
    with app.app_context():
        session = runtime().session()
        inst = svc.by_code(session, code)
        if inst is None:
            raise click.ClickException(f"no institution {code}")
        inst.status = status
        session.commit()
        click.echo(json.dumps({"code": code, "status": status}))


@main.group(help="Vouchers (医保电子凭证).")
def vouchers() -> None:
    pass


@vouchers.command("cancel", help="Cancel a voucher for good (注销): its codes stop at once and it is never "
                                 "reinstated; the person may activate again and gets a new voucher id.")
@click.option("--voucher-id", required=True)
def vouchers_cancel(voucher_id) -> None:
    from .errors import DomainError
    from .extensions import runtime
    from .services import loss
    from .services import vouchers as svc
    app = _app()
    with app.app_context():
        rt = runtime()
        session = rt.session()
        try:
            voucher = svc.by_public_id(session, voucher_id)
        except DomainError:
            raise click.ClickException(f"no voucher {voucher_id}") from None
        click.echo(json.dumps(loss.cancel(session, rt, voucher, by="operator")))


@main.group(help="Channel partners (WeChat, Alipay, banks).")
def channels() -> None:
    pass


@channels.command("add", help="Register a channel or add a public key to it.")
@click.option("--id", "channel_id", required=True)
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--serial", default=None)
@click.option("--app-id", default=None)
def channels_add(channel_id, public_key, serial, app_id) -> None:
    from .extensions import runtime
    from .services import channel_registry
    pem = _read_file(public_key)
    app = _app()
    with app.app_context():
        session = runtime().session()
        try:
            channel, key = channel_registry.add(session, channel_id, pem, serial=serial, app_id=app_id)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        session.commit()
        click.echo(json.dumps({"id": channel.id, "app_id": channel.app_id, "serial": key.serial}))


@main.group(help="Token signing keys.")
def keys() -> None:
    pass


@keys.command("rotate", help="Publish a new signing key, which signs once KEY_ROTATION_LEAD_TIME has passed "
                              "(at once with --now); old keys stay published until their tokens expire.")
@click.option("--alg", type=click.Choice(["Ed25519", "ES256", "SM2"]), default=None)
@click.option("--now", "at_once", is_flag=True,
              help="Sign with the new key at once, as when the current key is compromised.")
def keys_rotate(alg, at_once) -> None:
    from .extensions import runtime
    from .services import keys as svc
    from .services.vouchers import stored_time
    app = _app()
    with app.app_context():
        rt = runtime()
        session = rt.session()
        try:
            row = svc.rotate(session, rt, alg, at_once=at_once)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        session.commit()
        click.echo(json.dumps({"kid": row.kid, "alg": row.alg, "signs_from": stored_time(row.signs_from)}))


def _http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


@main.command("demo", help="Load the demo data set (idempotent) and write instance/demo.json.")
@click.option("--base-url", default=None, help="Where the service will be reached")
def demo(base_url) -> None:
    from .demo import load_demo
    if base_url and not _http_url(base_url):
        raise click.BadParameter("must be an http:// or https:// URL, e.g. http://127.0.0.1:8000",
                                 param_hint="'--base-url'")
    url = base_url or os.environ.get("EVOUCHER_URL") or "http://127.0.0.1:8000"
    if not _http_url(url):
        _fail("EVOUCHER_URL must be an http:// or https:// URL, e.g. http://127.0.0.1:8000")
    app = _app(migrated=False)
    _upgrade(app)
    try:
        path = load_demo(app, url)
    except (ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or 'instance folder'}: {exc.strerror}") from None
    click.echo(f"demo data loaded; see {path}")


def _bind_error(value: str) -> str | None:
    """Why gunicorn could not bind to `value`, or None (it would crash on a port past 65535)."""
    from gunicorn.util import parse_address
    try:
        address = parse_address(value)
    except RuntimeError as exc:
        return str(exc)
    if isinstance(address, tuple) and not 0 <= address[1] <= 65535:
        return f"port {address[1]} is not between 0 and 65535"
    return None


def _check_bind(_ctx, _param, value):
    if value is not None:
        error = _bind_error(value)
        if error:
            raise click.BadParameter(error)
    return value


def _check_serve_environment() -> None:
    """What gunicorn.conf.py reads from the environment, checked here in words: there a bad
    value is a ValueError traceback from gunicorn's config loader."""
    for name in ("WEB_CONCURRENCY", "EVOUCHER_THREADS"):
        raw = os.environ.get(name)
        if raw is not None and not (re.fullmatch(r"\s*[0-9]+\s*", raw) and int(raw) >= 1):
            _fail(f"{name} must be a whole number of at least 1")
    bind = os.environ.get("EVOUCHER_BIND")
    if bind is not None:
        error = _bind_error(bind)
        if error:
            _fail(f"EVOUCHER_BIND: {error}")
    # Every worker writes its metrics files there (gunicorn.conf.py makes a folder only when it is
    # unset): in a folder that is not there or not writable, every request would answer 500.
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir and not (os.path.isdir(metrics_dir) and os.access(metrics_dir, os.W_OK | os.X_OK)):
        _fail("PROMETHEUS_MULTIPROC_DIR must be an existing folder the service can write to")


@main.command("serve", help="Serve with gunicorn and the project's gunicorn.conf.py.")
@click.option("--bind", default=None, callback=_check_bind, help="HOST:PORT, unix:PATH or fd://N")
@click.option("--workers", type=click.IntRange(min=1), default=None)
def serve(bind, workers) -> None:
    from .store.ephemeral import StoreUnavailable
    _check_serve_environment()
    conf = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gunicorn.conf.py")
    args = [sys.executable, "-m", "gunicorn"]
    if os.path.exists(conf):
        args += ["-c", conf]
    if bind:
        args += ["--bind", bind]
    if workers:
        args += ["--workers", str(workers)]
    # Fail fast, before workers fork: bad configuration, an unreachable or unmigrated database,
    # a master key that does not open it. An unreachable Redis is said at once but does not stop
    # the start: the workers answer what needs no Redis, fail closed on what does (503), and
    # /readyz reports it until it is back (docs/decisions.md).
    rt = _app().extensions["evoucher"]
    if rt.store.name != "sql":
        try:
            rt.store.ping()
        except StoreUnavailable as exc:
            click.echo(f"warning: cannot reach Redis (REDIS_URL): {_first_line(exc.__cause__ or exc)}; "
                       "scans and channel calls answer 503 service_unavailable until it is back", err=True)
    rt.engine.dispose()
    os.execv(sys.executable, args + ["app:create_app()"])


if __name__ == "__main__":  # pragma: no cover
    main()
