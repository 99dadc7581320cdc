#!/usr/bin/env python3
"""HTTP benchmark of the e-voucher service with wrk, against a server it starts on 127.0.0.1.

Run by hand (never by the test suite), from the project root:

    .venv/bin/python bench/http_bench.py                        # SQLite + SQL ephemeral store
    .venv/bin/python bench/http_bench.py \\
        --database-url postgresql://postgres@127.0.0.1:5432/evbench \\
        --redis-url redis://127.0.0.1:6379/14                   # PostgreSQL + Redis (scratch DB!)
                       # the database is emptied first; its name must contain "bench"
    .venv/bin/python bench/http_bench.py --only scans --py-spy /tmp/pyspy/bin/py-spy

What it does:
1. Makes a temp instance folder (EVOUCHER_INSTANCE), with every rate limit raised so that no
   limiter answers 429 (RATE_ISSUE_PER_MINUTE=100000 — the configured maximum —,
   RATE_SCAN_PER_MINUTE=RATE_CHANNEL_PER_MINUTE=10000000) and TOKEN_LIFETIME=300.
2. Runs `evoucher demo` (which also upgrades the database), then `evoucher serve --workers 2
   --bind 127.0.0.1:PORT` (gunicorn with the project's gunicorn.conf.py).
3. Activates every demo person who can be, each in one mock channel, over HTTP with
   `mock_channels.client.ChannelClient`, and opens a holder session for each; gets an OAuth
   token for every institution.
4. Runs wrk (2 threads, 32 connections, 15 s, --latency) against:
   healthz      GET /healthz (baseline)
   qr           POST /v1/me/qr-tokens {}                (round-robin over the holder tokens)
   qr_svg       POST /v1/me/qr-tokens {"image":"svg"}
   scans        POST /v1/scans {token, purpose}: every request a token never sent before,
                pre-issued in-process just before the run with crypto.tokens.issue and the
                current key (what the qr endpoint signs, minus HTTP), each scanned by an
                institution of the voucher's own pooling area: a hospital for registration, a
                pharmacy for query (the purposes its kind may use, SPEC §4.1 and
                docs/decisions.md; neither is a payment: the same work).
   Each is preceded by a short warm-up run that is not counted.
   Before each run it waits (bounded, --max-wait) for the machine to be quiet, and unless
   --no-paired it measures /healthz again right before every other run: ratios compare two
   runs made under the same conditions. It records the workers' CPU per request (user and
   system time apart), and the share of the machine used by the workers, wrk, local
   PostgreSQL/Redis and anything else.
5. Prints a table: requests/s, p50, p99, non-2xx, ratio to the paired /healthz baseline,
   targets, worker CPU per request. A run with any non-2xx response or an exhausted token pool
   is marked INVALID; one during which unrelated processes used > 10 % of the machine, noisy.
6. With --rounds N, does 4 and 5 N times on the same server and data, then prints each target's
   ratio in every round, their median and how many rounds met it. The same code on this kind of
   machine moves by a quarter between runs minutes apart (docs/benchmarks.md); one run's verdict
   says little, the median of several paired rounds more.

All load goes to 127.0.0.1; every run is bounded (--duration, at most 120 s). The server is
stopped and the temp folder removed at the end (--keep keeps the folder).
"""
from __future__ import annotations

import argparse
import base64
import collections
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
sys.path.insert(0, ROOT)
sys.path.insert(0, BENCH)

from _machine import describe, system_cpu, wait_quiet  # noqa: E402
from inprocess import reset_scratch_database, scan_purpose  # noqa: E402

RUNS = ("healthz", "qr", "qr_svg", "scans")
TARGETS = {"qr": 0.5, "qr_svg": 0.3, "scans": 0.5}
LABELS = {"healthz": "GET /healthz", "qr": "POST /v1/me/qr-tokens {}",
          "qr_svg": 'POST /v1/me/qr-tokens {"image":"svg"}', "scans": "POST /v1/scans"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_split(pids: list[int]) -> tuple[float, float]:
    """CPU seconds used so far by these processes: (user, system)."""
    user = system = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            user += int(fields[11]) / _TICK
            system += int(fields[12]) / _TICK
        except (OSError, IndexError, ValueError):
            pass
    return user, system


def proc_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes."""
    return sum(proc_cpu_split(pids))


def backend_pids() -> list[int]:
    """Local PostgreSQL and Redis server processes, whose CPU is the backend's, not noise."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as fh:
                    comm = fh.read().strip()
            except OSError:
                continue
            if comm.startswith(("postgres", "redis-server")):
                pids.append(int(entry))
    return pids


def evoucher_cmd() -> list[str]:
    exe = os.path.join(ROOT, ".venv", "bin", "evoucher")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "app.cli"]


