"""Fixtures for the API tests that run against real gunicorn."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import MASTER_KEY


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(make_config, backend, tmp_path_factory):
    """gunicorn (3 workers, the project's gunicorn.conf.py) on a fresh database of `backend`,
    with the demo World loaded through an in-process app on the same database: (base URL, world).
    The scan and issuance limits are lifted: these tests drive far more than a desk would."""
    from app import create_app
    from app.cli import upgrade_database
    from tests.conftest import _truncate_pg
    from tests.helpers import World
    config = make_config()
    if backend == "pg-redis":
        _truncate_pg(config.database_url)
    app = create_app(config)  # real clock: the server signs and checks with wall time
    upgrade_database(app)
    world = World(app, app.test_client(), tmp_path_factory.getbasetemp())
    port = _free_port()
    env = dict(os.environ, DATABASE_URL=config.database_url, EVOUCHER_MASTER_KEY=MASTER_KEY,
               EVOUCHER_INSTANCE=config.instance_path, REDIS_PREFIX=config.redis_prefix,
               CRYPTO_PROFILE=config.crypto_profile, PIN_HASH_TIME_COST="1", PIN_HASH_MEMORY_KIB="8", LOG_LEVEL="WARNING",
               RATE_SCAN_PER_MINUTE="100000", RATE_ISSUE_PER_MINUTE="100000")
    env.pop("REDIS_URL", None)
    if config.redis_url:
        env["REDIS_URL"] = config.redis_url
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", os.path.join(root, "gunicorn.conf.py"),
                             "--workers", "3", "--bind", f"127.0.0.1:{port}", "app:create_app()"],
                            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(base + "/readyz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        else:
            pytest.fail("gunicorn did not become ready: " + proc.stderr.read1(4000).decode(errors="replace"))
        yield base, world
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        app.extensions["evoucher"].engine.dispose()
