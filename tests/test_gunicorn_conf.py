"""gunicorn as `evoucher serve` runs it (the project's gunicorn.conf.py)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start(tmp_path, metrics_dir, log_level: str, *options: str):
    """gunicorn with the project's settings and one worker on a free port, on a fresh SQLite
    instance under tmp_path; returns the process and its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "EVOUCHER_MASTER_KEY")}
    env.update(HOME=str(tmp_path), EVOUCHER_INSTANCE=str(tmp_path / "instance"), LOG_LEVEL=log_level,
               PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", os.path.join(ROOT, "gunicorn.conf.py"),
                             "--workers", "1", *options, "--bind", f"127.0.0.1:{port}", "app:create_app()"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, f"http://127.0.0.1:{port}"


def _get(proc, url: str, deadline: float) -> requests.Response:
    """GET url once the server answers it (gunicorn starting, or a worker being replaced)."""
    while True:
        try:
            return requests.get(url, timeout=5)
        except requests.RequestException:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read1(4000)
            time.sleep(0.1)


def test_no_control_socket_shared_between_instances(tmp_path):
    """gunicorn's control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl), which a
    second instance on the host would take over; the settings turn it off."""
    proc, base = _start(tmp_path, tmp_path, "WARNING")
    try:
        assert _get(proc, base + "/healthz", time.monotonic() + 60).status_code == 200
        assert not (tmp_path / ".gunicorn").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_gunicorns_own_lines_are_json_and_scrubbed(tmp_path):
    """Logs are one JSON object per line on stderr (docs/operations.md), gunicorn's own lines too:
    its start, its workers' boots and exits, and a request it refuses before the app sees it,
    whose text it quotes (here a header line holding a phone number) and the scrubber masks."""
    proc, base = _start(tmp_path, tmp_path, "INFO")
    try:
        assert _get(proc, base + "/healthz", time.monotonic() + 60).status_code == 200
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n13812345678\r\n\r\n")
            assert conn.recv(4096).startswith(b"HTTP/1.1 400")
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    lines = err.decode().splitlines()
    entries = [json.loads(line) for line in lines]  # every line, or this raises
    messages = [e["msg"] for e in entries]
    assert any(m.startswith("Listening at") for m in messages)
    assert any(m.startswith("Invalid request from ip=") for m in messages)
    assert all(e["level"] in ("debug", "info", "warning", "error", "critical") for e in entries)
    assert "13812345678" not in err.decode()


def test_restarted_workers_leave_no_metrics_files_behind_and_lose_no_counts(tmp_path):
    """Each worker writes its metrics to files of its own in PROMETHEUS_MULTIPROC_DIR, and every
    /metrics reads them all. A worker is replaced every max_requests requests (20,000, about every
    20 s per worker under load): the exited workers' counts are folded into one file per metric
    type, so the folder (and the cost of a scrape) stays the same size, and no count is lost."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    proc, base = _start(tmp_path, metrics_dir, "WARNING", "--max-requests", "3", "--max-requests-jitter", "0")
    try:
        deadline = time.monotonic() + 120
        for _ in range(15):  # five workers' worth: each serves three, then is replaced
            assert _get(proc, base + "/healthz", deadline).status_code == 200
        text = _get(proc, base + "/metrics", deadline).text  # the fifth worker has exited once a sixth answers
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert 'evoucher_http_requests_total{endpoint="/healthz",method="GET",status="200"} 15.0' in text
    assert 'evoucher_http_request_duration_seconds_count{endpoint="/healthz"} 15.0' in text
    assert 'evoucher_http_request_duration_seconds_bucket{endpoint="/healthz",le="+Inf"} 15.0' in text
    files = sorted(p.name for p in metrics_dir.glob("*.db"))
    assert len(files) <= 4, files  # one archive per type, and the last worker's own (if it had any)
