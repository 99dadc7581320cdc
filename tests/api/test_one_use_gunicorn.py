"""Against gunicorn itself: 50 concurrent scans of one token (3 workers), and chunked bodies."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.helpers import http_institution_token

pytestmark = pytest.mark.slow


def test_fifty_concurrent_scans_one_success(server):
    base, world = server
    holder = world.holder("张丽")
    token = world.qr(holder)
    at = http_institution_token(base, world)

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
    headers = {"Authorization": f"Bearer {http_institution_token(base, world)}", "Content-Type": "application/json"}
    body = ('{"token": "%s", "purpose": "registration"}' % world.qr(world.holder("张丽"))).encode()

    def chunked(data: bytes):
        return (data[i:i + 40] for i in range(0, len(data), 40))  # a generator: requests sends it chunked

    r = requests.post(base + "/v1/scans", data=chunked(body), headers=headers, timeout=30)
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 200, r.text
    r = requests.post(base + "/v1/scans", data=chunked(b"{" + b" " * (17 * 1024) + b"}"), headers=headers, timeout=30)
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