def server_env(args, tmp: str, port: int) -> dict:
    env = dict(os.environ)
    env.update({
        "EVOUCHER_INSTANCE": os.path.join(tmp, "instance"),
        "EVOUCHER_URL": f"http://127.0.0.1:{port}",
        "RATE_ISSUE_PER_MINUTE": "100000",  # Config allows at most 100000
        "RATE_SCAN_PER_MINUTE": "10000000",
        "RATE_CHANNEL_PER_MINUTE": "10000000",
        "TOKEN_LIFETIME": "300",
        "LOG_LEVEL": args.log_level,
        "PROMETHEUS_MULTIPROC_DIR": os.path.join(tmp, "metrics"),
        "WEB_CONCURRENCY": str(args.workers),
    })
    os.makedirs(env["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    for name in ("DATABASE_URL", "REDIS_URL", "REDIS_PREFIX", "EVOUCHER_MASTER_KEY", "CRYPTO_PROFILE",
                 "TOKEN_FORMAT"):
        env.pop(name, None)
    if args.crypto_profile:
        env["CRYPTO_PROFILE"] = args.crypto_profile
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
        env["EVOUCHER_MASTER_KEY"] = base64.b64encode(os.urandom(32)).decode()
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
        env["REDIS_PREFIX"] = "evbench" + secrets.token_hex(4)  # keys expire by themselves (<= 6 min)
    if not args.keep_max_requests:
        # gunicorn.conf.py recycles a worker every ~20,000 requests; a baseline run of 15 s would
        # pay several restarts that the slower runs do not. Off for the bench (see docs).
        env["GUNICORN_CMD_ARGS"] = "--max-requests 0"
    return env


def run_checked(cmd: list[str], env: dict, what: str) -> str:
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        raise SystemExit(f"{what} failed (exit {proc.returncode})")
    return proc.stdout


class Server:
    def __init__(self, env: dict, port: int, workers: int, logfile: str, wsgi_app: str | None = None):
        self.port = port
        self.log = open(logfile, "wb")
        if wsgi_app:  # gunicorn directly, e.g. for an experiment with a patched app factory
            cmd = [sys.executable, "-m", "gunicorn", "-c", os.path.join(ROOT, "gunicorn.conf.py"),
                   "--workers", str(workers), "--bind", f"127.0.0.1:{port}", wsgi_app]
        else:
            cmd = evoucher_cmd() + ["serve", "--workers", str(workers), "--bind", f"127.0.0.1:{port}"]
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> None:
        import requests
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise SystemExit("server did not become ready in time")

    def worker_pids(self) -> list[int]:
        pids = []
        try:
            for task in os.listdir(f"/proc/{self.proc.pid}/task"):
                with open(f"/proc/{self.proc.pid}/task/{task}/children") as fh:
                    pids += [int(p) for p in fh.read().split()]
        except OSError:
            pass
        return pids

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the gunicorn master (evoucher serve execs it)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def prepare_clients(base_url: str, instance: str, demo: dict):
    """Activate every demo person who can be (one channel each) and open holder sessions."""
    import requests

    from mock_channels.client import ChannelClient, ChannelError

    clients = {c: ChannelClient(c, base_url, instance) for c in demo["channels"]}
    holders, skipped = [], []
    for n, p in enumerate(demo["persons"]):
        if not p.get("active_region_codes", p["region_codes"]):
            skipped.append((p["name"], "no active enrolment"))
            continue
        channel = demo["channels"][n % len(demo["channels"])]
        client = clients[channel]
        try:
            act = client.activate(p["id_number"], p["name"], p["phone"], pin="258013")
            sess = client.session(act["channel_user_id"])
        except ChannelError as exc:
            skipped.append((p["name"], exc.code))
            continue
        holders.append({"name": p["name"], "channel": channel, "voucher_id": act["voucher_id"],
                        "active_region": act["active_region"], "access_token": sess["access_token"]})
    insts = []
    for i in demo["institutions"]:
        resp = requests.post(f"{base_url}/v1/oauth/token", data={"grant_type": "client_credentials"},
                             auth=(i["client_id"], i["client_secret"]), timeout=10)
        resp.raise_for_status()
        out = resp.json()
        insts.append({"code": i["code"], "region_code": i["region_code"], "access_token": out["access_token"],
                      "purpose": scan_purpose(out["scan_purposes"])})
    return holders, insts, skipped


def check_issue(base_url: str, holder: dict) -> dict:
    import requests
    resp = requests.post(f"{base_url}/v1/me/qr-tokens", json={"image": "svg"}, timeout=10,
                         headers={"Authorization": f"Bearer {holder['access_token']}"})
    if resp.status_code != 201:
        raise SystemExit(f"qr-tokens smoke test failed: {resp.status_code} {resp.text[:300]}")
    return resp.json()


class TokenMint:
    """Pre-issues QR tokens in-process, signed with the server's current key."""

    def __init__(self, env: dict):
        for name in ("EVOUCHER_INSTANCE", "DATABASE_URL", "REDIS_URL", "REDIS_PREFIX",
                     "EVOUCHER_MASTER_KEY", "CRYPTO_PROFILE", "LOG_LEVEL"):
            if name in env:
                os.environ[name] = env[name]
            else:
                os.environ.pop(name, None)
        os.environ["LOG_LEVEL"] = "WARNING"
        from app import create_app
        from app.config import Config
        self.app = create_app(Config.from_env())

    def issue(self, pairs: list[tuple[int, dict]], count: int, lifetime: int, path: str) -> float:
        """Write `count` lines "inst_index<TAB>token" round-robin over pairs; returns seconds."""
        from crypto import tokens
        from app.extensions import runtime
        from app.services import keys

        t0 = time.perf_counter()
        with self.app.app_context():
            rt = runtime()
            key = keys.keyring(rt, rt.session(), refresh=True).current
            fmt = rt.config.token_format
            now = int(time.time())
            with open(path, "w", encoding="ascii") as fh:
                for n in range(count):
                    idx, h = pairs[n % len(pairs)]
                    text = tokens.issue(key, voucher_id=h["voucher_id"], region=h["active_region"], iat=now,
                                        lifetime=lifetime, token_id=tokens.new_token_id(), fmt=fmt,
                                        issuer=rt.config.issuer)
                    fh.write(f"{idx}\t{text}\n")
        return time.perf_counter() - t0


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * _UNIT[m.group(2)] if m else float("nan")


def parse_wrk(out: str) -> dict:
    r = {"rps": float("nan"), "p50": float("nan"), "p75": float("nan"), "p90": float("nan"),
         "p99": float("nan"), "requests": 0, "non2xx": 0, "socket_errors": "", "codes": {}, "exhausted": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        if m:
            r[f"p{pct}"] = _ms(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: (.*)", out)
    if m:
        r["socket_errors"] = m.group(1).strip()
    m = re.search(r"BENCH_CODES (\{.*\})", out)
    if m:
        r["codes"] = json.loads(m.group(1))
    m = re.search(r"BENCH_EXHAUSTED (\d+)", out)
    if m:
        r["exhausted"] = int(m.group(1))
    return r


def wrk(args, url: str, script: str, script_args: list[str], duration: int) -> tuple[dict, str, list[str]]:
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s", "--timeout", "10s",
           "--latency", "-s", script, url]
    if script_args:
        cmd += ["--"] + script_args
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"wrk failed: {' '.join(cmd)}")
    return parse_wrk(proc.stdout), proc.stdout, cmd


def start_py_spy(py_spy: str, pids: list[int], duration: int, out_dir: str, name: str,
                 idle: bool = True) -> list:
    """Sample every worker for the run; with `idle`, time blocked on a lock, the database or
    Redis counts too (a sync worker serves nobody while it waits); without, CPU time only."""
    procs = []
    for pid in pids:
        out = os.path.join(out_dir, f"{name}-{pid}.txt")
        cmd = [py_spy, "record", "--pid", str(pid), "--duration", str(duration), "--rate", "200",
               *(["--idle"] if idle else []), "--format", "raw", "--nonblocking", "--output", out]
        procs.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out))
    return procs


