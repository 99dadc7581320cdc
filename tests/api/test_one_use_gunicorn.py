"""Against gunicorn itself: 50 concurrent scans of one token (3 workers), and chunked bodies."""
from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import MASTER_KEY

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(make_config, backend, tmp_path_factory):
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
               PIN_HASH_TIME_COST="1", PIN_HASH_MEMORY_KIB="8", LOG_LEVEL="WARNING",
               RATE_SCAN_PER_MINUTE="100000")
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


def _institution_token(base: str, world, code: str = "H110000001") -> str:
    inst = world.inst(code)
    basic = base64.b64encode(f"{inst['client_id']}:{inst['client_secret']}".encode()).decode()
    return requests.post(base + "/v1/oauth/token", data={"grant_type": "client_credentials"},
                         headers={"Authorization": f"Basic {basic}"}, timeout=10).json()["access_token"]


def test_fifty_concurrent_scans_one_success(server):
    base, world = server
    holder = world.holder("张丽")
    token = world.qr(holder)
    at = _institution_token(base, world)

    def scan(_):
        r = requests.post(base + "/v1/scans", json={"token": token, "purpose": "registration"},
                          headers={"Authorization": f"Bearer {at}"}, timeout=30)
        return r.status_code, r.json().get("code")

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(scan, range(50)))
    ok = [r for r in results if r[0] == 200]
    used = [r for r in results if r == (409, "token_already_used")]
    assert len(ok) == 1, results
    assert len(used) == 49, results


def test_a_chunked_body_is_read_whole_and_held_to_the_limit(server):
    """Without a Content-Length gunicorn ends the body itself (wsgi.input_terminated): a scan
    sent chunked is read whole and accepted; one past 16 KiB is payload_too_large, not cut."""
    base, world = server
    headers = {"Authorization": f"Bearer {_institution_token(base, world)}", "Content-Type": "application/json"}
    body = ('{"token": "%s", "purpose": "registration"}' % world.qr(world.holder("张丽"))).encode()

    def chunked(data: bytes):
        return (data[i:i + 40] for i in range(0, len(data), 40))  # a generator: requests sends it chunked

    r = requests.post(base + "/v1/scans", data=chunked(body), headers=headers, timeout=30)
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 200, r.text
    r = requests.post(base + "/v1/scans", data=chunked(b"{" + b" " * (17 * 1024) + b"}"), headers=headers, timeout=30)
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
