#!/usr/bin/env python3
"""Per-request cost of the hot endpoints, in-process: the WSGI app called directly, no HTTP.

Run by hand from the project root:

    .venv/bin/python bench/inprocess.py                       # median ms per call, each endpoint
    .venv/bin/python bench/inprocess.py --profile scans       # cProfile of one endpoint
    .venv/bin/python bench/inprocess.py --database-url postgresql://postgres@127.0.0.1:5432/evbench \\
        --redis-url redis://127.0.0.1:6379/14                 # PostgreSQL + Redis (scratch DB!)

It makes a temp instance with the demo data, activates the demo persons through the mock
channels (Flask test client), and then calls the app's WSGI callable with prebuilt environs:
GET /healthz, POST /v1/me/qr-tokens {} and {"image":"svg"}, POST /v1/scans with a fresh token
each call. The difference to /healthz is the endpoint's own work; gunicorn's socket work is
not in these numbers (see bench/http_bench.py for that).
"""
from __future__ import annotations

import argparse
import base64
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def reset_scratch_database(url: str) -> None:
    """Empty the scratch PostgreSQL database: every run makes a new master key, and the keys
    a previous run sealed under its own could not be opened. Refuses a database whose name
    does not say it is a benchmark's."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    name = make_url(url).database or ""
    if "bench" not in name:
        raise SystemExit(f"--database-url must name a scratch database (with 'bench' in its name), not {name!r}")
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def build(args, tmp: str):
    from app import create_app
    from app.cli import upgrade_database
    from app.config import Config
    from app.demo import load_demo
    from mock_channels.client import ChannelClient, flask_sender

    if args.database_url:
        reset_scratch_database(args.database_url)
    instance = os.path.join(tmp, "instance")
    os.makedirs(instance)
    values = dict(instance_path=instance, database_url=args.database_url or f"sqlite:///{instance}/evoucher.db",
                  redis_url=args.redis_url, issue_rate_per_minute=100000, scan_rate_per_minute=10000000,
                  channel_rate_per_minute=10000000, token_lifetime=300, log_level="INFO")
    config = Config.from_env({"EVOUCHER_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}, **values)
    app = create_app(config)
    upgrade_database(app)
    client = app.test_client()
    with open(load_demo(app, "http://localhost"), encoding="utf-8") as fh:
        demo = json.load(fh)
    holders = []
    for n, p in enumerate(demo["persons"]):
        if not p.get("active_region_codes", p["region_codes"]):
            continue
        channel = demo["channels"][n % len(demo["channels"])]
        cc = ChannelClient(channel, "http://localhost", instance, send=flask_sender(client))
        act = cc.activate(p["id_number"], p["name"], p["phone"], pin="258013")
        sess = cc.session(act["channel_user_id"])
        holders.append({**act, "access_token": sess["access_token"]})
    insts = {}  # region code -> the bearer token of an institution there that may scan for registration
    for i in demo["institutions"]:
        basic = base64.b64encode(f"{i['client_id']}:{i['client_secret']}".encode()).decode()
        resp = client.post("/v1/oauth/token", data={"grant_type": "client_credentials"},
                           headers={"Authorization": f"Basic {basic}"})
        out = resp.get_json()
        if "registration" in out["scan_purposes"]:  # a hospital; a pharmacy may not (scan_environ)
            insts[i["region_code"]] = out["access_token"]
    return app, holders, insts


# What the benchmarks scan for: registration, or query where the institution's kind may not
# register (a pharmacy scans for pharmacy and query only, docs/decisions.md). Neither is a
# payment (no PIN rules) nor an emergency (no filing skipped): every scan does the same work.
BENCH_PURPOSES = ("registration", "query")


def scan_purpose(allowed: list[str]) -> str:
    """The purpose to scan for at an institution whose token answer's `scan_purposes` is `allowed`."""
    return next(p for p in BENCH_PURPOSES if p in allowed)


def environ(app, method: str, path: str, token: str | None = None, body: dict | None = None):
    from werkzeug.test import EnvironBuilder
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    b = EnvironBuilder(path=path, method=method, headers=headers,
                       data=json.dumps(body) if body is not None else None,
                       content_type="application/json" if body is not None else None)
    env = b.get_environ()
    raw = env["wsgi.input"].read()
    return env, raw


