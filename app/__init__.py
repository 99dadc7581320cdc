"""The e-voucher service: create_app() wires config, runtime, blueprints, errors and CLI."""
from __future__ import annotations

import os
import secrets
import time

from flask import Flask, g, request

from . import logs, metrics
from .api.schema import Request, check_url_text, too_large
from .config import Config
from .errors import register_error_handlers


def create_app(config: Config | None = None, *, clock=None) -> Flask:
    """Build the app from `config` (default: the environment)."""
    from crypto.fields import FieldCipher
    from crypto.pins import PinHasher

    from .extensions import Clock, Runtime, close_session, load_master_key
    from .store.engine import POOL_RECYCLE_SECONDS, make_engine
    from .store.ephemeral import make_store
    from .store.hotconn import HotConnection

    # No app-wide /static/ route: the app has no static folder; the pages serve theirs (/static/web/).
    app = Flask(__name__, instance_path=_instance_path(config), static_folder=None)
    app.request_class = Request  # reads a body in one call (app/api/schema.py)
    config = config or Config.from_env()
    config.instance_path = config.instance_path or app.instance_path
    config.database_url = database_url(config)
    os.makedirs(config.instance_path, exist_ok=True)
    logs.configure(config.log_level)

    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    engine = make_engine(config.database_url, config.sqlite_synchronous)
    master = load_master_key(config)
    from sqlalchemy.orm import sessionmaker
    clock = clock or Clock()
    # The store reads the same clock as the rules, so that a rate window or a nonce's life is
    # measured on the clock that dates tokens and records.
    rt = Runtime(config=config, engine=engine, sessions=sessionmaker(engine, expire_on_commit=False),
                 store=make_store(config.redis_url, engine, prefix=config.redis_prefix, clock=clock.now),
                 master_key=master, fields=FieldCipher(master, config.crypto_profile),
                 pins=PinHasher(time_cost=config.pin_time_cost, memory_cost=config.pin_memory_cost),
                 clock=clock)
    # Scans and QR issuance keep a connection per thread, recycled at the pool's age. With Redis
    # beside PostgreSQL each database write of a scan is a single statement and issuance only
    # reads (services/scans.py, services/qr.py): autocommit keeps each statement atomic and
    # saves the BEGIN and COMMIT round trips.
    options = {}
    if engine.dialect.name == "postgresql":
        options["recycle"] = POOL_RECYCLE_SECONDS
        if rt.store.name != "sql":
            options["isolation_level"] = "AUTOCOMMIT"
    rt.hot_connection = HotConnection(engine, **options)
    app.extensions["evoucher"] = rt
    app.teardown_appcontext(close_session)

    _request_hooks(app)
    register_error_handlers(app)
    from .api import channels, holders, institutions, ops
    from .web import pages
    for bp in (ops.bp, institutions.bp, holders.bp, channels.bp, pages.bp):
        app.register_blueprint(bp)
    return app


def database_url(config: Config) -> str:
    """The configured database URL, or the default: SQLite in the instance folder."""
    return config.database_url or "sqlite:///" + os.path.join(_instance_path(config), "evoucher.db")


def _instance_path(config: Config | None) -> str | None:
    path = (config.instance_path if config else None) or os.environ.get("EVOUCHER_INSTANCE")
    return os.path.abspath(path) if path else os.path.join(os.getcwd(), "instance")


# The methods a metric names; any other is counted as OTHER. gunicorn admits any method of 3-20
# capitals and digits, and each one named would be a new time series in every worker's file.
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


def _request_hooks(app: Flask) -> None:
    @app.before_request
    def _start():
        g.started = time.perf_counter()
        incoming = request.headers.get("X-Request-Id", "")
        # Accept a caller's id only when it is short, plain and carries nothing the log
        # scrubber would mask (it is logged as it is); otherwise make our own.
        g.request_id = incoming if incoming and logs.clean_request_id(incoming) else secrets.token_hex(8)
        length = request.content_length
        limit = request.max_content_length  # a route may raise it (the scanner's photo upload)
        if length is not None and limit is not None and length > limit:
            raise too_large(limit)
        check_url_text()

    @app.after_request
    def _finish(resp):
        resp.headers["X-Request-Id"] = g.get("request_id") or secrets.token_hex(8)
        resp.headers.setdefault("Cache-Control", "no-store")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        started = g.get("started")
        if started is not None:
            metrics.LATENCY.labels(endpoint).observe(time.perf_counter() - started)
            logs.access_log(resp.status_code, started, endpoint, request.method)
        method = request.method if request.method in _METHODS else "OTHER"
        metrics.REQUESTS.labels(method, endpoint, str(resp.status_code)).inc()
        return resp
