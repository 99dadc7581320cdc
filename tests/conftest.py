"""Fixtures: a real app on real SQLite + SQL token store and on real PostgreSQL + Redis."""
from __future__ import annotations

import base64
import os
import shutil
import uuid

import pytest
from sqlalchemy import create_engine, text

from app import create_app
from app.config import Config
from app.store import migrate

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PG_SCHEMA = f"evtest_{os.getpid()}"
MASTER_KEY = base64.b64encode(b"k" * 32).decode()
# The crypto profile the app fixtures run under: `EVOUCHER_TEST_CRYPTO_PROFILE=gm pytest …` runs
# the same tests under the national-cryptography profile. A test that passes `crypto_profile`
# itself keeps its own.
TEST_CRYPTO_PROFILE = os.environ.get("EVOUCHER_TEST_CRYPTO_PROFILE", "default")


def need_service(name: str, reason: str):
    """Outside CI a missing service skips with a reason; under CI=true it is a failure."""
    if IN_CI:
        pytest.fail(f"{name} is required under CI=true: {reason}")
    pytest.skip(f"{name} not available ({reason}); install or start it, or run .ci/run")


def pg_available() -> str | None:
    try:
        engine = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"),
                               connect_args={"connect_timeout": 2})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # report why, never crash collection
        return exc.__class__.__name__


def redis_available() -> str | None:
    import redis
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
        return None
    except Exception as exc:
        return exc.__class__.__name__


class FrozenClock:
    """A clock tests set and advance instead of patching datetime."""

    def __init__(self, t: float = 1_790_000_000.0):
        self.t = t

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("tpl") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_schema_url():
    reason = pg_available()
    if reason:
        need_service("PostgreSQL", reason)
    admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {PG_SCHEMA}"))
    url = f"{PG_URL}?options=-csearch_path%3D{PG_SCHEMA}"
    migrate.upgrade(url)
    yield url
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))
    admin.dispose()


def _truncate_pg(url: str) -> None:
    """Empty every table between tests; append-only triggers are lifted for this cleanup only."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        tables = [r[0] for r in conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'alembic_version'"))]
        for t in ("usage_records", "revocations"):
            conn.execute(text(f"ALTER TABLE {t} DISABLE TRIGGER USER"))
        conn.execute(text("TRUNCATE " + ", ".join(tables) + " RESTART IDENTITY CASCADE"))
        for t in ("usage_records", "revocations"):
            conn.execute(text(f"ALTER TABLE {t} ENABLE TRIGGER USER"))
    engine.dispose()


BACKENDS = ["sqlite-sqlstore", "pg-redis"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def clock():
    return FrozenClock()


def build_config(request, backend: str, directory, **overrides) -> Config:
    """Config for the database of `backend` under `directory` (a fresh SQLite copy, or the test
    schema on PostgreSQL with Redis); keyword overrides welcome. `request` is any fixture's."""
    instance = directory / "instance"
    instance.mkdir(exist_ok=True)
    if backend == "sqlite-sqlstore":
        db = directory / "evoucher.db"
        if not db.exists():
            shutil.copy(request.getfixturevalue("sqlite_template"), db)
        url, redis_url = f"sqlite:///{db}", None
    else:
        reason = redis_available()
        if reason:
            need_service("Redis", reason)
        url = request.getfixturevalue("pg_schema_url")
        redis_url = REDIS_URL
    values = dict(instance_path=str(instance), database_url=url, redis_url=redis_url,
                  redis_prefix=f"evt{uuid.uuid4().hex[:10]}", pin_time_cost=1, pin_memory_cost=8,
                  log_level="WARNING", crypto_profile=TEST_CRYPTO_PROFILE)
    values.update(overrides)
    return Config.from_env({"EVOUCHER_MASTER_KEY": MASTER_KEY}, **values)


def build_app(config: Config, backend: str, clock):
    """A migrated app on `config`'s database, emptied first on PostgreSQL (one schema is shared)."""
    from app.cli import upgrade_database
    if backend == "pg-redis":
        _truncate_pg(config.database_url)
    application = create_app(config, clock=clock)
    upgrade_database(application)
    return application


@pytest.fixture
def make_config(backend, tmp_path, request):
    """Config for a fresh database of the current backend; keyword overrides welcome."""
    def build(**overrides) -> Config:
        return build_config(request, backend, tmp_path, **overrides)
    return build


@pytest.fixture
def make_app(make_config, backend, clock):
    """Build a migrated app on an empty database of the current backend, with config overrides."""
    made = []

    def build(**overrides):
        application = build_app(make_config(**overrides), backend, clock)
        made.append(application)
        return application
    yield build
    for application in made:
        application.extensions["evoucher"].engine.dispose()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def rt(app):
    return app.extensions["evoucher"]


@pytest.fixture
def world(app, client, tmp_path_factory):
    from tests.helpers import World
    return World(app, client, tmp_path_factory.getbasetemp())


@pytest.fixture
def make_world(make_app, tmp_path_factory):
    """A World on its own app, for tests that need other settings."""
    from tests.helpers import World

    def build(**overrides):
        application = make_app(**overrides)
        return World(application, application.test_client(), tmp_path_factory.getbasetemp())
    return build
