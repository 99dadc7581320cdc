"""The `evoucher` operator command."""
from __future__ import annotations

import json
import os
import sys

import click

from .config import Config


def _app():
    from . import create_app
    return create_app(Config.from_env())


@click.group(help="Operate the e-voucher service (医保电子凭证).")
def main() -> None:
    pass


@main.group(help="Database schema.")
def db() -> None:
    pass


@db.command("upgrade", help="Apply migrations and create the first signing key if there is none.")
def db_upgrade() -> None:
    app = _app()
    upgrade_database(app)
    click.echo("database is at the latest revision")


def upgrade_database(app) -> None:
    from .extensions import runtime
    from .services import keys
    from .store import migrate
    with app.app_context():
        rt = runtime()
        migrate.upgrade(rt.config.database_url)
        session = rt.session()
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
    app = _app()
    with open(file, encoding="utf-8", errors="strict") as fh:
        try:
            text = fh.read()
        except UnicodeDecodeError:
            raise click.ClickException("the file is not UTF-8") from None
    if fmt == "auto":
        fmt = enrolment_import.detect_format(file, text)
    with app.app_context():
        rt = runtime()
        report = enrolment_import.import_text(rt.session(), rt, text, fmt)
    for err in report.errors:
        click.echo(f"line {err['line']}: {err['code']}: {err['detail']}", err=True)
    click.echo(json.dumps({k: v for k, v in report.as_dict().items() if k != "errors"}))
    if report.errors and not report.applied:
        sys.exit(1)


@main.group(help="Designated medical institutions (定点医药机构).")
def institutions() -> None:
    pass


@institutions.command("add", help="Register an institution; prints its client secret once.")
@click.option("--code", required=True)
@click.option("--name", required=True)
@click.option("--kind", type=click.Choice(["hospital", "pharmacy"]), required=True)
@click.option("--region", required=True, help="6-digit region code")
@click.option("--inactive", is_flag=True, help="Register as inactive (may not scan)")
def institutions_add(code, name, kind, region, inactive) -> None:
    from .extensions import runtime
    from .services import institutions as svc
    app = _app()
    with app.app_context():
        session = runtime().session()
        try:
            inst, secret = svc.add(session, code=code, name=name, kind=kind, region_code=region,
                                   status="inactive" if inactive else "active")
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
    app = _app()
    with open(public_key, "rb") as fh:
        pem = fh.read()
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


@keys.command("rotate", help="Add a new signing key; old keys stay published until their tokens expire.")
@click.option("--alg", type=click.Choice(["Ed25519", "ES256", "SM2"]), default=None)
def keys_rotate(alg) -> None:
    from .extensions import runtime
    from .services import keys as svc
    app = _app()
    with app.app_context():
        rt = runtime()
        session = rt.session()
        row = svc.rotate(session, rt, alg)
        session.commit()
        click.echo(json.dumps({"kid": row.kid, "alg": row.alg}))


@main.command("demo", help="Load the demo data set (idempotent) and write instance/demo.json.")
@click.option("--base-url", default=None, help="Where the service will be reached")
def demo(base_url) -> None:
    from .demo import load_demo
    app = _app()
    upgrade_database(app)
    path = load_demo(app, base_url or os.environ.get("EVOUCHER_URL", "http://127.0.0.1:8000"))
    click.echo(f"demo data loaded; see {path}")


@main.command("serve", help="Serve with gunicorn and the project's gunicorn.conf.py.")
@click.option("--bind", default=None)
@click.option("--workers", type=int, default=None)
def serve(bind, workers) -> None:
    conf = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gunicorn.conf.py")
    args = [sys.executable, "-m", "gunicorn"]
    if os.path.exists(conf):
        args += ["-c", conf]
    if bind:
        args += ["--bind", bind]
    if workers:
        args += ["--workers", str(workers)]
    _app()  # fail fast on bad configuration and create the master key before workers fork
    os.execv(sys.executable, args + ["app:create_app()"])


if __name__ == "__main__":  # pragma: no cover
    main()