def scan_tokens(app, holders, insts, n: int, lifetime: int = 300) -> list[tuple[str, str]]:
    """n (institution bearer token, QR token) pairs, each QR token new (issued here with
    crypto.tokens.issue and the current key, what the qr endpoint signs), round-robin over the
    holders, each scanned by an institution of the holder's own pooling area."""
    from app.extensions import runtime
    from app.services import keys
    from crypto import tokens

    with app.app_context():
        rt = runtime()
        key = keys.keyring(rt, rt.session(), refresh=True).current
    now = int(time.time())
    pairs = [(h, insts[h["active_region"]]) for h in holders if h["active_region"] in insts]
    out = []
    for k in range(n):
        holder, inst_token = pairs[k % len(pairs)]
        text = tokens.issue(key, voucher_id=holder["voucher_id"], region=holder["active_region"], iat=now,
                            lifetime=lifetime, token_id=tokens.new_token_id(), fmt="ev1", issuer=rt.config.issuer)
        out.append((inst_token, text))
    return out


def scan_environ(app, inst_token: str, text: str):
    return environ(app, "POST", "/v1/scans", inst_token, {"token": text, "purpose": "registration"})


def scan_environs(app, holders, insts, n: int) -> list:
    """n prebuilt POST /v1/scans requests, each with a token never sent before (scan_tokens)."""
    return [scan_environ(app, inst_token, text) for inst_token, text in scan_tokens(app, holders, insts, n)]


def call(app, env, raw) -> int:
    e = dict(env)
    e["wsgi.input"] = io.BytesIO(raw)
    status = []
    out = app(e, lambda s, h, exc=None: status.append(s))
    for _ in out:
        pass
    getattr(out, "close", lambda: None)()
    return int(status[0][:3])


def parse_and_run(ap: argparse.ArgumentParser, run, prefix: str) -> None:
    """Add the backend options that `build` reads, parse the command line, and call
    `run(args, tmp)` with a temp folder (the instance lives there) removed afterwards."""
    ap.add_argument("--database-url")
    ap.add_argument("--redis-url")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix=prefix)
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=600)
    ap.add_argument("--profile", choices=["healthz", "qr", "qr_svg", "scans"])
    ap.add_argument("--only", choices=["healthz", "qr", "qr_svg", "scans"],
                    help="time one endpoint (e.g. to sample it with `py-spy record -- ...`)")
    parse_and_run(ap, run, "evinproc-")


def run(args, tmp: str) -> None:
    import logging

    app, holders, insts = build(args, tmp)
    logging.getLogger().handlers[0].stream = open(os.devnull, "w")  # the access log is formatted, not printed
    cases = {
        "healthz": lambda n: [environ(app, "GET", "/healthz")] * n,
        "qr": lambda n: [environ(app, "POST", "/v1/me/qr-tokens", holders[k % len(holders)]["access_token"], {})
                         for k in range(n)],
        "qr_svg": lambda n: [environ(app, "POST", "/v1/me/qr-tokens", holders[k % len(holders)]["access_token"],
                                     {"image": "svg"}) for k in range(n)],
        "scans": lambda n: scan_environs(app, holders, insts, n),
    }
    chosen = args.profile or args.only
    names = [chosen] if chosen else list(cases)
    for name in names:
        envs = cases[name](args.calls + 100)
        for env, raw in envs[:100]:  # warm up caches and pools
            assert call(app, env, raw) < 300, name
        envs = envs[100:]
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            for env, raw in envs:
                call(app, env, raw)
            prof.disable()
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats(os.environ.get("PSORT", "cumulative")).print_stats(60)
            if os.environ.get("PDUMP"):
                prof.dump_stats(os.environ["PDUMP"])
            print(s.getvalue())
            continue
        times = []
        for env, raw in envs:
            t0 = time.perf_counter()
            status = call(app, env, raw)
            times.append((time.perf_counter() - t0) * 1e3)
            assert status < 300, (name, status)
        print(f"{name:8s} median {statistics.median(times):.3f} ms   p90 {sorted(times)[int(len(times) * .9)]:.3f} ms")


if __name__ == "__main__":
    main()