_SHORT = re.compile(r" \((?:/[^()]*?/(?:site-packages|lib/python3\.\d+)/|" + re.escape(ROOT) + "/)")
_IDLE = ("SyncWorker.accept (gunicorn/workers/sync.py", "SyncWorker.wait (gunicorn/workers/sync.py",
         "socket.accept (socket.py")


def summarise_py_spy(procs: list, top: int = 25) -> str:
    """Aggregate raw (collapsed) stacks from every worker. Shares are of the workers' busy wall
    time: samples inside SyncWorker.handle (one request: parse, app, write); the rest is
    waiting for a connection and is left out."""
    self_t, incl_t, busy, app, idle = collections.Counter(), collections.Counter(), 0, 0, 0
    for proc, out in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not os.path.exists(out):
            continue
        with open(out, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                stack, _, n = line.rstrip("\n").rpartition(" ")
                if not n.isdigit():
                    continue
                n = int(n)
                frames = [_SHORT.sub(" (", f) for f in stack.split(";")]
                if not any(f.startswith("SyncWorker.handle (") for f in frames):
                    idle += n
                    continue
                busy += n
                if any(f.startswith("Flask.__call__") for f in frames):
                    app += n
                self_t[frames[-1]] += n
                for f in set(frames):
                    incl_t[f] += n
    if not busy:
        return "(no samples)"
    lines = [f"{busy} samples serving a request ({100 * app / busy:.0f}% of them inside the Flask app), "
             f"{idle} waiting for a connection", "-- self time (leaf frames), % of busy --"]
    lines += [f"{100 * n / busy:5.1f}%  {f}" for f, n in self_t.most_common(top)]
    lines += ["-- inclusive time, % of busy: app/ crypto/ and chosen library frames --"]
    keep = ("(app/", "(crypto/", "(jwt/", "Logger.info", "(prometheus_client/", "zxingcpp", "Session.commit",
            "Connection.execute", "Session.get ", "Session.scalars", "Response.write", "Parser.__next__",
            "close_graceful")
    shown = [(f, n) for f, n in incl_t.most_common() if any(k in f for k in keep)]
    lines += [f"{100 * n / busy:5.1f}%  {f}" for f, n in shown[:top * 2]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database-url", default=None, help="a SCRATCH PostgreSQL database (default: SQLite)")
    ap.add_argument("--redis-url", default=None, help="Redis for the ephemeral store (default: SQL store)")
    ap.add_argument("--crypto-profile", choices=["default", "gm"], default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections")
    ap.add_argument("--duration", type=int, default=15, help="seconds per measured run (max 120)")
    ap.add_argument("--warmup", type=int, default=3, help="seconds of uncounted warm-up before each run")
    ap.add_argument("--scan-tokens", type=int, default=60_000, help="minimum pre-issued scan tokens")
    ap.add_argument("--only", default=",".join(RUNS), help="comma-separated subset of " + ",".join(RUNS))
    ap.add_argument("--log-level", default="INFO", help="server LOG_LEVEL (INFO = production access log)")
    ap.add_argument("--keep-max-requests", action="store_true",
                    help="keep gunicorn.conf.py's worker recycling (max_requests=20000)")
    ap.add_argument("--wsgi-app", default=None,
                    help='start `python -m gunicorn -c gunicorn.conf.py ... WSGI_APP` instead of `evoucher serve`')
    ap.add_argument("--py-spy-cpu", action="store_true",
                    help="with --py-spy: sample CPU time only (leave out time spent waiting)")
    ap.add_argument("--py-spy", default=None,
                    help="path to py-spy (install it outside the project venv): profile the workers during "
                         "each run. py-spy takes CPU too, so a profiled run's req/s are low and it is marked "
                         "noisy: use it for the shares, not for the numbers")
    ap.add_argument("--max-busy", type=float, default=0.15,
                    help="before each run, wait until less than this share of the CPU is busy")
    ap.add_argument("--max-wait", type=float, default=120, help="seconds to wait for that (0: do not wait)")
    ap.add_argument("--no-paired", dest="paired", action="store_false",
                    help="do not run a /healthz baseline right before each other run")
    ap.add_argument("--rounds", type=int, default=1, help="measure every run this many times (1..20); "
                    "prints each round's table, then every target's median ratio")
    ap.add_argument("--json-out", default=None, help="write the results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (server log, token files)")
    args = ap.parse_args()
    if not 1 <= args.duration <= 120 or not 0 <= args.warmup <= 30:
        raise SystemExit("--duration must be 1..120 and --warmup 0..30")
    if not 1 <= args.rounds <= 20:
        raise SystemExit("--rounds must be 1..20")
    if not 1 <= args.connections <= 512 or not 1 <= args.threads <= 16:
        raise SystemExit("--connections must be 1..512 and --threads 1..16")
    runs = [r for r in args.only.split(",") if r]
    if set(runs) - set(RUNS):
        raise SystemExit(f"--only takes {','.join(RUNS)}")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")

    if args.database_url:
        reset_scratch_database(args.database_url)
    tmp = tempfile.mkdtemp(prefix="evoucher-http-bench-")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = server_env(args, tmp, port)
    instance = env["EVOUCHER_INSTANCE"]
    server = None
    results: dict[str, dict] = {}
    try:
        log(f"machine: {describe()}")
        log(f"instance {instance}; backend: {'PostgreSQL' if args.database_url else 'SQLite'} + "
            f"{'Redis' if args.redis_url else 'SQL ephemeral store'}")
        run_checked(evoucher_cmd() + ["demo", "--base-url", base_url], env, "evoucher demo")
        with open(os.path.join(instance, "demo.json"), encoding="utf-8") as fh:
            demo = json.load(fh)
        server = Server(env, port, args.workers, os.path.join(tmp, "server.log"), args.wsgi_app)
        server.wait_ready()
        log(f"server up on {base_url}, workers {server.worker_pids()}")

        holders, insts, skipped = prepare_clients(base_url, instance, demo)
        log(f"{len(holders)} holders activated and signed in; skipped {skipped}")
        sample = check_issue(base_url, holders[0])
        log(f"sample token: {sample['format']}, {len(sample['token'])} chars, svg {len(sample.get('qr_svg', ''))} bytes")
        holder_file = os.path.join(tmp, "holders.txt")
        with open(holder_file, "w", encoding="ascii") as fh:
            fh.write("".join(h["access_token"] + "\n" for h in holders))
        inst_file = os.path.join(tmp, "institutions.txt")
        with open(inst_file, "w", encoding="ascii") as fh:
            fh.write("".join(f"{i['access_token']}\t{i['purpose']}\n" for i in insts))

        from app.services.vouchers import same_pooling_area
        pairs = []  # (institution index, holder) where the institution is in the holder's area
        for h in holders:
            for idx, inst in enumerate(insts):
                if same_pooling_area(h["active_region"], inst["region_code"]):
                    pairs.append((idx, h))
        scan_vouchers = len({h["voucher_id"] for _, h in pairs})
        mint = TokenMint(env) if "scans" in runs else None

        plan = {
            "healthz": (f"{base_url}/healthz", os.path.join(BENCH, "wrk_status.lua"), []),
            "qr": (base_url, os.path.join(BENCH, "wrk_qr_tokens.lua"), [holder_file, "{}"]),
            "qr_svg": (base_url, os.path.join(BENCH, "wrk_qr_tokens.lua"), [holder_file, '{"image":"svg"}']),
        }
        commands = {}

        def measure(name: str, url: str, script: str, sargs: list[str], key: str, tokens=None) -> dict:
            quiet = wait_quiet(args.max_busy, args.max_wait, log) if args.max_wait else float("nan")
            pids = server.worker_pids()
            spy = start_py_spy(args.py_spy, pids, args.duration, tmp, key, not args.py_spy_cpu) \
                if args.py_spy else None
            bpids = backend_pids() if (args.database_url or args.redis_url) else []
            (u0, k0), s0, c0, b0 = proc_cpu_split(pids), system_cpu(), os.times(), proc_cpu(bpids)
            r, out, cmd = wrk(args, url, script, sargs, args.duration)
            (u1, k1), s1, c1, b1 = proc_cpu_split(pids), system_cpu(), os.times(), proc_cpu(bpids)
            w0, w1 = u0 + k0, u1 + k1
            backend = b1 - b0
            busy, total = s1[0] - s0[0], s1[1] - s0[1]
            wrk_cpu = (c1.children_user + c1.children_system) - (c0.children_user + c0.children_system)
            n = max(r["requests"], 1)
            r["cpu"] = {"worker_ms_per_request": 1000 * (w1 - w0) / n,
                        "worker_user_ms_per_request": 1000 * (u1 - u0) / n,
                        "worker_system_ms_per_request": 1000 * (k1 - k0) / n,
                        "machine_ms_per_request": 1000 * busy / n,
                        "workers_share": (w1 - w0) / total if total else float("nan"),
                        "wrk_share": wrk_cpu / total if total else float("nan"),
                        "backend_share": backend / total if total else float("nan"),
                        "backend_ms_per_request": 1000 * backend / n,
                        "other_share": (busy - (w1 - w0) - wrk_cpu - backend) / total if total else float("nan"),
                        "idle_share": 1 - busy / total if total else float("nan")}
            if spy:
                r["py_spy"] = summarise_py_spy(spy)
            r["tokens"] = tokens
            r["busy_before"] = quiet
            r["noisy"] = r["cpu"]["other_share"] > 0.10  # unrelated load (PostgreSQL/Redis excluded)
            r["valid"] = r["non2xx"] == 0 and r["exhausted"] == 0 and not r["socket_errors"]
            if name == "scans" and r["requests"] > (tokens or 0):
                r["valid"] = False
                log("WARNING: more scan requests than tokens: the run is INVALID, raise --scan-tokens")
            results[key] = r
            commands[name] = " ".join(cmd).replace(tmp, "$TMP")
            c = r["cpu"]
            log(f"{key}: {r['rps']:.1f} req/s p50 {r['p50']:.2f} ms p99 {r['p99']:.2f} ms "
                f"non-2xx {r['non2xx']} codes {r['codes']} exhausted {r['exhausted']} "
                f"socket errors '{r['socket_errors']}'")
            log(f"{key}: worker CPU {c['worker_ms_per_request']:.2f} ms/request (user "
                f"{c['worker_user_ms_per_request']:.2f}, system {c['worker_system_ms_per_request']:.2f}), machine CPU "
                f"{c['machine_ms_per_request']:.2f} ms/request; of the machine: workers {100 * c['workers_share']:.0f}%, "
                f"wrk {100 * c['wrk_share']:.0f}%, PostgreSQL/Redis {100 * c['backend_share']:.0f}%, other {100 * c['other_share']:.0f}%, idle {100 * c['idle_share']:.0f}%")
            if args.py_spy:
                print(r["py_spy"])
            return r

        healthz = plan["healthz"]
        rounds = []
        for round_no in range(1, args.rounds + 1):
            results.clear()
            if args.rounds > 1:
                log(f"round {round_no} of {args.rounds}")
            for name in runs:
                if args.paired and name != "healthz" and "healthz" in runs:
                    measure("healthz", *healthz, key=f"healthz@{name}")
                if name == "scans":
                    warm_tokens = os.path.join(tmp, "scan-tokens-warmup.txt")
                    main_tokens = os.path.join(tmp, "scan-tokens.txt")
                    warm_rps = 0.0
                    if args.warmup:
                        n_warm = max(5000, 3000 * args.warmup)
                        secs = mint.issue(pairs, n_warm, 300, warm_tokens)
                        log(f"scans: pre-issued {n_warm} warm-up tokens in {secs:.1f} s")
                        w, _, _ = wrk(args, base_url, os.path.join(BENCH, "wrk_scans.lua"),
                                      [inst_file, warm_tokens, str(args.threads)], args.warmup)
                        warm_rps = w["rps"] if w["exhausted"] == 0 else float("inf")
                        log(f"scans warm-up: {w['rps']:.0f} req/s, codes {w['codes']}, exhausted {w['exhausted']}")
                    need = args.scan_tokens
                    if math.isfinite(warm_rps):
                        need = max(need, int(warm_rps * args.duration * 2.5))
                    else:
                        need = max(need, 200_000)
                    secs = mint.issue(pairs, need, 300, main_tokens)  # live 300 s: quiet wait + run fit
                    log(f"scans: pre-issued {need:,} tokens over {scan_vouchers} vouchers and {len(insts)} "
                        f"institutions in {secs:.1f} s ({need / secs:,.0f}/s in one process)")
                    measure(name, base_url, os.path.join(BENCH, "wrk_scans.lua"),
                            [inst_file, main_tokens, str(args.threads)], key=name, tokens=need)
                else:
                    url, script, sargs = plan[name]
                    if args.warmup:
                        w, _, _ = wrk(args, url, script, sargs, args.warmup)
                        log(f"{name} warm-up: {w['rps']:.0f} req/s, codes {w['codes']}")
                    measure(name, url, script, sargs, key=name)
            report(results, commands, args, holders, insts, scan_vouchers)
            rounds.append(dict(results))
        if args.rounds > 1:
            summarise_rounds(rounds)
        if args.json_out:
            with open(args.json_out, "w", encoding="utf-8") as fh:
                json.dump({"machine": describe(), "results": rounds[-1], "rounds": rounds, "commands": commands, "holders": len(holders),
                           "institutions": len(insts), "scan_vouchers": scan_vouchers,
                           "backend": {"database": "postgresql" if args.database_url else "sqlite",
                                       "ephemeral": "redis" if args.redis_url else "sql"}},
                          fh, indent=2, ensure_ascii=False)
    finally:
        if server is not None:
            server.stop()
        if args.keep:
            log(f"kept {tmp} (server.log, token files)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def report(results: dict, commands: dict, args, holders, insts, scan_vouchers) -> None:
    """The table; each run's ratio is to the /healthz run just before it (--paired, default)."""
    print()
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency; gunicorn "
          f"--workers {args.workers} (sync); {len(holders)} holders, {len(insts)} institutions, "
          f"{scan_vouchers} vouchers scanned")
    print("| run | requests/s | p50 ms | p99 ms | non-2xx | /healthz req/s (paired) | ratio | target | verdict "
          "| worker CPU ms/req | CPU ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for name in RUNS:
        if name not in results:
            continue
        r = results[name]
        base = results.get(f"healthz@{name}") or results.get("healthz")
        base_rps = base["rps"] if base else float("nan")
        ratio = r["rps"] / base_rps if base else float("nan")
        cpu_ratio = base["cpu"]["worker_ms_per_request"] / r["cpu"]["worker_ms_per_request"] if base else float("nan")
        target = TARGETS.get(name)
        if not r["valid"]:
            verdict = "INVALID (errors)"
        elif target is None:
            verdict = "baseline"
        elif not base:
            verdict = "no baseline"
        else:
            verdict = "met" if ratio >= target else "MISSED"
        if r.get("noisy") or (base and base.get("noisy")):
            verdict += " (noisy: other load on the machine)"
        r["ratio"], r["cpu_ratio"], r["verdict"], r["baseline_rps"] = ratio, cpu_ratio, verdict, base_rps
        print(f"| {LABELS[name]} | {r['rps']:,.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['non2xx']} | "
              f"{base_rps:,.0f} | {ratio:.2f} | {'≥ %.1f×' % target if target else '-'} | {verdict} | "
              f"{r['cpu']['worker_ms_per_request']:.2f} | {cpu_ratio:.2f} |")
    print()
    print("CPU ratio = /healthz worker CPU per request ÷ this run's (what the ratio would be if the "
          "workers' CPU were the only limit).")
    for name, cmd in commands.items():
        print(f"{name}: {cmd}")


def summarise_rounds(rounds: list[dict]) -> None:
    """Every target's ratio in each round, their median and how many rounds met the target."""
    print()
    print(f"{len(rounds)} rounds, ratio to the paired /healthz run of the same round:")
    print("| run | ratios by round | median | rounds that met the target |")
    print("|---|---|---:|---:|")
    for name in RUNS:
        ratios = [r[name]["ratio"] for r in rounds if name in r and r[name].get("valid")]
        target = TARGETS.get(name)
        if target is None or not ratios:
            continue
        met = sum(ratio >= target for ratio in ratios)
        print(f"| {LABELS[name]} (≥ {target:.1f}×) | {', '.join(f'{x:.2f}' for x in ratios)} | "
              f"{statistics.median(ratios):.2f} | {met} of {len(ratios)} |")


if __name__ == "__main__":
    main()
